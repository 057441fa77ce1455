/* The AVX2/FMA exp and erfc tail of eltwise_math.h, 8 lanes at a time (include only from
 * files whose ISA suffix implies AVX2). */
#ifndef PK_ELTWISE_AVX2_H
#define PK_ELTWISE_AVX2_H

#include "ops/eltwise_math.h"
#include "pk_avx2.h"

/* c[0] t^(n-1) + ... + c[n-1] per lane, Horner with FMA. */
PK_ALWAYS_INLINE __m256 pk_poly8(__m256 t, const float *c, int n) {
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < n; i++) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c[i]));
    return p;
}

/* e^(hi + lo) per lane, as pk_exp_scalar: Inf above PK_EXP_MAX, 0 below PK_EXP_MIN,
 * NaN stays NaN. */
static inline __m256 pk_exp8(__m256 hi, __m256 lo) {
    /* the clamp keeps 2^n in range; special lanes are put right at the end */
    const __m256 x = _mm256_max_ps(_mm256_min_ps(hi, _mm256_set1_ps(PK_EXP_MAX)),
                                   _mm256_set1_ps(PK_EXP_MIN));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(PK_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(PK_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(PK_LN2_LO), r);
    r = _mm256_add_ps(r, lo);
    const __m256 poly = pk_poly8(r, PK_EXP_POLY, 6);
    const __m256 p = _mm256_add_ps(_mm256_set1_ps(1.0f),
                                   _mm256_fmadd_ps(_mm256_mul_ps(r, r), poly, r));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    e = _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY),
                         _mm256_cmp_ps(hi, _mm256_set1_ps(PK_EXP_MAX), _CMP_GT_OQ));
    e = _mm256_andnot_ps(_mm256_cmp_ps(hi, _mm256_set1_ps(PK_EXP_MIN), _CMP_LT_OQ), e);
    return _mm256_blendv_ps(e, hi, _mm256_cmp_ps(hi, hi, _CMP_UNORD_Q));
}

/* erfc(a / sqrt 2) per lane, for sqrt 2 <= a < 14 (other lanes: anything). */
static inline __m256 pk_erfc_tail8(__m256 a) {
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32((int)PK_SPLIT_MASK));
    const __m256 ah = _mm256_and_ps(a, mask);
    const __m256 mhalf = _mm256_set1_ps(-0.5f);
    const __m256 hi = _mm256_mul_ps(mhalf, _mm256_mul_ps(ah, ah));
    const __m256 lo_sq = _mm256_mul_ps(_mm256_sub_ps(a, ah), _mm256_add_ps(a, ah));
    const __m256 lo = _mm256_mul_ps(mhalf, lo_sq);
    const __m256 t = _mm256_div_ps(
        _mm256_set1_ps(1.0f),
        _mm256_fmadd_ps(_mm256_set1_ps(0.5f * PK_SQRT1_2), a, _mm256_set1_ps(1.0f)));
    return _mm256_mul_ps(pk_exp8(hi, lo), pk_poly8(t, PK_ERFC_POLY, 10));
}

#endif /* PK_ELTWISE_AVX2_H */
