/* Depthwise conv2d (in/groups == 1) with int8 weights, portable C. Same arithmetic as the
 * int8 linear kernels applied to each patch row (kernels/encodings/int8.py, quant.py):
 *   s   = act_scale > 0 ? act_scale : max|patch| / 127       (float32; padding is 0)
 *   q_k = clip(rint(x_k / s), -127, 127), 0 when s == 0       (round half to even)
 *   y   = act(float(sum_k q_k * w_q[o, k]) * (s * scale[o]) + bias[o]), exact int32 sum;
 * a patch holding NaN or Inf gives NaN. */
#include <math.h>

#include "conv_internal.h"

int pk_conv_depthwise_int8_f32(const float *x, int64_t images, int64_t channels,
                               int64_t height, int64_t width, const int8_t *wq,
                               const float *scale, float act_scale, int64_t out_channels,
                               int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                               int64_t dil_h, int64_t dil_w, int64_t pad_top, int64_t pad_left,
                               int64_t out_h, int64_t out_w, const float *bias, int activation,
                               float *y) {
    if (images < 0 || channels < 1 || height < 0 || width < 0 || out_channels < 0 ||
        out_channels % channels != 0 || kh < 1 || kw < 1 || kh * kw > 1024 || stride_h < 1 ||
        stride_w < 1 || dil_h < 1 || dil_w < 1 || pad_top < 0 || pad_left < 0 || out_h < 0 ||
        out_w < 0 || !(act_scale >= 0.0f) || activation < PK_ACT_NONE ||
        activation > PK_ACT_RELU6)
        return PK_ERR_ARG;
    if (images == 0 || out_channels == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !wq || !scale || !y) return PK_ERR_ARG;
    const int64_t mult = out_channels / channels, planes = images * out_channels;
    const int64_t taps = kh * kw;
#pragma omp parallel for schedule(static) \
    num_threads(pk_conv_threads((double)planes * out_h * out_w * taps * 4))
    for (int64_t pl = 0; pl < planes; pl++) {
        const int64_t n = pl / out_channels, o = pl % out_channels;
        const float *src = x + (n * channels + o / mult) * height * width;
        const int8_t *wo = wq + o * taps;
        float patch[1024];
        for (int64_t oh = 0; oh < out_h; oh++) {
            for (int64_t ow = 0; ow < out_w; ow++) {
                float amax = 0.0f;
                int bad = 0;
                for (int64_t ky = 0; ky < kh; ky++) {
                    const int64_t ih = oh * stride_h + ky * dil_h - pad_top;
                    for (int64_t kx = 0; kx < kw; kx++) {
                        const int64_t iw = ow * stride_w + kx * dil_w - pad_left;
                        float v = 0.0f;
                        if (ih >= 0 && ih < height && iw >= 0 && iw < width) v = src[ih * width + iw];
                        patch[ky * kw + kx] = v;
                        if (!isfinite(v)) bad = 1;
                        const float a = fabsf(v);
                        if (a > amax) amax = a;
                    }
                }
                float s = act_scale > 0.0f ? act_scale : amax / 127.0f;
                if (bad) s = 0.0f;
                int32_t acc = 0;
                if (s > 0.0f) {
                    for (int64_t k = 0; k < taps; k++) {
                        float r = nearbyintf(patch[k] / s);
                        r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
                        acc += (int32_t)r * (int32_t)wo[k];
                    }
                }
                float v = (float)acc * (s * scale[o]);
                if (bad) v = NAN;
                if (bias) v += bias[o];
                y[(pl * out_h + oh) * out_w + ow] = pk_activate(v, activation);
            }
        }
    }
    return PK_OK;
}
