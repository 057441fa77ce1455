/* Body of the binary-activation conv2d kernel, included by conv_binary_scalar.c and
 * conv_binary_avx2.c (the latter compiled with -mpopcnt, so __builtin_popcountll is
 * one instruction). PK_CONV_BINARY_NAME names the function.
 *
 * Per group g, output position p and output channel o (Larq's rule for padding):
 *   beta[p] = (sum of |x| over the patch, padding counted as 0) / (cg*kh*kw)  (float64 sum)
 *   n[p, o] = sum over in-bounds taps of sign(x) * sign(w)  (exact, popcount of XOR)
 *   y       = act((alpha[o] * beta[p]) * (float)n + bias[o])
 * Input signs are packed once per pixel, channels-last: bit c % 64 of word c / 64 of
 * xbits[n][g][h][w][:] is x[n, g*cg + c, h, w] >= 0. Weights arrive tap-major:
 * wbits[o][tap][cw] with the same channel bits. */
#include <stdlib.h>
#include <string.h>

#include "conv_internal.h"

struct pack_args {
    const float *x;
    int64_t channels;
    int64_t height;
    int64_t width;
    int64_t groups;
    int64_t cg;
    int64_t cw;
    int64_t pixels;
    uint64_t *xbits;
    double *absum;
};

/* Input rows row0..row1 (of one image and group): signs packed, |x| summed per pixel. */
static void pack_rows(void *ctx, int64_t row0, int64_t row1, int worker) {
    const struct pack_args *a = ctx;
    const int64_t height = a->height, width = a->width, groups = a->groups;
    const int64_t cg = a->cg, cw = a->cw, pixels = a->pixels;
    for (int64_t row = row0; row < row1; row++) {
        const int64_t n = row / (groups * height), g = (row / height) % groups;
        const int64_t h = row % height;
        uint64_t *bits = a->xbits + ((n * groups + g) * pixels + h * width) * cw;
        double *sums = a->absum + (n * groups + g) * pixels + h * width;
        for (int64_t w = 0; w < width; w++) sums[w] = 0.0;
        for (int64_t c = 0; c < cg; c++) {
            const float *src = a->x + ((n * a->channels + g * cg + c) * height + h) * width;
            const uint64_t bit = (uint64_t)1 << (c % 64);
            for (int64_t w = 0; w < width; w++) {
                const float v = src[w];
                if (v >= 0.0f) bits[w * cw + c / 64] |= bit;
                sums[w] += v < 0.0f ? -(double)v : (double)v;
            }
        }
    }
}

/* Output rows t0..t1 (of one image and group), every channel of the group. */
static void output_rows(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct pk_conv_binary_out *bo = ctx;
    const struct pk_conv_geom geo = bo->geom; /* a local copy: the loops read registers */
    const int64_t cg = bo->cg, og = bo->og, cw = bo->cw, taps = bo->taps;
    const int64_t pixels = bo->pixels, kg = bo->kg;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t n = t / (bo->groups * geo.out_h), g = (t / geo.out_h) % bo->groups;
        const int64_t oh = t % geo.out_h;
        const uint64_t *bits = bo->xbits + (n * bo->groups + g) * pixels * cw;
        const double *sums = bo->absum + (n * bo->groups + g) * pixels;
        uint64_t pw[PK_CONV_BINARY_WORDS]; /* the patch's sign words, taps * cw */
        uint64_t mw[PK_CONV_BINARY_WORDS]; /* all ones for in-bounds taps, 0 for padding */
        for (int64_t ow = 0; ow < geo.out_w; ow++) {
            int64_t valid;
            const double s = pk_conv_binary_patch(bits, sums, cw, geo.height, geo.width, geo.kh,
                geo.kw, oh * geo.stride_h - geo.pad_top, ow * geo.stride_w - geo.pad_left,
                geo.dil_h, geo.dil_w, pw, mw, &valid);
            const float beta = (float)(s / (double)kg);
            const int64_t words = taps * cw, full = valid == taps;
            for (int64_t o = g * og; o < (g + 1) * og; o++) {
                const uint64_t *wo = bo->wbits + o * words;
                int64_t differ = 0;
                if (full) {
                    for (int64_t i = 0; i < words; i++) differ += __builtin_popcountll(pw[i] ^ wo[i]);
                } else {
                    for (int64_t i = 0; i < words; i++)
                        differ += __builtin_popcountll((pw[i] ^ wo[i]) & mw[i]);
                }
                const int64_t dot = valid * cg - 2 * differ;
                const float scale = bo->alpha[o] * beta; /* float32 product, then times n */
                float v = scale * (float)dot;
                if (bo->bias) v += bo->bias[o];
                bo->y[((n * bo->out_channels + o) * geo.out_h + oh) * geo.out_w + ow] =
                    pk_activate(v, bo->activation);
            }
        }
    }
}

int PK_CONV_BINARY_NAME(const float *x, int64_t images, int64_t channels, int64_t height,
                        int64_t width, int64_t groups, const uint64_t *wbits,
                        const float *alpha, int64_t out_channels, int64_t kh, int64_t kw,
                        int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                        int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                        const float *bias, int activation, float *y) {
    const int64_t cg = channels / groups, og = out_channels / groups;
    const int64_t cw = (cg + 63) / 64, taps = kh * kw, pixels = height * width;
    const int64_t kg = cg * taps;
    uint64_t *xbits = calloc((size_t)(images * groups * pixels * cw), sizeof(uint64_t));
    double *absum = malloc((size_t)(images * groups * pixels) * sizeof(double));
    if (!xbits || !absum) {
        free(xbits);
        free(absum);
        return PK_ERR_NOMEM;
    }
    const int nthreads =
        pk_conv_threads((double)images * out_channels * out_h * out_w * taps * cw +
                        (double)images * channels * pixels);
    /* pack signs channels-last and sum |x| per pixel and group */
    struct pack_args pack_args_ = {x, channels, height, width, groups, cg, cw, pixels, xbits,
                                   absum};
    pk_parallel_for(nthreads, images * groups * height, 1, pack_rows, &pack_args_);
    const int64_t tasks = images * groups * out_h;
    struct pk_conv_binary_out out = pk_conv_binary_out_of(
        wbits, xbits, absum, alpha, bias, y,
        pk_conv_geom_of(channels, height, width, kh, kw, stride_h, stride_w, dil_h, dil_w,
                        pad_top, pad_left, out_h, out_w),
        out_channels, groups, activation);
    pk_parallel_for(nthreads, tasks, 1, output_rows, &out);
    free(xbits);
    free(absum);
    return PK_OK;
}
