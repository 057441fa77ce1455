/* Power-of-two linear, AVX2. Codes are split into nibbles and looked up with vpshufb
 * (16-entry tables; in-lane byte shuffles are cheap on every AVX2 CPU, where vpermps,
 * vcvtph2ps and variable shifts are slow on AMD Zen 1).
 *
 * A dot product may visit the columns in any order, so each call first permutes every
 * 64-column chunk of the activations into the order in which 32 code bytes decode
 * (low nibbles are the even columns, high nibbles the odd ones; see perm_float and
 * perm_int8); the weights then need no interleaving shuffles. Columns past the last
 * full chunk are done in scalar code (batch < QBATCH) or zero padded (batched paths).
 *
 * Float activations: two vpshufb give the two upper bytes of each weight's float32
 * bits (+-2^-e: sign and exponent, mantissa 0; 0 for the zero code), two byte and two
 * word unpacks (with zero) place them, and one FMA accumulates -- a product by a power
 * of two is exact and costs what an add costs (see linear_pow2_scalar.c).
 * int8 activations: q * w = |q| * (w with q's sign), and w with q's sign is the table
 * entry of the code with its sign bit flipped where q < 0: a vpxor of precomputed sign
 * flags and a vpshufb (shuffle ports) give it, vpmaddubsw multiplies by |q|: |pair| <=
 * 2 * 127 * 64 = 16256, so the pair sums of two 32-column halves still fit int16
 * (<= 32512) and one vpmaddwd widens 64 columns -- the int8 encoding (weights up to
 * 127) cannot do that. Exact.
 * Batch >= QBATCH: a block of rows is decoded once (to floats, or to one code per
 * byte; per-thread scratch) and register tiles of INT8_R weight rows x INT8_NC
 * activation rows (int8) or 4 x FNC (float) run over it. Batch < QBATCH streams the
 * codes; its int8 path works in 128-bit steps of 32 columns (permuted per 32, see
 * int8_rows). */
#include "linear/linear_pow2_codes.h"
#include "pk_avx2.h"

#define ROWS 4   /* output rows sharing each activation load (batch < QBATCH) */
#define QBATCH 4 /* from this batch on, row blocks are decoded once */
#define CHUNK 64 /* columns per 32 code bytes */
#define BLOCK 16 /* rows decoded at a time by the batched paths */
#define FNC 3    /* activation rows per float register tile (4 x 3 accumulators) */
#ifndef INT8_R
#define INT8_R 4 /* weight rows per int8 register tile */
#endif
#ifndef INT8_NC
#define INT8_NC 1 /* activation rows per int8 register tile (4 x 1: the best tile here) */
#endif

/* sum of the 8 lanes (exact: the callers' sums fit int32) */
static inline int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* int8 weight value of each code: +-2^(6-e), 0 for the zero code */
static inline int32_t code_int(int c) {
    const int field = c & 7;
    if (!field) return 0;
    const int32_t t = 1 << (7 - field);
    return (c & 8) ? -t : t;
}

/* Codes of 64 columns (32 bytes): *lo = even columns, *hi = odd ones, byte b of each
 * holding column 2b (+1). */
PK_ALWAYS_INLINE void split64(const uint8_t *p, __m256i *lo, __m256i *hi) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i b = _mm256_loadu_si256((const __m256i *)p);
    *lo = _mm256_and_si256(b, low);
    *hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
}

/* Column (within its chunk) at position p of a permuted chunk. decode_float: lane i of
 * f[t] of the low (half 0) or high (half 1) nibbles holds code byte 16(i/4) + 4t + i%4;
 * the int8 path: 32 even columns, then 32 odd ones. */
static inline int perm_float(int p) {
    const int half = p / 32, t = (p % 32) / 8, i = p % 8;
    return 2 * (16 * (i / 4) + 4 * t + i % 4) + half;
}
static inline int perm_int8(int p) { return 2 * (p % 32) + p / 32; }

/* ---- float activations ---- */
/* Upper two bytes of the float32 bits of each code value: sign << 7 | (128 - f) >> 1
 * (f = exponent field, value +-2^-(f-1)) and the exponent's lowest bit (f & 1) << 7;
 * both 0 for the zero code (and the invalid 8). */
