/* Dense conv2d as an offset GEMM, AVX2 + FMA. Same contract as conv_dense_scalar.c.
 *
 * - Columns run flat over j = oh * x_row + ow for j < (out_h - 1) * x_row + out_w, so the
 *   rows of a padded input need no tail tiles; columns with ow >= out_w (the padding
 *   between rows, computed from in-bounds data) are simply not stored.
 * - Micro-tile: 6 output channels x 16 columns, 12 accumulators in registers; weights
 *   packed [group][6-row block][k][6] (by the caller, once) so each k broadcasts 6
 *   contiguous values.
 * - k is blocked by KC so that the activations a tile reads (KC shifted rows of 16
 *   columns) and the weight panel stay in L1 while every row block passes over them;
 *   partial sums live in a per-thread [out][16] buffer. */
#include <immintrin.h>

#include "conv_internal.h"
#include "pk_avx2.h"

#define MR PK_CONV_MR
#define NR PK_CONV_NR
#define KC 192

static inline __m256i lanes_below(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define PK_ROW(r, c0, c1)                               \
    do {                                                \
        const __m256 a = _mm256_broadcast_ss(wk + (r)); \
        c0 = _mm256_fmadd_ps(a, b0, c0);                \
        if (nv == 2) c1 = _mm256_fmadd_ps(a, b1, c1);   \
    } while (0)

/* buf[r][0:8*nv] += sum_k wp[k][r] * xb[off[k] + 0:8*nv] for one 6-row block; `masked`
 * loads only the lanes in `mask` of the last vector (the others stay 0). */
PK_ALWAYS_INLINE void tile(const float *xb, const int64_t *off, int64_t kc, const float *wp, int nv,
                           int masked, __m256i mask, float *buf) {
    __m256 c00 = _mm256_loadu_ps(buf), c10 = _mm256_loadu_ps(buf + NR);
    __m256 c20 = _mm256_loadu_ps(buf + 2 * NR), c30 = _mm256_loadu_ps(buf + 3 * NR);
    __m256 c40 = _mm256_loadu_ps(buf + 4 * NR), c50 = _mm256_loadu_ps(buf + 5 * NR);
    __m256 c01 = _mm256_loadu_ps(buf + 8), c11 = _mm256_loadu_ps(buf + NR + 8);
    __m256 c21 = _mm256_loadu_ps(buf + 2 * NR + 8), c31 = _mm256_loadu_ps(buf + 3 * NR + 8);
    __m256 c41 = _mm256_loadu_ps(buf + 4 * NR + 8), c51 = _mm256_loadu_ps(buf + 5 * NR + 8);
    for (int64_t k = 0; k < kc; k++) {
        const float *b = xb + off[k];
        __m256 b0, b1 = _mm256_setzero_ps();
        if (nv == 1) {
            b0 = masked ? _mm256_maskload_ps(b, mask) : _mm256_loadu_ps(b);
        } else {
            b0 = _mm256_loadu_ps(b);
            b1 = masked ? _mm256_maskload_ps(b + 8, mask) : _mm256_loadu_ps(b + 8);
        }
        const float *wk = wp + k * MR;
        PK_ROW(0, c00, c01);
        PK_ROW(1, c10, c11);
        PK_ROW(2, c20, c21);
        PK_ROW(3, c30, c31);
        PK_ROW(4, c40, c41);
        PK_ROW(5, c50, c51);
    }
    _mm256_storeu_ps(buf, c00);
    _mm256_storeu_ps(buf + NR, c10);
    _mm256_storeu_ps(buf + 2 * NR, c20);
    _mm256_storeu_ps(buf + 3 * NR, c30);
    _mm256_storeu_ps(buf + 4 * NR, c40);
    _mm256_storeu_ps(buf + 5 * NR, c50);
    _mm256_storeu_ps(buf + 8, c01);
    _mm256_storeu_ps(buf + NR + 8, c11);
    _mm256_storeu_ps(buf + 2 * NR + 8, c21);
    _mm256_storeu_ps(buf + 3 * NR + 8, c31);
    _mm256_storeu_ps(buf + 4 * NR + 8, c41);
    _mm256_storeu_ps(buf + 5 * NR + 8, c51);
}
#undef PK_ROW

/* y[0:n] = act(src[0:n] + bv), n <= NR. */
static inline void store_run(const float *src, int64_t n, float bv, int activation, float *y) {
    const __m256 b = _mm256_set1_ps(bv);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, pk_activate8(_mm256_add_ps(_mm256_loadu_ps(src + i), b), activation));
    for (; i < n; i++) y[i] = pk_activate(src[i] + bv, activation);
}

struct gemm_args {
    const float *x;
    int64_t x_image;
    const int64_t *offsets;
    int64_t groups;
    int64_t kg;
    int64_t og;
    int64_t out_w;
    int64_t x_row;
    const float *bias;
    int activation;
    float *y;
    int64_t blocks;
    const float *packed;
    int64_t span;
    int contiguous;
    int64_t tiles;
    int64_t out_c;
    int64_t plane;
    float *bufs;
};

