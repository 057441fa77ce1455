/* conv2d data movement (portable C, threaded): zero padding, im2col (K rows of
 * spatial positions, for W @ cols) and im2row (a patch per row, for x @ W.T).
 * Python has validated every size before these are called. */
#include <string.h>

#include "conv_internal.h"

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
#pragma omp parallel for schedule(static) num_threads(pk_conv_threads((double)planes * hp * wp))
    for (int64_t pl = 0; pl < planes; pl++) {
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
#pragma omp parallel for schedule(static) num_threads(pk_conv_threads((double)rows * positions))
    for (int64_t r = 0; r < rows; r++) {
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
    return PK_OK;
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
#pragma omp parallel for schedule(static) num_threads(pk_conv_threads((double)tasks * out_w * k_len))
    for (int64_t t = 0; t < tasks; t++) {
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
    return PK_OK;
}
