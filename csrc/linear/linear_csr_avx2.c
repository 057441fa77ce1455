/* CSR sparse linear, AVX2 + FMA.
 *
 * Batch 1 (SpMV, memory bound): each row is a dot product of its values with the
 * activations gathered at its column indices, eight lanes at a time, two accumulators.
 * Batch > 1: x is transposed once per call (in parallel) into tiles of up to TILE batch
 * rows, xt[k][j], so that each nonzero is one broadcast and one FMA per 8 batch rows over
 * contiguous vectors. A band of rows accumulates into a small buffer that leaves through
 * 8x8 transposes, so y is written eight output columns per store instead of one, and each
 * batch row's band of outputs in one go.
 * Threads take chunks of rows balanced by nonzeros, and every output is summed by one
 * thread in an order fixed by its row alone: results do not depend on threads. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "pk_avx2.h"

/* Row chunks per call (fewer when there are fewer rows), handed out by a guided schedule
 * (see csr_avx2). */
#define CHUNKS 64
/* Batch rows per transposed tile of x at batch > 1 (at most 64: eight vectors). A wide
 * tile pays each row's set-up and reduction once for more batch rows. */
#ifndef TILE
#define TILE 64
#endif
/* Bytes of transposed x tiles a pass over the rows may use: about half of L2. */
#ifndef L2_TILES
#define L2_TILES (256 * 1024)
#endif
/* Output rows summed together before their results are stored eight columns at a time. */
#define BAND 64
/* Nonzeros ahead whose x rows are prefetched (one cache line each) at tiles of 16+ lanes,
 * where with large `in` the tile lives in L2 (at 8 lanes prefetching gains nothing). A
 * nonzero takes longer at wider tiles, so the distance shrinks with the width; one line
 * per row is enough (prefetching all four lines of a 64-lane row gains nothing). */
#define PF_16 16
#define PF_32 8
#define PF_64 4
/* Threads split row slices at multiples of this many (see pk_linear_csr_slices_f32). */
#define SLICE_GROUP 8
/* Nonzeros ahead whose values and indices batch 1 prefetches. */
#ifndef SPMV_AHEAD
#define SPMV_AHEAD 512
#endif

/* `wide` is a compile-time constant at every call: uint16 (0) or int32 (1) indices. */
PK_ALWAYS_INLINE int64_t index_at(const void *indices, int64_t p, int wide) {
    return wide ? (int64_t)((const int32_t *)indices)[p] : (int64_t)((const uint16_t *)indices)[p];
}

/* Columns of nonzeros p .. p+3. uint16 indices come in one 64-bit load and are split
 * with shifts: Zen-class cores have two load ports, and loads are the bottleneck. */
PK_ALWAYS_INLINE void index4(const void *indices, int64_t p, int wide, int64_t c[4]) {
    if (wide) {
        const int32_t *ix = (const int32_t *)indices + p;
        c[0] = ix[0], c[1] = ix[1], c[2] = ix[2], c[3] = ix[3];
    } else {
        uint64_t w;
        memcpy(&w, (const uint16_t *)indices + p, sizeof w);
        c[0] = (int64_t)(w & 0xffff), c[1] = (int64_t)((w >> 16) & 0xffff);
        c[2] = (int64_t)((w >> 32) & 0xffff), c[3] = (int64_t)(w >> 48);
    }
}

/* Columns of nonzeros p .. p+k-1, k = 1, 2 or 4 (a constant at each call). */
PK_ALWAYS_INLINE void columns(const void *indices, int64_t p, int k, int wide, int64_t c[4]) {
    if (k == 4) {
        index4(indices, p, wide, c);
        return;
    }
    for (int i = 0; i < k; i++) c[i] = index_at(indices, p + i, wide);
}

