/* Binary (1-bit) linear, AVX2. Float activations: table lookup -- for each group of 8
 * activations the 256 signed sums are tabulated once per call, then every weight byte
 * costs one lookup and one add (no multiplications); measured faster on AMD Zen than
 * expanding bits to lane masks with vpsllvd + vblendvps (slow 256-bit ops there). Binary activations: XOR + hardware popcnt on
 * 64-bit words in 2 x 4 (rows x batch) register blocks; on this AVX2 class of CPU
 * (AMD Zen: 4 popcnt per cycle, 256-bit ops split in two) that beats the vpshufb
 * nibble-table popcount (measured), and the integer result is the same, exact. */
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
    const int nthreads = pk_threads();
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

#define XR 2 /* weight rows per XNOR block */
#define XB 4 /* activation rows per XNOR block */

static void linear_xnor(const uint64_t *xbits, const float *beta, int64_t batch,
                        int64_t in_features, const uint64_t *bits, const float *alpha,
                        int64_t out_features, const float *bias, int activation, float *y) {
    const int64_t words = (in_features + 63) / 64;
    const int64_t blocks = (out_features + XR - 1) / XR;
#pragma omp parallel for schedule(static) num_threads(pk_threads())
    for (int64_t ob = 0; ob < blocks; ob++) {
        const int64_t o0 = ob * XR;
        const int nr = out_features - o0 < XR ? (int)(out_features - o0) : XR;
        int64_t pop[XR][XB];
        for (int64_t b0 = 0; b0 < batch; b0 += XB) {
            const int nb = batch - b0 < XB ? (int)(batch - b0) : XB;
            if (nr == XR && nb == XB) {
                const uint64_t *w0 = bits + o0 * words, *w1 = w0 + words;
                const uint64_t *x0 = xbits + b0 * words, *x1 = x0 + words;
                const uint64_t *x2 = x1 + words, *x3 = x2 + words;
                int64_t p00 = 0, p01 = 0, p02 = 0, p03 = 0, p10 = 0, p11 = 0, p12 = 0, p13 = 0;
                for (int64_t i = 0; i < words; i++) {
                    const uint64_t a = w0[i], c = w1[i];
                    const uint64_t u0 = x0[i], u1 = x1[i], u2 = x2[i], u3 = x3[i];
                    p00 += _mm_popcnt_u64(a ^ u0);
                    p01 += _mm_popcnt_u64(a ^ u1);
                    p02 += _mm_popcnt_u64(a ^ u2);
                    p03 += _mm_popcnt_u64(a ^ u3);
                    p10 += _mm_popcnt_u64(c ^ u0);
                    p11 += _mm_popcnt_u64(c ^ u1);
                    p12 += _mm_popcnt_u64(c ^ u2);
                    p13 += _mm_popcnt_u64(c ^ u3);
                }
                pop[0][0] = p00, pop[0][1] = p01, pop[0][2] = p02, pop[0][3] = p03;
                pop[1][0] = p10, pop[1][1] = p11, pop[1][2] = p12, pop[1][3] = p13;
            } else {
                for (int r = 0; r < nr; r++)
                    for (int j = 0; j < nb; j++) {
                        const uint64_t *w = bits + (o0 + r) * words, *u = xbits + (b0 + j) * words;
                        int64_t p = 0;
                        for (int64_t i = 0; i < words; i++) p += _mm_popcnt_u64(w[i] ^ u[i]);
                        pop[r][j] = p;
                    }
            }
            for (int r = 0; r < nr; r++) {
                const int64_t o = o0 + r;
                const float add = bias ? bias[o] : 0.0f;
                for (int j = 0; j < nb; j++) {
                    const float v = (alpha[o] * beta[b0 + j]) * (float)(in_features - 2 * pop[r][j]);
                    y[(b0 + j) * out_features + o] = pk_activate(v + add, activation);
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
