/* int8 linear, portable C: rows of x quantized to int8, then per block of 8 output
 * rows an exact int32 dot product with each quantized row, then the float epilogue. */
#include <stdlib.h>
#include <string.h>

#include "pk_internal.h"

int pk_linear_int8_scalar(const float *x, int64_t batch, int64_t in_features,
                          const int8_t *packed, const float *scale, int64_t out_features,
                          float act_scale, const float *bias, int activation, float *y) {
    const int64_t chunks = (in_features + 3) / 4, ldq = chunks * 4;
    const int64_t nblocks = (out_features + 7) / 8;
    pk_quant_rows rows;
    if (!pk_quantize_rows_scalar(x, batch, in_features, ldq, act_scale, &rows))
        return PK_ERR_NOMEM;
#pragma omp parallel for schedule(static) num_threads(pk_threads_for((double)batch * out_features * in_features))
    for (int64_t ob = 0; ob < nblocks; ob++) {
        const int8_t *wb = packed + ob * chunks * 32;
        for (int64_t b = 0; b < batch; b++) {
            const int8_t *xr = rows.q + b * ldq;
            int32_t acc[8] = {0};
            for (int64_t c = 0; c < chunks; c++)
                for (int r = 0; r < 8; r++)
                    for (int j = 0; j < 4; j++)
                        acc[r] += (int32_t)wb[c * 32 + r * 4 + j] * (int32_t)xr[c * 4 + j];
            for (int r = 0; r < 8 && ob * 8 + r < out_features; r++) {
                const int64_t o = ob * 8 + r;
                float v = (float)acc[r] * (rows.scale[b] * scale[o]);
                y[b * out_features + o] = pk_quant_store(v, bias, o, activation, rows.bad[b]);
            }
        }
    }
    pk_aligned_free(rows.q);
    return PK_OK;
}