PK_ALWAYS_INLINE __m128 gather4(const float *x, const void *indices, int64_t p, int wide) {
    int64_t c[4];
    index4(indices, p, wide, c);
    __m128 v = _mm_load_ss(x + c[0]);
    v = _mm_insert_ps(v, _mm_load_ss(x + c[1]), 0x10);
    v = _mm_insert_ps(v, _mm_load_ss(x + c[2]), 0x20);
    return _mm_insert_ps(v, _mm_load_ss(x + c[3]), 0x30);
}

/* x[indices[p .. p+7]]. Scalar loads beat vgatherdps on Zen 1/2. */
PK_ALWAYS_INLINE __m256 gather8(const float *x, const void *indices, int64_t p, int wide) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(gather4(x, indices, p, wide)),
                                gather4(x, indices, p + 4, wide), 1);
}

/* ---- batch 1 ---- */

/* a0, a1 += values[p .. p+16) * x[indices[p .. p+16)], prefetching the weight stream
 * SPMV_AHEAD entries ahead: it is read once per call, so it is cold.
 * The prefetch stops at `last`, the end of the caller's part, so its address stays
 * within the arrays. */
PK_ALWAYS_INLINE void step16(const float *x, const void *indices, const float *values, int64_t p,
                             int64_t last, __m256 *a0, __m256 *a1, int wide) {
    const int64_t ahead = p + SPMV_AHEAD < last ? p + SPMV_AHEAD : last;
    _mm_prefetch((const char *)(values + ahead), _MM_HINT_T0);
    _mm_prefetch((const char *)indices + ahead * (wide ? 4 : 2), _MM_HINT_T0);
    *a0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p), gather8(x, indices, p, wide), *a0);
    *a1 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p + 8), gather8(x, indices, p + 8, wide),
                          *a1);
}

PK_ALWAYS_INLINE void spmv_rows(const float *x, const int32_t *indptr, const void *indices,
                                const float *values, const float *bias, int activation, float *y,
                                int64_t r0, int64_t r1, int wide) {
    const int64_t last = indptr[r1]; /* one past the chunk's last nonzero */
    for (int64_t o = r0; o < r1; o++) {
        const int64_t hi = indptr[o + 1];
        int64_t p = indptr[o];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (; p + 16 <= hi; p += 16) step16(x, indices, values, p, last, &a0, &a1, wide);
        if (p + 8 <= hi) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p), gather8(x, indices, p, wide), a0);
            p += 8;
        }
        float acc = pk_hsum8(_mm256_add_ps(a0, a1));
        for (; p < hi; p++) acc += values[p] * x[index_at(indices, p, wide)];
        y[o] = pk_activate(acc + (bias ? bias[o] : 0.0f), activation);
    }
}

/* ---- batch > 1: transposed activation tiles ---- */

/* xt[k][i] = x[i][k] for k in [k0, k0 + 8), i < 8; rows past `rows` (the batch tail)
 * are zero. */
PK_ALWAYS_INLINE void transpose8(const float *x, int64_t in, int64_t rows, int64_t k0, float *xt,
                                 int tile) {
    __m256 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = i < rows ? _mm256_loadu_ps(x + i * in + k0) : _mm256_setzero_ps();
    pk_transpose8x8(r);
    for (int i = 0; i < 8; i++) _mm256_store_ps(xt + (k0 + i) * tile, r[i]);
}

/* Block kb (8 columns of x) of one tile of width `tile` (a multiple of 8) holding `rows`
 * valid batch rows starting at x. */
static void transpose_block(const float *x, int64_t in, int64_t rows, int64_t kb, float *xt,
                            int tile) {
    const int64_t k0 = kb * 8;
    if (k0 + 8 <= in) {
        for (int jo = 0; jo < tile; jo += 8) {
            const int64_t left = rows - jo;
            transpose8(x + jo * in, in, left < 0 ? 0 : left, k0, xt + jo, tile);
        }
        return;
    }
    for (int64_t k = k0; k < in; k++) /* the last, partial block */
        for (int j = 0; j < tile; j++) xt[k * tile + j] = j < rows ? x[j * in + k] : 0.0f;
}

