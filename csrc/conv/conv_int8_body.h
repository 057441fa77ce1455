/* Body of the int8 conv2d kernel (groups < channels), included by conv_int8_scalar.c,
 * conv_int8_avx2.c and conv_int8_avx512vnni.c. The including file defines, before the
 * #include, PK_CI8_NAME (the function name) and the four functions that hold its
 * ISA-specific code (same results bit for bit in every ISA):
 *
 *   ci8_absmax(x, n, &nonfinite)      max |x[i]| over n floats; nonfinite = 1 on NaN/Inf
 *   ci8_quant_pairs(a, b, n, s, dst)  dst[i] = ci8_pair(q(a[i]), b ? q(b[i]) : 0),
 *                                     q(v) = ci8_quant1(v, s) (float32 division);
 *                                     returns 1 if a value is NaN/Inf (its lane: anything)
 *   ci8_block(xb, off, kc, wp, buf)   buf[r][j] += sum_{k < kc} <wp[k*MR + r], xb[off[k] + j]>
 *                                     for r < MR, j < NR (<.,.> the int16 pair dot product)
 *   ci8_finish(acc, mul, bias, has_bias, activation, out)
 *                                     out[j] = act(float(acc[j]) * mul (+ bias)), j < NR
 *
 * Semantics (kernels/conv/reference.py: int8_reference): each image n is quantized once,
 *   s_n = act_scale > 0 ? act_scale : max over the image of |x| / 127     (float32)
 *   xq  = clip(rint(x / s_n), -127, 127), 0 when s_n == 0; padding is the integer 0,
 *   acc[n, o, oh, ow] = sum over (c, ky, kx) of xq * q[o]    (exact int32)
 *   y   = act(float(acc) * (s_n * scale[o]) + bias[o]);  an image holding NaN/Inf: y = NaN.
 *
 * Layout: a "lane" is an int32 holding two int16 values, input channel 2*c2 of the group
 * in the low half and 2*c2 + 1 (or 0 past cg) in the high half, so one vpmaddwd takes
 * 8 columns x 2 channels. Per image the quantized input is stored [groups * cg2 pair
 * planes][sh * sw phases][hq][wq] lanes: phase (py, px) holds the padded rows py, py+sh,
 * ... and columns px, px+sw, ...; so tap (ky, kx) of output (oh, ow) is at phase
 * ((ky*dh) % sh, (kx*dw) % sw), row oh + (ky*dh) / sh, column ow + (kx*dw) / sw: every
 * output row reads a contiguous run of lanes at any stride (no im2col), and the GEMM runs
 * flat over j = oh * wq + ow, skipping ow >= out_w at the store. */
#ifndef PK_CI8_NAME
#error "define PK_CI8_NAME and the four ci8_ functions before including conv_int8_body.h"
#endif
#include <stdlib.h>
#include <string.h>

#include "conv_internal.h"

#define CI8_KC 1024 /* pair-taps per pass over a micro-tile */

/* Quantizes padded row r of pair plane `pair` into its sw phase rows (each wq lanes);
 * tmp holds wq * sw lanes when sw > 1. Returns 1 if the row read a NaN/Inf. */
static int ci8_fill_row(const float *xn, int64_t height, int64_t width, int64_t cg,
                         int64_t cg2, int64_t pair, int64_t r, int64_t sh, int64_t sw,
                         int64_t pad_top, int64_t pad_left, int64_t hq, int64_t wq, float s,
                         int32_t *xq, int32_t *tmp) {
    const int64_t g = pair / cg2, c2 = pair % cg2, plane = hq * wq;
    const int64_t py = r % sh, qr = r / sh, ih = r - pad_top;
    int32_t *base = xq + (pair * sh * sw + py * sw) * plane + qr * wq;
    const int64_t len = wq * sw;
    int32_t *row = sw == 1 ? base : tmp;
    int nonfinite = 0;
    if (ih < 0 || ih >= height || !(s > 0.0f)) {
        memset(row, 0, (size_t)len * sizeof(int32_t));
    } else {
        const float *a = xn + ((g * cg + 2 * c2) * height + ih) * width;
        const float *b = 2 * c2 + 1 < cg ? a + height * width : NULL;
        int64_t lo = pad_left < len ? pad_left : len;
        int64_t hi = pad_left + width < len ? pad_left + width : len;
        if (hi < lo) hi = lo;
        memset(row, 0, (size_t)lo * sizeof(int32_t));
        nonfinite = ci8_quant_pairs(a + (lo - pad_left), b ? b + (lo - pad_left) : NULL,
                                    hi - lo, s, row + lo);
        memset(row + hi, 0, (size_t)(len - hi) * sizeof(int32_t));
    }
    if (sw > 1)
        for (int64_t px = 0; px < sw; px++) {
            int32_t *d = base + px * plane;
            for (int64_t qc = 0; qc < wq; qc++) d[qc] = tmp[qc * sw + px];
        }
    return nonfinite;
}

