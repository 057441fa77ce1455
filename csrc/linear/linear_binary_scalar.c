/* Binary (1-bit) linear, portable C. Float activations: sign-select sums (a sign flip
 * by XOR of the float's sign bit, no multiplications). Binary activations:
 * XNOR + popcount on 64-bit words, exact. */
#include <string.h>

#include "pk_internal.h"

static inline int64_t popcount64(uint64_t v) {
#if defined(__GNUC__)
    return (int64_t)__builtin_popcountll(v);
#else
    v = v - ((v >> 1) & 0x5555555555555555ULL);
    v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
    v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int64_t)((v * 0x0101010101010101ULL) >> 56);
#endif
}

/* x with its sign flipped where the weight bit is 0 (weight -1). */
static inline float sign_select(float x, uint64_t word, int j) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u ^= (uint32_t)(~(word >> j) & 1u) << 31;
    memcpy(&x, &u, sizeof u);
    return x;
}

struct binary_args {
    const float *x;
    const uint64_t *xbits;
    const float *beta;
    int64_t batch, in_features, words, out_features;
    const uint64_t *bits;
    const float *alpha, *bias;
    int activation;
    float *y;
};

static void rows(void *ctx, int64_t o0, int64_t o1, int worker) {
    const struct binary_args *a = ctx;
    const int64_t words = a->words, in_features = a->in_features;
    for (int64_t o = o0; o < o1; o++) {
        const uint64_t *wrow = a->bits + o * words;
        const float add = a->bias ? a->bias[o] : 0.0f;
        for (int64_t b = 0; b < a->batch; b++) {
            float v;
            if (a->xbits) {
                const uint64_t *xrow = a->xbits + b * words;
                int64_t pop = 0;
                for (int64_t i = 0; i < words; i++) pop += popcount64(xrow[i] ^ wrow[i]);
                v = (a->alpha[o] * a->beta[b]) * (float)(in_features - 2 * pop);
            } else {
                const float *xr = a->x + b * in_features;
                float acc = 0.0f;
                for (int64_t i = 0; i < words; i++) {
                    const int64_t n = in_features - i * 64 < 64 ? in_features - i * 64 : 64;
                    for (int j = 0; j < n; j++) acc += sign_select(xr[i * 64 + j], wrow[i], j);
                }
                v = a->alpha[o] * acc;
            }
            a->y[b * a->out_features + o] = pk_activate(v + add, a->activation);
        }
    }
}

int pk_linear_binary_scalar(const float *x, const uint64_t *xbits, const float *beta,
                            int64_t batch, int64_t in_features, const uint64_t *bits,
                            const float *alpha, int64_t out_features, const float *bias,
                            int activation, float *y) {
    struct binary_args a = {x, xbits, beta, batch, in_features, (in_features + 63) / 64,
                            out_features, bits, alpha, bias, activation, y};
    pk_parallel_for(pk_threads_for((double)batch * out_features * in_features), out_features, 8,
                    rows, &a);
    return PK_OK;
}