/* y[j][o0 .. o0 + n) = act(acc[i·TILE + j] + bias[o0 + i]) for i < n, j < rows. Each batch
 * row's n outputs are written together, eight at a time out of 8x8 transposes: its cache
 * lines are filled whole while they are in L1. (Batch rows lie `out` floats apart, often
 * a multiple of 4 KB, so in one L1 set; written eight outputs per row across all batch
 * rows, a band's lines would be evicted half written and read back for the other half.) */
PK_ALWAYS_INLINE void store_band(float *y, int64_t out, int64_t o0, int64_t n, int64_t rows,
                                 const float *acc, const float *bias, int activation) {
    for (int64_t j0 = 0; j0 < rows; j0 += 8) {
        int64_t i0 = 0;
        for (; i0 + 8 <= n; i0 += 8) {
            const __m256 b = bias ? _mm256_loadu_ps(bias + o0 + i0) : _mm256_setzero_ps();
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_load_ps(acc + (i0 + i) * TILE + j0);
            pk_transpose8x8(r);
            for (int64_t j = 0; j < 8 && j0 + j < rows; j++)
                _mm256_storeu_ps(y + (j0 + j) * out + o0 + i0,
                                 pk_activate8(_mm256_add_ps(r[j], b), activation));
        }
        for (; i0 < n; i0++) { /* the band's last outputs when n is not a multiple of 8 */
            const float b = bias ? bias[o0 + i0] : 0.0f;
            for (int64_t j = j0; j < j0 + 8 && j < rows; j++)
                y[j * out + o0 + i0] = pk_activate(acc[i0 * TILE + j] + b, activation);
        }
    }
}

/* acc[0 .. 8·nv) = Σ_{p in [p, hi)} values[p] · xt[indices[p]][0 .. 8·nv), nv = 1..8 vectors
 * of tile lanes (a constant at each call). Up to K nonzeros are in flight, each with its own
 * accumulators: a single chain of fewer than 5 FMAs per nonzero would wait out the FMA
 * latency at every nonzero. */
PK_ALWAYS_INLINE void row_tile(const float *xt, const void *indices, const float *values, int64_t p,
                               int64_t hi, float *acc, int nv, int wide) {
    enum { K = 4 };
    const int k = nv <= 2 ? 4 : nv <= 4 ? 2 : 1; /* nonzeros in flight: at most 8 accumulators */
    const int ahead = k == 4 ? PF_16 : k == 2 ? PF_32 : PF_64; /* none at 8 lanes (nv 1) */
    const int64_t width = 8 * nv;
    __m256 a[K][8];
#pragma GCC unroll 4
    for (int i = 0; i < K; i++)
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) a[i][v] = _mm256_setzero_ps();
    for (; p + k <= hi; p += k) {
        int64_t c[4];
        columns(indices, p, k, wide, c);
        if (nv >= 2 && p + ahead + k <= hi) {
            int64_t f[4];
            columns(indices, p + ahead, k, wide, f);
            for (int i = 0; i < k; i++)
                _mm_prefetch((const char *)(xt + f[i] * width), _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (int i = 0; i < k; i++) {
            const __m256 w = _mm256_broadcast_ss(values + p + i);
            const float *xk = xt + c[i] * width;
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                a[i][v] = _mm256_fmadd_ps(w, _mm256_load_ps(xk + 8 * v), a[i][v]);
        }
    }
    for (; p < hi; p++) {
        const __m256 w = _mm256_broadcast_ss(values + p);
        const float *xk = xt + index_at(indices, p, wide) * width;
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            a[0][v] = _mm256_fmadd_ps(w, _mm256_load_ps(xk + 8 * v), a[0][v]);
    }
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) {
        __m256 sum = a[0][v];
#pragma GCC unroll 4
        for (int i = 1; i < k; i++) sum = _mm256_add_ps(sum, a[i][v]);
        _mm256_store_ps(acc + 8 * v, sum);
    }
}

