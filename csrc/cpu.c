/* CPU probing: the features this CPU and OS support (cpuid + xgetbv on x86,
 * getauxval(AT_HWCAP) on ARM Linux), and the ISA levels of this architecture: their
 * names, which this build has, which this CPU runs. */
#define _GNU_SOURCE
#include <pthread.h>

#include "pk_internal.h"

#if defined(PK_ARCH_X86)
#include <cpuid.h>
#elif defined(PK_ARCH_ARM) && defined(__linux__)
#include <sys/auxv.h>
#endif

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

static unsigned features;
static pthread_once_t probed = PTHREAD_ONCE_INIT;

static void probe(void) { features = detect_features(); }

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
    pthread_once(&probed, probe);
    return features;
}

int pk_cpu_has(unsigned mask) { return (pk_cpu_features() & mask) == mask; }

int pk_isa_count(void) { return PK_ISA_COUNT; }

const char *pk_isa_name(int level) {
    return level >= 0 && level < PK_ISA_COUNT ? isa_names[level] : NULL;
}

int pk_isa_compiled(int level) {
    return level >= 0 && level < PK_ISA_COUNT && level_compiled[level];
}

int pk_isa_supported(int level) {
    return pk_isa_compiled(level) && pk_cpu_has(level_needs[level]);
}
