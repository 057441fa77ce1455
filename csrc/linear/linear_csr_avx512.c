/* CSR sparse linear, AVX-512 (F). Kept deliberately simple: the machines this project
 * is tested on lack AVX-512, so this file is compiled but never executed there.
 *
 * Batch 1: each row is a dot product of its values with vgatherdps-gathered
 * activations, 16 lanes at a time, the row tail masked. Batch > 1: x is transposed into
 * tiles of 16 batch rows, xt[k][j], so each nonzero is one broadcast and one FMA over a
 * zmm register. Threads take row ranges balanced by nonzeros; every output is summed by
 * one thread in an order fixed by its row alone, whatever the thread count. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define TILE 16

static inline int64_t index_at(const void *indices, int index_bytes, int64_t p) {
    return index_bytes == 2 ? (int64_t)((const uint16_t *)indices)[p]
                            : (int64_t)((const int32_t *)indices)[p];
}

/* Columns of nonzeros p .. p+n-1 (n <= 16) as int32 lanes; lanes past n are 0. */
static inline __m512i load_index16(const void *indices, int index_bytes, int64_t p, int n) {
    const __mmask16 m = (__mmask16)((1u << n) - 1u);
    if (index_bytes == 2)
        return _mm512_cvtepu16_epi32(
            _mm256_maskz_loadu_epi16(m, (const uint16_t *)indices + p));
    return _mm512_maskz_loadu_epi32(m, (const int32_t *)indices + p);
}

static void spmv_rows(const float *x, const int32_t *indptr, const void *indices,
                      int index_bytes, const float *values, const float *bias, int activation,
                      float *y, int64_t r0, int64_t r1) {
    for (int64_t o = r0; o < r1; o++) {
        const int64_t hi = indptr[o + 1];
        __m512 acc = _mm512_setzero_ps();
        for (int64_t p = indptr[o]; p < hi; p += 16) {
            const int n = hi - p < 16 ? (int)(hi - p) : 16;
            const __mmask16 m = (__mmask16)((1u << n) - 1u);
            const __m512i idx = load_index16(indices, index_bytes, p, n);
            const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x, 4);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, values + p), xv, acc);
        }
        const float sum = _mm512_reduce_add_ps(acc);
        y[o] = pk_activate(sum + (bias ? bias[o] : 0.0f), activation);
    }
}

static void spmm_rows(const float *xt, const int32_t *indptr, const void *indices,
                      int index_bytes, const float *values, const float *bias, int activation,
                      float *y, int64_t out, int64_t rows, int64_t r0, int64_t r1) {
    float acc[TILE] __attribute__((aligned(64)));
    for (int64_t o = r0; o < r1; o++) {
        const int64_t hi = indptr[o + 1];
        int64_t p = indptr[o];
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; p + 4 <= hi; p += 4) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(values[p]),
                                 _mm512_load_ps(xt + index_at(indices, index_bytes, p) * TILE), a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(values[p + 1]),
                                 _mm512_load_ps(xt + index_at(indices, index_bytes, p + 1) * TILE),
                                 a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(values[p + 2]),
                                 _mm512_load_ps(xt + index_at(indices, index_bytes, p + 2) * TILE),
                                 a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(values[p + 3]),
                                 _mm512_load_ps(xt + index_at(indices, index_bytes, p + 3) * TILE),
                                 a3);
        }
        for (; p < hi; p++)
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(values[p]),
                                 _mm512_load_ps(xt + index_at(indices, index_bytes, p) * TILE), a0);
        _mm512_store_ps(acc, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        const float b = bias ? bias[o] : 0.0f;
        for (int64_t j = 0; j < rows; j++) y[j * out + o] = pk_activate(acc[j] + b, activation);
    }
}

struct csr_args {
    const float *x;
    int64_t batch, in, out, tiles, parts;
    const int32_t *indptr;
    const void *indices;
    int index_bytes;
    const float *values, *bias;
    int activation;
    float *y, *xt;
};

/* Batch 1: the rows of parts p0..p1 (balanced by nonzeros). */
static void spmv_parts(void *ctx, int64_t p0, int64_t p1, int worker) {
    const struct csr_args *a = ctx;
    const int64_t r0 = pk_csr_first_row(a->indptr, a->out, p0, a->parts);
    const int64_t r1 = pk_csr_first_row(a->indptr, a->out, p1, a->parts);
    spmv_rows(a->x, a->indptr, a->indices, a->index_bytes, a->values, a->bias, a->activation,
              a->y, r0, r1);
}

/* xt[t][k][j] = x[t * TILE + j][k] for columns k0..k1, zero past the batch. */
static void transpose_part(void *ctx, int64_t k0, int64_t k1, int worker) {
    const struct csr_args *a = ctx;
    const int64_t in = a->in;
    for (int64_t k = k0; k < k1; k++)
        for (int64_t t = 0; t < a->tiles; t++)
            for (int64_t j = 0; j < TILE; j++) {
                const int64_t b = t * TILE + j;
                a->xt[(t * in + k) * TILE + j] = b < a->batch ? a->x[b * in + k] : 0.0f;
            }
}

/* Batch > 1: the rows of parts p0..p1, for every tile. */
static void spmm_parts(void *ctx, int64_t p0, int64_t p1, int worker) {
    const struct csr_args *a = ctx;
    const int64_t r0 = pk_csr_first_row(a->indptr, a->out, p0, a->parts);
    const int64_t r1 = pk_csr_first_row(a->indptr, a->out, p1, a->parts);
    for (int64_t t = 0; t < a->tiles; t++) {
        const int64_t rows = a->batch - t * TILE < TILE ? a->batch - t * TILE : TILE;
        spmm_rows(a->xt + t * a->in * TILE, a->indptr, a->indices, a->index_bytes, a->values,
                  a->bias, a->activation, a->y + t * TILE * a->out, a->out, rows, r0, r1);
    }
}

int pk_linear_csr_avx512(const float *x, int64_t batch, int64_t in_features,
                         const int32_t *indptr, const void *indices, int index_bytes,
                         const float *values, int64_t out_features,
                         const float *bias, int activation, float *y) {
    const int threads = pk_threads();
    const int64_t tiles = (batch + TILE - 1) / TILE;
    struct csr_args a = {x, batch, in_features, out_features, tiles,
                         (int64_t)threads * PK_TASKS_PER_THREAD, indptr, indices, index_bytes,
                         values, bias, activation, y, NULL};
    if (batch == 1) {
        pk_parallel_for(threads, a.parts, 1, spmv_parts, &a);
        return PK_OK;
    }
    a.xt = pk_aligned_alloc((size_t)tiles * (size_t)in_features * TILE * sizeof(float));
    if (!a.xt) return PK_ERR_NOMEM;
    pk_parallel_for(threads, in_features, 16, transpose_part, &a);
    pk_parallel_for(threads, a.parts, 1, spmm_parts, &a);
    pk_aligned_free(a.xt);
    return PK_OK;
}
