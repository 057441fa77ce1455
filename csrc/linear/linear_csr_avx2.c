/* CSR sparse linear, AVX2 + FMA.
 *
 * Batch 1 (SpMV, memory bound): each row is a dot product of its values with the
 * activations gathered at its column indices, eight lanes at a time, two accumulators.
 * Batch > 1: x is transposed once per call (in parallel) into tiles of 8 or 16 batch
 * rows, xt[k][j], so that each nonzero is one broadcast and one or two FMAs over a
 * contiguous vector; a 16-wide tile of in=4096 is 256 KB and stays in L2.
 * Threads take chunks of rows balanced by nonzeros, and every output is summed by one
 * thread in an order fixed by its row alone: results do not depend on threads. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define PK_INLINE static inline __attribute__((always_inline))

/* Estimated cost of one row besides its nonzeros (loop set-up, reduction, stores). */
#define ROW_COST 4
/* Row chunks per call (fewer when there are fewer rows); threads take them in turn. */
#define CHUNKS 64

/* First row of part t of n: parts hold about equal nonzeros + ROW_COST per row. */
static int64_t first_row(const int32_t *indptr, int64_t rows, int64_t t, int64_t n) {
    if (t <= 0) return 0;
    if (t >= n) return rows;
    const int64_t target = ((int64_t)indptr[rows] + ROW_COST * rows) * t / n;
    int64_t lo = 0, hi = rows;
    while (lo < hi) { /* first r with cost(r) >= target */
        const int64_t mid = lo + (hi - lo) / 2;
        if ((int64_t)indptr[mid] + ROW_COST * mid < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* `wide` is a compile-time constant at every call: uint16 (0) or int32 (1) indices. */
PK_INLINE int64_t index_at(const void *indices, int64_t p, int wide) {
    return wide ? (int64_t)((const int32_t *)indices)[p] : (int64_t)((const uint16_t *)indices)[p];
}

/* Columns of nonzeros p .. p+3. uint16 indices come in one 64-bit load and are split
 * with shifts: Zen-class cores have two load ports, and loads are the bottleneck. */
PK_INLINE void index4(const void *indices, int64_t p, int wide, int64_t c[4]) {
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

PK_INLINE __m128 gather4(const float *x, const void *indices, int64_t p, int wide) {
    int64_t c[4];
    index4(indices, p, wide, c);
    __m128 v = _mm_load_ss(x + c[0]);
    v = _mm_insert_ps(v, _mm_load_ss(x + c[1]), 0x10);
    v = _mm_insert_ps(v, _mm_load_ss(x + c[2]), 0x20);
    return _mm_insert_ps(v, _mm_load_ss(x + c[3]), 0x30);
}

/* x[indices[p .. p+7]]. Scalar loads beat vgatherdps on Zen 1/2 by about 1.5x. */
PK_INLINE __m256 gather8(const float *x, const void *indices, int64_t p, int wide) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(gather4(x, indices, p, wide)),
                                gather4(x, indices, p + 4, wide), 1);
}

PK_INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- batch 1 ---- */

PK_INLINE void spmv_rows(const float *x, const int32_t *indptr, const void *indices,
                         const float *values, const float *bias, int activation, float *y,
                         int64_t r0, int64_t r1, int wide) {
    for (int64_t o = r0; o < r1; o++) {
        const int64_t hi = indptr[o + 1];
        int64_t p = indptr[o];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (; p + 16 <= hi; p += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p), gather8(x, indices, p, wide), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p + 8),
                                 gather8(x, indices, p + 8, wide), a1);
        }
        if (p + 8 <= hi) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + p), gather8(x, indices, p, wide), a0);
            p += 8;
        }
        float acc = hsum(_mm256_add_ps(a0, a1));
        for (; p < hi; p++) acc += values[p] * x[index_at(indices, p, wide)];
        y[o] = pk_activate(acc + (bias ? bias[o] : 0.0f), activation);
    }
}

/* ---- batch > 1: transposed activation tiles ---- */

