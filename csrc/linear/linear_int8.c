/* Public entry of the int8 linear kernel (argument checks, then the dispatched
 * implementation) and the portable row quantizer that int8 and int4 share. The Python
 * side has already validated the packed weights. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "pk_internal.h"

/* 127 * 127 * in must fit int32 (exact accumulation). */
#define PK_INT8_MAX_IN 133144

int pk_quant_check_args(const float *x, int64_t batch, int64_t in_features,
                        const void *packed, const float *scale, int64_t out_features,
                        float act_scale, int activation, float *y) {
    if (batch < 0 || in_features < 0 || out_features < 0) return PK_ERR_ARG;
    if (activation < PK_ACT_NONE || activation > PK_ACT_RELU6) return PK_ERR_ARG;
    if (!(act_scale >= 0.0f && act_scale <= FLT_MAX)) return PK_ERR_ARG; /* NaN too */
    if (batch == 0 || out_features == 0) return PK_OK;
    if (!x || !packed || !scale || !y) return PK_ERR_ARG;
    return 1; /* work to do */
}

int pk_linear_int8_f32(const float *x, int64_t batch, int64_t in_features,
                       const int8_t *packed, const float *scale, int64_t out_features,
                       float act_scale, const float *bias, int activation, float *y) {
    int status = pk_quant_check_args(x, batch, in_features, packed, scale, out_features, act_scale,
                              activation, y);
    if (status != 1) return status;
    if (in_features > PK_INT8_MAX_IN) return PK_ERR_OVERFLOW;
    if (out_features > INT32_MAX || batch > INT32_MAX) return PK_ERR_OVERFLOW;
    return pk_kernels()->linear_int8(x, batch, in_features, packed, scale, out_features,
                                     act_scale, bias, activation, y);
}

/* One row: q[0..ldq) = clip(rint(x / s), -127, 127) zero padded past in, with
 * s = act_scale (static) or max|x| / 127 (dynamic); a non-finite row is all zero and
 * flagged bad (its outputs become NaN). */
void pk_quantize_row_scalar(const float *x, int64_t in, int64_t ldq, float act_scale,
                            int8_t *q, float *scale, unsigned char *bad) {
    float amax = 0.0f;
    int nonfinite = 0;
    for (int64_t k = 0; k < in; k++) {
        float a = fabsf(x[k]);
        if (!(a <= FLT_MAX)) nonfinite = 1;
        else if (a > amax) amax = a;
    }
    memset(q, 0, (size_t)ldq);
    *bad = (unsigned char)nonfinite;
    if (nonfinite) {
        *scale = 0.0f;
        return;
    }
    float s = act_scale > 0.0f ? act_scale : amax / 127.0f;
    *scale = s;
    if (!(s > 0.0f)) return; /* zero row (or amax/127 underflowed): q = 0, y = bias */
    for (int64_t k = 0; k < in; k++) {
        float r = nearbyintf(x[k] / s); /* the default mode rounds half to even */
        r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
        q[k] = (int8_t)r;
    }
}

int pk_quantize_rows_scalar(const float *x, int64_t batch, int64_t in, int64_t ldq,
                            float act_scale, pk_quant_rows *rows) {
    void *parts[3];
    const size_t bytes[3] = {(size_t)(batch * ldq), (size_t)batch * sizeof(float),
                             (size_t)batch};
    if (!pk_alloc_parts(3, bytes, parts)) return 0;
    rows->q = parts[0], rows->scale = parts[1], rows->bad = parts[2];
    for (int64_t b = 0; b < batch; b++)
        pk_quantize_row_scalar(x + b * in, in, ldq, act_scale, rows->q + b * ldq,
                               rows->scale + b, rows->bad + b);
    return 1;
}
