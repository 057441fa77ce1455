/* Body of the AVX2-class int8 linear kernels, included by linear_int8_avx2.c and
 * linear_int8_avx512vnni.c. The including file defines
 *
 *   PK_I8_NAME               the function name
 *   PK_I8_DOT(acc, a, b)     acc + the sums of 4 adjacent products a * b per 32-bit lane,
 *                            a unsigned bytes, b signed bytes (-127..127), in int32
 *   PK_I8_OFFSET             (optional) the operands are x + 128 and w, see below
 *
 * Packed weights (kernels/encodings/int8.py): row blocks of 8 output rows, each a run of
 * chunks of 4 k, a chunk 32 bytes = the 4 weights of each of the 8 rows (a row per
 * 32-bit lane). Register tiles of row blocks x batch rows accumulate int32 sums.
 *
 * Two ways to feed an unsigned x signed dot product with signed x:
 * - sign (default): vpsignb moves the sign of x onto w, so a is |x| and b is w * sign(x),
 *   both within 0..127 in magnitude: exact, and safe for vpmaddubsw's int16 pairs, but
 *   one vpsignb per dot product.
 * - offset (PK_I8_OFFSET, for vpdpbusd, which has no int16 stage): a is x + 128 and b is
 *   w, and the epilogue subtracts 128 * sum_k w[o][k] (summed per panel with the same dot
 *   product). The sums wrap modulo 2^32, and the true result fits int32 (127 * 127 * in
 *   does, checked by the caller), so the wrapped difference is exact. Half the vector
 *   operations of the sign way, and more accumulators fit (AVX-512VL has 32 registers). */
#ifndef PK_I8_NAME
#error "define PK_I8_NAME and PK_I8_DOT before including linear_int8_body.h"
#endif
#include "pk_avx2.h"

#ifdef PK_I8_OFFSET
#define MAX_NC 6 /* tiles of up to 4 row blocks x 6 batch rows: 24 accumulators */
#else
#define MAX_NC 4 /* 4 x 2 or 2 x 4: 8 accumulators and the 8 other registers of AVX2 */
#endif

struct quant_args {
    const float *x;
    int64_t in, ldq;
    float act_scale;
    int8_t *q;
    uint8_t *qa; /* the unsigned operand: |q| (sign) or q + 128 (offset) */
    float *scale;
    unsigned char *bad;
};

static void quantize_part(void *ctx, int64_t b0, int64_t b1, int worker) {
    const struct quant_args *a = ctx;
    for (int64_t b = b0; b < b1; b++) {
        int8_t *q = a->q + b * a->ldq;
        uint8_t *qa = a->qa + b * a->ldq;
#ifdef PK_I8_OFFSET
        pk_quantize_row_avx2(a->x + b * a->in, a->in, a->ldq, a->act_scale, q, NULL,
                             a->scale + b, a->bad + b);
        const __m256i flip = _mm256_set1_epi8((char)0x80); /* q + 128 as a byte: q ^ 0x80 */
        int64_t k = 0;
        for (; k + 32 <= a->ldq; k += 32)
            _mm256_storeu_si256((__m256i *)(qa + k),
                                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + k)), flip));
        for (; k < a->ldq; k++) qa[k] = (uint8_t)(q[k] ^ 0x80);
#else
        pk_quantize_row_avx2(a->x + b * a->in, a->in, a->ldq, a->act_scale, q, qa,
                             a->scale + b, a->bad + b);
#endif
    }
}

/* Quantize every row (in parallel when there are several). */
static void quantize_rows(const float *x, int64_t batch, int64_t in, int64_t ldq,
                          float act_scale, int8_t *q, uint8_t *qa, float *scale,
                          unsigned char *bad) {
    struct quant_args a = {x, in, ldq, act_scale, q, qa, scale, bad};
    pk_parallel_for(batch > 1 ? pk_threads() : 1, batch, 1, quantize_part, &a);
}

/* complete unrolling of the small loops early, so that the accumulators become registers
 * (without it GCC keeps a copy of them on the stack, stored every chunk) */
#define PK_UNROLL _Pragma("GCC unroll 8")

#define AHEAD 16 /* chunks of weights prefetched ahead (512 bytes per row block) */


/* acc[r][j] += the products of chunk c of R row blocks (stride wstride bytes) with NC
 * batch rows. */
