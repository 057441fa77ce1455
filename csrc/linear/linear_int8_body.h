/* Body of the AVX2-class int8 linear kernels, included by linear_int8_avx2.c and
 * linear_int8_avx512vnni.c. The including file defines
 *
 *   PK_I8_NAME               the function name
 *   PK_I8_DOT(acc, a, b)     acc + the sums of 4 adjacent products a * b per 32-bit lane,
 *                            a unsigned bytes (0..127 here), b signed bytes (-127..127),
 *                            exact in int32
 *
 * Packed weights (kernels/encodings/int8.py): row blocks of 8 output rows, each a run of
 * chunks of 4 k, a chunk 32 bytes = the 4 weights of each of the 8 rows (a row per
 * 32-bit lane). Register tiles of up to 4 row blocks x up to 4 batch rows accumulate
 * exact int32 sums: vpsignb moves the sign of x onto w, so a is |x| and b is w * sign(x),
 * both within 0..127 in magnitude. */
#ifndef PK_I8_NAME
#error "define PK_I8_NAME and PK_I8_DOT before including linear_int8_body.h"
#endif
#include "pk_avx2.h"

struct quant_args {
    const float *x;
    int64_t in, ldq;
    float act_scale;
    int8_t *q;
    uint8_t *qabs;
    float *scale;
    unsigned char *bad;
};

static void quantize_part(void *ctx, int64_t b0, int64_t b1, int worker) {
    const struct quant_args *a = ctx;
    for (int64_t b = b0; b < b1; b++)
        pk_quantize_row_avx2(a->x + b * a->in, a->in, a->ldq, a->act_scale, a->q + b * a->ldq,
                             a->qabs ? a->qabs + b * a->ldq : NULL, a->scale + b, a->bad + b);
}

/* Quantize every row (in parallel when there are several). */
static void quantize_rows(const float *x, int64_t batch, int64_t in, int64_t ldq,
                          float act_scale, int8_t *q, uint8_t *qabs, float *scale,
                          unsigned char *bad) {
    struct quant_args a = {x, in, ldq, act_scale, q, qabs, scale, bad};
    pk_parallel_for(batch > 1 ? pk_threads() : 1, batch, 1, quantize_part, &a);
}

#define AHEAD 16 /* chunks of weights prefetched ahead (512 bytes per row block) */


/* acc[r][j] (lanes = rows 8r..8r+7 of the tile) = sum_k w[row][k] * xq[j][k] over
 * `chunks` chunks of 4 k. R row blocks (stride wstride bytes), NC batch rows. */
PK_ALWAYS_INLINE void tile(const int8_t *w, int64_t wstride, int R, int64_t chunks,
                           const int8_t *xq, const uint8_t *xa, int64_t ldq, int NC,
                           int32_t res[4][32]) {
    __m256i acc[4][4];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NC; j++) acc[r][j] = _mm256_setzero_si256();
    for (int64_t c = 0; c < chunks; c++) {
        __m256i wv[4];
        for (int r = 0; r < R; r++) {
            /* this row block's weights AHEAD chunks on (prefetch never faults): the
             * hardware prefetcher falls behind on R streams at batch 1. (Prefetching the
             * next tile instead fetches rows another thread may be reading, and the time
             * of a call then varies from run to run.) */
            if (!(c & 1))
                _mm_prefetch((const char *)(w + r * wstride + (c + AHEAD) * 32), _MM_HINT_T0);
            wv[r] = _mm256_loadu_si256((const __m256i *)(w + r * wstride + c * 32));
        }
        for (int j = 0; j < NC; j++) {
            const __m256i bx = pk_bcast4(xq + j * ldq + c * 4);
            const __m256i ba = pk_bcast4(xa + j * ldq + c * 4);
            for (int r = 0; r < R; r++)
                acc[r][j] = PK_I8_DOT(acc[r][j], ba, _mm256_sign_epi8(wv[r], bx));
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NC; j++) _mm256_storeu_si256((__m256i *)&res[j][r * 8], acc[r][j]);
}

/* One instance per (R, NC) so that every loop above unrolls and acc stays in registers. */
#define TILE_FN(R, NC)                                                                     \
    static void tile_##R##_##NC(const int8_t *w, int64_t ws, int64_t chunks,              \
                                const int8_t *xq, const uint8_t *xa, int64_t ldq,         \
                                int32_t res[4][32]) {                                      \
        tile(w, ws, R, chunks, xq, xa, ldq, NC, res);                                      \
    }
