/* Public entries of the dispatched conv2d kernels: argument checks, then the
 * implementation the dispatch table holds. Python has validated geometry and that every
 * offset stays inside x; these checks only keep a bad call from crashing. */
#include "conv_internal.h"

static int bad_common(int64_t images, int64_t x_image, int64_t x_row, int64_t out_h,
                      int64_t out_w, int activation) {
    return images < 0 || x_image < 0 || x_row < 0 || out_h < 0 || out_w < 0 ||
           (out_h > 1 && x_row < out_w) || activation < PK_ACT_NONE ||
           activation > PK_ACT_RELU6;
}

int pk_conv_gemm_f32(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                     const int64_t *offsets, int64_t groups, int64_t kg, const float *w,
                     int64_t og, int64_t out_h, int64_t out_w, const float *bias,
                     int activation, float *y) {
    if (bad_common(images, x_image, x_row, out_h, out_w, activation) || groups < 1 ||
        kg < 0 || og < 0)
        return PK_ERR_ARG;
    if (images == 0 || og == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !y || (kg > 0 && (!offsets || !w))) return PK_ERR_ARG;
    return pk_kernels()->conv_gemm(x, images, x_image, x_row, offsets, groups, kg, w, og, out_h,
                                   out_w, bias, activation, y);
}

int pk_conv_csr_f32(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                    const int32_t *indptr, const int64_t *offsets, const float *values,
                    int64_t out_channels, int64_t out_h, int64_t out_w, const float *bias,
                    int activation, float *y) {
    if (bad_common(images, x_image, x_row, out_h, out_w, activation) || out_channels < 0)
        return PK_ERR_ARG;
    if (images == 0 || out_channels == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !y || !indptr) return PK_ERR_ARG;
    if (indptr[out_channels] > 0 && (!offsets || !values)) return PK_ERR_ARG;
    return pk_kernels()->conv_csr(x, images, x_image, x_row, indptr, offsets, values,
                                  out_channels, out_h, out_w, bias, activation, y);
}

int pk_conv_depthwise_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                          int64_t width, const float *w, int64_t out_channels, int64_t kh,
                          int64_t kw, int64_t stride_h, int64_t stride_w, int64_t dil_h,
                          int64_t dil_w, int64_t pad_top, int64_t pad_left, int64_t out_h,
                          int64_t out_w, const float *bias, int activation, float *y) {
    if (images < 0 || channels < 1 || height < 0 || width < 0 || out_channels < 0 ||
        out_channels % channels != 0 || kh < 1 || kw < 1 || stride_h < 1 || stride_w < 1 ||
        dil_h < 1 || dil_w < 1 || pad_top < 0 || pad_left < 0 || out_h < 0 || out_w < 0 ||
        activation < PK_ACT_NONE || activation > PK_ACT_RELU6)
        return PK_ERR_ARG;
    if (images == 0 || out_channels == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !w || !y) return PK_ERR_ARG;
    return pk_kernels()->conv_depthwise(x, images, channels, height, width, w, out_channels, kh,
                                        kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
                                        out_h, out_w, bias, activation, y);
}

int pk_conv_binary_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                       int64_t width, int64_t groups, const uint64_t *wbits,
                       const float *alpha, int64_t out_channels, int64_t kh, int64_t kw,
                       int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                       int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                       const float *bias, int activation, float *y) {
    if (pk_conv_bad_grouped(images, channels, height, width, groups, out_channels, kh, kw,
                            stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                            out_w, activation))
        return PK_ERR_ARG;
    if (kh * kw * ((channels / groups + 63) / 64) > PK_CONV_BINARY_WORDS) return PK_ERR_ARG;
    if (images == 0 || out_channels == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !wbits || !alpha || !y) return PK_ERR_ARG;
    return pk_kernels()->conv_binary(x, images, channels, height, width, groups, wbits, alpha,
                                     out_channels, kh, kw, stride_h, stride_w, dil_h, dil_w,
                                     pad_top, pad_left, out_h, out_w, bias, activation, y);
}