#define F32_B3                                                                              \
    _mm256_setr_epi8(0, 0x3f, 0x3f, 0x3e, 0x3e, 0x3d, 0x3d, 0x3c, 0, (char)0xbf, (char)0xbf, \
                     (char)0xbe, (char)0xbe, (char)0xbd, (char)0xbd, (char)0xbc, 0, 0x3f,    \
                     0x3f, 0x3e, 0x3e, 0x3d, 0x3d, 0x3c, 0, (char)0xbf, (char)0xbf,          \
                     (char)0xbe, (char)0xbe, (char)0xbd, (char)0xbd, (char)0xbc)
#define F32_B2                                                                              \
    _mm256_setr_epi8(0, (char)0x80, 0, (char)0x80, 0, (char)0x80, 0, (char)0x80, 0,          \
                     (char)0x80, 0, (char)0x80, 0, (char)0x80, 0, (char)0x80, 0, (char)0x80, \
                     0, (char)0x80, 0, (char)0x80, 0, (char)0x80, 0, (char)0x80, 0,          \
                     (char)0x80, 0, (char)0x80, 0, (char)0x80)

/* 32 codes (one per byte) -> 32 floats, f[t] lane i = code byte 16(i/4) + 4t + i%4. */
PK_ALWAYS_INLINE void decode_float(__m256i c, __m256 f[4]) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i h = _mm256_shuffle_epi8(F32_B3, c), l = _mm256_shuffle_epi8(F32_B2, c);
    const __m256i w0 = _mm256_unpacklo_epi8(l, h), w1 = _mm256_unpackhi_epi8(l, h);
    f[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, w0));
    f[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, w0));
    f[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, w1));
    f[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, w1));
}

/* xp: the chunks below `upto` of each row of x, permuted (perm_float), columns past
 * `in` and chunks past `upto` zero. */
static void permute_float(const float *x, int64_t batch, int64_t in, int64_t upto,
                          int64_t stride, float *xp) {
    for (int64_t b = 0; b < batch; b++) {
        const float *xr = x + b * in;
        float *dst = xp + b * stride;
        for (int64_t k = 0; k < upto; k += CHUNK)
            for (int p = 0; p < CHUNK; p++) {
                const int64_t col = k + perm_float(p);
                dst[k + p] = col < in ? xr[col] : 0.0f;
            }
        for (int64_t k = upto; k < stride; k++) dst[k] = 0.0f;
    }
}

/* sums[r] = sum_k x[k] * value(code[r][k]) for ROWS rows (rows[r] may repeat). */
static void float_rows(const float *xr, const float *xp, int64_t in_features, int64_t full,
                       const uint8_t *const rows[ROWS], int64_t ahead, float sums[ROWS]) {
    __m256 acc[ROWS][2];
    for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < full; k += CHUNK) {
        for (int r = 0; r < ROWS; r++) {
            __m256i lo, hi;
            __m256 f[4];
            /* the next block of rows (`ahead` bytes on; prefetch never faults) */
            if (!(k & 64)) _mm_prefetch((const char *)(rows[r] + ahead + k / 2), _MM_HINT_T0);
            split64(rows[r] + k / 2, &lo, &hi);
            decode_float(lo, f);
            acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k), f[0], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 8), f[1], acc[r][1]);
            acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 16), f[2], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 24), f[3], acc[r][1]);
            decode_float(hi, f);
            acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 32), f[0], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 40), f[1], acc[r][1]);
            acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 48), f[2], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + k + 56), f[3], acc[r][1]);
        }
    }
    for (int r = 0; r < ROWS; r++) {
        float s = pk_hsum8(_mm256_add_ps(acc[r][0], acc[r][1]));
        for (int64_t j = full; j < in_features; j++) s += xr[j] * pow2_values[code_at(rows[r], j)];
        sums[r] = s;
    }
}

/* Decode rows [o0, o0 + n) to floats in permuted order, stride `stride` (zero padded;
 * rows n..BLOCK-1 zero). */