/* Rows [r0, r1) (at most BAND) against batch tiles [t0, t1). Sums go to acc[r][lane] (pitch
 * TILE) and leave through store_band. */
PK_ALWAYS_INLINE void spmm_band(const float *xt, int64_t in, int64_t batch, const int32_t *indptr,
                                const void *indices, const float *values, const float *bias,
                                int activation, float *y, int64_t out, int64_t r0, int64_t r1,
                                int64_t t0, int64_t t1, float *acc, int wide) {
    const int64_t n = r1 - r0;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t rows = batch - t * TILE < TILE ? batch - t * TILE : TILE;
        const int nv = (int)((rows + 7) / 8);
        const float *tile = xt + t * TILE * in;
        for (int64_t r = 0; r < n; r++) {
            const int64_t p = indptr[r0 + r], hi = indptr[r0 + r + 1];
            float *a = acc + r * TILE;
            switch (nv) { /* constant nv in each instantiation */
            case 1: row_tile(tile, indices, values, p, hi, a, 1, wide); break;
            case 2: row_tile(tile, indices, values, p, hi, a, 2, wide); break;
            case 3: row_tile(tile, indices, values, p, hi, a, 3, wide); break;
            case 4: row_tile(tile, indices, values, p, hi, a, 4, wide); break;
            case 5: row_tile(tile, indices, values, p, hi, a, 5, wide); break;
            case 6: row_tile(tile, indices, values, p, hi, a, 6, wide); break;
            case 7: row_tile(tile, indices, values, p, hi, a, 7, wide); break;
            default: row_tile(tile, indices, values, p, hi, a, 8, wide); break;
            }
        }
        store_band(y + t * TILE * out, out, r0, n, rows, acc, bias, activation);
    }
}

/* The call's arguments, shared by its parallel parts. */
struct csr_args {
    const float *x;
    int64_t batch, in, out, chunks, blocks;
    const int32_t *indptr;
    const void *indices;
    const float *values, *bias;
    int activation, wide;
    float *y;
    float *xt;     /* x transposed in tiles (batch > 1) */
    float *acc;    /* per worker: BAND * TILE floats (batch > 1) */
    int64_t g0, g1; /* the group of tiles being computed */
};

/* Batch 1: the rows of chunks c0..c1. */
static void spmv_chunks(void *ctx, int64_t c0, int64_t c1, int worker) {
    const struct csr_args *a = ctx;
    const int64_t r0 = pk_csr_first_row(a->indptr, a->out, c0, a->chunks);
    const int64_t r1 = pk_csr_first_row(a->indptr, a->out, c1, a->chunks);
    if (a->wide) /* a constant in each copy of spmv_rows */
        spmv_rows(a->x, a->indptr, a->indices, a->values, a->bias, a->activation, a->y, r0, r1, 1);
    else
        spmv_rows(a->x, a->indptr, a->indices, a->values, a->bias, a->activation, a->y, r0, r1, 0);
}

/* Blocks i0..i1 of 8 columns of x, each for one tile, transposed into xt. */
static void transpose_part(void *ctx, int64_t i0, int64_t i1, int worker) {
    const struct csr_args *a = ctx;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t t = i / a->blocks, kb = i % a->blocks;
        const int64_t rows = a->batch - t * TILE < TILE ? a->batch - t * TILE : TILE;
        transpose_block(a->x + t * TILE * a->in, a->in, rows, kb, a->xt + t * TILE * a->in,
                        (int)((rows + 7) / 8) * 8);
    }
}

