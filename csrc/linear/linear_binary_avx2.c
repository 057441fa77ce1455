/* Binary (1-bit) linear, AVX2. Float activations: table lookup -- for each group of 8
 * activations the 256 signed sums are tabulated, then every weight byte costs one
 * lookup and one add (no multiplications); measured faster on AMD Zen 1 than expanding
 * bits to lane masks with vpsllvd + vblendvps (slow 256-bit ops there). Binary
 * activations: XOR + popcount, exact, with the scalar popcnt instruction and the vpshufb
 * nibble-table popcount (Mula) running side by side on different activation rows. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define LUT_COLS 1024 /* columns per table block: 128 groups x 256 floats = 128 KB */

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

/* Float activations: per activation row and block of LUT_COLS columns, a table of the
 * 256 signed sums of each group of 8 activations is built, then every output row needs
 * one lookup and one add per 8 weights (no multiplications). Each thread builds its
 * own tables (cheap next to the lookups) so that a call has a single parallel region
 * and no barriers inside: with few cores, a barrier can wait a whole time slice. */
static int linear_float(const float *x, int64_t batch, int64_t in_features,
                        const uint64_t *bits, const float *alpha, int64_t out_features,
                        const float *bias, int activation, float *y) {
    const int64_t words = (in_features + 63) / 64;
    const int64_t groups = (in_features + 7) / 8;
    const int64_t block_groups = LUT_COLS / 8;
    const int64_t table_floats = (groups < block_groups ? groups : block_groups) * 256;
    const int nthreads = pk_threads_for((double)batch * out_features * in_features);
    float *tables = pk_aligned_alloc((size_t)(nthreads * table_floats + 16) * sizeof(float));
    float *acc = pk_aligned_alloc((size_t)out_features * sizeof(float));
    if (!tables || !acc) {
        pk_aligned_free(tables);
        pk_aligned_free(acc);
        return PK_ERR_NOMEM;
    }
#pragma omp parallel num_threads(nthreads)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int t = 0, nt = 1;
#endif
        float *T = tables + (int64_t)t * table_floats;
        const int64_t o_lo = out_features * t / nt, o_hi = out_features * (t + 1) / nt;
        for (int64_t b = 0; b < batch && o_lo < o_hi; b++) {
            const float *xr = x + b * in_features;
            for (int64_t o = o_lo; o < o_hi; o++) acc[o] = 0.0f;
            for (int64_t g0 = 0; g0 < groups; g0 += block_groups) {
                const int64_t g1 = groups - g0 < block_groups ? groups : g0 + block_groups;
                build_tables(xr, in_features, g0, g1, T);
                for (int64_t o = o_lo; o < o_hi; o++)
                    acc[o] += lookup_row((const uint8_t *)(bits + o * words), T, g0, g1);
            }
            for (int64_t o = o_lo; o < o_hi; o++)
                y[b * out_features + o] =
                    pk_activate(alpha[o] * acc[o] + (bias ? bias[o] : 0.0f), activation);
        }
    }
    pk_aligned_free(tables);
    pk_aligned_free(acc);
    return PK_OK;
}

#define XB 8 /* activation rows per XNOR block: 4 on popcnt, 4 on vpshufb */

static inline uint64_t xnor_pop_scalar(const uint64_t *w, const uint64_t *u, int64_t words) {
    uint64_t p = 0;
    for (int64_t i = 0; i < words; i++) p += (uint64_t)_mm_popcnt_u64(w[i] ^ u[i]);
    return p;
}

/* popcount(w ^ x_j) for 8 activation rows x_0..x_7 at once: rows 0..3 with the scalar
 * popcnt instruction (integer pipes), rows 4..7 with the vpshufb nibble table on 128-bit
 * words (vector pipes), so both kinds of execution unit work at the same time. Byte
 * counters take at most 8 per step, so they are widened (vpsadbw) every 31 steps. */
static void xnor_block8(const uint64_t *w, const uint64_t *x, int64_t words, uint64_t *pop) {
    const __m128i lut = _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m128i low = _mm_set1_epi8(0x0f), zero = _mm_setzero_si128();
    const uint64_t *x0 = x, *x1 = x + words, *x2 = x + 2 * words, *x3 = x + 3 * words;
    const uint64_t *x4 = x + 4 * words, *x5 = x + 5 * words, *x6 = x + 6 * words,
                   *x7 = x + 7 * words;
    uint64_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    __m128i s4 = zero, s5 = zero, s6 = zero, s7 = zero; /* widened counts */
    const int64_t pairs = words / 2;
    for (int64_t c0 = 0; c0 < pairs; c0 += 31) {
        const int64_t c1 = pairs - c0 < 31 ? pairs : c0 + 31;
        __m128i a4 = zero, a5 = zero, a6 = zero, a7 = zero;
        for (int64_t c = c0; c < c1; c++) {
            const int64_t i = 2 * c;
            const uint64_t wa = w[i], wb = w[i + 1];
            p0 += (uint64_t)(_mm_popcnt_u64(wa ^ x0[i]) + _mm_popcnt_u64(wb ^ x0[i + 1]));
            p1 += (uint64_t)(_mm_popcnt_u64(wa ^ x1[i]) + _mm_popcnt_u64(wb ^ x1[i + 1]));
            p2 += (uint64_t)(_mm_popcnt_u64(wa ^ x2[i]) + _mm_popcnt_u64(wb ^ x2[i + 1]));
            p3 += (uint64_t)(_mm_popcnt_u64(wa ^ x3[i]) + _mm_popcnt_u64(wb ^ x3[i + 1]));
            const __m128i wv = _mm_loadu_si128((const __m128i *)(w + i));
#define PK_NIBBLE_POP(acc, xr)                                                              \
    do {                                                                                    \
        const __m128i v = _mm_xor_si128(wv, _mm_loadu_si128((const __m128i *)((xr) + i))); \
        const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(v, low));                   \
        const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), low)); \
        acc = _mm_add_epi8(acc, _mm_add_epi8(lo, hi));                                      \
    } while (0)
            PK_NIBBLE_POP(a4, x4);
            PK_NIBBLE_POP(a5, x5);
            PK_NIBBLE_POP(a6, x6);
            PK_NIBBLE_POP(a7, x7);
