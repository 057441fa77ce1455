/* CSR sparse linear, AVX-512 (F). Kept deliberately simple: the machines this project
 * is tested on lack AVX-512, so this file is compiled but never executed there.
 *
 * Batch 1: each row is a dot product of its values with vgatherdps-gathered
 * activations, 16 lanes at a time, the row tail masked. Batch > 1: x is transposed into
 * tiles of 16 batch rows, xt[k][j], so each nonzero is one broadcast and one FMA over a
 * zmm register. Threads own row ranges balanced by nonzeros; every output is summed by
 * one thread in an order fixed by its row alone, whatever the thread count. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define TILE 16

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

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

int pk_linear_csr_avx512(const float *x, int64_t batch, int64_t in_features,
                         const int32_t *indptr, const void *indices, int index_bytes,
                         const float *values, int64_t out_features,
                         const float *bias, int activation, float *y) {
    const int64_t in = in_features, out = out_features;
    if (batch == 1) {
#pragma omp parallel num_threads(pk_threads())
        {
            const int t = thread_id(), n = thread_count();
            const int64_t r0 = pk_csr_first_row(indptr, out, t, n);
            const int64_t r1 = pk_csr_first_row(indptr, out, t + 1, n);
            spmv_rows(x, indptr, indices, index_bytes, values, bias, activation, y, r0, r1);
        }
        return PK_OK;
    }
    const int64_t tiles = (batch + TILE - 1) / TILE;
    float *xt = pk_aligned_alloc((size_t)tiles * (size_t)in * TILE * sizeof(float));
    if (!xt) return PK_ERR_NOMEM;
#pragma omp parallel num_threads(pk_threads())
    {
        /* xt[t][k][j] = x[t * TILE + j][k], zero past the batch */
#pragma omp for schedule(static)
        for (int64_t k = 0; k < in; k++)
            for (int64_t t = 0; t < tiles; t++)
                for (int64_t j = 0; j < TILE; j++) {
                    const int64_t b = t * TILE + j;
                    xt[(t * in + k) * TILE + j] = b < batch ? x[b * in + k] : 0.0f;
                }
        const int id = thread_id(), n = thread_count();
        const int64_t r0 = pk_csr_first_row(indptr, out, id, n);
        const int64_t r1 = pk_csr_first_row(indptr, out, id + 1, n);
        for (int64_t t = 0; t < tiles; t++) {
            const int64_t rows = batch - t * TILE < TILE ? batch - t * TILE : TILE;
            spmm_rows(xt + t * in * TILE, indptr, indices, index_bytes, values, bias, activation,
                      y + t * TILE * out, out, rows, r0, r1);
        }
    }
    pk_aligned_free(xt);
    return PK_OK;
}