/* xt[k][jo + i] = x[b0 + jo + i][k] for k in [k0, k0 + 8), i < 8; rows past `rows`
 * (the batch tail) are zero. */
PK_INLINE void transpose8(const float *x, int64_t in, int64_t rows, int64_t k0, float *xt,
                          int tile) {
    __m256 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = i < rows ? _mm256_loadu_ps(x + i * in + k0) : _mm256_setzero_ps();
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    float *o = xt + k0 * tile;
    _mm256_store_ps(o + 0 * tile, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(o + 1 * tile, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(o + 2 * tile, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(o + 3 * tile, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(o + 4 * tile, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(o + 5 * tile, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(o + 6 * tile, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(o + 7 * tile, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* Block kb (8 columns of x) of one tile: `rows` valid batch rows starting at x. */
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

/* Store one row's accumulators (tile lanes) as outputs y[b0 + j][o], j < rows. */
PK_INLINE void store_column(float *y, int64_t out, int64_t o, int64_t rows, const float *acc,
                            const float *bias, int activation) {
    const float b = bias ? bias[o] : 0.0f;
    for (int64_t j = 0; j < rows; j++) y[j * out + o] = pk_activate(acc[j] + b, activation);
}

PK_INLINE void spmm8_rows(const float *xt, const int32_t *indptr, const void *indices,
                          const float *values, const float *bias, int activation, float *y,
                          int64_t out, int64_t rows, int64_t r0, int64_t r1, int wide) {
    float acc[8] __attribute__((aligned(32)));
    for (int64_t o = r0; o < r1; o++) {
        const int64_t hi = indptr[o + 1];
        int64_t p = indptr[o];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; p + 4 <= hi; p += 4) {
            int64_t c[4];
            index4(indices, p, wide, c);
            const __m256 v = _mm256_broadcast_ps((const __m128 *)(values + p));
            a0 = _mm256_fmadd_ps(_mm256_permute_ps(v, 0x00), _mm256_load_ps(xt + c[0] * 8), a0);
            a1 = _mm256_fmadd_ps(_mm256_permute_ps(v, 0x55), _mm256_load_ps(xt + c[1] * 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_permute_ps(v, 0xaa), _mm256_load_ps(xt + c[2] * 8), a2);
            a3 = _mm256_fmadd_ps(_mm256_permute_ps(v, 0xff), _mm256_load_ps(xt + c[3] * 8), a3);
        }
        for (; p < hi; p++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(values + p),
                                 _mm256_load_ps(xt + index_at(indices, p, wide) * 8), a0);
        _mm256_store_ps(acc, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        store_column(y, out, o, rows, acc, bias, activation);
    }
}

PK_INLINE void spmm16_rows(const float *xt, const int32_t *indptr, const void *indices,
                           const float *values, const float *bias, int activation, float *y,
                           int64_t out, int64_t rows, int64_t r0, int64_t r1, int wide) {
    float acc[16] __attribute__((aligned(32)));
    for (int64_t o = r0; o < r1; o++) {
        const int64_t hi = indptr[o + 1];
        int64_t p = indptr[o];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        __m256 c0 = a0, c1 = a0, d0 = a0, d1 = a0;
        for (; p + 4 <= hi; p += 4) {
            int64_t c[4];
            index4(indices, p, wide, c);
            const __m256 v = _mm256_broadcast_ps((const __m128 *)(values + p));
            const __m256 v0 = _mm256_permute_ps(v, 0x00), v1 = _mm256_permute_ps(v, 0x55);
            const __m256 v2 = _mm256_permute_ps(v, 0xaa), v3 = _mm256_permute_ps(v, 0xff);
            const float *x0 = xt + c[0] * 16, *x1 = xt + c[1] * 16;
            const float *x2 = xt + c[2] * 16, *x3 = xt + c[3] * 16;
            a0 = _mm256_fmadd_ps(v0, _mm256_load_ps(x0), a0);
            a1 = _mm256_fmadd_ps(v0, _mm256_load_ps(x0 + 8), a1);
            b0 = _mm256_fmadd_ps(v1, _mm256_load_ps(x1), b0);
            b1 = _mm256_fmadd_ps(v1, _mm256_load_ps(x1 + 8), b1);
            c0 = _mm256_fmadd_ps(v2, _mm256_load_ps(x2), c0);
            c1 = _mm256_fmadd_ps(v2, _mm256_load_ps(x2 + 8), c1);
            d0 = _mm256_fmadd_ps(v3, _mm256_load_ps(x3), d0);
            d1 = _mm256_fmadd_ps(v3, _mm256_load_ps(x3 + 8), d1);
        }
        for (; p < hi; p++) {
            const float *x0 = xt + index_at(indices, p, wide) * 16;
            const __m256 v0 = _mm256_broadcast_ss(values + p);
            a0 = _mm256_fmadd_ps(v0, _mm256_load_ps(x0), a0);
            a1 = _mm256_fmadd_ps(v0, _mm256_load_ps(x0 + 8), a1);
        }
        _mm256_store_ps(acc, _mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(c0, d0)));
        _mm256_store_ps(acc + 8, _mm256_add_ps(_mm256_add_ps(a1, b1), _mm256_add_ps(c1, d1)));
        store_column(y, out, o, rows, acc, bias, activation);
    }
}

/* The whole call for one index width (wide is a constant in each instantiation). */
PK_INLINE int csr_avx2(const float *x, int64_t batch, int64_t in, const int32_t *indptr,
                       const void *indices, const float *values, int64_t out,
                       const float *bias, int activation, float *y, int wide) {
    /* Row chunks of about equal work, fixed by the matrix alone, handed out dynamically:
     * on a busy machine a thread that loses its core holds up one chunk, not half the
     * matrix. */
    const int64_t chunks = out < CHUNKS ? out : CHUNKS;
    if (batch == 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(pk_threads_for((double)batch * indptr[out]))
        for (int64_t c = 0; c < chunks; c++)
            spmv_rows(x, indptr, indices, values, bias, activation, y,
                      first_row(indptr, out, c, chunks), first_row(indptr, out, c + 1, chunks),
                      wide);
        return PK_OK;
    }
    /* Tiles of 16 batch rows; a tail of at most 8 rows gets a tile of 8. */
    const int64_t full = batch / 16, tail = batch % 16;
    const int64_t tiles = full + (tail > 0);
    const int last_width = tail == 0 ? 16 : (tail <= 8 ? 8 : 16);
    const int64_t blocks = (in + 7) / 8;
    float *xt = pk_aligned_alloc((size_t)in * (size_t)(16 * full + last_width) * sizeof(float));
    if (!xt) return PK_ERR_NOMEM;
#pragma omp parallel num_threads(pk_threads_for((double)batch * indptr[out]))
    {
#pragma omp for schedule(dynamic, 32)
        for (int64_t i = 0; i < tiles * blocks; i++) {
            const int64_t t = i / blocks, kb = i % blocks;
            transpose_block(x + t * 16 * in, in, t < full ? 16 : tail, kb, xt + t * 16 * in,
                            t < full ? 16 : last_width);
        }
        /* (the implicit barrier above: every tile is complete before any row starts) */
        /* Chunk-major: a chunk's rows are read from memory once and reused from cache
         * for every batch tile (tile-major would stream the weights once per tile). */
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t r0 = first_row(indptr, out, c, chunks);
            const int64_t r1 = first_row(indptr, out, c + 1, chunks);
            for (int64_t t = 0; t < tiles; t++) {
                const float *tile = xt + t * 16 * in;
                float *yt = y + t * 16 * out;
                if (t < full || last_width == 16)
                    spmm16_rows(tile, indptr, indices, values, bias, activation, yt, out,
                                t < full ? 16 : tail, r0, r1, wide);
                else
                    spmm8_rows(tile, indptr, indices, values, bias, activation, yt, out, tail,
                               r0, r1, wide);
            }
        }
    }
    pk_aligned_free(xt);
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
