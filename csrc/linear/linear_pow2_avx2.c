/* Power-of-two linear, AVX2. Codes are split into nibbles and looked up with vpshufb
 * (16-entry tables; 128-bit shuffles, cheap on every AVX2 CPU, where vpermps and
 * variable shifts are slow on AMD Zen 1).
 * Float activations: the table gives each code's IEEE half high byte, vcvtph2ps makes
 * the exact float +-2^-e (0 for the zero code) and one FMA accumulates -- a product by a
 * power of two is exact and costs what an add costs here (see linear_pow2_scalar.c).
 * int8 activations: the table gives the int8 value +-2^(6-e); AVX2 has no per-byte
 * variable shift, so the shift q << (6 - e) is done by vpmaddubsw, exact (no int16
 * saturation: the weights are at most 64 in magnitude) and equal to the shift form.
 * Batch >= 4: a block of rows is expanded once to int8 and multiplied with
 * u = q + 128: |pair sum| <= 2 * 255 * 64 = 32640 never saturates, and the int32
 * result minus 128 * sum(w) is exact. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define ROWS 4     /* output rows sharing each activation load */
#define QBATCH 4   /* from this batch on, row blocks are expanded once (float or int8) */

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* sum of the 8 lanes, modulo 2^32 */
static inline int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline uint32_t load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static const float pow2_values[16] = {
    0.0f, 1.0f,  0.5f,  0.25f,  0.125f,  0.0625f,  0.03125f,  0.015625f,
    0.0f, -1.0f, -0.5f, -0.25f, -0.125f, -0.0625f, -0.03125f, -0.015625f,
};

static inline int code_at(const uint8_t *row, int64_t k) {
    const uint8_t byte = row[k >> 1];
    return (k & 1) ? byte >> 4 : byte & 15;
}

/* int8 weight value of each code: +-2^(6-e), 0 for the zero code */
static inline int32_t code_int(int c) {
    const int field = c & 7;
    if (!field) return 0;
    const int32_t t = 1 << (7 - field);
    return (c & 8) ? -t : t;
}

/* Codes of 32 columns (16 bytes) in column order: c0 = columns 0..15, c1 = 16..31. */
static inline void split_codes(const uint8_t *p, __m128i *c0, __m128i *c1) {
    const __m128i low = _mm_set1_epi8(0x0f);
    const __m128i b = _mm_loadu_si128((const __m128i *)p);
    const __m128i lo = _mm_and_si128(b, low), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
    *c0 = _mm_unpacklo_epi8(lo, hi);
    *c1 = _mm_unpackhi_epi8(lo, hi);
}

/* ---- float activations ---- */
/* High byte of the IEEE half of each code value (the low byte is 0): sign << 7 |
 * (15 - e) << 2; code 0 (and the invalid 8) give 0. */
#define HALF_HI                                                                         \
    _mm_setr_epi8(0, 0x3c, 0x38, 0x34, 0x30, 0x2c, 0x28, 0x24, 0, (char)0xbc, (char)0xb8, \
                  (char)0xb4, (char)0xb0, (char)0xac, (char)0xa8, (char)0xa4)

/* Weights of 32 columns of one row as floats: a vpshufb gives each code's half-float
 * high byte, vcvtph2ps widens (+-2^-e exactly, 0 for the zero code). */
static inline void decode32(const uint8_t *p, __m256 w[4]) {
    const __m128i table = HALF_HI, zero = _mm_setzero_si128();
    __m128i c0, c1;
    split_codes(p, &c0, &c1);
    const __m128i h0 = _mm_shuffle_epi8(table, c0), h1 = _mm_shuffle_epi8(table, c1);
    w[0] = _mm256_cvtph_ps(_mm_unpacklo_epi8(zero, h0));
    w[1] = _mm256_cvtph_ps(_mm_unpackhi_epi8(zero, h0));
    w[2] = _mm256_cvtph_ps(_mm_unpacklo_epi8(zero, h1));
    w[3] = _mm256_cvtph_ps(_mm_unpackhi_epi8(zero, h1));
}

