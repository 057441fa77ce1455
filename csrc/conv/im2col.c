/* conv2d data movement (portable C, threaded): zero padding, im2col (K rows of
 * spatial positions, for W @ cols) and im2row (a patch per row, for x @ W.T).
 * Python has validated every size before these are called. */
#include <string.h>

#include "conv_internal.h"

struct pad_args {
    const float *x;
    int64_t height;
    int64_t width;
    int64_t pad_top;
    int64_t pad_bottom;
    int64_t pad_left;
    int64_t pad_right;
    float *xpad;
    int64_t hp;
    int64_t wp;
};

/* Planes pl0..pl1 of x, padded. */
static void pad_planes(void *ctx, int64_t pl0, int64_t pl1, int worker) {
    const struct pad_args *a = ctx;
    const float *x = a->x;
    int64_t height = a->height;
    int64_t width = a->width;
    int64_t pad_top = a->pad_top;
    int64_t pad_bottom = a->pad_bottom;
    int64_t pad_left = a->pad_left;
    int64_t pad_right = a->pad_right;
    float *xpad = a->xpad;
    int64_t hp = a->hp;
    int64_t wp = a->wp;
    for (int64_t pl = pl0; pl < pl1; pl++) {
        const float *src = x + pl * height * width;
        float *dst = xpad + pl * hp * wp;
        memset(dst, 0, (size_t)(pad_top * wp) * sizeof(float));
        for (int64_t h = 0; h < height; h++) {
            float *row = dst + (pad_top + h) * wp;
            memset(row, 0, (size_t)pad_left * sizeof(float));
            memcpy(row + pad_left, src + h * width, (size_t)width * sizeof(float));
            memset(row + pad_left + width, 0, (size_t)pad_right * sizeof(float));
        }
        memset(dst + (pad_top + height) * wp, 0, (size_t)(pad_bottom * wp) * sizeof(float));
    }
}

int pk_conv_pad_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                    int64_t width, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                    int64_t pad_right, float *xpad) {
    if (images < 0 || channels < 0 || height < 0 || width < 0 || pad_top < 0 ||
        pad_bottom < 0 || pad_left < 0 || pad_right < 0)
        return PK_ERR_ARG;
    if (images == 0 || channels == 0) return PK_OK;
    if (!x || !xpad) return PK_ERR_ARG;
    const int64_t hp = height + pad_top + pad_bottom, wp = width + pad_left + pad_right;
    const int64_t planes = images * channels;
    struct pad_args pad_args_ = {x, height, width, pad_top, pad_bottom, pad_left, pad_right,
                                 xpad, hp, wp};
    pk_parallel_for(pk_conv_threads((double)planes * hp * wp), planes, 1, pad_planes,
                    &pad_args_);
    return PK_OK;
}

/* First and one-past-last output column whose input column ow*s + off lies in [0, w). */
static void valid_cols(int64_t off, int64_t s, int64_t w, int64_t out_w, int64_t *lo,
                       int64_t *hi) {
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = w - off <= 0 ? 0 : (w - off + s - 1) / s;
    if (b > out_w) b = out_w;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

struct im2col_args {
    const float *x;
    int64_t height;
    int64_t width;
    int64_t kw;
    int64_t stride_h;
    int64_t stride_w;
    int64_t dil_h;
    int64_t dil_w;
    int64_t pad_top;
    int64_t pad_left;
    int64_t out_h;
    int64_t out_w;
    float *cols;
    int64_t positions;
    int64_t taps;
};

/* Rows r0..r1 of cols: one (channel, tap) each. */
static void im2col_rows(void *ctx, int64_t r0, int64_t r1, int worker) {
    const struct im2col_args *a = ctx;
    const float *x = a->x;
    int64_t height = a->height;
    int64_t width = a->width;
    int64_t kw = a->kw;
    int64_t stride_h = a->stride_h;
    int64_t stride_w = a->stride_w;
    int64_t dil_h = a->dil_h;
    int64_t dil_w = a->dil_w;
    int64_t pad_top = a->pad_top;
    int64_t pad_left = a->pad_left;
    int64_t out_h = a->out_h;
    int64_t out_w = a->out_w;
    float *cols = a->cols;
    int64_t positions = a->positions;
    int64_t taps = a->taps;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t plane = r / taps, ky = (r % taps) / kw, kx = r % kw;
        const float *src = x + plane * height * width;
        float *dst = cols + r * positions;
        int64_t lo, hi;
        valid_cols(kx * dil_w - pad_left, stride_w, width, out_w, &lo, &hi);
        for (int64_t oh = 0; oh < out_h; oh++) {
            float *d = dst + oh * out_w;
            const int64_t ih = oh * stride_h + ky * dil_h - pad_top;
            if (ih < 0 || ih >= height) {
                memset(d, 0, (size_t)out_w * sizeof(float));
                continue;
            }
            const float *s = src + ih * width + kx * dil_w - pad_left;
            memset(d, 0, (size_t)lo * sizeof(float));
            if (stride_w == 1) {
                memcpy(d + lo, s + lo, (size_t)(hi - lo) * sizeof(float));
            } else {
                for (int64_t ow = lo; ow < hi; ow++) d[ow] = s[ow * stride_w];
            }
            memset(d + hi, 0, (size_t)(out_w - hi) * sizeof(float));
        }
    }
}