static void decode_rows_float(const uint8_t *codes, int64_t row_bytes, int64_t in,
                              int64_t full, int64_t stride, int64_t o0, int n, float *wf) {
    for (int r = 0; r < BLOCK; r++) {
        float *dst = wf + r * stride;
        if (r >= n) {
            memset(dst, 0, (size_t)stride * sizeof(float));
            continue;
        }
        const uint8_t *wrow = codes + (o0 + r) * row_bytes;
        for (int64_t k = 0; k < full; k += CHUNK) {
            __m256i lo, hi;
            __m256 f[4];
            split64(wrow + k / 2, &lo, &hi);
            decode_float(lo, f);
            for (int t = 0; t < 4; t++) _mm256_store_ps(dst + k + 8 * t, f[t]);
            decode_float(hi, f);
            for (int t = 0; t < 4; t++) _mm256_store_ps(dst + k + 32 + 8 * t, f[t]);
        }
        /* the tail chunk, in the same permuted order as the activations */
        for (int64_t k = full; k < stride; k++) {
            const int64_t col = full + perm_float((int)(k - full));
            dst[k] = col < in ? pow2_values[code_at(wrow, col)] : 0.0f;
        }
    }
}

/* res[r][j] = sum_k wf[r][k] * xp[j][k] for 4 decoded rows and NC <= FNC activation rows. */
PK_ALWAYS_INLINE void float_tile(const float *wf, int64_t stride, const float *xp, int64_t xs,
                                 int NC, float res[4][FNC]) {
    __m256 acc[4][FNC];
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < NC; j++) acc[r][j] = _mm256_setzero_ps();
    for (int64_t k = 0; k < stride; k += 8) {
        __m256 xv[FNC];
        for (int j = 0; j < NC; j++) xv[j] = _mm256_load_ps(xp + j * xs + k);
        for (int r = 0; r < 4; r++) {
            const __m256 w = _mm256_load_ps(wf + r * stride + k);
            for (int j = 0; j < NC; j++) acc[r][j] = _mm256_fmadd_ps(w, xv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < NC; j++) res[r][j] = pk_hsum8(acc[r][j]);
}
#define FLOAT_TILE(NC)                                                                     \
    static void float_tile_##NC(const float *wf, int64_t s, const float *xp, int64_t xs,   \
                                float res[4][FNC]) {                                       \
        float_tile(wf, s, xp, xs, NC, res);                                                \
    }
FLOAT_TILE(1)
FLOAT_TILE(2)
FLOAT_TILE(3)
#undef FLOAT_TILE
typedef void (*float_tile_fn)(const float *, int64_t, const float *, int64_t, float[4][FNC]);
static const float_tile_fn float_tiles[3] = {float_tile_1, float_tile_2, float_tile_3};

struct float_args {
    const float *x, *xp, *alpha, *bias;
    int64_t batch, in_features, row_bytes, full, stride, step, out_features;
    const uint8_t *codes;
    int decoded, activation;
    float *scratch, *y;
};

/* Output rows ob * step .. + step, for every batch row. */
static void float_block(void *ctx, int64_t ob, int worker) {
    const struct float_args *a = ctx;
    const float *x = a->x, *xp = a->xp, *alpha = a->alpha, *bias = a->bias;
    const int64_t batch = a->batch, in_features = a->in_features, row_bytes = a->row_bytes;
    const int64_t full = a->full, stride = a->stride, step = a->step;
    const int64_t out_features = a->out_features;
    const uint8_t *codes = a->codes;
    const int decoded = a->decoded, activation = a->activation;
    float *y = a->y;
    float *wf = decoded ? a->scratch + (int64_t)worker * BLOCK * stride : NULL;
    const int64_t o0 = ob * step;
    const int n = out_features - o0 < step ? (int)(out_features - o0) : (int)step;
    if (!decoded) {
        const uint8_t *rows[ROWS];
        for (int r = 0; r < ROWS; r++) rows[r] = codes + (o0 + (r < n ? r : 0)) * row_bytes;
        for (int64_t b = 0; b < batch; b++) {
            float sums[ROWS];
            float_rows(x + b * in_features, xp + b * stride, in_features, full, rows,
                       ROWS * row_bytes, sums);
            for (int r = 0; r < n; r++) {
                const int64_t o = o0 + r;
                y[b * out_features + o] = pk_activate(
                    alpha[o] * sums[r] + (bias ? bias[o] : 0.0f), activation);
            }
        }
        return;
    }
    decode_rows_float(codes, row_bytes, in_features, full, stride, o0, n, wf);
    for (int64_t b0 = 0; b0 < batch; b0 += FNC) {
        const int nc = batch - b0 < FNC ? (int)(batch - b0) : FNC;
        for (int r0 = 0; r0 < n; r0 += 4) {
            float res[4][FNC];
            float_tiles[nc - 1](wf + r0 * stride, stride, xp + b0 * stride, stride, res);
            for (int r = 0; r < 4 && r0 + r < n; r++) {
                const int64_t o = o0 + r0 + r;
                for (int j = 0; j < nc; j++)
                    y[(b0 + j) * out_features + o] = pk_activate(
                        alpha[o] * res[r][j] + (bias ? bias[o] : 0.0f), activation);
            }
        }
    }
}

