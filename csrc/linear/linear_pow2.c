/* Public entry of the power-of-two linear kernel: argument checks, the dynamic int8
 * quantization of activations (the same in every ISA variant, the rule of the int8
 * encoding), then the dispatched implementation. The Python side has already validated
 * the codes (no code 8, zero padding nibble). */
#include <math.h>

#include "pk_internal.h"

/* Largest in_features whose int8-path int32 accumulation cannot overflow: 127*64*in. */
#define POW2_MAX_IN_INT8 264208

struct quant_args {
    const float *x;
    int64_t in_features, stride;
    int8_t *q;
    float *scale;
    unsigned char *bad;
};

static void quantize_part(void *ctx, int64_t b0, int64_t b1, int worker) {
    const struct quant_args *a = ctx;
    for (int64_t b = b0; b < b1; b++)
        pk_quantize_row_scalar(a->x + b * a->in_features, a->in_features, a->stride, 0.0f,
                               a->q + b * a->stride, a->scale + b, a->bad + b);
}

int pk_linear_pow2_f32(const float *x, int64_t batch, int64_t in_features,
                       const uint8_t *codes, const float *alpha, int64_t out_features,
                       int int8_activations, const float *bias, int activation, float *y) {
    if (batch < 0 || in_features < 0 || out_features < 0) return PK_ERR_ARG;
    if (activation < PK_ACT_NONE || activation > PK_ACT_RELU6) return PK_ERR_ARG;
    if (int8_activations != 0 && int8_activations != 1) return PK_ERR_ARG;
    if (in_features > ((int64_t)1 << 40)) return PK_ERR_OVERFLOW;
    if (int8_activations && in_features > POW2_MAX_IN_INT8) return PK_ERR_OVERFLOW;
    if (batch == 0 || out_features == 0) return PK_OK;
    if (!x || !alpha || !y || (in_features > 0 && !codes)) return PK_ERR_ARG;
    const struct pk_functable *kernels = pk_kernels(); /* once per call */
    if (!int8_activations)
        return kernels->linear_pow2(x, NULL, NULL, 0, batch, in_features, codes, alpha,
                                    out_features, bias, activation, y);
    /* rows padded to a multiple of 64 with zeros, so SIMD variants may over-read */
    const int64_t stride = (in_features + 63) / 64 * 64;
    void *parts[3];
    const size_t bytes[3] = {(size_t)(batch * stride),
                             (size_t)batch * sizeof(float),
                             (size_t)batch};
    if (!pk_alloc_parts(3, bytes, parts)) return PK_ERR_NOMEM;
    int8_t *q = parts[0];
    float *scale = parts[1];
    unsigned char *bad = parts[2];
    struct quant_args a = {x, in_features, stride, q, scale, bad};
    pk_parallel_for(batch > 8 ? pk_threads() : 1, batch, 1, quantize_part, &a);
    const int status = kernels->linear_pow2(x, q, scale, stride, batch, in_features, codes,
                                            alpha, out_features, bias, activation, y);
    /* rows holding NaN or Inf give NaN outputs (as the int8 encoding does) */
    for (int64_t b = 0; b < batch; b++)
        if (bad[b])
            for (int64_t o = 0; o < out_features; o++) y[b * out_features + o] = NAN;
    pk_aligned_free(parts[0]);
    return status;
}