TILE_FN(1, 1) TILE_FN(1, 2) TILE_FN(1, 3) TILE_FN(1, 4)
TILE_FN(2, 1) TILE_FN(2, 2) TILE_FN(2, 3) TILE_FN(2, 4)
TILE_FN(3, 1) TILE_FN(3, 2)
TILE_FN(4, 1) TILE_FN(4, 2)
#undef TILE_FN

typedef void (*tile_fn)(const int8_t *, int64_t, int64_t, const int8_t *, const uint8_t *,
                        int64_t, int32_t[4][32]);
/* [R - 1][NC - 1]; R * NC <= 8 accumulators (R = 3, 4 only for NC <= 2). */
static const tile_fn tiles[4][4] = {
    {tile_1_1, tile_1_2, tile_1_3, tile_1_4},
    {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
    {tile_3_1, tile_3_2, NULL, NULL},
    {tile_4_1, tile_4_2, NULL, NULL},
};

/* Row blocks per parallel work item. Batch 1-4: 4 (32 rows: tiles of 4 row blocks reuse
 * each broadcast of x four times). More rows: 2, so that the panel's weights and a group
 * of 4 rows of x stay in L1 while every group of the batch passes over them. */
#define PANEL_FEW_ROWS 4
#define PANEL_MANY_ROWS 2

/* The call's arguments and its quantized rows, shared by the panels. */
struct panel_args {
    int64_t batch, chunks, ldq, nblocks, wstride, out_features, panel_blocks;
    const int8_t *packed, *xq;
    const uint8_t *xa;
    const float *xs, *scale, *bias;
    const unsigned char *bad;
    int activation;
    float *y;
};

/* Output rows of PANEL row blocks, for every batch row. */
static void panel(void *ctx, int64_t p, int worker) {
    const struct panel_args *a = ctx;
    const int64_t ob0 = p * a->panel_blocks;
    const int64_t ob1 = ob0 + a->panel_blocks < a->nblocks ? ob0 + a->panel_blocks : a->nblocks;
    int32_t res[4][32];
    for (int64_t b0 = 0; b0 < a->batch; b0 += 4) {
        const int nc = a->batch - b0 < 4 ? (int)(a->batch - b0) : 4;
        const int rmax = nc <= 2 ? 4 : 2;
        for (int64_t ob = ob0; ob < ob1; ob += rmax) {
            const int R = ob1 - ob < rmax ? (int)(ob1 - ob) : rmax;
            tiles[R - 1][nc - 1](a->packed + ob * a->wstride, a->wstride, a->chunks,
                                 a->xq + b0 * a->ldq, a->xa + b0 * a->ldq, a->ldq, res);
            for (int j = 0; j < nc; j++) {
                const int64_t b = b0 + j;
                const float sx = a->xs[b];
                float *yr = a->y + b * a->out_features;
                for (int i = 0; i < R * 8; i++) {
                    const int64_t o = ob * 8 + i;
                    if (o >= a->out_features) break;
                    const float v = (float)res[j][i] * (sx * a->scale[o]);
                    yr[o] = pk_quant_store(v, a->bias, o, a->activation, a->bad[b]);
                }
            }
        }
    }
}

int PK_I8_NAME(const float *x, int64_t batch, int64_t in_features,
                        const int8_t *packed, const float *scale, int64_t out_features,
                        float act_scale, const float *bias, int activation, float *y) {
    const int64_t chunks = (in_features + 3) / 4, ldq = chunks * 4;
    const int64_t panel_blocks = batch <= 4 ? PANEL_FEW_ROWS : PANEL_MANY_ROWS;
    const int64_t nblocks = (out_features + 7) / 8;
    const int64_t npanels = (nblocks + panel_blocks - 1) / panel_blocks;
    void *parts[4];
    const size_t bytes[4] = {(size_t)(batch * ldq),
                             (size_t)(batch * ldq),
                             (size_t)batch * sizeof(float),
                             (size_t)batch};
    if (!pk_alloc_parts(4, bytes, parts)) return PK_ERR_NOMEM;
    int8_t *xq = parts[0];
    uint8_t *xa = parts[1];
    float *xs = parts[2];
    unsigned char *bad = parts[3];
    quantize_rows(x, batch, in_features, ldq, act_scale, xq, xa, xs, bad);
    struct panel_args a = {batch,  chunks, ldq, nblocks, chunks * 32 /* bytes per row block */,
                           out_features, panel_blocks, packed, xq, xa, xs, scale, bias, bad,
                           activation, y};
    pk_parallel(pk_threads_for((double)batch * out_features * in_features), npanels, panel, &a);
    pk_aligned_free(parts[0]);
    return PK_OK;
}
