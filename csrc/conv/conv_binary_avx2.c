/* Binary weights x binary activations conv2d, AVX2: the same contract and arithmetic as
 * conv_binary_body.h, lowered to an XNOR-popcount GEMM per output row.
 *
 * The input signs are packed once per call, channels-last (bit c % 64 of word c / 64 of
 * a pixel is channel c of its group), so the patch of an output pixel is a gather of
 * taps * cw words, no re-binarizing. One task is one output row of one image and group:
 * its patches become the rows of a patch matrix [out_w][taps * cw], then tiles of two
 * output channels' weight rows x four patch rows are XOR-popcounted (scalar popcnt,
 * register-blocked: each loaded word serves four or two pairs).
 *
 * Padding (Larq's rule, padding adds 0 to the +-1 dot): a padded tap is gathered as zero
 * words, so its XOR with the weights counts popcount(w[o][tap]); that count is
 * subtracted again, leaving the popcount over in-bounds taps only, exactly as the
 * masked sum of conv_binary_body.h. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "conv_internal.h"
#include "pk_avx2.h"

/* The +-1 dots of two weight rows (w, w + words) and four patch rows (p + c * words):
 * d_r[c] = base[c] - 2 popcount(w_r ^ p_c), register-blocked (each loaded word serves
 * four or two pairs); faster than 1 weight row x 8 patches (with or without half of them
 * on the vpshufb nibble table), 4 x 2, or four channels per ymm on the nibble table. */
PK_ALWAYS_INLINE void xnor24_body(const uint64_t *w, const uint64_t *p, const int64_t words,
                                  const int64_t *base, int32_t *d0, int32_t *d1) {
    const uint64_t *w1 = w + words;
    const uint64_t *p1 = p + words, *p2 = p + 2 * words, *p3 = p + 3 * words;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    /* fully unrolled at the fixed sizes (3x3x64: 9 words) */
#pragma GCC unroll 16
    for (int64_t k = 0; k < words; k++) {
        const uint64_t u = w[k], v = w1[k];
        const uint64_t x0 = p[k], x1 = p1[k], x2 = p2[k], x3 = p3[k];
        a0 += (uint64_t)_mm_popcnt_u64(u ^ x0);
        a1 += (uint64_t)_mm_popcnt_u64(u ^ x1);
        a2 += (uint64_t)_mm_popcnt_u64(u ^ x2);
        a3 += (uint64_t)_mm_popcnt_u64(u ^ x3);
        b0 += (uint64_t)_mm_popcnt_u64(v ^ x0);
        b1 += (uint64_t)_mm_popcnt_u64(v ^ x1);
        b2 += (uint64_t)_mm_popcnt_u64(v ^ x2);
        b3 += (uint64_t)_mm_popcnt_u64(v ^ x3);
    }
    d0[0] = (int32_t)(base[0] - 2 * (int64_t)a0), d0[1] = (int32_t)(base[1] - 2 * (int64_t)a1);
    d0[2] = (int32_t)(base[2] - 2 * (int64_t)a2), d0[3] = (int32_t)(base[3] - 2 * (int64_t)a3);
    d1[0] = (int32_t)(base[0] - 2 * (int64_t)b0), d1[1] = (int32_t)(base[1] - 2 * (int64_t)b1);
    d1[2] = (int32_t)(base[2] - 2 * (int64_t)b2), d1[3] = (int32_t)(base[3] - 2 * (int64_t)b3);
}

/* Transposes the 8 x 8 bit matrix whose row i is byte i (bit j = column j). */
static inline uint64_t transpose8(uint64_t x) {
    uint64_t t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL, x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL, x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL, x = x ^ t ^ (t << 28);
    return x;
}

/* Pixels per sign-packing task (a multiple of 8). */
#define PACK_PIXELS 256

/* Channel c's sign bit and |x| of one pixel (bw: the pixel's words, s: its sum). */
static inline void pack1(float v, int64_t c, uint64_t *bw, double *s) {
    if (v >= 0.0f) bw[c / 64] |= (uint64_t)1 << (c % 64);
    *s += v < 0.0f ? -(double)v : (double)v;
}