#undef PK_NIBBLE_POP
        }
        s4 = _mm_add_epi64(s4, _mm_sad_epu8(a4, zero));
        s5 = _mm_add_epi64(s5, _mm_sad_epu8(a5, zero));
        s6 = _mm_add_epi64(s6, _mm_sad_epu8(a6, zero));
        s7 = _mm_add_epi64(s7, _mm_sad_epu8(a7, zero));
    }
    const int64_t t = 2 * pairs; /* an odd last word */
    pop[0] = p0 + xnor_pop_scalar(w + t, x0 + t, words - t);
    pop[1] = p1 + xnor_pop_scalar(w + t, x1 + t, words - t);
    pop[2] = p2 + xnor_pop_scalar(w + t, x2 + t, words - t);
    pop[3] = p3 + xnor_pop_scalar(w + t, x3 + t, words - t);
    const __m128i *s[4] = {&s4, &s5, &s6, &s7};
    const uint64_t *xs[4] = {x4, x5, x6, x7};
    for (int j = 0; j < 4; j++)
        pop[4 + j] = (uint64_t)_mm_cvtsi128_si64(*s[j]) +
                     (uint64_t)_mm_extract_epi64(*s[j], 1) +
                     xnor_pop_scalar(w + t, xs[j] + t, words - t);
}

#define XPANEL 16 /* output rows per task: their weights (16 x words x 8 bytes) stay in L1 */

/* Tasks are panels of XPANEL output rows, handed out dynamically (a descheduled thread
 * holds up one panel, not half the matrix). Within a panel, each block of XB activation
 * rows (XB x words x 8 bytes) is read from L1 for every row of the panel. */
static void linear_xnor(const uint64_t *xbits, const float *beta, int64_t batch,
                        int64_t in_features, const uint64_t *bits, const float *alpha,
                        int64_t out_features, const float *bias, int activation, float *y) {
    const int64_t words = (in_features + 63) / 64;
    const int64_t panels = (out_features + XPANEL - 1) / XPANEL;
#pragma omp parallel for schedule(dynamic) num_threads(pk_threads_for((double)batch * out_features * in_features))
    for (int64_t p = 0; p < panels; p++) {
        const int64_t o0 = p * XPANEL, o1 = o0 + XPANEL < out_features ? o0 + XPANEL : out_features;
        uint64_t pop[XPANEL][XB]; /* the panel x block tile, stored row by row after */
        for (int64_t b0 = 0; b0 < batch; b0 += XB) {
            const int nb = batch - b0 < XB ? (int)(batch - b0) : XB;
            for (int64_t o = o0; o < o1; o++) {
                const uint64_t *w = bits + o * words;
                if (nb == XB)
                    xnor_block8(w, xbits + b0 * words, words, pop[o - o0]);
                else
                    for (int j = 0; j < nb; j++)
                        pop[o - o0][j] = xnor_pop_scalar(w, xbits + (b0 + j) * words, words);
            }
            /* one output row segment at a time: stores to y[b][o] for many b at one o
             * would all fall in one cache set (the row pitch is a multiple of 4 KB) */
            for (int j = 0; j < nb; j++) {
                float *yr = y + (b0 + j) * out_features;
                const float bj = beta[b0 + j];
                for (int64_t o = o0; o < o1; o++) {
                    const float v = (alpha[o] * bj) *
                                    (float)(in_features - 2 * (int64_t)pop[o - o0][j]);
                    yr[o] = pk_activate(v + (bias ? bias[o] : 0.0f), activation);
                }
            }
        }
    }
}

int pk_linear_binary_avx2(const float *x, const uint64_t *xbits, const float *beta,
                          int64_t batch, int64_t in_features, const uint64_t *bits,
                          const float *alpha, int64_t out_features, const float *bias,
                          int activation, float *y) {
    if (xbits)
        linear_xnor(xbits, beta, batch, in_features, bits, alpha, out_features, bias,
                    activation, y);
    else
        return linear_float(x, batch, in_features, bits, alpha, out_features, bias, activation,
                            y);
    return PK_OK;
}