PK_ALWAYS_INLINE void tile_chunk(__m256i acc[4][MAX_NC], const int8_t *w, int64_t wstride,
                                 int R, int64_t c, const int8_t *xq, const uint8_t *xa,
                                 int64_t ldq, int NC) {
    __m256i wv[4];
    PK_UNROLL
    for (int r = 0; r < R; r++)
        wv[r] = _mm256_loadu_si256((const __m256i *)(w + r * wstride + c * 32));
    PK_UNROLL
    for (int j = 0; j < NC; j++) {
        const __m256i ba = pk_bcast4(xa + j * ldq + c * 4);
#ifdef PK_I8_OFFSET
        PK_UNROLL
        for (int r = 0; r < R; r++) acc[r][j] = PK_I8_DOT(acc[r][j], ba, wv[r]);
#else
        const __m256i bx = pk_bcast4(xq + j * ldq + c * 4);
        PK_UNROLL
        for (int r = 0; r < R; r++)
            acc[r][j] = PK_I8_DOT(acc[r][j], ba, _mm256_sign_epi8(wv[r], bx));
#endif
    }
}

/* acc[r][j] (lanes = rows 8r..8r+7 of the tile) = sum_k w[row][k] * xq[j][k] over
 * `chunks` chunks of 4 k (offset: the same with xq + 128). R row blocks (stride wstride
 * bytes), NC batch rows. */
PK_ALWAYS_INLINE void tile(const int8_t *w, int64_t wstride, int R, int64_t chunks,
                           const int8_t *xq, const uint8_t *xa, int64_t ldq, int NC,
                           int32_t res[MAX_NC][32]) {
    __m256i acc[4][MAX_NC];
    PK_UNROLL
    for (int r = 0; r < R; r++)
        PK_UNROLL
        for (int j = 0; j < NC; j++) acc[r][j] = _mm256_setzero_si256();
    for (int64_t c = 0; c < chunks; c++) {
        /* each row block's weights AHEAD chunks on (prefetch never faults): the hardware
         * prefetcher falls behind on R streams at batch 1. (Prefetching the next tile
         * instead fetches rows another thread may be reading, and the time of a call
         * then varies from run to run.) */
        PK_UNROLL
        for (int r = 0; r < R; r++)
            _mm_prefetch((const char *)(w + r * wstride + (c + AHEAD) * 32), _MM_HINT_T0);
        tile_chunk(acc, w, wstride, R, c, xq, xa, ldq, NC);
    }
    PK_UNROLL
    for (int r = 0; r < R; r++)
        PK_UNROLL
        for (int j = 0; j < NC; j++) _mm256_storeu_si256((__m256i *)&res[j][r * 8], acc[r][j]);
}

/* One instance per (R, NC) so that every loop above unrolls and acc stays in registers. */
#define TILE_FN(R, NC)                                                                     \
    static void tile_##R##_##NC(const int8_t *w, int64_t ws, int64_t chunks,              \
                                const int8_t *xq, const uint8_t *xa, int64_t ldq,         \
                                int32_t res[MAX_NC][32]) {                                 \
        tile(w, ws, R, chunks, xq, xa, ldq, NC, res);                                      \
    }
typedef void (*tile_fn)(const int8_t *, int64_t, int64_t, const int8_t *, const uint8_t *,
                        int64_t, int32_t[MAX_NC][32]);
