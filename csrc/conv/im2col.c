/* conv2d data movement (portable C, threaded): zero padding, im2col (K rows of
 * spatial positions, for W @ cols) and im2row (a patch per row, for x @ W.T).
 * Python has validated every size before these are called. */
#include <string.h>

#include "conv_internal.h"

struct pad_args {
    const float *x;
    float *xpad;
    int64_t height, width, pad_top, pad_bottom, pad_left, pad_right, hp, wp;
};

/* Planes pl0..pl1 of x, padded. */
static void pad_planes(void *ctx, int64_t pl0, int64_t pl1, int worker) {
    const struct pad_args *a = ctx;
    const int64_t height = a->height, width = a->width, pad_top = a->pad_top;
    const int64_t pad_left = a->pad_left, pad_right = a->pad_right, wp = a->wp;
    for (int64_t pl = pl0; pl < pl1; pl++) {
        const float *src = a->x + pl * height * width;
        float *dst = a->xpad + pl * a->hp * wp;
        memset(dst, 0, (size_t)(pad_top * wp) * sizeof(float));
        for (int64_t h = 0; h < height; h++) {
            float *row = dst + (pad_top + h) * wp;
            memset(row, 0, (size_t)pad_left * sizeof(float));
            memcpy(row + pad_left, src + h * width, (size_t)width * sizeof(float));
            memset(row + pad_left + width, 0, (size_t)pad_right * sizeof(float));
        }
        memset(dst + (pad_top + height) * wp, 0, (size_t)(a->pad_bottom * wp) * sizeof(float));
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
    struct pad_args args = {.x = x, .xpad = xpad, .height = height, .width = width,
                            .pad_top = pad_top, .pad_bottom = pad_bottom, .pad_left = pad_left,
                            .pad_right = pad_right, .hp = hp, .wp = wp};
    pk_parallel_for(pk_conv_threads((double)planes * hp * wp), planes, 1, pad_planes, &args);
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
    float *cols;
    struct pk_conv_geom g;
    int64_t positions, taps;
};

/* Rows r0..r1 of cols: one (channel, tap) each. */
static void im2col_rows(void *ctx, int64_t r0, int64_t r1, int worker) {
    const struct im2col_args *a = ctx;
    const struct pk_conv_geom g = a->g; /* a local copy: the loops read it from registers */
    const int64_t positions = a->positions, taps = a->taps;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t plane = r / taps, ky = (r % taps) / g.kw, kx = r % g.kw;
        const float *src = a->x + plane * g.height * g.width;
        float *dst = a->cols + r * positions;
        int64_t lo, hi;
        valid_cols(kx * g.dil_w - g.pad_left, g.stride_w, g.width, g.out_w, &lo, &hi);
        for (int64_t oh = 0; oh < g.out_h; oh++) {
            float *d = dst + oh * g.out_w;
            const int64_t ih = oh * g.stride_h + ky * g.dil_h - g.pad_top;
            if (ih < 0 || ih >= g.height) {
                memset(d, 0, (size_t)g.out_w * sizeof(float));
                continue;
            }
            const float *s = src + ih * g.width + kx * g.dil_w - g.pad_left;
            memset(d, 0, (size_t)lo * sizeof(float));
            if (g.stride_w == 1) {
                memcpy(d + lo, s + lo, (size_t)(hi - lo) * sizeof(float));
            } else {
                for (int64_t ow = lo; ow < hi; ow++) d[ow] = s[ow * g.stride_w];
            }
            memset(d + hi, 0, (size_t)(g.out_w - hi) * sizeof(float));
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
    struct im2col_args args = {
        .x = x, .cols = cols, .positions = positions, .taps = taps,
        .g = pk_conv_geom_of(channels, height, width, kh, kw, stride_h, stride_w, dil_h, dil_w,
                             pad_top, pad_left, out_h, out_w)};
    pk_parallel_for(pk_conv_threads((double)rows * positions), rows, 1, im2col_rows, &args);
    return PK_OK;
}

struct im2row_args {
    const float *x;
    float *rows;
    struct pk_conv_geom g;
    int64_t c0, cg, k_len;
};

/* Output lines t0..t1: the out_w patch rows of each. */
static void im2row_lines(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct im2row_args *a = ctx;
    const struct pk_conv_geom g = a->g; /* a local copy: the loops read it from registers */
    const int64_t c0 = a->c0, cg = a->cg, k_len = a->k_len;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t n = t / g.out_h, oh = t % g.out_h;
        float *block = a->rows + t * g.out_w * k_len; /* the out_w patch rows of this line */
        for (int64_t c = 0; c < cg; c++) {
            const float *src = a->x + (n * g.channels + c0 + c) * g.height * g.width;
            for (int64_t ky = 0; ky < g.kh; ky++) {
                const int64_t ih = oh * g.stride_h + ky * g.dil_h - g.pad_top;
                for (int64_t kx = 0; kx < g.kw; kx++) {
                    const int64_t k = (c * g.kh + ky) * g.kw + kx;
                    if (ih < 0 || ih >= g.height) {
                        for (int64_t ow = 0; ow < g.out_w; ow++) block[ow * k_len + k] = 0.0f;
                        continue;
                    }
                    int64_t lo, hi;
                    valid_cols(kx * g.dil_w - g.pad_left, g.stride_w, g.width, g.out_w, &lo,
                               &hi);
                    const float *s = src + ih * g.width + kx * g.dil_w - g.pad_left;
                    for (int64_t ow = 0; ow < lo; ow++) block[ow * k_len + k] = 0.0f;
                    for (int64_t ow = lo; ow < hi; ow++)
                        block[ow * k_len + k] = s[ow * g.stride_w];
                    for (int64_t ow = hi; ow < g.out_w; ow++) block[ow * k_len + k] = 0.0f;
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
    struct im2row_args args = {
        .x = x, .rows = rows, .c0 = c0, .cg = cg, .k_len = k_len,
        .g = pk_conv_geom_of(channels, height, width, kh, kw, stride_h, stride_w, dil_h, dil_w,
                             pad_top, pad_left, out_h, out_w)};
    pk_parallel_for(pk_conv_threads((double)tasks * out_w * k_len), tasks, 1, im2row_lines,
                    &args);
    return PK_OK;
}