struct absmax_args {
    const float *xn;
    int64_t pixels;
    uint32_t amax_bits; /* max |x| so far: non-negative floats order as their bits */
    int nonfinite;
};

static void absmax_part(void *ctx, int64_t c0, int64_t c1, int worker) {
    struct absmax_args *a = ctx;
    float amax = 0.0f;
    int nonfinite = 0;
    for (int64_t c = c0; c < c1; c++) {
        int bad = 0;
        const float m = ci8_absmax(a->xn + c * a->pixels, a->pixels, &bad);
        if (m > amax) amax = m;
        nonfinite |= bad;
    }
    if (nonfinite) __atomic_or_fetch(&a->nonfinite, 1, __ATOMIC_RELAXED);
    uint32_t bits;
    memcpy(&bits, &amax, sizeof bits);
    uint32_t seen = __atomic_load_n(&a->amax_bits, __ATOMIC_RELAXED);
    while (bits > seen && !__atomic_compare_exchange_n(&a->amax_bits, &seen, bits, 1,
                                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

struct fill_args {
    const float *xn;
    int64_t height, width, cg, cg2, sh, sw, pad_top, pad_left, hq, wq;
    float s;
    int32_t *xq, *tmps; /* tmps: wq * sw lanes per worker */
    int nonfinite;
};

static void fill_part(void *ctx, int64_t t0, int64_t t1, int worker) {
    struct fill_args *a = ctx;
    int32_t *tmp = a->tmps + worker * a->wq * a->sw;
    int nonfinite = 0;
    for (int64_t t = t0; t < t1; t++)
        nonfinite |= ci8_fill_row(a->xn, a->height, a->width, a->cg, a->cg2,
                                  t / (a->hq * a->sh), t % (a->hq * a->sh), a->sh, a->sw,
                                  a->pad_top, a->pad_left, a->hq, a->wq, a->s, a->xq, tmp);
    if (nonfinite) __atomic_or_fetch(&a->nonfinite, 1, __ATOMIC_RELAXED);
}

/* Scale, then quantized layout, of image n (rows over `threads` threads, tmps holding
 * wq * sw lanes for each); NaN/Inf: bad. With a static scale the image is read once
 * when the quantizing pass reads all of it: that pass also finds NaN/Inf (a bad image's
 * layout is never read). */
static void ci8_prep_image(const float *xn, int64_t channels, int64_t height, int64_t width,
                           int64_t cg, int64_t cg2, int64_t pairs, int64_t sh, int64_t sw,
                           int64_t pad_top, int64_t pad_left, int64_t hq, int64_t wq,
                           float act_scale, int threads, int32_t *xq, int32_t *tmps,
                           float *scale_out, unsigned char *bad_out) {
    const int64_t pixels = height * width, rows = pairs * hq * sh;
    /* does the quantizing pass read every input value? (not when a stride skips the
     * last rows or columns) */
    const int reads_all = pad_top + height <= hq * sh && pad_left + width <= wq * sw;
    float amax = 0.0f;
    if (!(act_scale > 0.0f) || !reads_all) {
        struct absmax_args a = {xn, pixels, 0, 0};
        pk_parallel_for(threads, channels, 1, absmax_part, &a);
        if (a.nonfinite) {
            *bad_out = 1;
            *scale_out = 0.0f;
            return;
        }
        memcpy(&amax, &a.amax_bits, sizeof amax);
    }
    const float s = act_scale > 0.0f ? act_scale : amax / 127.0f;
    *scale_out = s;
    struct fill_args f = {xn, height, width, cg, cg2, sh, sw, pad_top, pad_left, hq, wq,
                          s, xq, tmps, 0};
    pk_parallel_for(threads, rows, 1, fill_part, &f);
    *bad_out = (unsigned char)f.nonfinite;
}

/* Everything the GEMM tasks (and the per-image preparation) share. */
struct ci8_args {
    const float *x;
    int64_t channels, height, width, cg, cg2, pairs, sh, sw, pad_top, pad_left, hq, wq;
    float act_scale;
    int64_t image_lanes, pixels, groups, tiles, span, kg2, blocks, og, out_channels;
    int64_t out_plane, out_w, contiguous;
    int64_t row_tiles; /* tiles per output row (0: flat tiles across rows) */
    const int32_t *w;
    const float *scale, *bias;
    int activation;
    const int64_t *offsets;
    int32_t *xq, *tmps, *bufs; /* bufs: blocks * MR * NR lanes per worker */
    float *img_scale;
    unsigned char *img_bad;
    float *y;
};

/* Step 1 for image n, on one thread. */
static void prep_one_image(void *ctx, int64_t n, int worker) {
    const struct ci8_args *a = ctx;
    ci8_prep_image(a->x + n * a->channels * a->pixels, a->channels, a->height, a->width,
                   a->cg, a->cg2, a->pairs, a->sh, a->sw, a->pad_top, a->pad_left, a->hq,
                   a->wq, a->act_scale, 1, a->xq + n * a->image_lanes,
                   a->tmps + worker * a->wq * a->sw, a->img_scale + n, a->img_bad + n);
}

/* Step 2, tasks t0..t1: one tile of NR flat columns of one image and group each. A tile
 * is NR columns of the flat range j = oh * wq + ow, or, with row tiles, of one output
 * row: its valid columns are then one run, stored in place (flat tiles across rows are
 * split into runs per row, found once per tile). */
static void gemm_tiles(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct ci8_args *a = ctx;
    const int64_t groups = a->groups, tiles = a->tiles, span = a->span, kg2 = a->kg2;
    const int64_t blocks = a->blocks, og = a->og, out_plane = a->out_plane;
    const int64_t wq = a->wq, out_w = a->out_w, row_tiles = a->row_tiles;
    const int contiguous = (int)a->contiguous;
    int32_t *buf = a->bufs + worker * blocks * CI8_MR * CI8_NR;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t n = t / (groups * tiles), g = (t / tiles) % groups, tl = t % tiles;
        int64_t j0, cols, at; /* first flat column, valid columns, where they go */
        if (row_tiles) {
            const int64_t oh = tl / row_tiles, ow0 = tl % row_tiles * CI8_NR;
            j0 = oh * wq + ow0, at = oh * out_w + ow0;
            cols = out_w - ow0 < CI8_NR ? out_w - ow0 : CI8_NR;
        } else {
            j0 = at = tl * CI8_NR;
            cols = span - j0 < CI8_NR ? span - j0 : CI8_NR;
        }
        const int in_place = contiguous || row_tiles; /* the valid columns are one run */
        float *yn = a->y + n * a->out_channels * out_plane;
        const float s = a->img_scale[n];
        const int bad = a->img_bad[n];
        if (!bad) {
            const int32_t *xb = a->xq + n * a->image_lanes + j0;
            memset(buf, 0, (size_t)(blocks * CI8_MR * CI8_NR) * sizeof(int32_t));
            for (int64_t k0 = 0; k0 < kg2; k0 += CI8_KC) {
                const int64_t kc = kg2 - k0 < CI8_KC ? kg2 - k0 : CI8_KC;
                for (int64_t blk = 0; blk < blocks; blk++)
                    ci8_block(xb, a->offsets + g * kg2 + k0, kc,
                              a->w + ((g * blocks + blk) * kg2 + k0) * CI8_MR,
                              buf + blk * CI8_MR * CI8_NR);
            }
        }
        pk_conv_runs runs;
        if (!in_place) pk_conv_flat_runs(j0, cols, wq, out_w, &runs);
        for (int64_t o = 0; o < og; o++) {
            const int64_t oc = g * og + o;
            float *yo = yn + oc * out_plane;
            const int direct = in_place && cols == CI8_NR && !bad;
            float vals[CI8_NR];
            float *dst = direct ? yo + at : vals; /* a whole tile is stored in place */
            if (bad)
                for (int jj = 0; jj < CI8_NR; jj++) vals[jj] = NAN;
            else
                ci8_finish(buf + o * CI8_NR, s * a->scale[oc], a->bias ? a->bias[oc] : 0.0f,
                           a->bias != NULL, a->activation, dst);
            if (direct) continue;
            if (in_place)
                pk_copy_floats(yo + at, vals, cols);
            else
                pk_conv_store_runs(vals, &runs, yo);
        }
    }
}

int PK_CI8_NAME(const float *x, int64_t images, int64_t channels, int64_t height,
                int64_t width, int64_t groups, const int32_t *w, const float *scale,
                float act_scale, int64_t out_channels, int64_t kh, int64_t kw,
                int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                const float *bias, int activation, float *y) {
    const int64_t cg = channels / groups, og = out_channels / groups, cg2 = (cg + 1) / 2;
    const int64_t taps = kh * kw, kg2 = cg2 * taps, blocks = (og + CI8_MR - 1) / CI8_MR;
    /* a single output row (column) reads one window: its stride is never applied, and
     * as 1 it keeps the phase buffer from growing with a huge stride */
    const int64_t sh = out_h == 1 ? 1 : stride_h, sw = out_w == 1 ? 1 : stride_w;
    const int64_t phases = sh * sw;
    /* the padded extent the outputs read (rows/columns past it are never used) */
    const int64_t hp = (out_h - 1) * sh + (kh - 1) * dil_h + 1;
    const int64_t wp = (out_w - 1) * sw + (kw - 1) * dil_w + 1;
    const int64_t hq = (hp + sh - 1) / sh, wq = (wp + sw - 1) / sw, plane = hq * wq;
    const int64_t pairs = groups * cg2, image_lanes = pairs * phases * plane;
    const int64_t span = (out_h - 1) * wq + out_w;
    /* Row tiles when they are at most 1/8 more than flat tiles (wide rows): their stores
     * need no split at row ends. Narrow rows (7 of 9 padded columns) fit flat tiles far
     * better. */
    const int64_t flat_tiles = (span + CI8_NR - 1) / CI8_NR;
    const int64_t per_row = (out_w + CI8_NR - 1) / CI8_NR;
    const int64_t row_tiles = wq != out_w && out_h * per_row * 8 <= flat_tiles * 9 ? per_row : 0;
    const int64_t tiles = row_tiles ? out_h * per_row : flat_tiles;
    const int64_t pixels = height * width, out_plane = out_h * out_w;
    const int contiguous = out_h == 1 || wq == out_w;
    /* tiny inputs are prepared on the calling thread: from PREP_SERIAL_WORK on,
     * preparing in parallel wins */
    enum { PREP_SERIAL_WORK = 100000 };
    const double prep_work = (double)images * (double)(channels * pixels + image_lanes);
    const int gemm_threads = pk_threads_for((double)images * out_channels * cg * taps * out_plane);
    const int prep_threads = prep_work < PREP_SERIAL_WORK ? 1 : gemm_threads;

    int64_t *offsets = malloc((size_t)(groups * kg2 + 1) * sizeof(int64_t));
    float *img_scale = malloc((size_t)images * sizeof(float));
    unsigned char *img_bad = malloc((size_t)images);
    int32_t *tmps = malloc((size_t)(prep_threads * wq * sw) * sizeof(int32_t));
    int32_t *bufs = pk_aligned_alloc((size_t)(gemm_threads * blocks * CI8_MR * CI8_NR) *
                                     sizeof(int32_t));
    /* + NR lanes: a tile always loads NR columns, the last ones past the span */
    int32_t *xq = pk_aligned_alloc((size_t)(images * image_lanes + CI8_NR) * sizeof(int32_t));
    if (!offsets || !img_scale || !img_bad || !tmps || !bufs || !xq) {
        free(offsets), free(img_scale), free(img_bad), free(tmps);
        pk_aligned_free(bufs);
        pk_aligned_free(xq);
        return PK_ERR_NOMEM;
    }
    memset(xq + images * image_lanes, 0, CI8_NR * sizeof(int32_t));
    for (int64_t g = 0; g < groups; g++)
        for (int64_t c2 = 0; c2 < cg2; c2++)
            for (int64_t ky = 0; ky < kh; ky++)
                for (int64_t kx = 0; kx < kw; kx++) {
                    const int64_t ry = ky * dil_h, rx = kx * dil_w;
                    offsets[g * kg2 + c2 * taps + ky * kw + kx] =
                        ((g * cg2 + c2) * phases + (ry % sh) * sw + rx % sw) * plane +
                        (ry / sh) * wq + rx / sw;
                }
    struct ci8_args a = {x, channels, height, width, cg, cg2, pairs, sh, sw, pad_top,
                         pad_left, hq, wq, act_scale, image_lanes, pixels, groups, tiles,
                         span, kg2, blocks, og, out_channels, out_plane, out_w, contiguous,
                         row_tiles, w, scale, bias, activation, offsets, xq, tmps, bufs,
                         img_scale, img_bad, y};

    /* 1. per image: its scale (NaN/Inf: bad), then quantize + pad + split into phases */
    if (prep_threads > 1 && images > 1)
        pk_parallel(prep_threads, images, prep_one_image, &a);
    else
        for (int64_t n = 0; n < images; n++)
            ci8_prep_image(x + n * channels * pixels, channels, height, width, cg, cg2, pairs,
                           sh, sw, pad_top, pad_left, hq, wq, act_scale, prep_threads,
                           xq + n * image_lanes, tmps, img_scale + n, img_bad + n);

    /* 2. integer GEMM over tiles of NR flat columns of every image, epilogue into NCHW */
    pk_parallel_for(gemm_threads, images * groups * tiles, 2, gemm_tiles, &a);
    free(offsets), free(img_scale), free(img_bad), free(tmps);
    pk_aligned_free(bufs);
    pk_aligned_free(xq);
    return PK_OK;
}
