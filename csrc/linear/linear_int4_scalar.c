/* int4 linear, portable C: rows of x quantized to int8, then per block of 8 output
 * rows and per group an exact int32 dot product, summed over groups in float32 with
 * each group's scale, then the epilogue (the order of the NumPy reference). */
#include <stdlib.h>
#include <string.h>

#include "pk_internal.h"

int pk_linear_int4_scalar(const float *x, int64_t batch, int64_t in_features,
                          const uint8_t *packed, const float *scale, int64_t out_features,
                          int group_size, float act_scale, const float *bias, int activation,
                          float *y) {
    const int64_t groups = (in_features + group_size - 1) / group_size;
    const int64_t ldq = groups * group_size, chunks = ldq / 8;
    const int64_t nblocks = (out_features + 7) / 8;
    pk_quant_rows rows;
    if (!pk_quantize_rows_scalar(x, batch, in_features, ldq, act_scale, &rows))
        return PK_ERR_NOMEM;
    const int64_t per_group = group_size / 8; /* byte columns of 8 k per group */
#pragma omp parallel for schedule(static) num_threads(pk_threads_for((double)batch * out_features * in_features))
    for (int64_t ob = 0; ob < nblocks; ob++) {
        const uint8_t *wb = packed + ob * chunks * 32;
        const float *sb = scale + ob * groups * 8;
        for (int64_t b = 0; b < batch; b++) {
            const int8_t *xr = rows.q + b * ldq;
            float t[8] = {0};
            for (int64_t g = 0; g < groups; g++) {
                int32_t acc[8] = {0};
                for (int64_t c = g * per_group; c < (g + 1) * per_group; c++)
                    for (int r = 0; r < 8; r++)
                        for (int j = 0; j < 4; j++) {
                            const uint8_t v = wb[c * 32 + r * 4 + j];
                            acc[r] += ((int32_t)(v & 0x0F) - 8) * (int32_t)xr[c * 8 + j];
                            acc[r] += ((int32_t)(v >> 4) - 8) * (int32_t)xr[c * 8 + 4 + j];
                        }
                for (int r = 0; r < 8; r++) t[r] = t[r] + (float)acc[r] * sb[g * 8 + r];
            }
            for (int r = 0; r < 8 && ob * 8 + r < out_features; r++) {
                const int64_t o = ob * 8 + r;
                y[b * out_features + o] =
                    pk_quant_store(t[r] * rows.scale[b], bias, o, activation, rows.bad[b]);
            }
        }
    }
    pk_aligned_free(rows.q);
    return PK_OK;
}