static void float_rows(const float *xr, int64_t in_features, int64_t row_bytes,
                       const uint8_t *wrow, int nrows, float *sums) {
    /* two accumulators per row halve the FMA latency chain */
    __m256 acc[ROWS], acc2[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = acc2[r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= in_features; k += 32) {
        const __m256 x0 = _mm256_loadu_ps(xr + k), x1 = _mm256_loadu_ps(xr + k + 8);
        const __m256 x2 = _mm256_loadu_ps(xr + k + 16), x3 = _mm256_loadu_ps(xr + k + 24);
        for (int r = 0; r < ROWS; r++) {
            if (r >= nrows) break;
            __m256 w[4];
            decode32(wrow + r * row_bytes + k / 2, w);
            acc[r] = _mm256_fmadd_ps(x0, w[0], acc[r]);
            acc2[r] = _mm256_fmadd_ps(x1, w[1], acc2[r]);
            acc[r] = _mm256_fmadd_ps(x2, w[2], acc[r]);
            acc2[r] = _mm256_fmadd_ps(x3, w[3], acc2[r]);
        }
    }
    for (int r = 0; r < nrows; r++) {
        float s = hsum8(_mm256_add_ps(acc[r], acc2[r]));
        for (int64_t j = k; j < in_features; j++)
            s += xr[j] * pow2_values[code_at(wrow + r * row_bytes, j)];
        sums[r] = s;
    }
}

/* Batch >= QBATCH: a block of ROWS rows is decoded once to floats (scratch wf,
 * row stride `stride`), then every activation row is a plain FMA loop over it. */
static void float_rows_decoded(const float *xr, int64_t in_features, const float *wf,
                               int64_t stride, int nrows, float *sums) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *w0 = wf, *w1 = wf + stride, *w2 = wf + 2 * stride, *w3 = wf + 3 * stride;
    int64_t k = 0;
    for (; k + 8 <= in_features; k += 8) {
        const __m256 x = _mm256_loadu_ps(xr + k);
        a0 = _mm256_fmadd_ps(x, _mm256_load_ps(w0 + k), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_load_ps(w1 + k), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_load_ps(w2 + k), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_load_ps(w3 + k), a3);
    }
    const __m256 acc[ROWS] = {a0, a1, a2, a3};
    for (int r = 0; r < nrows; r++) {
        float s = hsum8(acc[r]);
        for (int64_t j = k; j < in_features; j++) s += xr[j] * wf[r * stride + j];
        sums[r] = s;
    }
}

static int linear_float(const float *x, int64_t batch, int64_t in_features,
                        const uint8_t *codes, const float *alpha, int64_t out_features,
                        const float *bias, int activation, float *y) {
    const int64_t row_bytes = (in_features + 1) / 2;
    const int64_t blocks = (out_features + ROWS - 1) / ROWS;
    const int64_t stride = (in_features + 31) / 32 * 32;
    const int decoded = batch >= QBATCH;
    float *scratch = NULL;
    if (decoded) {
        scratch = pk_aligned_alloc((size_t)(pk_threads() * ROWS * stride) * sizeof(float));
        if (!scratch) return PK_ERR_NOMEM;
    }
#pragma omp parallel num_threads(pk_threads_for((double)batch * out_features * in_features))
    {
#ifdef _OPENMP
        float *wf = decoded ? scratch + (int64_t)omp_get_thread_num() * ROWS * stride : NULL;
#else
        float *wf = scratch;
#endif
#pragma omp for schedule(static)
        for (int64_t ob = 0; ob < blocks; ob++) {
            const int64_t o0 = ob * ROWS;
            const int nrows = out_features - o0 < ROWS ? (int)(out_features - o0) : ROWS;
            if (decoded)
                for (int r = 0; r < ROWS; r++) {
                    float *dst = wf + r * stride;
                    int64_t k = 0;
                    if (r < nrows) {
                        const uint8_t *wrow = codes + (o0 + r) * row_bytes;
                        for (; k + 32 <= in_features; k += 32) {
                            __m256 w[4];
                            decode32(wrow + k / 2, w);
                            for (int j = 0; j < 4; j++) _mm256_store_ps(dst + k + 8 * j, w[j]);
                        }
                        for (; k < in_features; k++) dst[k] = pow2_values[code_at(wrow, k)];
                    }
                    for (; k < stride; k++) dst[k] = 0.0f;
                }
            for (int64_t b = 0; b < batch; b++) {
                float sums[ROWS];
                if (decoded)
                    float_rows_decoded(x + b * in_features, in_features, wf, stride, nrows, sums);
                else
                    float_rows(x + b * in_features, in_features, row_bytes,
                               codes + o0 * row_bytes, nrows, sums);
                for (int r = 0; r < nrows; r++) {
                    const int64_t o = o0 + r;
                    y[b * out_features + o] =
                        pk_activate(alpha[o] * sums[r] + (bias ? bias[o] : 0.0f), activation);
                }
            }
        }
    }
    pk_aligned_free(scratch);
    return PK_OK;
}

/* ---- int8 activations, small batch ---- */
#define INT8_VALUES _mm_setr_epi8(0, 64, 32, 16, 8, 4, 2, 1, 0, -64, -32, -16, -8, -4, -2, -1)

