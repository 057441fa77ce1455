/* CSR conv2d, AVX2 + FMA: a tile of up to 64 output columns lives in 8 registers while
 * row o's nonzeros stream past; each nonzero is one broadcast and NV loads + FMAs.
 * Same contract as conv_csr_scalar.c. */
#include <immintrin.h>

#include "conv_internal.h"
#include "pk_avx2.h"

#define TILE PK_CONV_CSR_TILE

/* All output channels for one run of `cols` columns; NV vectors, the last masked if so. */
PK_ALWAYS_INLINE void run(const float *xb, const int32_t *indptr, const int64_t *offsets,
                          const float *values, int64_t out_c, int nv, int masked, __m256i mask,
                          float *yb, int64_t plane, const float *bias, int activation) {
    for (int64_t o = 0; o < out_c; o++) {
        __m256 acc[8];
        for (int v = 0; v < 8; v++) acc[v] = _mm256_setzero_ps();
        for (int64_t p = indptr[o]; p < indptr[o + 1]; p++) {
            const __m256 a = _mm256_broadcast_ss(values + p);
            const float *b = xb + offsets[p];
            for (int v = 0; v < nv; v++) {
                const __m256 bv = (masked && v == nv - 1) ? _mm256_maskload_ps(b + 8 * v, mask)
                                                          : _mm256_loadu_ps(b + 8 * v);
                acc[v] = _mm256_fmadd_ps(a, bv, acc[v]);
            }
        }
        const __m256 bo = _mm256_set1_ps(bias ? bias[o] : 0.0f);
        float *yo = yb + o * plane;
        for (int v = 0; v < nv; v++) {
            const __m256 out = pk_activate8(_mm256_add_ps(acc[v], bo), activation);
            if (masked && v == nv - 1)
                _mm256_maskstore_ps(yo + 8 * v, mask, out);
            else
                _mm256_storeu_ps(yo + 8 * v, out);
        }
    }
}

#define RUN(NV, M)                                                                       \
    run(xb, a->indptr, a->offsets, a->values, a->out_channels, NV, M, mask, yb, a->plane, \
        a->bias, a->activation)

/* Tasks t0..t1: one output row tile each, every channel. */
static void row_tiles(void *ctx, int64_t t0, int64_t t1, int worker) {
    const struct pk_conv_csr_args *a = ctx;
    const int64_t out_h = a->out_h, out_w = a->out_w, tiles = a->tiles;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t tl = t % tiles, oh = (t / tiles) % out_h, n = t / (tiles * out_h);
        const int64_t ow0 = tl * TILE;
        const int64_t cols = out_w - ow0 < TILE ? out_w - ow0 : TILE;
        const float *xb = a->x + n * a->x_image + oh * a->x_row + ow0;
        float *yb = a->y + n * a->out_channels * a->plane + oh * out_w + ow0;
        const int nv = (int)((cols + 7) / 8);
        const int masked = cols % 8 != 0;
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(cols - 8 * (nv - 1))),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        switch (nv * 2 + masked) {
            case 2: RUN(1, 0); break;
            case 3: RUN(1, 1); break;
            case 4: RUN(2, 0); break;
            case 5: RUN(2, 1); break;
            case 6: RUN(3, 0); break;
            case 7: RUN(3, 1); break;
            case 8: RUN(4, 0); break;
            case 9: RUN(4, 1); break;
            case 10: RUN(5, 0); break;
            case 11: RUN(5, 1); break;
            case 12: RUN(6, 0); break;
            case 13: RUN(6, 1); break;
            case 14: RUN(7, 0); break;
            case 15: RUN(7, 1); break;
            case 16: RUN(8, 0); break;
            default: RUN(8, 1); break;
        }
    }
}

int pk_conv_csr_avx2(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                     const int32_t *indptr, const int64_t *offsets, const float *values,
                     int64_t out_channels, int64_t out_h, int64_t out_w, const float *bias,
                     int activation, float *y) {
    const int64_t tiles = (out_w + TILE - 1) / TILE, plane = out_h * out_w;
    const int64_t tasks = images * out_h * tiles;
    struct pk_conv_csr_args args = {x,       indptr, offsets,      values, bias,  y,
                                    x_image, x_row,  out_channels, out_h,  out_w, tiles,
                                    plane,   activation};
    pk_parallel_for(pk_conv_threads((double)indptr[out_channels] * images * out_h * out_w),
                    tasks, 1, row_tiles, &args);
    return PK_OK;
}
