/* Power-of-two linear, portable C. Float activations: acc += x * v[code] where v holds
 * the 16 code values +-2^-e and 0 -- a lookup of the powers rather than exponent-field
 * arithmetic: the product by a power of two is exact, costs the same as an add on the
 * CPUs we target, and keeps zero, subnormal, Inf and NaN activations identical to the
 * reference without special cases. int8 activations: acc += +-(q << (6 - e)), exact
 * int32 shifts and adds, then one float scale. */
#include "linear/linear_pow2_codes.h"
#include "pk_internal.h"

int pk_linear_pow2_scalar(const float *x, const int8_t *xq, const float *xscale,
                          int64_t xq_stride, int64_t batch, int64_t in_features,
                          const uint8_t *codes, const float *alpha, int64_t out_features,
                          const float *bias, int activation, float *y) {
    const int64_t row_bytes = (in_features + 1) / 2;
#pragma omp parallel for schedule(static) num_threads(pk_threads_for((double)batch * out_features * in_features))
    for (int64_t o = 0; o < out_features; o++) {
        const uint8_t *wrow = codes + o * row_bytes;
        const float add = bias ? bias[o] : 0.0f;
        for (int64_t b = 0; b < batch; b++) {
            float v;
            if (xq) {
                const int8_t *qr = xq + b * xq_stride;
                int32_t acc = 0;
                for (int64_t k = 0; k < in_features; k++) {
                    const int c = code_at(wrow, k), field = c & 7;
                    if (!field) continue;
                    const int32_t t = (int32_t)qr[k] * (1 << (7 - field)); /* q << (6 - e) */
                    acc += (c & 8) ? -t : t;
                }
                v = ((alpha[o] * xscale[b]) * (float)acc) * 0.015625f;
            } else {
                const float *xr = x + b * in_features;
                float acc = 0.0f;
                for (int64_t k = 0; k < in_features; k++) acc += xr[k] * pow2_values[code_at(wrow, k)];
                v = alpha[o] * acc;
            }
            y[b * out_features + o] = pk_activate(v + add, activation);
        }
    }
    return PK_OK;
}