/* acc[r] = sum_k q[k] * w[r][k] over 32 columns per step. qp is q with each chunk of 32
 * columns reordered as its 16 even columns then its 16 odd ones, the order of the low
 * and high nibbles of 16 code bytes, so codes need no interleaving: a vpshufb turns
 * them into +-2^(6-e); vpsignb moves q's sign onto w so that vpmaddubsw(|q|, w) is
 * exact, and two of its pair sums (each |.| <= 2 * 127 * 64) still fit int16. */
static void int8_rows(const int8_t *qr, const int8_t *qp, int64_t in_features,
                      int64_t row_bytes, const uint8_t *wrow, int nrows, int32_t *sums) {
    const __m128i table = INT8_VALUES, ones = _mm_set1_epi16(1), low = _mm_set1_epi8(0x0f);
    __m128i acc[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = _mm_setzero_si128();
    int64_t k = 0;
    for (; k + 32 <= in_features; k += 32) {
        const __m128i q0 = _mm_load_si128((const __m128i *)(qp + k));
        const __m128i q1 = _mm_load_si128((const __m128i *)(qp + k + 16));
        const __m128i a0 = _mm_abs_epi8(q0), a1 = _mm_abs_epi8(q1);
        for (int r = 0; r < ROWS; r++) {
            if (r >= nrows) break;
            const __m128i b = _mm_loadu_si128((const __m128i *)(wrow + r * row_bytes + k / 2));
            const __m128i c0 = _mm_and_si128(b, low), c1 = _mm_and_si128(_mm_srli_epi16(b, 4), low);
            const __m128i w0 = _mm_sign_epi8(_mm_shuffle_epi8(table, c0), q0);
            const __m128i w1 = _mm_sign_epi8(_mm_shuffle_epi8(table, c1), q1);
            const __m128i p = _mm_add_epi16(_mm_maddubs_epi16(a0, w0), _mm_maddubs_epi16(a1, w1));
            acc[r] = _mm_add_epi32(acc[r], _mm_madd_epi16(p, ones));
        }
    }
    for (int r = 0; r < nrows; r++) {
        __m128i v = acc[r];
        v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
        v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
        int32_t s = _mm_cvtsi128_si32(v);
        for (int64_t j = k; j < in_features; j++)
            s += (int32_t)qr[j] * code_int(code_at(wrow + r * row_bytes, j));
        sums[r] = s;
    }
}

/* qp: each chunk of 32 columns of q as its even columns then its odd ones. */
static void deinterleave32(const int8_t *q, int64_t n, int8_t *qp) {
    for (int64_t c = 0; c + 32 <= n; c += 32)
        for (int j = 0; j < 16; j++) {
            qp[c + j] = q[c + 2 * j];
            qp[c + 16 + j] = q[c + 2 * j + 1];
        }
}

/* ---- int8 activations, batch >= QBATCH: vpmaddubsw on expanded rows ---- */

/* Expand one row of codes to int8 values (stride bytes, zero padded); returns sum(w). */
static int32_t expand_row(const uint8_t *wrow, int64_t in_features, int64_t stride, int8_t *w8) {
    const __m128i lut = _mm_setr_epi8(0, 64, 32, 16, 8, 4, 2, 1, 0, -64, -32, -16, -8, -4, -2, -1);
    const __m128i low = _mm_set1_epi8(0x0f);
    const int64_t row_bytes = (in_features + 1) / 2;
    int64_t j = 0;
    for (; j + 16 <= row_bytes; j += 16) {
        const __m128i b = _mm_loadu_si128((const __m128i *)(wrow + j));
        const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(b, low));
        const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), low));
        _mm_storeu_si128((__m128i *)(w8 + 2 * j), _mm_unpacklo_epi8(lo, hi));
        _mm_storeu_si128((__m128i *)(w8 + 2 * j + 16), _mm_unpackhi_epi8(lo, hi));
    }
    for (int64_t k = 2 * j; k < stride; k++)
        w8[k] = k < in_features ? (int8_t)code_int(code_at(wrow, k)) : 0;
    int32_t sum = 0;
    for (int64_t k = 0; k < in_features; k++) sum += w8[k];
    return sum;
}