/* Batch > 1: the rows of chunks c0..c1 for the tiles of group g0..g1. */
static void spmm_chunks(void *ctx, int64_t c0, int64_t c1, int worker) {
    const struct csr_args *a = ctx;
    float *acc = a->acc + (int64_t)worker * BAND * TILE;
    const int64_t r_begin = pk_csr_first_row(a->indptr, a->out, c0, a->chunks);
    const int64_t r_end = pk_csr_first_row(a->indptr, a->out, c1, a->chunks);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += BAND) {
        const int64_t r1 = r0 + BAND < r_end ? r0 + BAND : r_end;
        if (a->wide) /* as above */
            spmm_band(a->xt, a->in, a->batch, a->indptr, a->indices, a->values, a->bias,
                      a->activation, a->y, a->out, r0, r1, a->g0, a->g1, acc, 1);
        else
            spmm_band(a->xt, a->in, a->batch, a->indptr, a->indices, a->values, a->bias,
                      a->activation, a->y, a->out, r0, r1, a->g0, a->g1, acc, 0);
    }
}

/* The whole call. Row chunks of about equal work, fixed by the matrix alone, handed out
 * as the guided schedule does: long runs of adjacent chunks first (half the rest, then
 * smaller), single chunks at the end to even out the finish. Chunks dealt out one at a
 * time (or round-robin) put the cores on neighbouring chunks, which is slower:
 * neighbouring chunks share cache lines of y at their borders, and each core's
 * prefetcher likely runs on into the other's weights. */
static int csr_avx2(const float *x, int64_t batch, int64_t in, const int32_t *indptr,
                    const void *indices, const float *values, int64_t out, const float *bias,
                    int activation, float *y, int wide) {
    const int64_t chunks = out < CHUNKS ? out : CHUNKS;
    const int64_t nnz = indptr[out];
    /* at batch 1 a nonzero (a gathered load, 6 streamed bytes) costs about as much as 16
     * multiply-adds */
    const int threads = pk_threads_for((double)nnz * (batch == 1 ? 16 : batch));
    struct csr_args a = {x, batch, in, out, chunks, (in + 7) / 8, indptr, indices, values,
                         bias, activation, wide, y, NULL, NULL, 0, 0};
    if (batch == 1) {
        pk_parallel_guided(threads, chunks, spmv_chunks, &a);
        return PK_OK;
    }
    /* Tiles of TILE batch rows; the last is as wide as its rows rounded up to 8. */
    const int64_t tiles = (batch + TILE - 1) / TILE;
    const int64_t padded = (tiles - 1) * TILE + ((batch - (tiles - 1) * TILE + 7) / 8) * 8;
    void *parts[2];
    const size_t bytes[2] = {(size_t)in * (size_t)padded * sizeof(float),
                             (size_t)threads * BAND * TILE * sizeof(float)};
    if (!pk_alloc_parts(2, bytes, parts)) return PK_ERR_NOMEM;
    a.xt = parts[0];
    a.acc = parts[1];
    /* every tile is complete before any row starts */
    pk_parallel_for(threads, tiles * a.blocks, 32, transpose_part, &a);
    /* Tiles go in groups that fit in L2 together; within a group, a chunk's rows are
     * read once for all its tiles. Small x: one group, weights read once. Large x:
     * weights are read once per group, but the random column reads hit L2. */
    const int64_t tile_bytes = in * TILE * (int64_t)sizeof(float);
    const int64_t group = tile_bytes > 0 && tile_bytes < L2_TILES ? L2_TILES / tile_bytes : 1;
    for (a.g0 = 0; a.g0 < tiles; a.g0 += group) {
        a.g1 = a.g0 + group < tiles ? a.g0 + group : tiles;
        pk_parallel_guided(threads, chunks, spmm_chunks, &a);
    }
    pk_aligned_free(parts[0]);
    return PK_OK;
}

/* ---- batch 1 on row slices (pk_linear_csr_slices_f32) ---- */

/* First slice of part t of n: parts hold about equal entries and start at a multiple of
 * SLICE_GROUP slices, so that two threads never write one cache line of y (the builder
 * keeps each group's rows among its own 64). */
