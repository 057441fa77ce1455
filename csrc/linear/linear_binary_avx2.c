/* Binary (1-bit) linear, AVX2. Float activations: table lookup -- for each group of 8
 * activations the 256 signed sums are tabulated, then every weight byte costs one
 * lookup and one add (no multiplications); faster on AMD Zen 1 than expanding bits to
 * lane masks with vpsllvd + vblendvps (slow 256-bit ops there). Binary
 * activations: XOR + popcount, exact, with the scalar popcnt instruction on blocks of 8
 * interleaved activation rows. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define LUT_COLS 128 /* columns per table block: 16 groups x 256 floats = 16 KB, in L1 */
#define LUT_PANEL 64 /* fewest output rows per lookup task */

/* Tables of one column block: T[g - g0][m] = sum_j (bit j of m ? x[8g + j] : -x[8g + j])
 * over the 8 columns of group g (columns past n count as 0), built as the sum of two
 * 16-entry half tables. */
static void build_tables(const float *x, int64_t n, int64_t g0, int64_t g1, float *T) {
    for (int64_t g = g0; g < g1; g++) {
        float v[8];
        for (int j = 0; j < 8; j++) v[j] = 8 * g + j < n ? x[8 * g + j] : 0.0f;
        float lo[16], hi[16];
        for (int m = 0; m < 16; m++) {
            float a = 0.0f, b = 0.0f;
            for (int j = 0; j < 4; j++) {
                a += (m >> j) & 1 ? v[j] : -v[j];
                b += (m >> j) & 1 ? v[4 + j] : -v[4 + j];
            }
            lo[m] = a;
            hi[m] = b;
        }
        const __m256 l0 = _mm256_loadu_ps(lo), l1 = _mm256_loadu_ps(lo + 8);
        float *t = T + (g - g0) * 256;
        for (int h = 0; h < 16; h++) {
            const __m256 hv = _mm256_set1_ps(hi[h]);
            _mm256_storeu_ps(t + 16 * h, _mm256_add_ps(l0, hv));
            _mm256_storeu_ps(t + 16 * h + 8, _mm256_add_ps(l1, hv));
        }
    }
}

/* sum over groups g0..g1 of T[g - g0][byte g of the row]: four chains hide the add latency */
static inline float lookup_row(const uint8_t *wb, const float *T, int64_t g0, int64_t g1) {
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int64_t g = g0;
    for (; g + 8 <= g1; g += 8) {
        uint64_t w;
        memcpy(&w, wb + g, sizeof w);
        const float *t = T + (g - g0) * 256;
        a0 += t[w & 255];
        a1 += t[256 + ((w >> 8) & 255)];
        a2 += t[512 + ((w >> 16) & 255)];
        a3 += t[768 + ((w >> 24) & 255)];
        a0 += t[1024 + ((w >> 32) & 255)];
        a1 += t[1280 + ((w >> 40) & 255)];
        a2 += t[1536 + ((w >> 48) & 255)];
        a3 += t[1792 + (w >> 56)];
    }
    for (; g < g1; g++) a0 += T[(g - g0) * 256 + wb[g]];
    return (a0 + a1) + (a2 + a3);
}

struct float_args {
    const float *x;
    int64_t batch, in_features, words, groups, block_groups, rows, panels, out_features;
    const uint64_t *bits;
    const float *alpha, *bias;
    int activation;
    float *y;
    float *scratch; /* per worker: the tables (block_groups * 256), then acc (rows) */
    int64_t scratch_floats;
};

/* Panel task % panels of batch row task / panels. */
static void float_panel(void *ctx, int64_t task, int worker) {
    const struct float_args *a = ctx;
    const int64_t b = task / a->panels, p = task % a->panels;
    const int64_t words = a->words, groups = a->groups, block_groups = a->block_groups;
    float *T = a->scratch + worker * a->scratch_floats;
    float *acc = T + block_groups * 256;
    const float *xr = a->x + b * a->in_features;
    const int64_t o0 = p * a->rows;
    const int64_t o1 = a->out_features - o0 < a->rows ? a->out_features : o0 + a->rows;
    for (int64_t o = o0; o < o1; o++) acc[o - o0] = 0.0f;
    for (int64_t g0 = 0; g0 < groups; g0 += block_groups) {
        const int64_t g1 = groups - g0 < block_groups ? groups : g0 + block_groups;
        build_tables(xr, a->in_features, g0, g1, T);
        for (int64_t o = o0; o < o1; o++) {
            /* a row's block is 16 bytes of its own cache line: the hardware prefetcher
             * misses them */
            const int64_t ahead = o + 12 < o1 ? o + 12 : o;
            _mm_prefetch((const char *)(a->bits + ahead * words) + g0, _MM_HINT_T0);
            acc[o - o0] += lookup_row((const uint8_t *)(a->bits + o * words), T, g0, g1);
        }
    }
    float *yr = a->y + b * a->out_features;
    for (int64_t o = o0; o < o1; o++)
        yr[o] = pk_activate(a->alpha[o] * acc[o - o0] + (a->bias ? a->bias[o] : 0.0f),
                            a->activation);
}

