/* Helpers shared by the conv2d kernel files (private to csrc/conv). */
#ifndef PK_CONV_INTERNAL_H
#define PK_CONV_INTERNAL_H

#include <float.h>
#include <math.h>
#include <string.h>

#include "pk_internal.h"

/* Output column tile of the offset GEMM / CSR kernels, and rows per dense micro-tile. */
#define PK_CONV_NR 16
#define PK_CONV_MR PK_CONV_GEMM_MR
#define PK_CONV_CSR_TILE 64
/* Largest kh * kw * ceil(cg / 64) the binary conv kernel takes (its patch lives on the stack). */
#define PK_CONV_BINARY_WORDS 256

/* The shape of one conv2d call (input planes, taps, strides, dilations, leading padding and
 * output size), shared by the args structs of the threaded kernels. */
struct pk_conv_geom {
    int64_t channels, height, width, kh, kw, stride_h, stride_w, dil_h, dil_w;
    int64_t pad_top, pad_left, out_h, out_w;
};

static inline struct pk_conv_geom pk_conv_geom_of(int64_t channels, int64_t height,
                                                  int64_t width, int64_t kh, int64_t kw,
                                                  int64_t stride_h, int64_t stride_w,
                                                  int64_t dil_h, int64_t dil_w, int64_t pad_top,
                                                  int64_t pad_left, int64_t out_h,
                                                  int64_t out_w) {
    struct pk_conv_geom g = {channels, height, width, kh, kw, stride_h, stride_w,
                             dil_h, dil_w, pad_top, pad_left, out_h, out_w};
    return g;
}

/* What the row-tile task of either CSR conv kernel reads (the entries' arguments, the
 * tiles per output row and the output plane size). */
struct pk_conv_csr_args {
    const float *x;
    const int32_t *indptr;
    const int64_t *offsets;
    const float *values;
    const float *bias;
    float *y;
    int64_t x_image, x_row, out_channels, out_h, out_w, tiles, plane;
    int activation;
};

/* dst[0:n] = src[0:n] for the short runs of a micro-tile (n < 32): constant-size copies,
 * which the compiler inlines, where memcpy(n) (or a loop it turns into one) is a library
 * call that costs more than the copy. */
static inline void pk_copy_floats(float *dst, const float *src, int64_t n) {
    if (n & 16) memcpy(dst, src, 16 * sizeof(float)), dst += 16, src += 16;
    if (n & 8) memcpy(dst, src, 8 * sizeof(float)), dst += 8, src += 8;
    if (n & 4) memcpy(dst, src, 4 * sizeof(float)), dst += 4, src += 4;
    if (n & 2) memcpy(dst, src, 2 * sizeof(float)), dst += 2, src += 2;
    if (n & 1) *dst = *src;
}

/* Where the flat columns j0 .. j0+cols-1 (j = oh * x_row + ow, cols <= PK_CONV_NR) of a
 * micro-tile land in an output plane of rows of out_w: runs within a row, skipping the
 * columns ow >= out_w (read across the padding between input rows). Found once per tile,
 * used for each of its output channels (finding them divides, which costs more than the
 * copy). */
typedef struct {
    int n;                   /* runs */
    int src[PK_CONV_NR];     /* first column in the tile */
    int len[PK_CONV_NR];
    int64_t dst[PK_CONV_NR]; /* first element in the plane */
} pk_conv_runs;

static inline void pk_conv_flat_runs(int64_t j0, int64_t cols, int64_t x_row, int64_t out_w,
                                     pk_conv_runs *r) {
    int64_t oh = j0 / x_row, ow = j0 % x_row;
    r->n = 0;
    for (int64_t jj = 0; jj < cols;) {
        if (ow >= out_w) { /* to the next row */
            jj += x_row - ow;
            ow = 0, oh++;
            continue;
        }
        const int64_t run = cols - jj < out_w - ow ? cols - jj : out_w - ow;
        r->src[r->n] = (int)jj, r->len[r->n] = (int)run, r->dst[r->n] = oh * out_w + ow;
        r->n++;
        jj += run, ow += run;
    }
}

/* vals[0:cols] of one output channel into its plane y along the runs. */
static inline void pk_conv_store_runs(const float *vals, const pk_conv_runs *r, float *y) {
    for (int i = 0; i < r->n; i++) pk_copy_floats(y + r->dst[i], vals + r->src[i], r->len[i]);
}

/* Elements moved (padding, im2col) below which a call runs on the calling thread: a
 * parallel region costs more than it saves there, and far more on a busy machine. The
 * GEMMs decide by their multiply-adds, as the linear kernels do (pk_threads_for). */
#define PK_CONV_SERIAL_WORK 1.0e6

static inline int pk_conv_threads(double work) {
    return work < PK_CONV_SERIAL_WORK ? 1 : pk_threads();
}

/* Nonzero when a grouped conv's geometry or activation code cannot be right (the
 * shared first check of the binary and int8 entries). */
