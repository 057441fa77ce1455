/* Binary (1-bit) linear, AVX2. Float activations: 32 weight bits are broadcast, a
 * variable shift (vpsllvd) moves bit l of each group of 8 to lane l's sign bit, and
 * vblendvps picks x or -x: three instructions per 8 weights, no multiplications; 4
 * output rows share each activation load. Binary activations: XOR + hardware popcnt on
 * 64-bit words in 2 x 4 (rows x batch) register blocks; on this AVX2 class of CPU
 * (AMD Zen: 4 popcnt per cycle, 256-bit ops split in two) that beats the vpshufb
 * nibble-table popcount (measured), and the integer result is the same, exact. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define ROWS 4 /* output rows per float-activation block */

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline uint32_t load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* x with its sign flipped where the weight bit is 0 (weight -1). */
static inline float sign_select(float x, uint64_t word, int j) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u ^= (uint32_t)(~(word >> j) & 1u) << 31;
    memcpy(&x, &u, sizeof u);
    return x;
}

/* Sign-select sums of `nrows` (1..ROWS) weight rows against one activation row. */
static inline void float_rows(const float *xr, int64_t in_features, int64_t words,
                              const uint64_t *wrow, int nrows, float *sums) {
    const __m256i sh0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    const __m256i sh1 = _mm256_setr_epi32(23, 22, 21, 20, 19, 18, 17, 16);
    const __m256i sh2 = _mm256_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8);
    const __m256i sh3 = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    const __m256 signbit = _mm256_set1_ps(-0.0f);
    __m256 acc[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= in_features; k += 32) {
        const __m256 x0 = _mm256_loadu_ps(xr + k), x1 = _mm256_loadu_ps(xr + k + 8);
        const __m256 x2 = _mm256_loadu_ps(xr + k + 16), x3 = _mm256_loadu_ps(xr + k + 24);
        const __m256 n0 = _mm256_xor_ps(x0, signbit), n1 = _mm256_xor_ps(x1, signbit);
        const __m256 n2 = _mm256_xor_ps(x2, signbit), n3 = _mm256_xor_ps(x3, signbit);
        for (int r = 0; r < ROWS; r++) {
            if (r >= nrows) break;
            const __m256i v =
                _mm256_set1_epi32((int)load_u32((const char *)(wrow + r * words) + k / 8));
            /* bit 8g + l of the word -> sign bit of lane l: set means +1, keep x */
            __m256 a = acc[r];
            a = _mm256_add_ps(a, _mm256_blendv_ps(n0, x0, _mm256_castsi256_ps(_mm256_sllv_epi32(v, sh0))));
            a = _mm256_add_ps(a, _mm256_blendv_ps(n1, x1, _mm256_castsi256_ps(_mm256_sllv_epi32(v, sh1))));
            a = _mm256_add_ps(a, _mm256_blendv_ps(n2, x2, _mm256_castsi256_ps(_mm256_sllv_epi32(v, sh2))));
            a = _mm256_add_ps(a, _mm256_blendv_ps(n3, x3, _mm256_castsi256_ps(_mm256_sllv_epi32(v, sh3))));
            acc[r] = a;
        }
    }
    for (int r = 0; r < nrows; r++) {
        float s = hsum8(acc[r]);
        const uint64_t *w = wrow + r * words;
        for (int64_t j = k; j < in_features; j++) s += sign_select(xr[j], w[j / 64], (int)(j % 64));
        sums[r] = s;
    }
}

static void linear_float(const float *x, int64_t batch, int64_t in_features,
                         const uint64_t *bits, const float *alpha, int64_t out_features,
                         const float *bias, int activation, float *y) {
    const int64_t words = (in_features + 63) / 64;
    const int64_t blocks = (out_features + ROWS - 1) / ROWS;
#pragma omp parallel for schedule(static) num_threads(pk_threads())
    for (int64_t ob = 0; ob < blocks; ob++) {
        const int64_t o0 = ob * ROWS;
        const int nrows = out_features - o0 < ROWS ? (int)(out_features - o0) : ROWS;
        for (int64_t b = 0; b < batch; b++) {
            float sums[ROWS];
            float_rows(x + b * in_features, in_features, words, bits + o0 * words, nrows, sums);
            for (int r = 0; r < nrows; r++) {
                const int64_t o = o0 + r;
                y[b * out_features + o] =
                    pk_activate(alpha[o] * sums[r] + (bias ? bias[o] : 0.0f), activation);
            }
        }
    }
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
        linear_float(x, batch, in_features, bits, alpha, out_features, bias, activation, y);
    return PK_OK;
}