/* Float activations: the output rows are split into a few panels per thread, claimed one
 * at a time. A panel walks the columns in blocks of LUT_COLS: it builds the block's
 * tables (16 KB, cheap next to the lookups) and they stay in L1 while every row of the
 * panel looks its weight bytes up. Each row sums its blocks in column order, whatever
 * the thread count. */
int pk_linear_binary_float_avx2(const float *x, int64_t batch, int64_t in_features,
                                const uint64_t *bits, const float *alpha, int64_t out_features,
                                const float *bias, int activation, float *y) {
    const int64_t words = (in_features + 63) / 64;
    const int64_t groups = (in_features + 7) / 8;
    const int64_t block_groups = LUT_COLS / 8;
    const int nthreads = pk_threads_for((double)batch * out_features * in_features);
    /* 4 panels per thread, at least LUT_PANEL rows each: every panel rebuilds the tables */
    int64_t rows = (out_features + 4 * nthreads - 1) / (4 * nthreads);
    rows = rows < LUT_PANEL ? LUT_PANEL : (rows + 15) / 16 * 16;
    const int64_t panels = (out_features + rows - 1) / rows;
    const int64_t scratch_floats = (block_groups * 256 + rows + 15) / 16 * 16;
    float *scratch = pk_aligned_alloc((size_t)(nthreads * scratch_floats) * sizeof(float));
    if (!scratch) return PK_ERR_NOMEM;
    struct float_args a = {x, batch, in_features, words, groups, block_groups, rows, panels,
                           out_features, bits, alpha, bias, activation, y, scratch,
                           scratch_floats};
    pk_parallel(nthreads, batch * panels, float_panel, &a);
    pk_aligned_free(scratch);
    return PK_OK;
}

/* popcount(w ^ x_j) for the 8 activation rows of one interleaved block (xi[k][j] is word k
 * of row j), scalar popcnt only: every weight word loaded serves 8 pairs, and the rows
 * are addressed off one pointer with constant offsets, so the 8 counters, the weight
 * word and the pointers fit in registers. Faster here than mixing in the vpshufb nibble
 * table (Mula) on half of the rows, whose 128-bit pipes are slow on Zen 1. */
static void xnor_rows8(const uint64_t *w, const uint64_t *xi, int64_t words, uint64_t *pop) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
#pragma GCC unroll 8
    for (int64_t k = 0; k < words; k++) {
        const uint64_t u = w[k];
        const uint64_t *x = xi + 8 * k;
        a0 += (uint64_t)_mm_popcnt_u64(u ^ x[0]);
        a1 += (uint64_t)_mm_popcnt_u64(u ^ x[1]);
        a2 += (uint64_t)_mm_popcnt_u64(u ^ x[2]);
        a3 += (uint64_t)_mm_popcnt_u64(u ^ x[3]);
        a4 += (uint64_t)_mm_popcnt_u64(u ^ x[4]);
        a5 += (uint64_t)_mm_popcnt_u64(u ^ x[5]);
        a6 += (uint64_t)_mm_popcnt_u64(u ^ x[6]);
        a7 += (uint64_t)_mm_popcnt_u64(u ^ x[7]);
    }
    pop[0] = a0, pop[1] = a1, pop[2] = a2, pop[3] = a3;
    pop[4] = a4, pop[5] = a5, pop[6] = a6, pop[7] = a7;
}

/* popcount(w_r ^ x) for the 4 weight rows w + r * words and one activation row x. */
static void xnor_weights4(const uint64_t *w, int64_t words, const uint64_t *x, uint64_t *pop) {
    const uint64_t *w1 = w + words, *w2 = w + 2 * words, *w3 = w + 3 * words;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int64_t k = 0; k < words; k++) {
        const uint64_t u = x[k];
        a0 += (uint64_t)_mm_popcnt_u64(u ^ w[k]);
        a1 += (uint64_t)_mm_popcnt_u64(u ^ w1[k]);
        a2 += (uint64_t)_mm_popcnt_u64(u ^ w2[k]);
        a3 += (uint64_t)_mm_popcnt_u64(u ^ w3[k]);
    }
    pop[0] = a0, pop[1] = a1, pop[2] = a2, pop[3] = a3;
}

#define PK_BINARY_NAME pk_linear_binary_avx2
#include "linear_binary_xnor_body.h"
