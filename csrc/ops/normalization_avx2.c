/* Softmax and LayerNorm over the last axis, AVX2/FMA, row by row; the last cols % 8
 * elements of a row go through a padded buffer. Special values as in
 * normalization_scalar.c. */
#include "ops/eltwise_avx2.h"

/* The last n < 8 elements of a row in a buffer padded with `pad`. */
static inline __m256 load_tail(const float *x, int64_t n, float pad) {
    float buf[8];
    for (int i = 0; i < 8; i++) buf[i] = i < n ? x[i] : pad;
    return _mm256_loadu_ps(buf);
}

static inline void store_tail(float *y, int64_t n, __m256 v) {
    float buf[8];
    _mm256_storeu_ps(buf, v);
    memcpy(y, buf, (size_t)n * sizeof(float));
}

/* max of a row; NaN when it holds one, as np.max. */
static float row_max(const float *x, int64_t cols) {
    __m256 vmax = _mm256_set1_ps(-INFINITY), vnan = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= cols; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        vmax = _mm256_max_ps(vmax, v);
    }
    if (i < cols) {
        const __m256 v = load_tail(x + i, cols - i, -INFINITY);
        vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        vmax = _mm256_max_ps(vmax, v);
    }
    return _mm256_movemask_ps(vnan) ? __builtin_nanf("") : pk_hmax8(vmax);
}

int pk_softmax_avx2(const float *x, int64_t rows, int64_t cols, float *y) {
    for (int64_t r = 0; r < rows; r++, x += cols, y += cols) {
        const __m256 m = _mm256_set1_ps(row_max(x, cols)), zero = _mm256_setzero_ps();
        __m256 vsum = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= cols; i += 8) {
            const __m256 e = pk_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), zero);
            _mm256_storeu_ps(y + i, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        if (i < cols) { /* padding -Inf gives e = 0 (or NaN in a row that is NaN anyway) */
            const __m256 e = pk_exp8(_mm256_sub_ps(load_tail(x + i, cols - i, -INFINITY), m),
                                     zero);
            store_tail(y + i, cols - i, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        const __m256 inv = _mm256_set1_ps(1.0f / pk_hsum8(vsum));
        for (i = 0; i + 8 <= cols; i += 8)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), inv));
        for (; i < cols; i++) y[i] *= _mm256_cvtss_f32(inv);
    }
    return PK_OK;
}

int pk_layer_norm_avx2(const float *x, int64_t rows, int64_t cols, const float *scale,
                       const float *bias, float eps, float *y) {
    const float inv_n = 1.0f / (float)cols;
    for (int64_t r = 0; r < rows; r++, x += cols, y += cols) {
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= cols; i += 16) {
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
        }
        for (; i + 8 <= cols; i += 8) s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
        if (i < cols) s1 = _mm256_add_ps(s1, load_tail(x + i, cols - i, 0.0f));
        const float mean = pk_hsum8(_mm256_add_ps(s0, s1)) * inv_n;
        const __m256 vmean = _mm256_set1_ps(mean);
        s0 = _mm256_setzero_ps();
        s1 = _mm256_setzero_ps();
        for (i = 0; i + 16 <= cols; i += 16) {
            const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vmean);
            const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmean);
            s0 = _mm256_fmadd_ps(d0, d0, s0);
            s1 = _mm256_fmadd_ps(d1, d1, s1);
        }
        for (; i + 8 <= cols; i += 8) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vmean);
            s0 = _mm256_fmadd_ps(d, d, s0);
        }
        if (i < cols) { /* padding with the mean adds 0 (NaN in a row that is NaN anyway) */
            const __m256 d = _mm256_sub_ps(load_tail(x + i, cols - i, mean), vmean);
            s1 = _mm256_fmadd_ps(d, d, s1);
        }
        const float var = pk_hsum8(_mm256_add_ps(s0, s1)) * inv_n;
        const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(var + eps));
        for (i = 0; i + 8 <= cols; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmean), rstd);
            if (scale) v = _mm256_mul_ps(v, _mm256_loadu_ps(scale + i));
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
            _mm256_storeu_ps(y + i, v);
        }
        for (; i < cols; i++) {
            float v = (x[i] - mean) * _mm256_cvtss_f32(rstd);
            if (scale) v *= scale[i];
            if (bias) v += bias[i];
            y[i] = v;
        }
    }
    return PK_OK;
}
