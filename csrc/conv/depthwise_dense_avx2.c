/* Depthwise conv2d (in/groups == 1), AVX2 + FMA: stride-1 rows 8 columns at a time from
 * a zero-padded window; other strides per column. Same contract as the scalar file. */
#include <immintrin.h>

#include "conv_internal.h"

static inline void dw_row(const float *win, int64_t wp, const float *wo, int64_t kh,
                          int64_t kw, int64_t stride_h, int64_t stride_w, int64_t dil_h,
                          int64_t dil_w, float bv, int activation, int64_t oh, int64_t out_w,
                          float *yo) {
    const float *rows = win + oh * stride_h * wp;
    int64_t ow = 0;
    if (stride_w == 1) {
        const __m256 b = _mm256_set1_ps(bv), zero = _mm256_setzero_ps();
        for (; ow + 8 <= out_w; ow += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t ky = 0; ky < kh; ky++) {
                const float *r = rows + ky * dil_h * wp + ow;
                for (int64_t kx = 0; kx < kw; kx++)
                    acc = _mm256_fmadd_ps(_mm256_broadcast_ss(wo + ky * kw + kx),
                                          _mm256_loadu_ps(r + kx * dil_w), acc);
            }
            acc = _mm256_add_ps(acc, b);
            if (activation == PK_ACT_RELU) acc = _mm256_max_ps(zero, acc);
            if (activation == PK_ACT_RELU6)
                acc = _mm256_min_ps(_mm256_set1_ps(6.0f), _mm256_max_ps(zero, acc));
            _mm256_storeu_ps(yo + oh * out_w + ow, acc);
        }
    }
    for (; ow < out_w; ow++) {
        __m128 acc = _mm_setzero_ps();
        for (int64_t ky = 0; ky < kh; ky++) {
            const float *r = rows + ky * dil_h * wp + ow * stride_w;
            for (int64_t kx = 0; kx < kw; kx++)
                acc = _mm_fmadd_ss(_mm_load_ss(wo + ky * kw + kx), _mm_load_ss(r + kx * dil_w),
                                   acc);
        }
        yo[oh * out_w + ow] = pk_activate(_mm_cvtss_f32(acc) + bv, activation);
    }
}

#define PK_DW_NAME pk_conv_depthwise_avx2
#include "depthwise_dense_body.h"
