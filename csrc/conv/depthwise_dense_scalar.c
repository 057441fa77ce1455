/* Depthwise conv2d (in/groups == 1), portable C: each output plane o reads input
 * plane o / (out_channels / channels) through a zero-padded window copied once. */
#include "conv_internal.h"

int pk_conv_depthwise_scalar(const float *x, int64_t images, int64_t channels,
                             int64_t height, int64_t width, const float *w,
                             int64_t out_channels, int64_t kh, int64_t kw, int64_t stride_h,
                             int64_t stride_w, int64_t dil_h, int64_t dil_w, int64_t pad_top,
                             int64_t pad_left, int64_t out_h, int64_t out_w, const float *bias,
                             int activation, float *y) {
    const int64_t hp = (out_h - 1) * stride_h + (kh - 1) * dil_h + 1;
    const int64_t wp = (out_w - 1) * stride_w + (kw - 1) * dil_w + 1;
    const int64_t mult = out_channels / channels, planes = images * out_channels;
    int status = PK_OK;
#pragma omp parallel num_threads(pk_conv_threads((double)planes * out_h * out_w * kh * kw))
    {
        float *win = pk_aligned_alloc((size_t)(hp * wp) * sizeof(float));
        if (!win) {
#pragma omp atomic write
            status = PK_ERR_NOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            if (!win) continue;
            const int64_t n = pl / out_channels, o = pl % out_channels;
            pk_conv_window(x + (n * channels + o / mult) * height * width, height, width,
                           pad_top, pad_left, hp, wp, win);
            const float *wo = w + o * kh * kw;
            const float bv = bias ? bias[o] : 0.0f;
            float *yo = y + pl * out_h * out_w;
            for (int64_t oh = 0; oh < out_h; oh++) {
                for (int64_t ow = 0; ow < out_w; ow++) {
                    float acc = 0.0f;
                    for (int64_t ky = 0; ky < kh; ky++) {
                        const float *r = win + (oh * stride_h + ky * dil_h) * wp + ow * stride_w;
                        for (int64_t kx = 0; kx < kw; kx++) acc += wo[ky * kw + kx] * r[kx * dil_w];
                    }
                    yo[oh * out_w + ow] = pk_activate(acc + bv, activation);
                }
            }
        }
        pk_aligned_free(win);
    }
    return status;
}