static int linear_float(const float *x, int64_t batch, int64_t in_features,
                        const uint8_t *codes, const float *alpha, int64_t out_features,
                        const float *bias, int activation, float *y) {
    const int64_t row_bytes = (in_features + 1) / 2;
    const int64_t full = in_features / CHUNK * CHUNK;
    const int64_t stride = (in_features + CHUNK - 1) / CHUNK * CHUNK;
    const int decoded = batch >= QBATCH;
    const int nthreads = pk_threads_for((double)batch * out_features * in_features);
    float *xp = pk_aligned_alloc((size_t)(batch * stride) * sizeof(float));
    float *scratch = NULL;
    if (decoded) scratch = pk_aligned_alloc((size_t)(nthreads * BLOCK * stride) * sizeof(float));
    if (!xp || (decoded && !scratch)) {
        pk_aligned_free(xp);
        pk_aligned_free(scratch);
        return PK_ERR_NOMEM;
    }
    permute_float(x, batch, in_features, decoded ? stride : full, stride, xp);
    const int64_t step = decoded ? BLOCK : ROWS;
    const int64_t blocks = (out_features + step - 1) / step;
    struct float_args a = {x, xp, alpha, bias, batch, in_features, row_bytes, full, stride,
                           step, out_features, codes, decoded, activation, scratch, y};
    pk_parallel(nthreads, blocks, float_block, &a);
    pk_aligned_free(xp);
    pk_aligned_free(scratch);
    return PK_OK;
}

/* ---- int8 activations ---- */
/* vpshufb table: int8 weight of each code, +-2^(6-e), 0 for the zero code (and for the
 * invalid 8, which the sign flip below produces from the zero code). */
#define INT8_VALUES                                                                          \
    _mm256_setr_epi8(0, 64, 32, 16, 8, 4, 2, 1, 0, -64, -32, -16, -8, -4, -2, -1, 0, 64, 32, \
                     16, 8, 4, 2, 1, 0, -64, -32, -16, -8, -4, -2, -1)

/* The sign trick without vpsignb: q * w = |q| * (w with q's sign), and w with q's sign
 * is the table entry of the code with its sign bit (8) flipped where q < 0. So each
 * activation row is stored as |q| (unsigned) and as sign flags (8 where q < 0), and a
 * vpxor + vpshufb (shuffle ports) replaces vpsignb (which shares a port with
 * vpmaddubsw and vpmaddwd on AMD Zen). */

/* qa / qs: |q| and its sign flags per row, permuted per chunk (perm_int8: 32 even
 * columns, then 32 odd ones) over all `stride` columns (q is zero padded to stride). */
static void permute_int8(const int8_t *q, int64_t batch, int64_t stride, uint8_t *qa,
                         uint8_t *qs) {
    for (int64_t b = 0; b < batch; b++) {
        const int8_t *src = q + b * stride;
        for (int64_t k = 0; k < stride; k += CHUNK)
            for (int p = 0; p < CHUNK; p++) {
                const int8_t v = src[k + perm_int8(p)];
                qa[b * stride + k + p] = (uint8_t)(v < 0 ? -v : v);
                qs[b * stride + k + p] = v < 0 ? 8 : 0;
            }
    }
}

