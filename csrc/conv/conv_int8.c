/* Public entry of the int8 conv2d kernel (groups < channels): argument checks, then the
 * implementation the dispatch table holds (conv_int8_scalar.c, conv_int8_avx2.c).
 * kernels/conv/shapes.py validates every size first; these checks only keep a bad call from
 * crashing or overflowing. */
#include "conv_internal.h"

int pk_conv_int8_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                     int64_t width, int64_t groups, const int32_t *w, const float *scale,
                     float act_scale, int64_t out_channels, int64_t kh, int64_t kw,
                     int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                     int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                     const float *bias, int activation, float *y) {
    if (pk_conv_bad_grouped(images, channels, height, width, groups, out_channels, kh, kw,
                            stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, out_h,
                            out_w, activation) ||
        !(act_scale >= 0.0f))
        return PK_ERR_ARG;
    /* exact int32 sums: 127 * 127 * (cg * kh * kw) < 2^31 */
    const double k_len = (double)(channels / groups) * (double)kh * (double)kw;
    if (k_len * 127.0 * 127.0 >= 2147483647.0) return PK_ERR_OVERFLOW;
    if (images == 0 || out_channels == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !w || !scale || !y) return PK_ERR_ARG;
    /* the quantized image buffer must stay addressable */
    const double sh = out_h == 1 ? 1 : stride_h, sw = out_w == 1 ? 1 : stride_w; /* as used */
    const double hp = (double)(out_h - 1) * sh + (double)(kh - 1) * dil_h + 1;
    const double wp = (double)(out_w - 1) * sw + (double)(kw - 1) * dil_w + 1;
    if ((double)channels * (hp + sh) * (wp + sw) > 4.0e15) return PK_ERR_ARG;
    return pk_kernels()->conv_int8(x, images, channels, height, width, groups, w, scale,
                                   act_scale, out_channels, kh, kw, stride_h, stride_w, dil_h,
                                   dil_w, pad_top, pad_left, out_h, out_w, bias, activation, y);
}