/* Pixels [p0, p1) of the cg planes (pitch `pixels`) of one image and group: their sign
 * words (bits[p][c / 64] bit c % 64: x >= 0; bits arrive zeroed) and sums[p] = sum of
 * |x| over the channels, in channel order (float64). Channel octets outer, pixels inner:
 * each plane is read in long runs, 8 at a time, which the hardware prefetchers follow
 * (pixel-major, 64 planes would be read at once), and a
 * pixel's running sum waits in memory between octets instead of in one chain of adds. */
static void pack_signs(const float *planes, int64_t cg, int64_t pixels, int64_t cw, int64_t p0,
                       int64_t p1, uint64_t *bits, double *sums) {
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    const int64_t c8 = cg / 8 * 8, pv = p0 + (p1 - p0) / 8 * 8;
    for (int64_t p = p0; p < p1; p++) sums[p] = 0.0;
    for (int64_t c0 = 0; c0 < c8; c0 += 8) {
        const float *src = planes + c0 * pixels;
        for (int64_t p = p0; p < pv; p += 8) {
            __m256d s_lo = _mm256_loadu_pd(sums + p), s_hi = _mm256_loadu_pd(sums + p + 4);
            uint64_t m = 0; /* byte j: the signs of channel c0 + j at the 8 pixels */
            for (int j = 0; j < 8; j++) {
                const __m256 v = _mm256_loadu_ps(src + j * pixels + p);
                m |= (uint64_t)_mm256_movemask_ps(
                         _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ))
                     << (8 * j);
                s_lo = _mm256_add_pd(
                    s_lo, _mm256_and_pd(absmask, _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
                s_hi = _mm256_add_pd(
                    s_hi, _mm256_and_pd(absmask, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
            }
            _mm256_storeu_pd(sums + p, s_lo);
            _mm256_storeu_pd(sums + p + 4, s_hi);
            m = transpose8(m); /* byte q: the 8 channel bits of pixel p + q */
            for (int q = 0; q < 8; q++) /* little-endian: byte k = bits 8k..8k+7 */
                ((uint8_t *)(bits + (p + q) * cw + c0 / 64))[(c0 % 64) / 8] =
                    (uint8_t)(m >> (8 * q));
        }
        for (int64_t p = pv; p < p1; p++)
            for (int j = 0; j < 8; j++) pack1(src[j * pixels + p], c0 + j, bits + p * cw, sums + p);
    }
    for (int64_t c = c8; c < cg; c++)
        for (int64_t p = p0; p < p1; p++)
            pack1(planes[c * pixels + p], c, bits + p * cw, sums + p);
}

/* dots[o][c] = base[c] - 2 popcount(w_o ^ p_c), o < og (weight rows w + o * words),
 * c < cols (patch rows p + c * words): two channels x four columns per tile, then the
 * column tail and an odd last channel. */
PK_ALWAYS_INLINE void dots_body(const uint64_t *w, const uint64_t *p, int64_t words, int64_t og,
                                int64_t cols, const int64_t *base, int32_t *dots) {
    int64_t o = 0;
    for (; o + 2 <= og; o += 2) {
        const uint64_t *wo = w + o * words;
        int32_t *d0 = dots + o * cols, *d1 = d0 + cols;
        int64_t c = 0;
        for (; c + 4 <= cols; c += 4)
            xnor24_body(wo, p + c * words, words, base + c, d0 + c, d1 + c);
        for (; c < cols; c++) {
            const uint64_t *pc = p + c * words;
            d0[c] = (int32_t)(base[c] - 2 * (int64_t)pk_xnor_pop_scalar(wo, pc, words));
            d1[c] = (int32_t)(base[c] - 2 * (int64_t)pk_xnor_pop_scalar(wo + words, pc, words));
        }
    }
    if (o < og)
        for (int64_t c = 0; c < cols; c++)
            dots[o * cols + c] = (int32_t)(base[c] - 2 * (int64_t)pk_xnor_pop_scalar(
                                                         w + o * words, p + c * words, words));
}

/* dots_body with `words` fixed at compile time for the common patch sizes, so the tile's
 * loop unrolls fully and its eight counters stay in registers. */
typedef void (*dots_fn)(const uint64_t *, const uint64_t *, int64_t, int64_t, int64_t,
                        const int64_t *, int32_t *);
static void dots_any(const uint64_t *w, const uint64_t *p, int64_t words, int64_t og,
                     int64_t cols, const int64_t *base, int32_t *dots) {
    dots_body(w, p, words, og, cols, base, dots);
}
#define PK_DOTS_FIXED(K)                                                                   \
    static void dots_##K(const uint64_t *w, const uint64_t *p, int64_t words, int64_t og,  \
                         int64_t cols, const int64_t *base, int32_t *dots) {               \
        (void)words;                                                                       \
        dots_body(w, p, K, og, cols, base, dots);                                          \
    }
PK_DOTS_FIXED(1)
PK_DOTS_FIXED(2)
PK_DOTS_FIXED(4)
PK_DOTS_FIXED(9)
PK_DOTS_FIXED(18)
PK_DOTS_FIXED(25)
PK_DOTS_FIXED(36)
#undef PK_DOTS_FIXED

static dots_fn dots_for(int64_t words) {
    switch (words) {
    case 1: return dots_1;
    case 2: return dots_2;
    case 4: return dots_4;
    case 9: return dots_9;
    case 18: return dots_18;
    case 25: return dots_25;
    case 36: return dots_36;
    default: return dots_any;
    }
}

#define ROW_BUFFERS 7

struct pack_args {
    const float *x;
    int64_t cg;
    int64_t cw;
    int64_t pixels;
    int64_t chunks;
    uint64_t *xbits;
    double *absum;
};

/* Chunks t0..t1 of PACK_PIXELS pixels of one image and group: signs packed, |x| summed. */
static void pack_chunks(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct pack_args *a = ctx;
    const int64_t cg = a->cg, pixels = a->pixels;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t ng = t / a->chunks; /* n * groups + g: its cg planes start at x + ng * cg */
        const int64_t p0 = (t % a->chunks) * PACK_PIXELS;
        const int64_t p1 = pixels - p0 < PACK_PIXELS ? pixels : p0 + PACK_PIXELS;
        pack_signs(a->x + ng * cg * pixels, cg, pixels, a->cw, p0, p1,
                   a->xbits + ng * pixels * a->cw, a->absum + ng * pixels);
    }
}

struct rows_args {
    struct pk_conv_binary_out out;
    int64_t words;
    dots_fn row_dots;
    const int32_t *wpop;
    const int64_t *tap_at;
    char *scratch;
    size_t worker_bytes;
    const size_t *sizes;
};

/* Output rows t0..t1 (of one image and group), every channel of the group. */
static void output_rows(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct rows_args *a = ctx;
    const struct pk_conv_binary_out *bo = &a->out;
    const struct pk_conv_geom geo = bo->geom; /* a local copy: the loops read registers */
    const int64_t cg = bo->cg, og = bo->og, cw = bo->cw, taps = bo->taps;
    const int64_t pixels = bo->pixels, kg = bo->kg, words = a->words;
    const int64_t *tap_at = a->tap_at;
    for (int64_t t = t0; t < t1; t++) {
        void *part[ROW_BUFFERS];
        char *mine = a->scratch + worker * a->worker_bytes;
        for (int i = 0; i < ROW_BUFFERS; i++) {
            part[i] = mine;
            mine += (a->sizes[i] + 63) / 64 * 64;
        }
        uint64_t *patches = part[0];
        float *betas = part[1];
        int64_t *base = part[2]; /* in-bounds taps x cg */
        int64_t *border = part[3];
        int32_t *padded = part[4], *dots = part[5], *fix = part[6];
        const int64_t n = t / (bo->groups * geo.out_h), g = (t / geo.out_h) % bo->groups;
        const int64_t oh = t % geo.out_h;
        const uint64_t *bits = bo->xbits + (n * bo->groups + g) * pixels * cw;
        const double *sums = bo->absum + (n * bo->groups + g) * pixels;
        uint64_t mw[PK_CONV_BINARY_WORDS];
        int64_t nborder = 0; /* columns with padded taps, listed first in `border` */
        const int64_t ih0 = oh * geo.stride_h - geo.pad_top;
        const int rows_inside = ih0 >= 0 && ih0 + (geo.kh - 1) * geo.dil_h < geo.height;
        for (int64_t ow = 0; ow < geo.out_w; ow++) {
            const int64_t iw0 = ow * geo.stride_w - geo.pad_left;
            if (rows_inside && iw0 >= 0 && iw0 + (geo.kw - 1) * geo.dil_w < geo.width) {
                /* every tap in bounds: copy the words, sum |x| in the same tap order */
                uint64_t *pw = patches + ow * words;
                const int64_t at = ih0 * geo.width + iw0;
                double s = 0.0;
                if (cw == 1) /* one word per tap (up to 64 channels): no inner loop */
                    for (int64_t tp = 0; tp < taps; tp++) {
                        pw[tp] = bits[at + tap_at[tp]];
                        s += sums[at + tap_at[tp]];
                    }
                else
                    for (int64_t tp = 0; tp < taps; tp++) {
                        const uint64_t *src = bits + (at + tap_at[tp]) * cw;
                        for (int64_t i = 0; i < cw; i++) *pw++ = src[i];
                        s += sums[at + tap_at[tp]];
                    }
                betas[ow] = (float)(s / (double)kg);
                base[ow] = kg;
                continue;
            }
            int64_t nv;
            const double s = pk_conv_binary_patch(bits, sums, cw, geo.height, geo.width, geo.kh,
                geo.kw, oh * geo.stride_h - geo.pad_top, ow * geo.stride_w - geo.pad_left,
                geo.dil_h, geo.dil_w, patches + ow * words, mw, &nv);
            betas[ow] = (float)(s / (double)kg);
            base[ow] = nv * cg;
            if (nv != taps) {
                int32_t *pl = padded + nborder * (taps + 1);
                int32_t np_ = 0;
                for (int64_t tp = 0; tp < taps; tp++)
                    if (!mw[tp * cw]) pl[1 + np_++] = (int32_t)tp;
                pl[0] = np_;
                border[nborder++] = ow;
            }
        }
        a->row_dots(bo->wbits + g * og * words, patches, words, og, geo.out_w, base, dots);
        /* padded taps were counted as popcount(0 ^ w): give them back, per channel;
         * neighbours along a border row share their padded taps, hence their fix */
        const int32_t *fixed = NULL; /* the padded-tap list `fix` was made for */
        for (int64_t i = 0; i < nborder; i++) {
            const int32_t *pl = padded + i * (taps + 1);
            if (!fixed || memcmp(pl, fixed, (size_t)(pl[0] + 1) * sizeof(int32_t))) {
                for (int64_t ol = 0; ol < og; ol++) {
                    const int32_t *wp = a->wpop + (g * og + ol) * taps;
                    int32_t f = 0;
                    for (int32_t k = 1; k <= pl[0]; k++) f += wp[pl[k]];
                    fix[ol] = 2 * f;
                }
                fixed = pl;
            }
            for (int64_t ol = 0; ol < og; ol++) dots[ol * geo.out_w + border[i]] += fix[ol];
        }
        /* epilogue, one channel row at a time: (alpha * beta) * n + bias, activation */
        float *out = bo->y + ((n * bo->out_channels + g * og) * geo.out_h + oh) * geo.out_w;
        for (int64_t ol = 0; ol < og; ol++) {
            const float a = bo->alpha[g * og + ol];
            const float b = bo->bias ? bo->bias[g * og + ol] : 0.0f;
            float *yo = out + ol * geo.out_h * geo.out_w;
            const int32_t *d = dots + ol * geo.out_w;
            for (int64_t ow = 0; ow < geo.out_w; ow++) {
                const float scale = a * betas[ow]; /* float32 product, then times n */
                float v = scale * (float)d[ow];
                if (bo->bias) v += b;
                yo[ow] = pk_activate(v, bo->activation);
            }
        }
    }
}

int pk_conv_binary_avx2(const float *x, int64_t images, int64_t channels, int64_t height,
                        int64_t width, int64_t groups, const uint64_t *wbits,
                        const float *alpha, int64_t out_channels, int64_t kh, int64_t kw,
                        int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                        int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                        const float *bias, int activation, float *y) {
    const int64_t cg = channels / groups, og = out_channels / groups;
    const int64_t cw = (cg + 63) / 64, taps = kh * kw, pixels = height * width;
    const int64_t kg = cg * taps, words = taps * cw;
    const dots_fn row_dots = dots_for(words);
    uint64_t *xbits = calloc((size_t)(images * groups * pixels * cw), sizeof(uint64_t));
    double *absum = malloc((size_t)(images * groups * pixels) * sizeof(double));
    int32_t *wpop = malloc((size_t)(out_channels * taps) * sizeof(int32_t));
    int64_t *tap_at = malloc((size_t)taps * sizeof(int64_t));
    if (!xbits || !absum || !wpop || !tap_at) {
        free(xbits);
        free(absum);
        free(wpop);
        free(tap_at);
        return PK_ERR_NOMEM;
    }
    /* each tap's input pixel, relative to the patch's top-left one */
    for (int64_t tp = 0; tp < taps; tp++)
        tap_at[tp] = (tp / kw) * dil_h * width + (tp % kw) * dil_w;
    /* popcount of each weight tap: what a padded (zero) tap adds, taken off again */
    for (int64_t o = 0; o < out_channels; o++)
        for (int64_t t = 0; t < taps; t++) {
            int64_t p = 0;
            for (int64_t i = 0; i < cw; i++)
                p += _mm_popcnt_u64(wbits[(o * taps + t) * cw + i]);
            wpop[o * taps + t] = (int32_t)p;
        }
    const int nthreads =
        pk_conv_threads((double)images * out_channels * out_h * out_w * taps * cw +
                        (double)images * channels * pixels);
    const int64_t chunks = (pixels + PACK_PIXELS - 1) / PACK_PIXELS;
    struct pack_args pack_args_ = {x, cg, cw, pixels, chunks, xbits, absum};
    pk_parallel_for(nthreads, images * groups * chunks, 1, pack_chunks, &pack_args_);
    const int64_t tasks = images * groups * out_h;
    /* per worker: the patch matrix of one output row, per column its beta and in-bounds
     * count, the columns with padding and their padded taps ([count, taps..] per column),
     * the integer dots [og][out_w] and one border fix per channel */
    const size_t sizes[ROW_BUFFERS] = {
        (size_t)(out_w * words + 8) * sizeof(uint64_t), (size_t)out_w * sizeof(float),
        (size_t)out_w * sizeof(int64_t),                (size_t)out_w * sizeof(int64_t),
        (size_t)(out_w * (taps + 1)) * sizeof(int32_t), (size_t)(og * out_w) * sizeof(int32_t),
        (size_t)og * sizeof(int32_t)};
    size_t worker_bytes = 0;
    for (int i = 0; i < ROW_BUFFERS; i++) worker_bytes += (sizes[i] + 63) / 64 * 64;
    char *scratch = pk_aligned_alloc((size_t)nthreads * worker_bytes);
    if (!scratch) {
        free(xbits);
        free(absum);
        free(wpop);
        free(tap_at);
        return PK_ERR_NOMEM;
    }
    struct rows_args args = {
        .out = pk_conv_binary_out_of(
            wbits, xbits, absum, alpha, bias, y,
            pk_conv_geom_of(channels, height, width, kh, kw, stride_h, stride_w, dil_h, dil_w,
                            pad_top, pad_left, out_h, out_w),
            out_channels, groups, activation),
        .words = words, .row_dots = row_dots, .wpop = wpop, .tap_at = tap_at,
        .scratch = scratch, .worker_bytes = worker_bytes, .sizes = sizes};
    pk_parallel_for(nthreads, tasks, 1, output_rows, &args);
    pk_aligned_free(scratch);
    free(xbits);
    free(absum);
    free(wpop);
    free(tap_at);
    return PK_OK;
}