/* flags of the natural column order of one row, two columns per byte like the codes:
 * byte m = (q[2m] < 0 ? 0x08 : 0) | (q[2m + 1] < 0 ? 0x80 : 0). */
static void sign_nibbles(const int8_t *q, int64_t stride, uint8_t *flags) {
    for (int64_t m = 0; m < stride / 2; m++)
        flags[m] = (uint8_t)((q[2 * m] < 0 ? 0x08 : 0) | (q[2 * m + 1] < 0 ? 0x80 : 0));
}

/* 32 products |q| * table[code ^ flag], pair sums in int16 (each |.| <= 2 * 127 * 64). */
PK_ALWAYS_INLINE __m256i mul32(__m256i table, __m256i idx, const uint8_t *a) {
    return _mm256_maddubs_epi16(_mm256_load_si256((const __m256i *)a),
                                _mm256_shuffle_epi8(table, idx));
}

/* sums[r] = sum_k q[k] * w[r][k] for ROWS rows (rows[r] may repeat), batch < QBATCH:
 * codes straight from the weights, xor'ed with the flags of q before the split; 128-bit
 * steps of 32 columns (faster here than 256-bit ones: vpsrlw has one port on
 * AMD Zen 1), qa permuted per 32 columns (16 even, then 16 odd: perm32). */
static void int8_rows(const int8_t *qr, const uint8_t *qa, const uint8_t *flags,
                      int64_t in_features, const uint8_t *const rows[ROWS], int64_t ahead,
                      int32_t sums[ROWS]) {
    const __m128i table = _mm256_castsi256_si128(INT8_VALUES), ones = _mm_set1_epi16(1);
    const __m128i low = _mm_set1_epi8(0x0f);
    const int64_t full = in_features / 32 * 32;
    __m128i acc[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = _mm_setzero_si128();
    for (int64_t k = 0; k < full; k += 32) {
        const __m128i f = _mm_load_si128((const __m128i *)(flags + k / 2));
        const __m128i a0 = _mm_load_si128((const __m128i *)(qa + k));
        const __m128i a1 = _mm_load_si128((const __m128i *)(qa + k + 16));
        for (int r = 0; r < ROWS; r++) {
            /* the next block of rows (`ahead` bytes on; prefetch never faults) */
            if (!(k & 96)) _mm_prefetch((const char *)(rows[r] + ahead + k / 2), _MM_HINT_T0);
            const __m128i v = _mm_xor_si128(f, _mm_loadu_si128((const __m128i *)(rows[r] + k / 2)));
            const __m128i w0 = _mm_shuffle_epi8(table, _mm_and_si128(v, low));
            const __m128i w1 = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(v, 4), low));
            const __m128i p = _mm_add_epi16(_mm_maddubs_epi16(a0, w0), _mm_maddubs_epi16(a1, w1));
            acc[r] = _mm_add_epi32(acc[r], _mm_madd_epi16(p, ones));
        }
    }
    for (int r = 0; r < ROWS; r++) {
        __m128i v = acc[r];
        v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
        v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
        int32_t s = _mm_cvtsi128_si32(v);
        for (int64_t j = full; j < in_features; j++)
            s += (int32_t)qr[j] * code_int(code_at(rows[r], j));
        sums[r] = s;
    }
}

/* |q| of one row permuted per 32 columns for int8_rows (16 even, then 16 odd). */
static void abs_perm32(const int8_t *q, int64_t stride, uint8_t *qa) {
    for (int64_t k = 0; k < stride; k += 32)
        for (int p = 0; p < 32; p++) {
            const int8_t v = q[k + 2 * (p % 16) + p / 16];
            qa[k + p] = (uint8_t)(v < 0 ? -v : v);
        }
}

/* Split the codes of rows [o0, o0 + n) into one code per byte in permuted order,
 * stride bytes (zero padded; rows n..BLOCK-1 zero). */
