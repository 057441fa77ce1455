/* Dense conv2d as an offset GEMM, portable C:
 * y[n, g*og+o, oh, ow] = act(bias + sum_k W[g*og+o, k] * x[n*x_image + off[g*kg+k] + oh*x_row + ow]).
 * With x the zero-padded input and off the (c, ky, kx) shifts this is a direct stride-1
 * convolution; with x an im2col matrix (off = k * positions) it is a plain GEMM. */
#include "conv_internal.h"

#define MR PK_CONV_GEMM_MR

struct gemm_args {
    const float *x;
    int64_t x_image;
    int64_t x_row;
    const int64_t *offsets;
    int64_t groups;
    int64_t kg;
    const float *w;
    int64_t og;
    int64_t out_h;
    int64_t out_w;
    const float *bias;
    int activation;
    float *y;
    int64_t tiles;
    int64_t out_c;
    int64_t blocks;
};

/* Tasks t0..t1: one output row tile of one group each, every channel of the group. */
static void row_tiles(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct gemm_args *a = ctx;
    const float *x = a->x;
    int64_t x_image = a->x_image;
    int64_t x_row = a->x_row;
    const int64_t *offsets = a->offsets;
    int64_t groups = a->groups;
    int64_t kg = a->kg;
    const float *w = a->w;
    int64_t og = a->og;
    int64_t out_h = a->out_h;
    int64_t out_w = a->out_w;
    const float *bias = a->bias;
    int activation = a->activation;
    float *y = a->y;
    int64_t tiles = a->tiles;
    int64_t out_c = a->out_c;
    int64_t blocks = a->blocks;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t tile = t % tiles, oh = (t / tiles) % out_h;
        const int64_t g = (t / (tiles * out_h)) % groups, n = t / (tiles * out_h * groups);
        const int64_t ow0 = tile * PK_CONV_NR;
        const int64_t cols = out_w - ow0 < PK_CONV_NR ? out_w - ow0 : PK_CONV_NR;
        const float *xb = x + n * x_image + oh * x_row + ow0;
        const int64_t *off = offsets + g * kg;
        for (int64_t o0 = 0; o0 < og; o0 += MR) {
            const int64_t rows = og - o0 < MR ? og - o0 : MR;
            float acc[MR][PK_CONV_NR] = {{0}};
            for (int64_t k = 0; k < kg; k++) {
                const float *b = xb + off[k];
                for (int64_t r = 0; r < rows; r++) {
                    const float wv = w[((g * blocks + o0 / MR) * kg + k) * MR + r];
                    for (int64_t j = 0; j < cols; j++) acc[r][j] += wv * b[j];
                }
            }
            for (int64_t r = 0; r < rows; r++) {
                const int64_t o = g * og + o0 + r;
                const float bv = bias ? bias[o] : 0.0f;
                float *yo = y + ((n * out_c + o) * out_h + oh) * out_w + ow0;
                for (int64_t j = 0; j < cols; j++) yo[j] = pk_activate(acc[r][j] + bv, activation);
            }
        }
    }
}

int pk_conv_gemm_scalar(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                        const int64_t *offsets, int64_t groups, int64_t kg, const float *w,
                        int64_t og, int64_t out_h, int64_t out_w, const float *bias,
                        int activation, float *y) {
    const int64_t tiles = (out_w + PK_CONV_NR - 1) / PK_CONV_NR;
    const int64_t tasks = images * groups * out_h * tiles;
    const int64_t out_c = groups * og, blocks = (og + MR - 1) / MR;
    struct gemm_args gemm_args_ = {x, x_image, x_row, offsets, groups, kg, w, og, out_h, out_w,
                                   bias, activation, y, tiles, out_c, blocks};
    pk_parallel_for(pk_conv_threads((double)tasks * PK_CONV_NR * og * kg), tasks, 1, row_tiles,
                    &gemm_args_);
    return PK_OK;
}
