/* Small AVX2 helpers shared by the kernels built with AVX2 or above (include only from
 * files whose ISA suffix implies AVX2: _avx2.c, _avx512*.c). */
#ifndef PK_AVX2_H
#define PK_AVX2_H

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "pk_internal.h"

/* Sum of the eight lanes. */
static inline float pk_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Largest of the eight lanes. */
static inline float pk_hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* Four bytes at p broadcast to every 32-bit lane. */
PK_ALWAYS_INLINE __m256i pk_bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* max |x[i]| over n floats; *nonfinite = 1 when one is NaN or Inf (else unchanged). */
static inline float pk_absmax_avx2(const float *x, int64_t n, int *nonfinite) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 big = _mm256_set1_ps(FLT_MAX);
    __m256 vmax = _mm256_setzero_ps(), vbad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), absmask);
        vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ)); /* NaN or Inf */
        vmax = _mm256_max_ps(vmax, a);
    }
    if (_mm256_movemask_ps(vbad)) *nonfinite = 1;
    float amax = pk_hmax8(vmax);
    for (; i < n; i++) {
        const float a = fabsf(x[i]);
        if (!(a <= FLT_MAX)) *nonfinite = 1;
        else if (a > amax) amax = a;
    }
    return amax;
}

/* 8 floats -> 8 int32: clip(rint(v / s), -127, 127), the float32 division and round half
 * to even of the scalar quantizers. */
PK_ALWAYS_INLINE __m256i pk_quant8(const float *x, __m256 s) {
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x), s),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
}

/* pk_activate on eight lanes; NaN passes through (max/min return their second operand
 * when either is NaN), as in the scalar epilogue. */
static inline __m256 pk_activate8(__m256 v, int activation) {
    if (activation == PK_ACT_RELU) return _mm256_max_ps(_mm256_setzero_ps(), v);
    if (activation == PK_ACT_RELU6)
        return _mm256_min_ps(_mm256_set1_ps(6.0f), _mm256_max_ps(_mm256_setzero_ps(), v));
    return v;
}

/* r[i][j] <- r[j][i] for an 8x8 block held in registers. */
static inline void pk_transpose8x8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* popcount(w ^ u) over `words` words (files built with POPCNT only: _avx2.c and
 * _avx512vpopcnt.c). */
static inline uint64_t pk_xnor_pop_scalar(const uint64_t *w, const uint64_t *u, int64_t words) {
    uint64_t p = 0;
    for (int64_t i = 0; i < words; i++) p += (uint64_t)_mm_popcnt_u64(w[i] ^ u[i]);
    return p;
}

#endif