static void decode_rows_codes(const uint8_t *codes, int64_t row_bytes, int64_t in,
                              int64_t full, int64_t stride, int64_t o0, int n, uint8_t *wc) {
    for (int r = 0; r < BLOCK; r++) {
        uint8_t *dst = wc + r * stride;
        if (r >= n) {
            memset(dst, 0, (size_t)stride);
            continue;
        }
        const uint8_t *wrow = codes + (o0 + r) * row_bytes;
        for (int64_t k = 0; k < full; k += CHUNK) {
            __m256i lo, hi;
            split64(wrow + k / 2, &lo, &hi);
            _mm256_store_si256((__m256i *)(dst + k), lo);
            _mm256_store_si256((__m256i *)(dst + k + 32), hi);
        }
        for (int64_t k = full; k < stride; k++) {
            const int64_t col = full + perm_int8((int)(k - full));
            dst[k] = (uint8_t)(col < in ? code_at(wrow, col) : 0);
        }
    }
}

/* res[r][j] = sum_k w[r][k] * q[j][k] for 2 rows of split codes and NC activation rows. */
PK_ALWAYS_INLINE void int8_tile(const uint8_t *wc, int64_t stride, const uint8_t *qa,
                                const uint8_t *qs, int NC, int32_t res[INT8_R][4]) {
    const __m256i table = INT8_VALUES, ones = _mm256_set1_epi16(1);
    __m256i acc[INT8_R][4];
    for (int r = 0; r < INT8_R; r++)
        for (int j = 0; j < NC; j++) acc[r][j] = _mm256_setzero_si256();
    for (int64_t k = 0; k < stride; k += CHUNK) {
        for (int j = 0; j < NC; j++) {
            const uint8_t *a = qa + j * stride + k;
            const __m256i s0 = _mm256_load_si256((const __m256i *)(qs + j * stride + k));
            const __m256i s1 = _mm256_load_si256((const __m256i *)(qs + j * stride + k + 32));
            for (int r = 0; r < INT8_R; r++) {
                const __m256i *c = (const __m256i *)(wc + r * stride + k);
                const __m256i p = _mm256_add_epi16(
                    mul32(table, _mm256_xor_si256(s0, _mm256_load_si256(c)), a),
                    mul32(table, _mm256_xor_si256(s1, _mm256_load_si256(c + 1)), a + 32));
                acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(p, ones));
            }
        }
    }
    for (int r = 0; r < INT8_R; r++)
        for (int j = 0; j < NC; j++) res[r][j] = hsum8i(acc[r][j]);
}
#define INT8_TILE(NC)                                                                      \
    static void int8_tile_##NC(const uint8_t *wc, int64_t s, const uint8_t *qa,            \
                               const uint8_t *qs, int32_t res[INT8_R][4]) {                \
        int8_tile(wc, s, qa, qs, NC, res);                                                 \
    }
INT8_TILE(1)
INT8_TILE(2)
INT8_TILE(3)
INT8_TILE(4)
#undef INT8_TILE
typedef void (*int8_tile_fn)(const uint8_t *, int64_t, const uint8_t *, const uint8_t *,
                             int32_t[INT8_R][4]);
static const int8_tile_fn int8_tiles[4] = {int8_tile_1, int8_tile_2, int8_tile_3, int8_tile_4};

static inline float int8_out(int32_t acc, float a, float sx, const float *bias, int64_t o,
                             int activation) {
    const float v = ((a * sx) * (float)acc) * 0.015625f;
    return pk_activate(v + (bias ? bias[o] : 0.0f), activation);
}

struct int8_args {
    const int8_t *xq;
    const float *xscale, *alpha, *bias;
    int64_t stride, batch, in_features, row_bytes, full, step, out_features;
    const uint8_t *codes, *qa, *qs;
    int decoded, activation;
    uint8_t *scratch;
    float *y;
};

