/* Dense conv2d as an offset GEMM, AVX2 + FMA: 6 output channels x 16 output columns per
 * micro-tile (12 accumulators), weights packed [group][row block][k][6] per call so each
 * k broadcasts 6 contiguous values. Same contract as conv_dense_scalar.c. */
#include <immintrin.h>

#include "conv_internal.h"

#define MR PK_CONV_MR
#define NR PK_CONV_NR

static inline __m256i lanes_below(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256 epilogue(__m256 v, __m256 b, int activation) {
    v = _mm256_add_ps(v, b);
    /* max/min return their second operand on NaN: NaN passes through, as in NumPy */
    if (activation == PK_ACT_RELU) v = _mm256_max_ps(_mm256_setzero_ps(), v);
    if (activation == PK_ACT_RELU6)
        v = _mm256_min_ps(_mm256_set1_ps(6.0f), _mm256_max_ps(_mm256_setzero_ps(), v));
    return v;
}

/* One 6 x (8*NV) tile; `masked`: the last vector holds only `cols % 8` (or 8) lanes. */
static inline __attribute__((always_inline)) void tile(const float *xb, const int64_t *off,
                                                       int64_t kg, const float *wp, int nv,
                                                       int masked, int64_t cols, int64_t rows,
                                                       float *const *yrow, const float *bias,
                                                       int activation) {
    __m256 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const __m256i mask = lanes_below(cols - 8 * (nv - 1));
    for (int64_t k = 0; k < kg; k++) {
        const float *b = xb + off[k];
        __m256 b0, b1 = _mm256_setzero_ps();
        if (nv == 1) {
            b0 = masked ? _mm256_maskload_ps(b, mask) : _mm256_loadu_ps(b);
        } else {
            b0 = _mm256_loadu_ps(b);
            b1 = masked ? _mm256_maskload_ps(b + 8, mask) : _mm256_loadu_ps(b + 8);
        }
        const float *wk = wp + k * MR;
        for (int r = 0; r < MR; r++) {
            const __m256 a = _mm256_broadcast_ss(wk + r);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            if (nv == 2) acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        const __m256 bv = _mm256_set1_ps(bias ? bias[r] : 0.0f);
        float *yo = yrow[r];
        for (int v = 0; v < nv; v++) {
            const __m256 out = epilogue(acc[r][v], bv, activation);
            if (masked && v == nv - 1)
                _mm256_maskstore_ps(yo + 8 * v, mask, out);
            else
                _mm256_storeu_ps(yo + 8 * v, out);
        }
    }
}

int pk_conv_gemm_avx2(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                      const int64_t *offsets, int64_t groups, int64_t kg, const float *w,
                      int64_t og, int64_t out_h, int64_t out_w, const float *bias,
                      int activation, float *y) {
    const int64_t blocks = (og + MR - 1) / MR;
    float *packed = pk_aligned_alloc((size_t)(groups * blocks * kg * MR) * sizeof(float));
    if (!packed) return PK_ERR_NOMEM;
    const int nthreads = pk_threads();
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t gb = 0; gb < groups * blocks; gb++) {
        const int64_t g = gb / blocks, o0 = (gb % blocks) * MR;
        float *dst = packed + gb * kg * MR;
        for (int64_t k = 0; k < kg; k++)
            for (int64_t r = 0; r < MR; r++)
                dst[k * MR + r] = o0 + r < og ? w[(g * og + o0 + r) * kg + k] : 0.0f;
    }
    const int64_t tiles = (out_w + NR - 1) / NR;
    const int64_t tasks = images * groups * out_h * tiles;
    const int64_t out_c = groups * og;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t tl = t % tiles, oh = (t / tiles) % out_h;
        const int64_t g = (t / (tiles * out_h)) % groups, n = t / (tiles * out_h * groups);
        const int64_t ow0 = tl * NR;
        const int64_t cols = out_w - ow0 < NR ? out_w - ow0 : NR;
        const float *xb = x + n * x_image + oh * x_row + ow0;
        const int64_t *off = offsets + g * kg;
        for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t o0 = g * og + blk * MR;
            const int64_t rows = og - blk * MR < MR ? og - blk * MR : MR;
            float *yrow[MR];
            for (int64_t r = 0; r < MR; r++)
                yrow[r] = y + ((n * out_c + o0 + (r < rows ? r : 0)) * out_h + oh) * out_w + ow0;
            const float *wp = packed + (g * blocks + blk) * kg * MR;
            const float *bb = bias ? bias + o0 : NULL;
            if (cols == NR)
                tile(xb, off, kg, wp, 2, 0, cols, rows, yrow, bb, activation);
            else if (cols > 8)
                tile(xb, off, kg, wp, 2, 1, cols, rows, yrow, bb, activation);
            else if (cols == 8)
                tile(xb, off, kg, wp, 1, 0, cols, rows, yrow, bb, activation);
            else
                tile(xb, off, kg, wp, 1, 1, cols, rows, yrow, bb, activation);
        }
    }
    pk_aligned_free(packed);
    return PK_OK;
}
