/* Public entry of the binary (1-bit) linear kernel: argument checks, packing of binary
 * activations (sign bits + beta per row, the same in every ISA variant), then the
 * dispatched implementation. The Python side has already validated the weight. */
#include <math.h>

#include "pk_internal.h"

/* Sign bits of one activation row (bit j of word i = column 64 i + j, 1 where
 * x >= 0, padding 0) and beta = mean |x| accumulated in double. */
static void pack_row(const float *x, int64_t in_features, uint64_t *bits, float *beta) {
    const int64_t words = (in_features + 63) / 64;
    double sum = 0.0;
    for (int64_t i = 0; i < words; i++) {
        const int64_t base = i * 64;
        const int64_t n = in_features - base < 64 ? in_features - base : 64;
        uint64_t w = 0;
        for (int64_t j = 0; j < n; j++) {
            const float v = x[base + j];
            w |= (uint64_t)(v >= 0.0f) << j;
            sum += fabs((double)v);
        }
        bits[i] = w;
    }
    *beta = in_features ? (float)(sum / (double)in_features) : 0.0f;
}

struct pack_args {
    const float *x;
    int64_t in_features, words;
    uint64_t *xbits;
    float *beta;
};

static void pack_part(void *ctx, int64_t b0, int64_t b1, int worker) {
    const struct pack_args *a = ctx;
    for (int64_t b = b0; b < b1; b++)
        pack_row(a->x + b * a->in_features, a->in_features, a->xbits + b * a->words, a->beta + b);
}

int pk_linear_binary_f32(const float *x, int64_t batch, int64_t in_features,
                         const uint64_t *bits, const float *alpha, int64_t out_features,
                         int binary_activations, const float *bias, int activation,
                         float *y) {
    if (batch < 0 || in_features < 0 || out_features < 0) return PK_ERR_ARG;
    if (activation < PK_ACT_NONE || activation > PK_ACT_RELU6) return PK_ERR_ARG;
    if (binary_activations != 0 && binary_activations != 1) return PK_ERR_ARG;
    if (in_features > ((int64_t)1 << 40)) return PK_ERR_OVERFLOW;
    if (batch == 0 || out_features == 0) return PK_OK;
    if (!x || !alpha || !y || (in_features > 0 && !bits)) return PK_ERR_ARG;
    const struct pk_functable *kernels = pk_kernels(); /* once per call */
    if (!binary_activations)
        return kernels->linear_binary(x, NULL, NULL, batch, in_features, bits, alpha,
                                      out_features, bias, activation, y);
    const int64_t words = (in_features + 63) / 64;
    void *parts[2];
    const size_t bytes[2] = {(size_t)(batch * words + 4) * sizeof(uint64_t),
                             (size_t)batch * sizeof(float)};
    if (!pk_alloc_parts(2, bytes, parts)) return PK_ERR_NOMEM;
    uint64_t *xbits = parts[0];
    float *beta = parts[1];
    struct pack_args a = {x, in_features, words, xbits, beta};
    pk_parallel_for(batch > 8 ? pk_threads() : 1, batch, 1, pack_part, &a);
    const int status = kernels->linear_binary(x, xbits, beta, batch, in_features, bits, alpha,
                                              out_features, bias, activation, y);
    pk_aligned_free(parts[0]);
    return status;
}
