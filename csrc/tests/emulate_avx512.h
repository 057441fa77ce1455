/* Test builds only (build_lib.py --emulate-avx512): the AVX-512 kernel sources are
 * compiled for AVX2 with every _mm512_* / masked intrinsic mapped onto SIMDe's portable
 * implementation, so their logic -- tails, masks, index widths, threading -- is tested
 * against the scalar kernels on a CPU without AVX-512. The few intrinsics this SIMDe
 * release lacks are written out below, element by element, from Intel's definitions;
 * masked loads read only the selected elements, as the hardware does. */
#ifndef PK_EMULATE_AVX512_H
#define PK_EMULATE_AVX512_H

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <stdint.h>
#include <string.h>

static inline __m512i pk_emu_cvtepu16_epi32(__m256i a) {
    uint16_t s[16];
    int32_t d[16];
    __m512i r;
    memcpy(s, &a, sizeof s);
    for (int i = 0; i < 16; i++) d[i] = s[i];
    memcpy(&r, d, sizeof r);
    return r;
}
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32 pk_emu_cvtepu16_epi32

#define PK_EMU_MASKZ_LOAD(name, vec, elem, n)                                            \
    static inline vec pk_emu_##name(uint64_t k, const void *p) {                         \
        elem d[n] = {0};                                                                 \
        vec r;                                                                           \
        for (int i = 0; i < n; i++)                                                      \
            if ((k >> i) & 1) memcpy(&d[i], (const char *)p + i * sizeof(elem), sizeof(elem)); \
        memcpy(&r, d, sizeof r);                                                         \
        return r;                                                                        \
    }
PK_EMU_MASKZ_LOAD(mm256_maskz_loadu_epi16, __m256i, uint16_t, 16)
PK_EMU_MASKZ_LOAD(mm512_maskz_loadu_epi32, __m512i, uint32_t, 16)
PK_EMU_MASKZ_LOAD(mm512_maskz_loadu_ps, __m512, float, 16)
PK_EMU_MASKZ_LOAD(mm512_maskz_loadu_epi64, __m512i, uint64_t, 8)
#undef _mm256_maskz_loadu_epi16
#undef _mm512_maskz_loadu_epi32
#undef _mm512_maskz_loadu_ps
#undef _mm512_maskz_loadu_epi64
#define _mm256_maskz_loadu_epi16 pk_emu_mm256_maskz_loadu_epi16
#define _mm512_maskz_loadu_epi32 pk_emu_mm512_maskz_loadu_epi32
#define _mm512_maskz_loadu_ps pk_emu_mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_epi64 pk_emu_mm512_maskz_loadu_epi64

static inline __m512 pk_emu_mask_i32gather_ps(__m512 src, uint64_t k, __m512i index,
                                              const void *base, int scale) {
    float d[16];
    int32_t ix[16];
    __m512 r;
    memcpy(d, &src, sizeof d);
    memcpy(ix, &index, sizeof ix);
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1) memcpy(&d[i], (const char *)base + (int64_t)ix[i] * scale, 4);
    memcpy(&r, d, sizeof r);
    return r;
}
#undef _mm512_mask_i32gather_ps
#define _mm512_mask_i32gather_ps pk_emu_mask_i32gather_ps

/* the same tree of additions as GCC's _mm512_reduce_add_ps */
static inline float pk_emu_reduce_add_ps(__m512 a) {
    float v[16], h[8], q[4];
    memcpy(v, &a, sizeof v);
    for (int i = 0; i < 8; i++) h[i] = v[8 + i] + v[i];
    for (int i = 0; i < 4; i++) q[i] = h[4 + i] + h[i];
    return (q[0] + q[2]) + (q[1] + q[3]);
}
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps pk_emu_reduce_add_ps

static inline long long pk_emu_reduce_add_epi64(__m512i a) {
    uint64_t v[8], s = 0; /* integer: the order does not matter */
    memcpy(v, &a, sizeof v);
    for (int i = 0; i < 8; i++) s += v[i];
    return (long long)s;
}
#undef _mm512_reduce_add_epi64
#define _mm512_reduce_add_epi64 pk_emu_reduce_add_epi64

#endif