static inline int pk_conv_bad_grouped(int64_t images, int64_t channels, int64_t height,
                                      int64_t width, int64_t groups, int64_t out_channels,
                                      int64_t kh, int64_t kw, int64_t stride_h,
                                      int64_t stride_w, int64_t dil_h, int64_t dil_w,
                                      int64_t pad_top, int64_t pad_left, int64_t out_h,
                                      int64_t out_w, int activation) {
    return images < 0 || channels < 1 || groups < 1 || channels % groups != 0 || height < 0 ||
           width < 0 || out_channels < 0 || out_channels % groups != 0 || kh < 1 || kw < 1 ||
           stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1 || pad_top < 0 ||
           pad_left < 0 || out_h < 0 || out_w < 0 || activation < PK_ACT_NONE ||
           activation > PK_ACT_RELU6;
}

/* What the output task of either binary conv kernel reads: the packed input (signs and
 * per-pixel |x| sums), the weights and the output, with the call's shape. */
struct pk_conv_binary_out {
    const uint64_t *wbits, *xbits;
    const double *absum;
    const float *alpha, *bias;
    float *y;
    struct pk_conv_geom geom;
    int64_t out_channels, groups, cg, og, cw, taps, pixels, kg;
    int activation;
};

/* The pk_conv_binary_out of a call (sizes derived as both kernels derive them). */
static inline struct pk_conv_binary_out pk_conv_binary_out_of(
    const uint64_t *wbits, const uint64_t *xbits, const double *absum, const float *alpha,
    const float *bias, float *y, struct pk_conv_geom geom, int64_t out_channels,
    int64_t groups, int activation) {
    const int64_t cg = geom.channels / groups, taps = geom.kh * geom.kw;
    struct pk_conv_binary_out o = {wbits, xbits, absum, alpha, bias, y, geom, out_channels,
                                   groups, cg, out_channels / groups, (cg + 63) / 64, taps,
                                   geom.height * geom.width, cg * taps, activation};
    return o;
}

/* Binary conv: gathers the sign words of the patch whose top-left input position is
 * (ih0, iw0) into pw[taps][cw] and its in-bounds mask into mw (all ones inside, 0 for
 * padding: Larq's rule, padding contributes nothing); returns the sum of |x| over the
 * in-bounds taps (in tap order) and sets *valid to their count. */
static inline double pk_conv_binary_patch(const uint64_t *bits, const double *sums, int64_t cw,
                                          int64_t height, int64_t width, int64_t kh,
                                          int64_t kw, int64_t ih0, int64_t iw0, int64_t dil_h,
                                          int64_t dil_w, uint64_t *pw, uint64_t *mw,
                                          int64_t *valid) {
    double s = 0.0;
    int64_t count = 0;
    for (int64_t ky = 0; ky < kh; ky++) {
        const int64_t ih = ih0 + ky * dil_h;
        for (int64_t kx = 0; kx < kw; kx++) {
            const int64_t iw = iw0 + kx * dil_w;
            const int64_t tp = ky * kw + kx;
            const int inside = ih >= 0 && ih < height && iw >= 0 && iw < width;
            for (int64_t i = 0; i < cw; i++) {
                pw[tp * cw + i] = inside ? bits[(ih * width + iw) * cw + i] : 0;
                mw[tp * cw + i] = inside ? ~(uint64_t)0 : 0;
            }
            if (inside) {
                s += sums[ih * width + iw];
                count++;
            }
        }
    }
    *valid = count;
    return s;
}

/* Copies the window of one input plane that a depthwise conv reads into `dst`
 * [hp][wp] (row pitch wp), zero where the window leaves the plane. */
static inline void pk_conv_window(const float *src, int64_t height, int64_t width,
                                  int64_t pad_top, int64_t pad_left, int64_t hp, int64_t wp,
                                  float *dst) {
    for (int64_t r = 0; r < hp; r++) {
        float *d = dst + r * wp;
        const int64_t ih = r - pad_top;
        if (ih < 0 || ih >= height) {
            memset(d, 0, (size_t)wp * sizeof(float));
            continue;
        }
        int64_t lo = pad_left, hi = pad_left + width; /* d[lo:hi] = row ih */
        if (hi > wp) hi = wp;
        if (lo > hi) lo = hi;
        memset(d, 0, (size_t)lo * sizeof(float));
        memcpy(d + lo, src + ih * width, (size_t)(hi - lo) * sizeof(float));
        memset(d + hi, 0, (size_t)(wp - hi) * sizeof(float));
    }
}

/* ---- int8 conv2d (conv_int8_body.h and the primitives of each ISA) ---- */
#define CI8_MR PK_CONV_INT8_MR /* output channels per micro-tile */
#define CI8_NR 16              /* flat output columns per micro-tile */

/* The lane of two quantized values (low half a, high half b). */
static inline int32_t ci8_pair(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)(uint16_t)a | ((uint32_t)(uint16_t)b << 16));
}

/* clip(rint(v / s), -127, 127), round half to even (the default rounding mode). */
static inline int32_t ci8_quant1(float v, float s) {
    float r = nearbyintf(v / s);
    r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
    return (int32_t)r;
}

#endif /* PK_CONV_INTERNAL_H */