int pk_im2col_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                  int64_t width, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                  int64_t dil_h, int64_t dil_w, int64_t pad_top, int64_t pad_left,
                  int64_t out_h, int64_t out_w, float *cols) {
    if (images < 0 || channels < 0 || height < 0 || width < 0 || kh < 1 || kw < 1 ||
        stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1 || out_h < 0 || out_w < 0)
        return PK_ERR_ARG;
    if (images == 0 || channels == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !cols) return PK_ERR_ARG;
    const int64_t positions = out_h * out_w, taps = kh * kw;
    const int64_t rows = images * channels * taps;
    struct im2col_args im2col_args_ = {x, height, width, kw, stride_h, stride_w, dil_h, dil_w,
                                       pad_top, pad_left, out_h, out_w, cols, positions, taps};
    pk_parallel_for(pk_conv_threads((double)rows * positions), rows, 1, im2col_rows,
                    &im2col_args_);
    return PK_OK;
}

struct im2row_args {
    const float *x;
    int64_t channels;
    int64_t height;
    int64_t width;
    int64_t c0;
    int64_t cg;
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
    float *rows;
    int64_t k_len;
};

/* Output lines t0..t1: the out_w patch rows of each. */
static void im2row_lines(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct im2row_args *a = ctx;
    const float *x = a->x;
    int64_t channels = a->channels;
    int64_t height = a->height;
    int64_t width = a->width;
    int64_t c0 = a->c0;
    int64_t cg = a->cg;
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
    float *rows = a->rows;
    int64_t k_len = a->k_len;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t n = t / out_h, oh = t % out_h;
        float *block = rows + t * out_w * k_len; /* the out_w patch rows of this line */
        for (int64_t c = 0; c < cg; c++) {
            const float *src = x + (n * channels + c0 + c) * height * width;
            for (int64_t ky = 0; ky < kh; ky++) {
                const int64_t ih = oh * stride_h + ky * dil_h - pad_top;
                for (int64_t kx = 0; kx < kw; kx++) {
                    const int64_t k = (c * kh + ky) * kw + kx;
                    if (ih < 0 || ih >= height) {
                        for (int64_t ow = 0; ow < out_w; ow++) block[ow * k_len + k] = 0.0f;
                        continue;
                    }
                    int64_t lo, hi;
                    valid_cols(kx * dil_w - pad_left, stride_w, width, out_w, &lo, &hi);
                    const float *s = src + ih * width + kx * dil_w - pad_left;
                    for (int64_t ow = 0; ow < lo; ow++) block[ow * k_len + k] = 0.0f;
                    for (int64_t ow = lo; ow < hi; ow++) block[ow * k_len + k] = s[ow * stride_w];
                    for (int64_t ow = hi; ow < out_w; ow++) block[ow * k_len + k] = 0.0f;
                }
            }
        }
    }
}

int pk_im2row_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                  int64_t width, int64_t c0, int64_t cg, int64_t kh, int64_t kw,
                  int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                  int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                  float *rows) {
    if (images < 0 || channels < 0 || height < 0 || width < 0 || kh < 1 || kw < 1 ||
        stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1 || out_h < 0 || out_w < 0 ||
        c0 < 0 || cg < 0 || c0 + cg > channels)
        return PK_ERR_ARG;
    if (images == 0 || cg == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !rows) return PK_ERR_ARG;
    const int64_t k_len = cg * kh * kw, tasks = images * out_h;
    struct im2row_args im2row_args_ = {x, channels, height, width, c0, cg, kh, kw, stride_h,
                                       stride_w, dil_h, dil_w, pad_top, pad_left, out_h, out_w,
                                       rows, k_len};
    pk_parallel_for(pk_conv_threads((double)tasks * out_w * k_len), tasks, 1, im2row_lines,
                    &im2row_args_);
    return PK_OK;
}
