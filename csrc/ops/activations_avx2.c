/* GELU, AVX2/FMA: pk_gelu_scalar's formulas 8 lanes at a time (both branches of the
 * exact form are computed and blended); the last n % 8 elements go through a padded
 * buffer. */
#include "ops/eltwise_avx2.h"

static inline __m256 gelu_erf8(__m256 x) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 a = _mm256_and_ps(x, absmask), half = _mm256_set1_ps(0.5f);
    const __m256 nonneg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
    /* |x| < sqrt 2: Phi = 1/2 +- erf(|x| / sqrt 2) / 2 */
    const __m256 z = _mm256_mul_ps(a, _mm256_set1_ps(PK_SQRT1_2)), z2 = _mm256_mul_ps(z, z);
    const __m256 erf = _mm256_mul_ps(z, pk_poly8(z2, PK_ERF_POLY, 6));
    const __m256 half_erf = _mm256_mul_ps(half, erf);
    const __m256 phi_small = _mm256_blendv_ps(_mm256_sub_ps(half, half_erf),
                                              _mm256_add_ps(half, half_erf), nonneg);
    /* larger |x|: Phi = 1 - erfc / 2 or erfc / 2, erfc taken as 0 from |x| = 14 on */
    const __m256 in_tail = _mm256_cmp_ps(a, _mm256_set1_ps(PK_GELU_FLAT_FROM), _CMP_LT_OQ);
    const __m256 half_erfc = _mm256_and_ps(in_tail, _mm256_mul_ps(half, pk_erfc_tail8(a)));
    const __m256 phi_large = _mm256_blendv_ps(
        half_erfc, _mm256_sub_ps(_mm256_set1_ps(1.0f), half_erfc), nonneg);
    const __m256 small = _mm256_cmp_ps(a, _mm256_set1_ps(PK_GELU_ERFC_FROM), _CMP_LT_OQ);
    return _mm256_mul_ps(x, _mm256_blendv_ps(phi_large, phi_small, small));
}

static inline __m256 gelu_tanh8(__m256 x) {
    const __m256 x2 = _mm256_mul_ps(x, x);
    const __m256 poly = _mm256_add_ps(_mm256_set1_ps(1.0f),
                                      _mm256_mul_ps(_mm256_set1_ps(PK_GELU_TANH_C), x2));
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(PK_GELU_TANH_K), x), poly);
    const __m256 e = pk_exp8(v, _mm256_setzero_ps());
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

#define GELU_LOOP(fn8)                                                  \
    do {                                                                \
        int64_t i = 0;                                                  \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, fn8(_mm256_loadu_ps(x + i))); \
        if (i < n) {                                                    \
            float buf[8] = {0};                                         \
            memcpy(buf, x + i, (size_t)(n - i) * sizeof(float));        \
            _mm256_storeu_ps(buf, fn8(_mm256_loadu_ps(buf)));           \
            memcpy(y + i, buf, (size_t)(n - i) * sizeof(float));        \
        }                                                               \
    } while (0)

int pk_gelu_avx2(const float *x, int64_t n, int approximate, float *y) {
    if (approximate)
        GELU_LOOP(gelu_tanh8);
    else
        GELU_LOOP(gelu_erf8);
    return PK_OK;
}
