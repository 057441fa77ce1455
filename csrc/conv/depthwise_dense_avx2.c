/* Depthwise conv2d (in/groups == 1), AVX2 + FMA: stride-1 rows 8 columns at a time from
 * a zero-padded window; other strides per column. Same contract as the scalar file. */
#include <immintrin.h>

#include "conv_internal.h"

struct depthwise_args {
    const float *x;
    int64_t channels;
    int64_t height;
    int64_t width;
    const float *w;
    int64_t out_channels;
    int64_t kh;
    int64_t kw;
    int64_t stride_h;
    int64_t stride_w;
    int64_t dil_h;
    int64_t dil_w;
    int64_t pad_top;
    int64_t pad_left;
    int64_t out_h;
    int64_t out_w;
    const float *bias;
    int activation;
    float *y;
    int64_t hp;
    int64_t wp;
    int64_t mult;
    float *wins;
    int64_t win_floats;
};

/* Output planes pl0..pl1, each through its padded input window. */
static void planes_part(void *ctx, int64_t pl0, int64_t pl1, int worker) {
    const struct depthwise_args *a = ctx;
    const float *x = a->x;
    int64_t channels = a->channels;
    int64_t height = a->height;
    int64_t width = a->width;
    const float *w = a->w;
    int64_t out_channels = a->out_channels;
    int64_t kh = a->kh;
    int64_t kw = a->kw;
    int64_t stride_h = a->stride_h;
    int64_t stride_w = a->stride_w;
    int64_t dil_h = a->dil_h;
    int64_t dil_w = a->dil_w;
    int64_t pad_top = a->pad_top;
    int64_t pad_left = a->pad_left;
    int64_t out_h = a->out_h;
    int64_t out_w = a->out_w;
    const float *bias = a->bias;
    int activation = a->activation;
    float *y = a->y;
    int64_t hp = a->hp;
    int64_t wp = a->wp;
    int64_t mult = a->mult;
    float *wins = a->wins;
    int64_t win_floats = a->win_floats;
    for (int64_t pl = pl0; pl < pl1; pl++) {
        float *win = wins + worker * win_floats;
        const int64_t n = pl / out_channels, o = pl % out_channels;
        pk_conv_window(x + (n * channels + o / mult) * height * width, height, width,
                       pad_top, pad_left, hp, wp, win);
        const float *wo = w + o * kh * kw;
        const float bv = bias ? bias[o] : 0.0f;
        float *yo = y + pl * out_h * out_w;
        for (int64_t oh = 0; oh < out_h; oh++) {
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
                        acc = _mm_fmadd_ss(_mm_load_ss(wo + ky * kw + kx),
                                           _mm_load_ss(r + kx * dil_w), acc);
                }
                yo[oh * out_w + ow] = pk_activate(_mm_cvtss_f32(acc) + bv, activation);
            }
        }
    }
}

int pk_conv_depthwise_avx2(const float *x, int64_t images, int64_t channels, int64_t height,
                           int64_t width, const float *w, int64_t out_channels, int64_t kh,
                           int64_t kw, int64_t stride_h, int64_t stride_w, int64_t dil_h,
                           int64_t dil_w, int64_t pad_top, int64_t pad_left, int64_t out_h,
                           int64_t out_w, const float *bias, int activation, float *y) {
    const int64_t hp = (out_h - 1) * stride_h + (kh - 1) * dil_h + 1;
    const int64_t wp = (out_w - 1) * stride_w + (kw - 1) * dil_w + 1;
    const int64_t mult = out_channels / channels, planes = images * out_channels;
    const int threads = pk_conv_threads((double)planes * out_h * out_w * kh * kw);
    const int64_t win_floats = (hp * wp + 15) / 16 * 16; /* one padded window per worker */
    float *wins = pk_aligned_alloc((size_t)(threads * win_floats) * sizeof(float));
    if (!wins) return PK_ERR_NOMEM;
    struct depthwise_args depthwise_args_ = {x, channels, height, width, w, out_channels, kh,
                                             kw, stride_h, stride_w, dil_h, dil_w, pad_top,
                                             pad_left, out_h, out_w, bias, activation, y, hp,
                                             wp, mult, wins, win_floats};
    pk_parallel_for(threads, planes, 1, planes_part, &depthwise_args_);
    pk_aligned_free(wins);
    return PK_OK;
}
