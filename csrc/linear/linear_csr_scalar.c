/* CSR sparse linear, portable C. Batch > 1: x is transposed in tiles of TILE rows so
 * that every nonzero multiplies a contiguous vector of activations. */
#include <string.h>

#include "pk_internal.h"

#define TILE 16

static inline int64_t col_at(const void *indices, int index_bytes, int64_t p) {
    return index_bytes == 2 ? (int64_t)((const uint16_t *)indices)[p]
                            : (int64_t)((const int32_t *)indices)[p];
}

int pk_linear_csr_scalar(const float *x, int64_t batch, int64_t in_features,
                         const int32_t *indptr, const void *indices, int index_bytes,
                         const float *values, int64_t out_features,
                         const float *bias, int activation, float *y) {
    if (batch == 1) {
#pragma omp parallel for schedule(static) num_threads(pk_threads_for((double)batch * indptr[out_features]))
        for (int64_t o = 0; o < out_features; o++) {
            float acc = 0.0f;
            for (int64_t p = indptr[o]; p < indptr[o + 1]; p++)
                acc += values[p] * x[col_at(indices, index_bytes, p)];
            y[o] = pk_activate(acc + (bias ? bias[o] : 0.0f), activation);
        }
        return PK_OK;
    }
    float *xt = pk_aligned_alloc((size_t)in_features * TILE * sizeof(float));
    if (!xt) return PK_ERR_NOMEM;
    for (int64_t b0 = 0; b0 < batch; b0 += TILE) {
        int64_t bt = batch - b0 < TILE ? batch - b0 : TILE;
        if (bt < TILE) memset(xt, 0, (size_t)in_features * TILE * sizeof(float));
        for (int64_t k = 0; k < in_features; k++)
            for (int64_t j = 0; j < bt; j++) xt[k * TILE + j] = x[(b0 + j) * in_features + k];
#pragma omp parallel for schedule(static) num_threads(pk_threads_for((double)batch * indptr[out_features]))
        for (int64_t o = 0; o < out_features; o++) {
            float acc[TILE];
            memset(acc, 0, sizeof acc);
            for (int64_t p = indptr[o]; p < indptr[o + 1]; p++) {
                const float v = values[p];
                const float *xr = xt + col_at(indices, index_bytes, p) * TILE;
                for (int j = 0; j < TILE; j++) acc[j] += v * xr[j];
            }
            const float b = bias ? bias[o] : 0.0f;
            for (int64_t j = 0; j < bt; j++)
                y[(b0 + j) * out_features + o] = pk_activate(acc[j] + b, activation);
        }
    }
    pk_aligned_free(xt);
    return PK_OK;
}

int pk_linear_csr_slices_scalar(const float *xs, int64_t slices, const int64_t *slice_ptr,
                                const int32_t *slice_rows, const void *indices, int index_bytes,
                                const float *values, const float *bias, int activation,
                                float *y) {
#pragma omp parallel for schedule(static) num_threads(pk_threads_for(16.0 * slice_ptr[slices]))
    for (int64_t s = 0; s < slices; s++) {
        float acc[8] = {0};
        for (int64_t e = slice_ptr[s]; e < slice_ptr[s + 1]; e++)
            acc[e % 8] += values[e] * xs[col_at(indices, index_bytes, e)];
        for (int i = 0; i < 8; i++) {
            const int32_t o = slice_rows[8 * s + i];
            if (o >= 0) y[o] = pk_activate(acc[i] + (bias ? bias[o] : 0.0f), activation);
        }
    }
    return PK_OK;
}
