/* Public entry of the int4 linear kernel: argument checks, then the dispatched
 * implementation. The Python side has already validated the packed weights. */
#include "pk_internal.h"

int pk_linear_int4_f32(const float *x, int64_t batch, int64_t in_features,
                       const uint8_t *packed, const float *scale, int64_t out_features,
                       int group_size, float act_scale, const float *bias, int activation,
                       float *y) {
    if (group_size != 32 && group_size != 64 && group_size != 128) return PK_ERR_ARG;
    int status = pk_quant_check_args(x, batch, in_features, packed, scale, out_features, act_scale,
                              activation, y);
    if (status != 1) return status;
    if (in_features > INT32_MAX - 256) return PK_ERR_OVERFLOW;
    if (out_features > INT32_MAX || batch > INT32_MAX) return PK_ERR_OVERFLOW;
    return pk_kernels()->linear_int4(x, batch, in_features, packed, scale, out_features,
                                     group_size, act_scale, bias, activation, y);
}
