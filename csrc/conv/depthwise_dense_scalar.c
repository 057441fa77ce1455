/* Depthwise conv2d (in/groups == 1), portable C: one output column at a time. */
#include "conv_internal.h"

static inline void dw_row(const float *win, int64_t wp, const float *wo, int64_t kh,
                          int64_t kw, int64_t stride_h, int64_t stride_w, int64_t dil_h,
                          int64_t dil_w, float bv, int activation, int64_t oh, int64_t out_w,
                          float *yo) {
    for (int64_t ow = 0; ow < out_w; ow++) {
        float acc = 0.0f;
        for (int64_t ky = 0; ky < kh; ky++) {
            const float *r = win + (oh * stride_h + ky * dil_h) * wp + ow * stride_w;
            for (int64_t kx = 0; kx < kw; kx++) acc += wo[ky * kw + kx] * r[kx * dil_w];
        }
        yo[oh * out_w + ow] = pk_activate(acc + bv, activation);
    }
}

#define PK_DW_NAME pk_conv_depthwise_scalar
#include "depthwise_dense_body.h"
