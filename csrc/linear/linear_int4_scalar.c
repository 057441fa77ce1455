/* int4 linear, portable C: rows of x quantized to int8, then per block of 8 output
 * rows and per group an exact int32 dot product, summed over groups in float32 with
 * each group's scale, then the epilogue (the order of the NumPy reference). */
#include <stdlib.h>
#include <string.h>

#include "pk_internal.h"

struct int4_args {
    int64_t batch, groups, ldq, chunks, per_group, out_features;
    const uint8_t *packed;
    const pk_quant_rows *rows;
    const float *scale, *bias;
    int activation;
    float *y;
};

static void row_blocks(void *ctx, int64_t ob0, int64_t ob1, int worker) {
    const struct int4_args *a = ctx;
    const int64_t groups = a->groups, per_group = a->per_group;
    for (int64_t ob = ob0; ob < ob1; ob++) {
        const uint8_t *wb = a->packed + ob * a->chunks * 32;
        const float *sb = a->scale + ob * groups * 8;
        for (int64_t b = 0; b < a->batch; b++) {
            const int8_t *xr = a->rows->q + b * a->ldq;
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
            for (int r = 0; r < 8 && ob * 8 + r < a->out_features; r++) {
                const int64_t o = ob * 8 + r;
                a->y[b * a->out_features + o] = pk_quant_store(
                    t[r] * a->rows->scale[b], a->bias, o, a->activation, a->rows->bad[b]);
            }
        }
    }
}

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
    struct int4_args a = {batch, groups, ldq, chunks, group_size / 8 /* byte columns per group */,
                          out_features, packed, &rows, scale, bias, activation, y};
    pk_parallel_for(pk_threads_for((double)batch * out_features * in_features), nblocks, 1,
                    row_blocks, &a);
    pk_aligned_free(rows.q);
    return PK_OK;
}