static int64_t first_slice(const int64_t *slice_ptr, int64_t slices, int64_t t, int64_t n) {
    if (t <= 0) return 0;
    if (t >= n) return slices;
    const int64_t target = slice_ptr[slices] / n * t + slice_ptr[slices] % n * t / n;
    int64_t lo = 0, hi = slices;
    while (lo < hi) { /* first s with slice_ptr[s] >= target */
        const int64_t mid = lo + (hi - lo) / 2;
        if (slice_ptr[mid] < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo / SLICE_GROUP * SLICE_GROUP;
}

/* Slices [s0, s1): eight rows advance together, one entry each per step, so a slice has
 * one loop and one branch miss where CSR rows had one loop, tail and reduction each. */
PK_ALWAYS_INLINE void slices_run(const float *xs, const int64_t *slice_ptr,
                                 const int32_t *slice_rows, const void *indices,
                                 const float *values, const float *bias, int activation, float *y,
                                 int64_t s0, int64_t s1, int wide) {
    const int64_t last = slice_ptr[s1];
    for (int64_t s = s0; s < s1; s++) {
        const int64_t end = slice_ptr[s + 1];
        int64_t e = slice_ptr[s];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (; e + 16 <= end; e += 16) step16(xs, indices, values, e, last, &a0, &a1, wide);
        if (e < end)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + e), gather8(xs, indices, e, wide), a0);
        float sum[8];
        _mm256_storeu_ps(sum, _mm256_add_ps(a0, a1));
        for (int i = 0; i < 8; i++) {
            const int32_t o = slice_rows[8 * s + i];
            if (o >= 0) y[o] = pk_activate(sum[i] + (bias ? bias[o] : 0.0f), activation);
        }
    }
}

struct slices_args {
    const float *xs;
    int64_t slices, chunks;
    const int64_t *slice_ptr;
    const int32_t *slice_rows;
    const void *indices;
    int index_bytes;
    const float *values, *bias;
    int activation;
    float *y;
};

static void slice_chunks(void *ctx, int64_t c0, int64_t c1, int worker) {
    const struct slices_args *a = ctx;
    const int64_t s0 = first_slice(a->slice_ptr, a->slices, c0, a->chunks);
    const int64_t s1 = first_slice(a->slice_ptr, a->slices, c1, a->chunks);
    if (a->index_bytes == 4)
        slices_run(a->xs, a->slice_ptr, a->slice_rows, a->indices, a->values, a->bias,
                   a->activation, a->y, s0, s1, 1);
    else
        slices_run(a->xs, a->slice_ptr, a->slice_rows, a->indices, a->values, a->bias,
                   a->activation, a->y, s0, s1, 0);
}

int pk_linear_csr_slices_avx2(const float *xs, int64_t slices, const int64_t *slice_ptr,
                              const int32_t *slice_rows, const void *indices, int index_bytes,
                              const float *values, const float *bias, int activation,
                              float *y) {
    struct slices_args a = {xs, slices, slices < CHUNKS ? slices : CHUNKS, slice_ptr,
                            slice_rows, indices, index_bytes, values, bias, activation, y};
    const int threads = pk_threads_for(16.0 * (double)slice_ptr[slices]); /* as csr batch 1 */
    pk_parallel_guided(threads, a.chunks, slice_chunks, &a); /* as in csr_avx2 */
    return PK_OK;
}

int pk_linear_csr_avx2(const float *x, int64_t batch, int64_t in_features,
                       const int32_t *indptr, const void *indices, int index_bytes,
                       const float *values, int64_t out_features,
                       const float *bias, int activation, float *y) {
    if (index_bytes == 4)
        return csr_avx2(x, batch, in_features, indptr, indices, values, out_features, bias,
                        activation, y, 1);
    return csr_avx2(x, batch, in_features, indptr, indices, values, out_features, bias,
                    activation, y, 0);
}
