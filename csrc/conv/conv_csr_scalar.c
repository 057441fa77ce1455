/* CSR conv2d, portable C: every nonzero p of output channel o multiplies a contiguous
 * run of activations (XNNPACK's SpMM idea on the CHW layout):
 * y[n, o, oh, ow] = act(bias[o] + sum_p values[p] * x[n*x_image + off[p] + oh*x_row + ow]). */
#include "conv_internal.h"

/* Tasks t0..t1: one output row tile each, every channel. */
static void row_tiles(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct pk_conv_csr_args *a = ctx;
    const int64_t out_channels = a->out_channels, out_h = a->out_h, out_w = a->out_w;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t tile = t % a->tiles, oh = (t / a->tiles) % out_h;
        const int64_t n = t / (a->tiles * out_h);
        const int64_t ow0 = tile * PK_CONV_CSR_TILE;
        const int64_t cols =
            out_w - ow0 < PK_CONV_CSR_TILE ? out_w - ow0 : PK_CONV_CSR_TILE;
        const float *xb = a->x + n * a->x_image + oh * a->x_row + ow0;
        for (int64_t o = 0; o < out_channels; o++) {
            float acc[PK_CONV_CSR_TILE] = {0};
            for (int64_t p = a->indptr[o]; p < a->indptr[o + 1]; p++) {
                const float v = a->values[p];
                const float *b = xb + a->offsets[p];
                for (int64_t j = 0; j < cols; j++) acc[j] += v * b[j];
            }
            const float bv = a->bias ? a->bias[o] : 0.0f;
            float *yo = a->y + ((n * out_channels + o) * out_h + oh) * out_w + ow0;
            for (int64_t j = 0; j < cols; j++) yo[j] = pk_activate(acc[j] + bv, a->activation);
        }
    }
}

int pk_conv_csr_scalar(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                       const int32_t *indptr, const int64_t *offsets, const float *values,
                       int64_t out_channels, int64_t out_h, int64_t out_w, const float *bias,
                       int activation, float *y) {
    const int64_t tiles = (out_w + PK_CONV_CSR_TILE - 1) / PK_CONV_CSR_TILE;
    const int64_t tasks = images * out_h * tiles;
    struct pk_conv_csr_args args = {x,           indptr, offsets, values, bias,  y,
                                    x_image,     x_row,  out_channels, out_h, out_w, tiles,
                                    out_h * out_w, activation};
    pk_parallel_for(pk_conv_threads((double)indptr[out_channels] * images * out_h * out_w),
                    tasks, 1, row_tiles, &args);
    return PK_OK;
}
