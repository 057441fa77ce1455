/* CPU feature detection and the dispatch table: portable C first, then each ISA the
 * build has and the CPU/OS supports, in ascending order (PYINFER_ISA caps it). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "pk_internal.h"

#if defined(PK_ARCH_X86)
#include <cpuid.h>
#elif defined(PK_ARCH_ARM) && defined(__linux__)
#include <sys/auxv.h>
#endif

#ifndef PK_VERSION_STRING
#define PK_VERSION_STRING "unknown"
#endif

struct pk_functable pk_table;
static int pk_level = -1;
static unsigned pk_features;
static int pk_nthreads;

#if defined(PK_ARCH_X86)
static const char *const isa_names[] = {"scalar", "avx2", "avx512", "avx512vnni"};
static unsigned detect_features(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1;
    if (!osxsave) return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    int ymm_ok = (xlo & 0x6) == 0x6;     /* XMM and YMM state saved by the OS */
    int zmm_ok = (xlo & 0xe6) == 0xe6;   /* plus opmask and ZMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (ymm_ok && ((b >> 5) & 1)) f |= PK_CPU_AVX2;
    if (ymm_ok && fma) f |= PK_CPU_FMA;
    if (zmm_ok) {
        if ((b >> 16) & 1) f |= PK_CPU_AVX512F;
        if ((b >> 17) & 1) f |= PK_CPU_AVX512DQ;
        if ((b >> 30) & 1) f |= PK_CPU_AVX512BW;
        if ((b >> 31) & 1) f |= PK_CPU_AVX512VL;
        if ((c >> 11) & 1) f |= PK_CPU_AVX512VNNI;
        if ((c >> 14) & 1) f |= PK_CPU_AVX512VPOPCNTDQ;
    }
#ifdef PK_EMULATE_AVX512
    /* test builds whose AVX-512 sources run on portable intrinsics (build_lib.py) */
    if (f & PK_CPU_AVX2)
        f |= PK_CPU_AVX512F | PK_CPU_AVX512BW | PK_CPU_AVX512DQ | PK_CPU_AVX512VL |
             PK_CPU_AVX512VNNI | PK_CPU_AVX512VPOPCNTDQ;
#endif
    return f;
}
static const unsigned level_needs[] = {
    0,
    PK_CPU_AVX2 | PK_CPU_FMA,
    PK_CPU_AVX2 | PK_CPU_FMA | PK_CPU_AVX512F | PK_CPU_AVX512BW | PK_CPU_AVX512DQ | PK_CPU_AVX512VL,
    PK_CPU_AVX2 | PK_CPU_FMA | PK_CPU_AVX512F | PK_CPU_AVX512BW | PK_CPU_AVX512DQ | PK_CPU_AVX512VL |
        PK_CPU_AVX512VNNI,
};
static const int level_compiled[] = {
    1,
#ifdef PK_HAVE_AVX2
    1,
#else
    0,
#endif
#ifdef PK_HAVE_AVX512
    1,
#else
    0,
#endif
#ifdef PK_HAVE_AVX512VNNI
    1,
#else
    0,
#endif
};
#elif defined(PK_ARCH_ARM)
static const char *const isa_names[] = {"scalar", "neon", "neondot"};
static unsigned detect_features(void) {
    unsigned f = 0;
#if defined(__aarch64__) && defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP);
    if (hw & (1UL << 1)) f |= PK_CPU_NEON;      /* HWCAP_ASIMD */
    if (hw & (1UL << 20)) f |= PK_CPU_DOTPROD;  /* HWCAP_ASIMDDP */
#elif defined(__arm__) && defined(__linux__)
    if (getauxval(AT_HWCAP) & (1UL << 12)) f |= PK_CPU_NEON; /* HWCAP_NEON */
#endif
    return f;
}
static const unsigned level_needs[] = {0, PK_CPU_NEON, PK_CPU_NEON | PK_CPU_DOTPROD};
static const int level_compiled[] = {
    1,
#ifdef PK_HAVE_NEON
    1,
#else
    0,
#endif
#ifdef PK_HAVE_NEONDOT
    1,
#else
    0,
#endif
};
#else
static const char *const isa_names[] = {"scalar"};
static unsigned detect_features(void) { return 0; }
static const unsigned level_needs[] = {0};
static const int level_compiled[] = {1};
#endif

const char *pk_version(void) { return PK_VERSION_STRING; }

const char *pk_arch(void) {
#if defined(PK_ARCH_X86)
    return "x86_64";
#elif defined(__aarch64__)
    return "aarch64";
#elif defined(__arm__)
    return "armv7";
#else
    return "generic";
#endif
}

unsigned pk_cpu_features(void) {
    pk_dispatch_init();
    return pk_features;
}

int pk_cpu_has(unsigned mask) { return (pk_features & mask) == mask; }

int pk_isa_count(void) { return PK_ISA_COUNT; }

const char *pk_isa_name(int level) {
    return level >= 0 && level < PK_ISA_COUNT ? isa_names[level] : NULL;
}

int pk_isa_compiled(int level) {
    return level >= 0 && level < PK_ISA_COUNT && level_compiled[level];
}

int pk_isa_supported(int level) {
    pk_dispatch_init();
    return pk_isa_compiled(level) && pk_cpu_has(level_needs[level]);
}

