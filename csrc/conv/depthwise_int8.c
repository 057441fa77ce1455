/* Depthwise conv2d (in/groups == 1) with int8 weights, portable C. Same semantics as the
 * int8 conv kernel (conv_int8_body.h, kernels/conv/reference.py): each image n is quantized once,
 *   s_n = act_scale > 0 ? act_scale : max over the image of |x| / 127      (float32)
 *   q   = clip(rint(x / s_n), -127, 127), 0 when s_n == 0 (round half to even); padding 0
 *   y   = act(float(sum over taps of q * w_q[o, tap]) * (s_n * scale[o]) + bias[o]),
 * exact int32 sums; an image holding NaN or Inf gives NaN everywhere. Each output plane
 * quantizes the padded window of its input channel into a per-thread buffer, then sums
 * whole output rows tap by tap. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "conv_internal.h"

struct absmax_args {
    const float *x;
    int64_t pixels;
    float *chan_max;
    unsigned char *chan_bad;
};

/* Max |x| and a NaN/Inf flag of planes p0..p1 of x. */
static void channel_absmax(void *ctx, int64_t p0, int64_t p1, int worker) {
    const struct absmax_args *a = ctx;
    const float *x = a->x;
    int64_t pixels = a->pixels;
    float *chan_max = a->chan_max;
    unsigned char *chan_bad = a->chan_bad;
    for (int64_t p = p0; p < p1; p++) {
        const float *src = x + p * pixels;
        float amax = 0.0f;
        int bad = 0;
        for (int64_t i = 0; i < pixels; i++) {
            const float a = fabsf(src[i]);
            if (!(a <= FLT_MAX)) bad = 1;
            else if (a > amax) amax = a;
        }
        chan_max[p] = amax;
        chan_bad[p] = (unsigned char)bad;
    }
}

struct planes_args {
    const float *x;
    const int8_t *wq;
    const float *scale;
    const float *bias;
    float *y;
    const float *img_scale;
    const unsigned char *img_bad;
    int32_t *scratch;
    struct pk_conv_geom geom;
    int64_t out_channels, mult, taps, pixels, out_plane, hp, wp, scratch_lanes;
    int activation;
};

/* Output planes pl0..pl1: quantized window, exact integer sums, epilogue. */
static void planes_part(void *ctx, int64_t pl0, int64_t pl1, int worker) {
    const struct planes_args *a = ctx;
    const struct pk_conv_geom geo = a->geom; /* a local copy: the loops read registers */
    const int64_t hp = a->hp, wp = a->wp, taps = a->taps, out_plane = a->out_plane;
    const int activation = a->activation;
    for (int64_t pl = pl0; pl < pl1; pl++) {
        int32_t *win = a->scratch + worker * a->scratch_lanes, *acc = win + hp * wp;
        const int64_t n = pl / a->out_channels, o = pl % a->out_channels;
        float *yo = a->y + pl * out_plane;
        if (a->img_bad[n]) {
            for (int64_t i = 0; i < out_plane; i++) yo[i] = NAN;
            continue;
        }
        const float s = a->img_scale[n];
        const float *src = a->x + (n * geo.channels + o / a->mult) * a->pixels;
        for (int64_t r = 0; r < hp; r++) {
            const int64_t ih = r - geo.pad_top;
            for (int64_t c = 0; c < wp; c++) {
                const int64_t iw = c - geo.pad_left;
                int32_t q = 0;
                if (s > 0.0f && ih >= 0 && ih < geo.height && iw >= 0 && iw < geo.width) {
                    float v = nearbyintf(src[ih * geo.width + iw] / s);
                    v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
                    q = (int32_t)v;
                }
                win[r * wp + c] = q;
            }
        }
        const int8_t *wo = a->wq + o * taps;
        const float mul = s * a->scale[o];
        for (int64_t oh = 0; oh < geo.out_h; oh++) {
            for (int64_t ow = 0; ow < geo.out_w; ow++) acc[ow] = 0;
            for (int64_t ky = 0; ky < geo.kh; ky++) {
                const int32_t *row = win + (oh * geo.stride_h + ky * geo.dil_h) * wp;
                for (int64_t kx = 0; kx < geo.kw; kx++) {
                    const int32_t wv = wo[ky * geo.kw + kx];
                    const int32_t *b = row + kx * geo.dil_w;
                    for (int64_t ow = 0; ow < geo.out_w; ow++) acc[ow] += wv * b[ow * geo.stride_w];
                }
            }
            for (int64_t ow = 0; ow < geo.out_w; ow++) {
                float v = (float)acc[ow] * mul;
                if (a->bias) v = v + a->bias[o];
                yo[oh * geo.out_w + ow] = pk_activate(v, activation);
            }
        }
    }
}