/* Tiles t0..t1 of NR flat columns (of one image and group), every channel of the group. */
static void gemm_tiles(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct gemm_args *a = ctx;
    const float *x = a->x;
    int64_t x_image = a->x_image;
    const int64_t *offsets = a->offsets;
    int64_t groups = a->groups;
    int64_t kg = a->kg;
    int64_t og = a->og;
    int64_t out_w = a->out_w;
    int64_t x_row = a->x_row;
    const float *bias = a->bias;
    int activation = a->activation;
    float *y = a->y;
    int64_t blocks = a->blocks;
    const float *packed = a->packed;
    int64_t span = a->span;
    int contiguous = a->contiguous;
    int64_t tiles = a->tiles;
    int64_t out_c = a->out_c;
    int64_t plane = a->plane;
    float *bufs = a->bufs;
    for (int64_t t = t0; t < t1; t++) {
        float *buf = bufs + worker * blocks * MR * NR; /* this worker's */
            const int64_t tl = t % tiles, g = (t / tiles) % groups, n = t / (tiles * groups);
        const int64_t j0 = tl * NR;
        const int64_t cols = span - j0 < NR ? span - j0 : NR;
        const float *xb = x + n * x_image + j0;
        const __m256i mask = lanes_below(cols > 8 ? cols - 8 : cols);
        memset(buf, 0, (size_t)(blocks * MR * NR) * sizeof(float));
        /* Each k reads its own run of x (kg runs, e.g. 256 channel planes of a 1x1
         * conv): too many streams for the hardware prefetcher, so fetch the next
         * tile's runs while this one computes. */
        if (tl + 1 < tiles) {
            for (int64_t k = 0; k < kg; k++)
                _mm_prefetch((const char *)(xb + NR + offsets[g * kg + k]), _MM_HINT_T0);
            if (contiguous) /* and the output runs it will write (og streams too) */
                for (int64_t o = 0; o < og; o++)
                    __builtin_prefetch(y + (n * out_c + g * og + o) * plane + j0 + NR, 1);
        }
        for (int64_t k0 = 0; k0 < kg; k0 += KC) {
            const int64_t kc = kg - k0 < KC ? kg - k0 : KC;
            const int64_t *off = offsets + g * kg + k0;
            for (int64_t blk = 0; blk < blocks; blk++) {
                const float *wp = packed + ((g * blocks + blk) * kg + k0) * MR;
                float *bb = buf + blk * MR * NR;
                if (cols == NR)
                    tile(xb, off, kc, wp, 2, 0, mask, bb);
                else if (cols > 8)
                    tile(xb, off, kc, wp, 2, 1, mask, bb);
                else if (cols == 8)
                    tile(xb, off, kc, wp, 1, 0, mask, bb);
                else
                    tile(xb, off, kc, wp, 1, 1, mask, bb);
            }
        }
        pk_conv_runs runs;
        if (!contiguous) pk_conv_flat_runs(j0, cols, x_row, out_w, &runs);
        for (int64_t o = 0; o < og; o++) { /* epilogue */
            const float bv = bias ? bias[g * og + o] : 0.0f;
            float *yo = y + (n * out_c + g * og + o) * plane;
            float vals[NR];
            store_run(buf + o * NR, cols, bv, activation, contiguous ? yo + j0 : vals);
            if (!contiguous) pk_conv_store_runs(vals, &runs, yo);
        }
    }
}

int pk_conv_gemm_avx2(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                      const int64_t *offsets, int64_t groups, int64_t kg, const float *w,
                      int64_t og, int64_t out_h, int64_t out_w, const float *bias,
                      int activation, float *y) {
    const int64_t blocks = (og + MR - 1) / MR;
    const float *packed = w; /* [groups][blocks][kg][MR], see pk_conv_gemm_f32 */
    const int64_t span = (out_h - 1) * x_row + out_w;
    const int contiguous = out_h == 1 || x_row == out_w;
    const int64_t tiles = (span + NR - 1) / NR;
    const int64_t tasks = images * groups * tiles;
    const int64_t out_c = groups * og, plane = out_h * out_w;
    const int nthreads = pk_threads_for((double)tasks * NR * og * kg); /* multiply-adds */
    float *bufs = pk_aligned_alloc((size_t)(nthreads * blocks * MR * NR) * sizeof(float));
    if (!bufs) return PK_ERR_NOMEM;
    struct gemm_args gemm_args_ = {x, x_image, offsets, groups, kg, og, out_w, x_row, bias,
                                   activation, y, blocks, packed, span, contiguous, tiles,
                                   out_c, plane, bufs};
    pk_parallel_for(nthreads, tasks, 4, gemm_tiles, &gemm_args_);
    pk_aligned_free(bufs);
    return PK_OK;
}
