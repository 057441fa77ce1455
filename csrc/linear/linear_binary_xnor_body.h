/* The XNOR-popcount driver of the binary linear kernels with binary activations, and
 * their entry PK_BINARY_NAME (float activations go to pk_linear_binary_float_avx2),
 * included by linear_binary_avx2.c and linear_binary_avx512vpopcnt.c. The including file
 * first defines the two popcount loops it runs (results exact, so the same in every ISA):
 *
 *   xnor_rows8(w, xi, words, pop)     pop[j] = popcount(w ^ row j) for the 8 activation
 *                                     rows of one interleaved block (xi[k][j]: word k of
 *                                     row j), j < 8
 *   xnor_weights4(w, words, x, pop)   pop[r] = popcount(w_r ^ x) for the 4 weight rows
 *                                     w + r * words and one activation row x, r < 4
 */
#ifndef PK_LINEAR_BINARY_XNOR_BODY_H
#define PK_LINEAR_BINARY_XNOR_BODY_H
#ifndef PK_BINARY_NAME
#error "define PK_BINARY_NAME (and the two popcount loops) before linear_binary_xnor_body.h"
#endif

#include "pk_avx2.h"

#define XB 8      /* activation rows per block */
#define XPANEL 16 /* output rows per task: their weights (16 x words x 8 bytes) stay in L1 */

/* Full blocks of XB activation rows are first interleaved word by word (xi[block][k][j]).
 * Tasks are panels of XPANEL output rows, handed out dynamically (a descheduled thread
 * holds up one panel, not half the matrix). Within a panel, each block of XB activation
 * rows (XB x words x 8 bytes) is read from L1 for every row of the panel. */
struct xnor_args {
    const uint64_t *xbits, *xi, *bits;
    const float *beta, *alpha, *bias;
    int64_t batch, in_features, words, out_features;
    int activation;
    float *y;
};

/* Output rows of one panel, for every batch row. */
static void xnor_panel(void *ctx, int64_t p, int worker) {
    const struct xnor_args *a = ctx;
    const int64_t words = a->words, out_features = a->out_features, batch = a->batch;
    const uint64_t *bits = a->bits;
    const int64_t o0 = p * XPANEL, o1 = o0 + XPANEL < out_features ? o0 + XPANEL : out_features;
    uint64_t pop[XPANEL][XB]; /* the panel x block tile, stored row by row after */
    for (int64_t b0 = 0; b0 < batch; b0 += XB) {
        const int nb = batch - b0 < XB ? (int)(batch - b0) : XB;
        if (nb == XB)
            for (int64_t o = o0; o < o1; o++)
                xnor_rows8(bits + o * words, a->xi + b0 * words, words, pop[o - o0]);
        else /* a last partial block (batch 1 lands here): 4 weight rows per x word */
            for (int j = 0; j < nb; j++) {
                const uint64_t *xr = a->xbits + (b0 + j) * words;
                int64_t o = o0;
                for (; o + 4 <= o1; o += 4) {
                    uint64_t p4[4];
                    xnor_weights4(bits + o * words, words, xr, p4);
                    for (int r = 0; r < 4; r++) pop[o - o0 + r][j] = p4[r];
                }
                for (; o < o1; o++)
                    pop[o - o0][j] = pk_xnor_pop_scalar(bits + o * words, xr, words);
            }
        /* one output row segment at a time: stores to y[b][o] for many b at one o
         * would all fall in one cache set (the row pitch is a multiple of 4 KB) */
        for (int j = 0; j < nb; j++) {
            float *yr = a->y + (b0 + j) * out_features;
            const float bj = a->beta[b0 + j];
            for (int64_t o = o0; o < o1; o++) {
                const float v = (a->alpha[o] * bj) *
                                (float)(a->in_features - 2 * (int64_t)pop[o - o0][j]);
                yr[o] = pk_activate(v + (a->bias ? a->bias[o] : 0.0f), a->activation);
            }
        }
    }
}

static int linear_xnor(const uint64_t *xbits, const float *beta, int64_t batch,
                       int64_t in_features, const uint64_t *bits, const float *alpha,
                       int64_t out_features, const float *bias, int activation, float *y) {
    const int64_t words = (in_features + 63) / 64;
    const int64_t panels = (out_features + XPANEL - 1) / XPANEL;
    const int64_t full = batch / XB;
    uint64_t *xi = pk_aligned_alloc((size_t)(full * XB * words + 1) * sizeof(uint64_t));
    if (!xi) return PK_ERR_NOMEM;
    for (int64_t blk = 0; blk < full; blk++)
        for (int64_t k = 0; k < words; k++)
            for (int j = 0; j < XB; j++)
                xi[(blk * words + k) * XB + j] = xbits[(blk * XB + j) * words + k];
    struct xnor_args a = {xbits, xi, bits, beta, alpha, bias, batch, in_features, words,
                          out_features, activation, y};
    pk_parallel(pk_threads_for((double)batch * out_features * in_features), panels, xnor_panel,
                &a);
    pk_aligned_free(xi);
    return PK_OK;
}

int PK_BINARY_NAME(const float *x, const uint64_t *xbits, const float *beta, int64_t batch,
                   int64_t in_features, const uint64_t *bits, const float *alpha,
                   int64_t out_features, const float *bias, int activation, float *y) {
    if (xbits)
        return linear_xnor(xbits, beta, batch, in_features, bits, alpha, out_features, bias,
                           activation, y);
    return pk_linear_binary_float_avx2(x, batch, in_features, bits, alpha, out_features, bias,
                                       activation, y);
}

#endif /* PK_LINEAR_BINARY_XNOR_BODY_H */
