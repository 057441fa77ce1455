/* CSR sparse linear, portable C. Batch > 1: x is transposed in tiles of TILE rows so
 * that every nonzero multiplies a contiguous vector of activations. */
#include <string.h>

#include "pk_internal.h"

#define TILE 16

static inline int64_t col_at(const void *indices, int index_bytes, int64_t p) {
    return index_bytes == 2 ? (int64_t)((const uint16_t *)indices)[p]
                            : (int64_t)((const int32_t *)indices)[p];
}

/* The call's arguments, shared by its parallel parts. */
struct csr_args {
    const float *x, *xt;
    const int32_t *indptr;
    const void *indices;
    int index_bytes;
    const float *values, *bias;
    int activation;
    int64_t out_features, b0, bt;
    float *y;
};

static void rows_batch1(void *ctx, int64_t o0, int64_t o1, int worker) {
    const struct csr_args *a = ctx;
    for (int64_t o = o0; o < o1; o++) {
        float acc = 0.0f;
        for (int64_t p = a->indptr[o]; p < a->indptr[o + 1]; p++)
            acc += a->values[p] * a->x[col_at(a->indices, a->index_bytes, p)];
        a->y[o] = pk_activate(acc + (a->bias ? a->bias[o] : 0.0f), a->activation);
    }
}

/* Rows o0..o1 of one tile of TILE batch rows (xt: the tile transposed). */
static void rows_tile(void *ctx, int64_t o0, int64_t o1, int worker) {
    const struct csr_args *a = ctx;
    for (int64_t o = o0; o < o1; o++) {
        float acc[TILE];
        memset(acc, 0, sizeof acc);
        for (int64_t p = a->indptr[o]; p < a->indptr[o + 1]; p++) {
            const float v = a->values[p];
            const float *xr = a->xt + col_at(a->indices, a->index_bytes, p) * TILE;
            for (int j = 0; j < TILE; j++) acc[j] += v * xr[j];
        }
        const float b = a->bias ? a->bias[o] : 0.0f;
        for (int64_t j = 0; j < a->bt; j++)
            a->y[(a->b0 + j) * a->out_features + o] = pk_activate(acc[j] + b, a->activation);
    }
}

int pk_linear_csr_scalar(const float *x, int64_t batch, int64_t in_features,
                         const int32_t *indptr, const void *indices, int index_bytes,
                         const float *values, int64_t out_features,
                         const float *bias, int activation, float *y) {
    struct csr_args a = {x, NULL, indptr, indices, index_bytes, values, bias,
                         activation, out_features, 0, 0, y};
    const int threads = pk_threads_for((double)batch * indptr[out_features]);
    if (batch == 1) {
        pk_parallel_for(threads, out_features, 16, rows_batch1, &a);
        return PK_OK;
    }
    float *xt = pk_aligned_alloc((size_t)in_features * TILE * sizeof(float));
    if (!xt) return PK_ERR_NOMEM;
    a.xt = xt;
    for (int64_t b0 = 0; b0 < batch; b0 += TILE) {
        int64_t bt = batch - b0 < TILE ? batch - b0 : TILE;
        if (bt < TILE) memset(xt, 0, (size_t)in_features * TILE * sizeof(float));
        for (int64_t k = 0; k < in_features; k++)
            for (int64_t j = 0; j < bt; j++) xt[k * TILE + j] = x[(b0 + j) * in_features + k];
        a.b0 = b0;
        a.bt = bt;
        pk_parallel_for(threads, out_features, 16, rows_tile, &a);
    }
    pk_aligned_free(xt);
    return PK_OK;
}

struct slices_args {
    const float *xs;
    const int64_t *slice_ptr;
    const int32_t *slice_rows;
    const void *indices;
    int index_bytes;
    const float *values, *bias;
    int activation;
    float *y;
};

static void slice_range(void *ctx, int64_t s0, int64_t s1, int worker) {
    const struct slices_args *a = ctx;
    for (int64_t s = s0; s < s1; s++) {
        float acc[8] = {0};
        for (int64_t e = a->slice_ptr[s]; e < a->slice_ptr[s + 1]; e++)
            acc[e % 8] += a->values[e] * a->xs[col_at(a->indices, a->index_bytes, e)];
        for (int i = 0; i < 8; i++) {
            const int32_t o = a->slice_rows[8 * s + i];
            if (o >= 0) a->y[o] = pk_activate(acc[i] + (a->bias ? a->bias[o] : 0.0f), a->activation);
        }
    }
}

int pk_linear_csr_slices_scalar(const float *xs, int64_t slices, const int64_t *slice_ptr,
                                const int32_t *slice_rows, const void *indices, int index_bytes,
                                const float *values, const float *bias, int activation,
                                float *y) {
    struct slices_args a = {xs, slice_ptr, slice_rows, indices, index_bytes,
                            values, bias, activation, y};
    /* parts of multiples of 8 slices: no two threads write one cache line of y */
    pk_parallel_for(pk_threads_for(16.0 * slice_ptr[slices]), slices, 8, slice_range, &a);
    return PK_OK;
}
