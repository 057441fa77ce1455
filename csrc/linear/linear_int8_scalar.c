/* int8 linear, portable C: rows of x quantized to int8, then per block of 8 output
 * rows an exact int32 dot product with each quantized row, then the float epilogue. */
#include <stdlib.h>
#include <string.h>

#include "pk_internal.h"

struct int8_args {
    int64_t batch, chunks, ldq, out_features;
    const int8_t *packed;
    const pk_quant_rows *rows;
    const float *scale, *bias;
    int activation;
    float *y;
};

static void row_blocks(void *ctx, int64_t ob0, int64_t ob1, int worker) {
    const struct int8_args *a = ctx;
    for (int64_t ob = ob0; ob < ob1; ob++) {
        const int8_t *wb = a->packed + ob * a->chunks * 32;
        for (int64_t b = 0; b < a->batch; b++) {
            const int8_t *xr = a->rows->q + b * a->ldq;
            int32_t acc[8] = {0};
            for (int64_t c = 0; c < a->chunks; c++)
                for (int r = 0; r < 8; r++)
                    for (int j = 0; j < 4; j++)
                        acc[r] += (int32_t)wb[c * 32 + r * 4 + j] * (int32_t)xr[c * 4 + j];
            for (int r = 0; r < 8 && ob * 8 + r < a->out_features; r++) {
                const int64_t o = ob * 8 + r;
                float v = (float)acc[r] * (a->rows->scale[b] * a->scale[o]);
                a->y[b * a->out_features + o] =
                    pk_quant_store(v, a->bias, o, a->activation, a->rows->bad[b]);
            }
        }
    }
}

int pk_linear_int8_scalar(const float *x, int64_t batch, int64_t in_features,
                          const int8_t *packed, const float *scale, int64_t out_features,
                          float act_scale, const float *bias, int activation, float *y) {
    const int64_t chunks = (in_features + 3) / 4, ldq = chunks * 4;
    const int64_t nblocks = (out_features + 7) / 8;
    pk_quant_rows rows;
    if (!pk_quantize_rows_scalar(x, batch, in_features, ldq, act_scale, &rows))
        return PK_ERR_NOMEM;
    struct int8_args a = {batch, chunks, ldq, out_features, packed, &rows, scale, bias,
                          activation, y};
    pk_parallel_for(pk_threads_for((double)batch * out_features * in_features), nblocks, 1,
                    row_blocks, &a);
    pk_aligned_free(rows.q);
    return PK_OK;
}
