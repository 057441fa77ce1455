/* The 2x2 stride-2 max-pool (pool_max2x2 slot), AVX2: 8 outputs from 16 columns of two
 * input rows at a time. Same results as pk_pool_max2x2_scalar bit for bit: the taps are
 * taken in the same order, each step np.maximum's (NaN if either is, the first one's;
 * else a > b ? a : b, so the second on a tie: max(0.0, -0.0) is -0.0). */
#include <immintrin.h>

#include "pk_internal.h"

/* np.maximum(m, v) on 8 lanes: maxps(m, v) is m > v ? m : v, v when either is NaN, so
 * only a NaN in m needs putting back. */
static inline __m256 max_nan8(__m256 m, __m256 v) {
    return _mm256_blendv_ps(_mm256_max_ps(m, v), m, _mm256_cmp_ps(m, m, _CMP_UNORD_Q));
}

/* Even and odd columns of p[0 .. 16), in order. */
static inline void even_odd(const float *p, __m256 *even, __m256 *odd) {
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    /* within each 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6, then the lanes' quarters put
     * in order (a0 a2 a4 a6 b0 b2 b4 b6) */
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

int pk_pool_max2x2_avx2(const float *x, int64_t planes, int64_t height, int64_t width,
                        int64_t oh, int64_t ow, float *y) {
    if (ow < 8) /* rows narrower than a vector: the portable kernel's 4-wide steps */
        return pk_pool_max2x2_scalar(x, planes, height, width, oh, ow, y);
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < oh; i++) {
            const float *r0 = x + p * height * width + 2 * i * width, *r1 = r0 + width;
            float *yo = y + (p * oh + i) * ow;
            for (int64_t j = 0;; j += 8) { /* the last 8 overlap the ones before: no tail */
                if (j + 8 > ow) j = ow - 8;
                __m256 ae, ao, be, bo;
                even_odd(r0 + 2 * j, &ae, &ao);
                even_odd(r1 + 2 * j, &be, &bo);
                _mm256_storeu_ps(yo + j, max_nan8(max_nan8(max_nan8(ae, ao), be), bo));
                if (j + 8 == ow) break;
            }
        }
    return PK_OK;
}
