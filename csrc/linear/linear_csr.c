/* Public entries of the CSR sparse linear kernels: argument checks, then the dispatched
 * implementation. The Python side has already validated the CSR structure. */
#include <string.h>

#include "pk_internal.h"

int pk_linear_csr_f32(const float *x, int64_t batch, int64_t in_features,
                      const int32_t *indptr, const void *indices, int index_bytes,
                      const float *values, int64_t out_features,
                      const float *bias, int activation, float *y) {
    if (batch < 0 || in_features < 0 || out_features < 0) return PK_ERR_ARG;
    if (index_bytes != 2 && index_bytes != 4) return PK_ERR_ARG;
    if (index_bytes == 2 && in_features > 65536) return PK_ERR_ARG;
    if (in_features > INT32_MAX || out_features > INT32_MAX) return PK_ERR_OVERFLOW;
    if (activation < PK_ACT_NONE || activation > PK_ACT_RELU6) return PK_ERR_ARG;
    if (batch == 0 || out_features == 0) return PK_OK;
    if (!x || !indptr || !y) return PK_ERR_ARG;
    if (indptr[out_features] > 0 && (!indices || !values)) return PK_ERR_ARG;
    return pk_kernels()->linear_csr(x, batch, in_features, indptr, indices, index_bytes, values,
                                    out_features, bias, activation, y);
}

int pk_linear_csr_slices_f32(const float *x, int64_t in_features, int64_t slices,
                             const int64_t *slice_ptr, const int32_t *slice_rows,
                             const void *indices, int index_bytes, const float *values,
                             int64_t out_features, const float *bias, int activation,
                             float *y) {
    if (in_features < 0 || slices < 0 || out_features < 0) return PK_ERR_ARG;
    if (index_bytes != 2 && index_bytes != 4) return PK_ERR_ARG;
    if (index_bytes == 2 && in_features >= 65536) return PK_ERR_ARG; /* column `in` is padding */
    if (in_features >= INT32_MAX || out_features > INT32_MAX) return PK_ERR_OVERFLOW;
    if (slices < (out_features + 7) / 8) return PK_ERR_ARG;
    if (activation < PK_ACT_NONE || activation > PK_ACT_RELU6) return PK_ERR_ARG;
    if (out_features == 0) return PK_OK;
    if (!x || !slice_ptr || !slice_rows || !y) return PK_ERR_ARG;
    if (slice_ptr[slices] > 0 && (!indices || !values)) return PK_ERR_ARG;
    const struct pk_functable *kernels = pk_kernels(); /* once per call */
    /* x with a zero at column `in`, where padding entries point */
    float *xs = pk_aligned_alloc((size_t)(in_features + 1) * sizeof(float));
    if (!xs) return PK_ERR_NOMEM;
    if (in_features) memcpy(xs, x, (size_t)in_features * sizeof(float));
    xs[in_features] = 0.0f;
    const int status = kernels->linear_csr_slices(xs, slices, slice_ptr, slice_rows, indices,
                                                  index_bytes, values, bias, activation, y);
    pk_aligned_free(xs);
    return status;
}