/* Fill every slot with the best implementation at or below `cap`. */
static void fill_table(int cap) {
    memset(&pk_table, 0, sizeof pk_table);
    /* csr */
    PK_USE(linear_csr, pk_linear_csr_scalar);
    PK_USE(linear_csr_slices, pk_linear_csr_slices_scalar);
#ifdef PK_HAVE_AVX2
    if (cap >= PK_ISA_AVX2) {
        PK_USE(linear_csr, pk_linear_csr_avx2);
        PK_USE(linear_csr_slices, pk_linear_csr_slices_avx2);
    }
#endif
#ifdef PK_HAVE_AVX512
    if (cap >= PK_ISA_AVX512) PK_USE(linear_csr, pk_linear_csr_avx512);
#endif
    /* binary / pow2 */
    PK_USE(linear_binary, pk_linear_binary_scalar);
    PK_USE(linear_pow2, pk_linear_pow2_scalar);
#ifdef PK_HAVE_AVX2
    if (cap >= PK_ISA_AVX2) {
        PK_USE(linear_binary, pk_linear_binary_avx2);
        PK_USE(linear_pow2, pk_linear_pow2_avx2);
    }
#endif
#ifdef PK_HAVE_AVX512VPOPCNT
    /* a feature of its own, not a level: some AVX-512 CPUs lack it */
    if (cap >= PK_ISA_AVX512 && pk_cpu_has(PK_CPU_AVX512VPOPCNTDQ))
        PK_USE(linear_binary, pk_linear_binary_avx512vpopcnt);
#endif
    /* conv2d */
    PK_USE(conv_gemm, pk_conv_gemm_scalar);
    PK_USE(conv_csr, pk_conv_csr_scalar);
    PK_USE(conv_depthwise, pk_conv_depthwise_scalar);
    PK_USE(conv_binary, pk_conv_binary_scalar);
#ifdef PK_HAVE_AVX2
    if (cap >= PK_ISA_AVX2) {
        PK_USE(conv_gemm, pk_conv_gemm_avx2);
        PK_USE(conv_csr, pk_conv_csr_avx2);
        PK_USE(conv_depthwise, pk_conv_depthwise_avx2);
        PK_USE(conv_binary, pk_conv_binary_avx2);
    }
#endif
    /* int8 conv2d */
    PK_USE(conv_int8, pk_conv_int8_scalar);
#ifdef PK_HAVE_AVX2
    if (cap >= PK_ISA_AVX2) PK_USE(conv_int8, pk_conv_int8_avx2);
#endif
#ifdef PK_HAVE_AVX512VNNI
    if (cap >= PK_ISA_AVX512VNNI) PK_USE(conv_int8, pk_conv_int8_avx512vnni);
#endif
    /* int8 / int4 */
    PK_USE(linear_int8, pk_linear_int8_scalar);
    PK_USE(linear_int4, pk_linear_int4_scalar);
#ifdef PK_HAVE_AVX2
    if (cap >= PK_ISA_AVX2) {
        PK_USE(linear_int8, pk_linear_int8_avx2);
        PK_USE(linear_int4, pk_linear_int4_avx2);
    }
#endif
#ifdef PK_HAVE_AVX512VNNI
    if (cap >= PK_ISA_AVX512VNNI) {
        PK_USE(linear_int8, pk_linear_int8_avx512vnni);
        PK_USE(linear_int4, pk_linear_int4_avx512vnni);
    }
#endif
    (void)cap;
}

int pk_set_isa_cap(int level) {
    if (pk_level < 0) pk_features = detect_features();
    int best = 0;
    for (int l = 1; l < PK_ISA_COUNT && l <= level; l++)
        if (level_compiled[l] && pk_cpu_has(level_needs[l])) best = l;
    fill_table(best);
    pk_level = best;
    return best;
}

static int level_from_env(void) {
    const char *cap = getenv("PYINFER_ISA");
    if (cap == NULL || *cap == '\0') return PK_ISA_COUNT - 1;
    for (int l = 0; l < PK_ISA_COUNT; l++)
        if (strcmp(cap, isa_names[l]) == 0) return l;
    return PK_ISA_COUNT - 1; /* unknown names are reported by the Python side */
}

void pk_dispatch_init(void) {
    if (pk_level >= 0) return;
    /* NOTE: idempotent; two threads racing here fill the same table. */
    pk_set_isa_cap(level_from_env());
}

__attribute__((constructor)) static void pk_load(void) { pk_dispatch_init(); }

int pk_isa_level(void) {
    pk_dispatch_init();
    return pk_level;
}

#define PK_SLOT_NAME(slot, type) #slot,
static const char *const slot_names[] = {PK_KERNEL_SLOTS(PK_SLOT_NAME)};
#undef PK_SLOT_NAME

int pk_kernel_count(void) { return (int)(sizeof slot_names / sizeof slot_names[0]); }

const char *pk_kernel_slot(int i) {
    return i >= 0 && i < pk_kernel_count() ? slot_names[i] : NULL;
}

const char *pk_kernel_impl(int i) {
    pk_dispatch_init();
#define PK_SLOT_IMPL(slot, type) if (i-- == 0) return pk_table.slot##_impl;
    PK_KERNEL_SLOTS(PK_SLOT_IMPL)
#undef PK_SLOT_IMPL
    return NULL;
}

void pk_set_num_threads(int n) { pk_nthreads = n > 0 ? n : 0; }

int pk_threads(void) {
#ifdef _OPENMP
    return pk_nthreads > 0 ? pk_nthreads : omp_get_num_procs();
#else
    return 1;
#endif
}

int pk_get_num_threads(void) { return pk_threads(); }

void *pk_aligned_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}

void pk_aligned_free(void *p) { free(p); }

void *pk_alloc_parts(int n, const size_t *bytes, void **parts) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (bytes[i] + 63) & ~(size_t)63;
    char *base = pk_aligned_alloc(total);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        parts[i] = base ? base + off : NULL;
        off += (bytes[i] + 63) & ~(size_t)63;
    }
    return base;
}