int pk_conv_depthwise_int8_f32(const float *x, int64_t images, int64_t channels,
                               int64_t height, int64_t width, const int8_t *wq,
                               const float *scale, float act_scale, int64_t out_channels,
                               int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                               int64_t dil_h, int64_t dil_w, int64_t pad_top, int64_t pad_left,
                               int64_t out_h, int64_t out_w, const float *bias, int activation,
                               float *y) {
    if (images < 0 || channels < 1 || height < 0 || width < 0 || out_channels < 0 ||
        out_channels % channels != 0 || kh < 1 || kw < 1 || stride_h < 1 || stride_w < 1 ||
        dil_h < 1 || dil_w < 1 || pad_top < 0 || pad_left < 0 || out_h < 0 || out_w < 0 ||
        !(act_scale >= 0.0f) || activation < PK_ACT_NONE || activation > PK_ACT_RELU6)
        return PK_ERR_ARG;
    if ((double)kh * (double)kw * 127.0 * 127.0 >= 2147483647.0) return PK_ERR_OVERFLOW;
    if (images == 0 || out_channels == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !wq || !scale || !y) return PK_ERR_ARG;
    const int64_t mult = out_channels / channels, planes = images * out_channels;
    const int64_t taps = kh * kw, pixels = height * width, out_plane = out_h * out_w;
    /* the padded window the outputs read */
    const int64_t hp = (out_h - 1) * stride_h + (kh - 1) * dil_h + 1;
    const int64_t wp = (out_w - 1) * stride_w + (kw - 1) * dil_w + 1;
    const int nthreads = pk_conv_threads((double)planes * out_plane * taps * 4);

    /* 1. per-channel max |x| and non-finite flags, then one scale per image */
    float *chan_max = malloc((size_t)(images * channels) * sizeof(float));
    unsigned char *chan_bad = malloc((size_t)(images * channels));
    float *img_scale = malloc((size_t)images * sizeof(float));
    unsigned char *img_bad = malloc((size_t)images);
    if (!chan_max || !chan_bad || !img_scale || !img_bad) {
        free(chan_max), free(chan_bad), free(img_scale), free(img_bad);
        return PK_ERR_NOMEM;
    }
    struct absmax_args absmax_args_ = {x, pixels, chan_max, chan_bad};
    pk_parallel_for(nthreads, images * channels, 1, channel_absmax, &absmax_args_);
    for (int64_t n = 0; n < images; n++) {
        float amax = 0.0f;
        int bad = 0;
        for (int64_t c = 0; c < channels; c++) {
            if (chan_max[n * channels + c] > amax) amax = chan_max[n * channels + c];
            bad |= chan_bad[n * channels + c];
        }
        img_bad[n] = (unsigned char)bad;
        img_scale[n] = bad ? 0.0f : (act_scale > 0.0f ? act_scale : amax / 127.0f);
    }
    free(chan_max);
    free(chan_bad);

    /* 2. per output plane: quantize the window, exact integer sums, epilogue */
    /* per worker: a window of hp * wp, then a row of out_w sums */
    const int64_t scratch_lanes = hp * wp + out_w;
    int32_t *scratch = malloc((size_t)(nthreads * scratch_lanes) * sizeof(int32_t));
    if (!scratch) {
        free(img_scale);
        free(img_bad);
        return PK_ERR_NOMEM;
    }
    struct planes_args args = {
        .x = x, .wq = wq, .scale = scale, .bias = bias, .y = y, .img_scale = img_scale,
        .img_bad = img_bad, .scratch = scratch,
        .geom = pk_conv_geom_of(channels, height, width, kh, kw, stride_h, stride_w, dil_h,
                                dil_w, pad_top, pad_left, out_h, out_w),
        .out_channels = out_channels, .mult = mult, .taps = taps, .pixels = pixels,
        .out_plane = out_plane, .hp = hp, .wp = wp, .scratch_lanes = scratch_lanes,
        .activation = activation};
    pk_parallel_for(nthreads, planes, 1, planes_part, &args);
    free(scratch);
    free(img_scale);
    free(img_bad);
    return PK_OK;
}