static void linear_int8_batched(const int8_t *xq, const float *xscale, int64_t stride,
                                int64_t batch, int64_t in_features, const uint8_t *codes,
                                const float *alpha, int64_t out_features, const float *bias,
                                int activation, float *y, int8_t *scratch) {
    const int64_t row_bytes = (in_features + 1) / 2;
    const int64_t blocks = (out_features + ROWS - 1) / ROWS;
#pragma omp parallel num_threads(pk_threads_for((double)batch * out_features * in_features))
    {
#ifdef _OPENMP
        int8_t *w8 = scratch + (int64_t)omp_get_thread_num() * ROWS * stride;
#else
        int8_t *w8 = scratch;
#endif
        const __m256i ones = _mm256_set1_epi16(1);
        const __m256i flip = _mm256_set1_epi8((char)0x80);
#pragma omp for schedule(static)
        for (int64_t ob = 0; ob < blocks; ob++) {
            const int64_t o0 = ob * ROWS;
            const int nrows = out_features - o0 < ROWS ? (int)(out_features - o0) : ROWS;
            int32_t wsum[ROWS] = {0, 0, 0, 0};
            for (int r = 0; r < ROWS; r++) {
                if (r < nrows)
                    wsum[r] = expand_row(codes + (o0 + r) * row_bytes, in_features, stride,
                                         w8 + r * stride);
                else
                    memset(w8 + r * stride, 0, (size_t)stride);
            }
            const int8_t *w0 = w8, *w1 = w8 + stride, *w2 = w8 + 2 * stride, *w3 = w8 + 3 * stride;
            for (int64_t b = 0; b < batch; b++) {
                const int8_t *qr = xq + b * stride;
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
                for (int64_t k = 0; k < stride; k += 32) {
                    const __m256i u = _mm256_xor_si256(
                        _mm256_load_si256((const __m256i *)(qr + k)), flip); /* q + 128 */
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(w0 + k))), ones));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(w1 + k))), ones));
                    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(w2 + k))), ones));
                    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(w3 + k))), ones));
                }
                /* modulo 2^32: the offset sum may wrap, the true result fits int32 */
                const int32_t acc[ROWS] = {
                    (int32_t)((uint32_t)hsum8i(a0) - 128u * (uint32_t)wsum[0]),
                    (int32_t)((uint32_t)hsum8i(a1) - 128u * (uint32_t)wsum[1]),
                    (int32_t)((uint32_t)hsum8i(a2) - 128u * (uint32_t)wsum[2]),
                    (int32_t)((uint32_t)hsum8i(a3) - 128u * (uint32_t)wsum[3])};
                for (int r = 0; r < nrows; r++) {
                    const int64_t o = o0 + r;
                    const float v = ((alpha[o] * xscale[b]) * (float)acc[r]) * 0.015625f;
                    y[b * out_features + o] = pk_activate(v + (bias ? bias[o] : 0.0f), activation);
                }
            }
        }
    }
}

int pk_linear_pow2_avx2(const float *x, const int8_t *xq, const float *xscale,
                        int64_t xq_stride, int64_t batch, int64_t in_features,
                        const uint8_t *codes, const float *alpha, int64_t out_features,
                        const float *bias, int activation, float *y) {
    if (!xq) return linear_float(x, batch, in_features, codes, alpha, out_features, bias, activation, y);
    if (batch >= QBATCH) {
        int8_t *scratch = pk_aligned_alloc((size_t)(pk_threads() * ROWS * xq_stride));
        if (!scratch) return PK_ERR_NOMEM;
        linear_int8_batched(xq, xscale, xq_stride, batch, in_features, codes, alpha,
                            out_features, bias, activation, y, scratch);
        pk_aligned_free(scratch);
        return PK_OK;
    }
    const int64_t row_bytes = (in_features + 1) / 2;
    const int64_t blocks = (out_features + ROWS - 1) / ROWS;
    int8_t *qp = pk_aligned_alloc((size_t)(batch * xq_stride));
    if (!qp) return PK_ERR_NOMEM;
    for (int64_t b = 0; b < batch; b++)
        deinterleave32(xq + b * xq_stride, xq_stride, qp + b * xq_stride);
#pragma omp parallel for schedule(static) num_threads(pk_threads_for((double)batch * out_features * in_features))
    for (int64_t ob = 0; ob < blocks; ob++) {
        const int64_t o0 = ob * ROWS;
        const int nrows = out_features - o0 < ROWS ? (int)(out_features - o0) : ROWS;
        for (int64_t b = 0; b < batch; b++) {
            int32_t sums[ROWS];
            int8_rows(xq + b * xq_stride, qp + b * xq_stride, in_features, row_bytes,
                      codes + o0 * row_bytes, nrows, sums);
            for (int r = 0; r < nrows; r++) {
                const int64_t o = o0 + r;
                const float v = ((alpha[o] * xscale[b]) * (float)sums[r]) * 0.015625f;
                y[b * out_features + o] = pk_activate(v + (bias ? bias[o] : 0.0f), activation);
            }
        }
    }
    pk_aligned_free(qp);
    return PK_OK;
}