#ifdef PK_I8_OFFSET
TILE_FN(1, 1) TILE_FN(1, 2) TILE_FN(1, 3) TILE_FN(1, 4) TILE_FN(1, 5) TILE_FN(1, 6)
TILE_FN(2, 1) TILE_FN(2, 2) TILE_FN(2, 3) TILE_FN(2, 4) TILE_FN(2, 5) TILE_FN(2, 6)
TILE_FN(3, 1) TILE_FN(3, 2) TILE_FN(3, 3) TILE_FN(3, 4) TILE_FN(3, 5) TILE_FN(3, 6)
TILE_FN(4, 1) TILE_FN(4, 2) TILE_FN(4, 3) TILE_FN(4, 4) TILE_FN(4, 5) TILE_FN(4, 6)
/* [R - 1][NC - 1] */
static const tile_fn tiles[4][MAX_NC] = {
    {tile_1_1, tile_1_2, tile_1_3, tile_1_4, tile_1_5, tile_1_6},
    {tile_2_1, tile_2_2, tile_2_3, tile_2_4, tile_2_5, tile_2_6},
    {tile_3_1, tile_3_2, tile_3_3, tile_3_4, tile_3_5, tile_3_6},
    {tile_4_1, tile_4_2, tile_4_3, tile_4_4, tile_4_5, tile_4_6},
};
#define MAX_R(nc) 4
#else
TILE_FN(1, 1) TILE_FN(1, 2) TILE_FN(1, 3) TILE_FN(1, 4)
TILE_FN(2, 1) TILE_FN(2, 2) TILE_FN(2, 3) TILE_FN(2, 4)
TILE_FN(3, 1) TILE_FN(3, 2)
TILE_FN(4, 1) TILE_FN(4, 2)
/* [R - 1][NC - 1]; R * NC <= 8 accumulators (R = 3, 4 only for NC <= 2). */
static const tile_fn tiles[4][MAX_NC] = {
    {tile_1_1, tile_1_2, tile_1_3, tile_1_4},
    {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
    {tile_3_1, tile_3_2, NULL, NULL},
    {tile_4_1, tile_4_2, NULL, NULL},
};
#define MAX_R(nc) ((nc) <= 2 ? 4 : 2)
#endif
#undef TILE_FN

/* Row blocks per parallel work item. Few batch rows: 4 (32 rows: tiles of 4 row blocks
 * reuse each broadcast of x four times). More rows: 2 for AVX2, so that the panel's
 * weights and a group of rows of x stay in L1 while every group of the batch passes over
 * them; 4 with the offset tiles, whose 4 x 6 tiles load less per dot product. */
#define PANEL_FEW_ROWS 4
#ifdef PK_I8_OFFSET
#define PANEL_MANY_ROWS 4
#else
#define PANEL_MANY_ROWS 2
#endif

/* The call's arguments and its quantized rows, shared by the panels. */
struct panel_args {
    int64_t batch, chunks, ldq, nblocks, wstride, out_features, panel_blocks;
    int64_t batch_parts; /* work items per panel, each a run of whole tiles of the batch */
    const int8_t *packed, *xq;
    const uint8_t *xa;
    const float *xs, *scale, *bias;
    const unsigned char *bad;
    int activation;
    float *y;
};

/* y[o .. o + n) of one batch row from the int32 sums (minus 128 * the row sums when
 * offset): (float)sum * (sx * scale[o]) + bias[o], activated; the scalar epilogue's
 * operations in its order, eight lanes at a time. */
static void store_rows(const struct panel_args *a, int64_t b, int64_t o, int n,
                       const int32_t *sums, const int32_t *rowsum) {
    float *yr = a->y + b * a->out_features;
    const float sx = a->xs[b];
    int i = 0;
    if (!a->bad[b]) {
        const __m256 vsx = _mm256_set1_ps(sx);
        for (; i + 8 <= n; i += 8) {
            __m256i s = _mm256_loadu_si256((const __m256i *)(sums + i));
#ifdef PK_I8_OFFSET
            s = _mm256_sub_epi32(s, _mm256_slli_epi32(
                                        _mm256_loadu_si256((const __m256i *)(rowsum + i)), 7));
#endif
            __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(s),
                                     _mm256_mul_ps(vsx, _mm256_loadu_ps(a->scale + o + i)));
            if (a->bias) v = _mm256_add_ps(v, _mm256_loadu_ps(a->bias + o + i));
            _mm256_storeu_ps(yr + o + i, pk_activate8(v, a->activation));
        }
    }
    for (; i < n; i++) {
#ifdef PK_I8_OFFSET
        const int32_t s = (int32_t)((uint32_t)sums[i] - ((uint32_t)rowsum[i] << 7));
#else
        const int32_t s = sums[i];
#endif
        const float v = (float)s * (sx * a->scale[o + i]);
        yr[o + i] = pk_quant_store(v, a->bias, o + i, a->activation, a->bad[b]);
    }
}

/* Work item `item`: output rows of PANEL row blocks, for one part of the batch rows
 * (every row when the panels alone keep the threads busy). With offset operands the rows of
 * xa start with LEAD = 1 row of bytes 1, whose dot products are the row sums of w: they
 * ride in the first tile as one more batch row (at batch 1 an extra vpdpbusd per weight
 * vector, where the sign way spends a vpsignb). */