/* Output rows ob * step .. + step, for every batch row. */
static void int8_block(void *ctx, int64_t ob, int worker) {
    const struct int8_args *a = ctx;
    const int8_t *xq = a->xq;
    const float *xscale = a->xscale, *alpha = a->alpha, *bias = a->bias;
    const int64_t stride = a->stride, batch = a->batch, in_features = a->in_features;
    const int64_t row_bytes = a->row_bytes, full = a->full, step = a->step;
    const int64_t out_features = a->out_features;
    const uint8_t *codes = a->codes, *qa = a->qa, *qs = a->qs;
    const int decoded = a->decoded, activation = a->activation;
    float *y = a->y;
    uint8_t *wc = decoded ? a->scratch + (int64_t)worker * BLOCK * stride : NULL;
    const int64_t o0 = ob * step;
    const int n = out_features - o0 < step ? (int)(out_features - o0) : (int)step;
    if (!decoded) {
        const uint8_t *rows[ROWS];
        for (int r = 0; r < ROWS; r++) rows[r] = codes + (o0 + (r < n ? r : 0)) * row_bytes;
        for (int64_t b = 0; b < batch; b++) {
            int32_t sums[ROWS];
            int8_rows(xq + b * stride, qa + b * stride, qs + b * stride, in_features,
                      rows, ROWS * row_bytes, sums);
            for (int r = 0; r < n; r++)
                y[b * out_features + o0 + r] =
                    int8_out(sums[r], alpha[o0 + r], xscale[b], bias, o0 + r, activation);
        }
        return;
    }
    decode_rows_codes(codes, row_bytes, in_features, full, stride, o0, n, wc);
    for (int64_t b0 = 0; b0 < batch; b0 += INT8_NC) {
        const int nc = batch - b0 < INT8_NC ? (int)(batch - b0) : INT8_NC;
        for (int r0 = 0; r0 < n; r0 += INT8_R) {
            int32_t res[INT8_R][4];
            int8_tiles[nc - 1](wc + r0 * stride, stride, qa + b0 * stride,
                               qs + b0 * stride, res);
            for (int r = 0; r < INT8_R && r0 + r < n; r++) {
                const int64_t o = o0 + r0 + r;
                for (int j = 0; j < nc; j++)
                    y[(b0 + j) * out_features + o] =
                        int8_out(res[r][j], alpha[o], xscale[b0 + j], bias, o, activation);
            }
        }
    }
}

static int linear_int8(const int8_t *xq, const float *xscale, int64_t stride, int64_t batch,
                       int64_t in_features, const uint8_t *codes, const float *alpha,
                       int64_t out_features, const float *bias, int activation, float *y) {
    const int64_t row_bytes = (in_features + 1) / 2;
    const int64_t full = in_features / CHUNK * CHUNK;
    const int decoded = batch >= QBATCH;
    const int nthreads = pk_threads_for((double)batch * out_features * in_features);
    uint8_t *qa = pk_aligned_alloc((size_t)(batch * stride));
    uint8_t *qs = pk_aligned_alloc((size_t)(batch * stride));
    uint8_t *scratch = decoded ? pk_aligned_alloc((size_t)(nthreads * BLOCK * stride)) : NULL;
    if (!qa || !qs || (decoded && !scratch)) {
        pk_aligned_free(qa);
        pk_aligned_free(qs);
        pk_aligned_free(scratch);
        return PK_ERR_NOMEM;
    }
    if (decoded)
        permute_int8(xq, batch, stride, qa, qs);
    else /* per-32 |q| and natural-order flags (stride / 2 bytes per row) */
        for (int64_t b = 0; b < batch; b++) {
            abs_perm32(xq + b * stride, stride, qa + b * stride);
            sign_nibbles(xq + b * stride, stride, qs + b * stride);
        }
    const int64_t step = decoded ? BLOCK : ROWS;
    const int64_t blocks = (out_features + step - 1) / step;
    struct int8_args a = {xq, xscale, alpha, bias, stride, batch, in_features, row_bytes, full,
                          step, out_features, codes, qa, qs, decoded, activation, scratch, y};
    pk_parallel(nthreads, blocks, int8_block, &a);
    pk_aligned_free(qa);
    pk_aligned_free(qs);
    pk_aligned_free(scratch);
    return PK_OK;
}

int pk_linear_pow2_avx2(const float *x, const int8_t *xq, const float *xscale,
                        int64_t xq_stride, int64_t batch, int64_t in_features,
                        const uint8_t *codes, const float *alpha, int64_t out_features,
                        const float *bias, int activation, float *y) {
    if (!xq)
        return linear_float(x, batch, in_features, codes, alpha, out_features, bias, activation, y);
    /* xq rows are zero padded to xq_stride, a multiple of CHUNK (linear_pow2.c) */
    return linear_int8(xq, xscale, xq_stride, batch, in_features, codes, alpha, out_features,
                       bias, activation, y);
}
