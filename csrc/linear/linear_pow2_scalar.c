/* Power-of-two linear, portable C. Float activations: acc += x * v[code] where v holds
 * the 16 code values +-2^-e and 0 -- a lookup of the powers rather than exponent-field
 * arithmetic: the product by a power of two is exact, costs the same as an add on the
 * CPUs we target, and keeps zero, subnormal, Inf and NaN activations identical to the
 * reference without special cases. int8 activations: acc += +-(q << (6 - e)), exact
 * int32 shifts and adds, then one float scale. */
#include "linear/linear_pow2_codes.h"
#include "pk_internal.h"

struct pow2_args {
    const float *x;
    const int8_t *xq;
    const float *xscale;
    int64_t xq_stride, batch, in_features, row_bytes, out_features;
    const uint8_t *codes;
    const float *alpha, *bias;
    int activation;
    float *y;
};

static void rows(void *ctx, int64_t o0, int64_t o1, int worker) {
    const struct pow2_args *a = ctx;
    const int64_t in_features = a->in_features;
    for (int64_t o = o0; o < o1; o++) {
        const uint8_t *wrow = a->codes + o * a->row_bytes;
        const float add = a->bias ? a->bias[o] : 0.0f;
        for (int64_t b = 0; b < a->batch; b++) {
            float v;
            if (a->xq) {
                const int8_t *qr = a->xq + b * a->xq_stride;
                int32_t acc = 0;
                for (int64_t k = 0; k < in_features; k++) {
                    const int c = code_at(wrow, k), field = c & 7;
                    if (!field) continue;
                    const int32_t t = (int32_t)qr[k] * (1 << (7 - field)); /* q << (6 - e) */
                    acc += (c & 8) ? -t : t;
                }
                v = ((a->alpha[o] * a->xscale[b]) * (float)acc) * 0.015625f;
            } else {
                const float *xr = a->x + b * in_features;
                float acc = 0.0f;
                for (int64_t k = 0; k < in_features; k++) acc += xr[k] * pow2_values[code_at(wrow, k)];
                v = a->alpha[o] * acc;
            }
            a->y[b * a->out_features + o] = pk_activate(v + add, a->activation);
        }
    }
}

int pk_linear_pow2_scalar(const float *x, const int8_t *xq, const float *xscale,
                          int64_t xq_stride, int64_t batch, int64_t in_features,
                          const uint8_t *codes, const float *alpha, int64_t out_features,
                          const float *bias, int activation, float *y) {
    struct pow2_args a = {x, xq, xscale, xq_stride, batch, in_features,
                          (in_features + 1) / 2, out_features, codes, alpha, bias, activation, y};
    pk_parallel_for(pk_threads_for((double)batch * out_features * in_features), out_features, 8,
                    rows, &a);
    return PK_OK;
}
