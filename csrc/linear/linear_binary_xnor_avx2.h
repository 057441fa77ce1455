/* XOR + popcount microkernel shared by the AVX2 binary linear and conv2d kernels
 * (linear_binary_avx2.c, conv_binary_avx2.c); include only from files built with AVX2. */
#ifndef PK_LINEAR_BINARY_XNOR_AVX2_H
#define PK_LINEAR_BINARY_XNOR_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#define PK_XNOR_XB 8 /* rows per XNOR block: 4 on popcnt, 4 on vpshufb */

static inline uint64_t pk_xnor_pop_scalar(const uint64_t *w, const uint64_t *u, int64_t words) {
    uint64_t p = 0;
    for (int64_t i = 0; i < words; i++) p += (uint64_t)_mm_popcnt_u64(w[i] ^ u[i]);
    return p;
}

/* popcount(w ^ x_j) for 8 activation rows x_0..x_7 at once: rows 0..3 with the scalar
 * popcnt instruction (integer pipes), rows 4..7 with the vpshufb nibble table on 128-bit
 * words (vector pipes), so both kinds of execution unit work at the same time. Byte
 * counters take at most 8 per step, so they are widened (vpsadbw) every 31 steps. */
static inline void pk_xnor_block8(const uint64_t *w, const uint64_t *x, int64_t words, uint64_t *pop) {
    const __m128i lut = _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m128i low = _mm_set1_epi8(0x0f), zero = _mm_setzero_si128();
    const uint64_t *x0 = x, *x1 = x + words, *x2 = x + 2 * words, *x3 = x + 3 * words;
    const uint64_t *x4 = x + 4 * words, *x5 = x + 5 * words, *x6 = x + 6 * words,
                   *x7 = x + 7 * words;
    uint64_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    __m128i s4 = zero, s5 = zero, s6 = zero, s7 = zero; /* widened counts */
    const int64_t pairs = words / 2;
    for (int64_t c0 = 0; c0 < pairs; c0 += 31) {
        const int64_t c1 = pairs - c0 < 31 ? pairs : c0 + 31;
        __m128i a4 = zero, a5 = zero, a6 = zero, a7 = zero;
        for (int64_t c = c0; c < c1; c++) {
            const int64_t i = 2 * c;
            const uint64_t wa = w[i], wb = w[i + 1];
            p0 += (uint64_t)(_mm_popcnt_u64(wa ^ x0[i]) + _mm_popcnt_u64(wb ^ x0[i + 1]));
            p1 += (uint64_t)(_mm_popcnt_u64(wa ^ x1[i]) + _mm_popcnt_u64(wb ^ x1[i + 1]));
            p2 += (uint64_t)(_mm_popcnt_u64(wa ^ x2[i]) + _mm_popcnt_u64(wb ^ x2[i + 1]));
            p3 += (uint64_t)(_mm_popcnt_u64(wa ^ x3[i]) + _mm_popcnt_u64(wb ^ x3[i + 1]));
            const __m128i wv = _mm_loadu_si128((const __m128i *)(w + i));
#define PK_NIBBLE_POP(acc, xr)                                                              \
    do {                                                                                    \
        const __m128i v = _mm_xor_si128(wv, _mm_loadu_si128((const __m128i *)((xr) + i))); \
        const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(v, low));                   \
        const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), low)); \
        acc = _mm_add_epi8(acc, _mm_add_epi8(lo, hi));                                      \
    } while (0)
            PK_NIBBLE_POP(a4, x4);
            PK_NIBBLE_POP(a5, x5);
            PK_NIBBLE_POP(a6, x6);
            PK_NIBBLE_POP(a7, x7);
#undef PK_NIBBLE_POP
        }
        s4 = _mm_add_epi64(s4, _mm_sad_epu8(a4, zero));
        s5 = _mm_add_epi64(s5, _mm_sad_epu8(a5, zero));
        s6 = _mm_add_epi64(s6, _mm_sad_epu8(a6, zero));
        s7 = _mm_add_epi64(s7, _mm_sad_epu8(a7, zero));
    }
    const int64_t t = 2 * pairs; /* an odd last word */
    pop[0] = p0 + pk_xnor_pop_scalar(w + t, x0 + t, words - t);
    pop[1] = p1 + pk_xnor_pop_scalar(w + t, x1 + t, words - t);
    pop[2] = p2 + pk_xnor_pop_scalar(w + t, x2 + t, words - t);
    pop[3] = p3 + pk_xnor_pop_scalar(w + t, x3 + t, words - t);
    const __m128i *s[4] = {&s4, &s5, &s6, &s7};
    const uint64_t *xs[4] = {x4, x5, x6, x7};
    for (int j = 0; j < 4; j++)
        pop[4 + j] = (uint64_t)_mm_cvtsi128_si64(*s[j]) +
                     (uint64_t)_mm_extract_epi64(*s[j], 1) +
                     pk_xnor_pop_scalar(w + t, xs[j] + t, words - t);
}

#endif /* PK_LINEAR_BINARY_XNOR_AVX2_H */