#ifdef PK_I8_OFFSET
#define LEAD 1
#else
#define LEAD 0
#endif
static void panel(void *ctx, int64_t item, int worker) {
    const struct panel_args *a = ctx;
    const int64_t p = item / a->batch_parts, part = item % a->batch_parts;
    const int64_t ob0 = p * a->panel_blocks;
    const int64_t ob1 = ob0 + a->panel_blocks < a->nblocks ? ob0 + a->panel_blocks : a->nblocks;
    const int64_t rows = a->batch + LEAD, groups = (rows + MAX_NC - 1) / MAX_NC;
    const int64_t r0 = part * groups / a->batch_parts * MAX_NC;
    const int64_t r1e = (part + 1) * groups / a->batch_parts * MAX_NC;
    const int64_t r1 = r1e < rows ? r1e : rows;
    int32_t res[MAX_NC][32];
    int32_t rowsum[PANEL_FEW_ROWS > PANEL_MANY_ROWS ? PANEL_FEW_ROWS * 8 : PANEL_MANY_ROWS * 8];
    if (LEAD && r0 > 0) /* a later part of the batch: the row sums on their own */
        for (int64_t ob = ob0; ob < ob1; ob += MAX_R(1)) {
            const int R = ob1 - ob < MAX_R(1) ? (int)(ob1 - ob) : MAX_R(1);
            tiles[R - 1][0](a->packed + ob * a->wstride, a->wstride, a->chunks, a->xq,
                            a->xa, a->ldq, res);
            memcpy(&rowsum[(ob - ob0) * 8], res[0], (size_t)R * 8 * sizeof(int32_t));
        }
    for (int64_t b0 = r0; b0 < r1; b0 += MAX_NC) {
        const int nc = r1 - b0 < MAX_NC ? (int)(r1 - b0) : MAX_NC;
        const int rmax = MAX_R(nc);
        for (int64_t ob = ob0; ob < ob1; ob += rmax) {
            const int R = ob1 - ob < rmax ? (int)(ob1 - ob) : rmax;
            tiles[R - 1][nc - 1](a->packed + ob * a->wstride, a->wstride, a->chunks,
                                 a->xq + b0 * a->ldq, a->xa + b0 * a->ldq, a->ldq, res);
            const int64_t o = ob * 8;
            const int n = a->out_features - o < R * 8 ? (int)(a->out_features - o) : R * 8;
            int32_t *rs = &rowsum[(ob - ob0) * 8];
            for (int j = 0; j < nc; j++) {
                if (b0 + j < LEAD) memcpy(rs, res[j], (size_t)R * 8 * sizeof(int32_t));
                else store_rows(a, b0 + j - LEAD, o, n, res[j], rs);
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
                             (size_t)((batch + LEAD) * ldq),
                             (size_t)batch * sizeof(float),
                             (size_t)batch};
    if (!pk_alloc_parts(4, bytes, parts)) return PK_ERR_NOMEM;
    int8_t *xq = parts[0];
    uint8_t *xa = parts[1];
    float *xs = parts[2];
    unsigned char *bad = parts[3];
    memset(xa, 1, (size_t)(LEAD * ldq)); /* the row-sum rows */
    quantize_rows(x, batch, in_features, ldq, act_scale, xq, xa + LEAD * ldq, xs, bad);
    const int threads = pk_threads_for((double)batch * out_features * in_features);
    /* few panels (a narrow layer): split the batch too, so that every thread has work */
    int64_t batch_parts = 1;
    if (npanels < (int64_t)threads * PK_TASKS_PER_THREAD) {
        const int64_t groups = (batch + LEAD + MAX_NC - 1) / MAX_NC;
        batch_parts = ((int64_t)threads * PK_TASKS_PER_THREAD + npanels - 1) / npanels;
        if (batch_parts > groups) batch_parts = groups;
    }
    struct panel_args a = {batch,  chunks, ldq, nblocks, chunks * 32 /* bytes per row block */,
                           out_features, panel_blocks, batch_parts, packed, xq, xa, xs, scale,
                           bias, bad, activation, y};
    pk_parallel(threads, npanels * batch_parts, panel, &a);
    pk_aligned_free(parts[0]);
    return PK_OK;
}
#undef MAX_NC
#undef PK_UNROLL
#undef MAX_R
#undef LEAD
#undef PANEL_FEW_ROWS
#undef PANEL_MANY_ROWS
