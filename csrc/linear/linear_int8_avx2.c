/* int8 linear, AVX2. Rows of x are quantized with AVX2 (same float32 division and
 * round-half-to-even as the reference), then register tiles of up to 4 row blocks
 * (8 rows each, one per 32-bit lane) x up to 4 batch rows accumulate exact int32 sums:
 * vpsignb moves the sign of x onto w, vpmaddubsw multiplies |x| (u8) by w*sign(x) (s8)
 * -- both within 0..127 in magnitude, so a pair sums to at most 2*127*127 = 32258 and
 * never saturates int16 -- and vpmaddwd by ones widens the pairs to int32. */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "pk_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* 8 floats -> 8 int32: clip(rint(v / s), -127, 127). */
ALWAYS_INLINE __m256i quant8(const float *x, __m256 s) {
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x), s),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
}

/* The AVX2 twin of pk_quantize_row_scalar: same results bit for bit. When qabs is not
 * NULL it also receives |q| as bytes. */
void pk_quantize_row_avx2(const float *x, int64_t in, int64_t ldq, float act_scale, int8_t *q,
                          uint8_t *qabs, float *scale, unsigned char *bad) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 big = _mm256_set1_ps(FLT_MAX);
    __m256 vmax = _mm256_setzero_ps(), vbad = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= in; k += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), absmask);
        vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ)); /* NaN or Inf */
        vmax = _mm256_max_ps(vmax, a);
    }
    int nonfinite = _mm256_movemask_ps(vbad) != 0;
    float amax = hmax8(vmax);
    for (; k < in; k++) {
        float a = fabsf(x[k]);
        if (!(a <= FLT_MAX)) nonfinite = 1;
        else if (a > amax) amax = a;
    }
    memset(q, 0, (size_t)ldq);
    if (qabs) memset(qabs, 0, (size_t)ldq);
    *bad = (unsigned char)nonfinite;
    if (nonfinite) {
        *scale = 0.0f;
        return;
    }
    float s = act_scale > 0.0f ? act_scale : amax / 127.0f;
    *scale = s;
    if (!(s > 0.0f)) return;
    const __m256 vs = _mm256_set1_ps(s);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (k = 0; k + 32 <= in; k += 32) {
        __m256i a = quant8(x + k, vs), b = quant8(x + k + 8, vs);
        __m256i c = quant8(x + k + 16, vs), d = quant8(x + k + 24, vs);
        __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        bytes = _mm256_permutevar8x32_epi32(bytes, order);
        _mm256_storeu_si256((__m256i *)(q + k), bytes);
        if (qabs) _mm256_storeu_si256((__m256i *)(qabs + k), _mm256_abs_epi8(bytes));
    }
    for (; k < in; k++) {
        float r = nearbyintf(x[k] / s);
        r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
        q[k] = (int8_t)r;
        if (qabs) qabs[k] = (uint8_t)(r < 0 ? -r : r);
    }
}

/* Quantize every row (in parallel when there are several). */
static void quantize_rows(const float *x, int64_t batch, int64_t in, int64_t ldq,
                          float act_scale, int8_t *q, uint8_t *qabs, float *scale,
                          unsigned char *bad) {
#pragma omp parallel for schedule(static) num_threads(pk_threads()) if (batch > 1)
    for (int64_t b = 0; b < batch; b++)
        pk_quantize_row_avx2(x + b * in, in, ldq, act_scale, q + b * ldq,
                             qabs ? qabs + b * ldq : NULL, scale + b, bad + b);
}

#define AHEAD 16 /* chunks of weights prefetched ahead (512 bytes per row block) */

ALWAYS_INLINE __m256i bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* acc[r][j] (lanes = rows 8r..8r+7 of the tile) = sum_k w[row][k] * xq[j][k] over
 * `chunks` chunks of 4 k. R row blocks (stride wstride bytes), NC batch rows. */
ALWAYS_INLINE void tile(const int8_t *w, int64_t wstride, int R, int64_t chunks,
                        const int8_t *xq, const uint8_t *xa, int64_t ldq, int NC,
                        int32_t res[4][32]) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[4][4];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NC; j++) acc[r][j] = _mm256_setzero_si256();
    for (int64_t c = 0; c < chunks; c++) {
        __m256i wv[4];
        for (int r = 0; r < R; r++) {
            /* this row block's weights AHEAD chunks on (prefetch never faults): the
             * hardware prefetcher falls behind on R streams at batch 1. (Prefetching the
             * next tile instead fetched rows another thread was reading: cold 4096x4096
             * batch 1 then ran at 0.86 or 1.6 ms from run to run; now 0.86.) */
            if (!(c & 1))
                _mm_prefetch((const char *)(w + r * wstride + (c + AHEAD) * 32), _MM_HINT_T0);
            wv[r] = _mm256_loadu_si256((const __m256i *)(w + r * wstride + c * 32));
        }
        for (int j = 0; j < NC; j++) {
            const __m256i bx = bcast4(xq + j * ldq + c * 4);
            const __m256i ba = bcast4(xa + j * ldq + c * 4);
            for (int r = 0; r < R; r++) {
                __m256i p = _mm256_maddubs_epi16(ba, _mm256_sign_epi8(wv[r], bx));
                acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(p, ones));
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NC; j++) _mm256_storeu_si256((__m256i *)&res[j][r * 8], acc[r][j]);
}

/* One instance per (R, NC) so that every loop above unrolls and acc stays in registers. */
#define TILE_FN(R, NC)                                                                     \
    static void tile_##R##_##NC(const int8_t *w, int64_t ws, int64_t chunks,              \
                                const int8_t *xq, const uint8_t *xa, int64_t ldq,         \
                                int32_t res[4][32]) {                                      \
        tile(w, ws, R, chunks, xq, xa, ldq, NC, res);                                      \
    }
TILE_FN(1, 1) TILE_FN(1, 2) TILE_FN(1, 3) TILE_FN(1, 4)
TILE_FN(2, 1) TILE_FN(2, 2) TILE_FN(2, 3) TILE_FN(2, 4)
TILE_FN(3, 1) TILE_FN(3, 2)
TILE_FN(4, 1) TILE_FN(4, 2)
#undef TILE_FN

typedef void (*tile_fn)(const int8_t *, int64_t, int64_t, const int8_t *, const uint8_t *,
                        int64_t, int32_t[4][32]);
/* [R - 1][NC - 1]; R * NC <= 8 accumulators (R = 3, 4 only for NC <= 2). */
static const tile_fn tiles[4][4] = {
    {tile_1_1, tile_1_2, tile_1_3, tile_1_4},
    {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
    {tile_3_1, tile_3_2, NULL, NULL},
    {tile_4_1, tile_4_2, NULL, NULL},
};

#define PANEL 4 /* row blocks per parallel work item (32 rows: their weights stay in L2) */

int pk_linear_int8_avx2(const float *x, int64_t batch, int64_t in_features,
                        const int8_t *packed, const float *scale, int64_t out_features,
                        float act_scale, const float *bias, int activation, float *y) {
    const int64_t chunks = (in_features + 3) / 4, ldq = chunks * 4;
    const int64_t nblocks = (out_features + 7) / 8, npanels = (nblocks + PANEL - 1) / PANEL;
    void *parts[4];
    const size_t bytes[4] = {(size_t)(batch * ldq),
                             (size_t)(batch * ldq),
                             (size_t)batch * sizeof(float),
                             (size_t)batch};
    if (!pk_alloc_parts(4, bytes, parts)) return PK_ERR_NOMEM;
    int8_t *xq = parts[0];
    uint8_t *xa = parts[1];
    float *xs = parts[2];
    unsigned char *bad = parts[3];
    quantize_rows(x, batch, in_features, ldq, act_scale, xq, xa, xs, bad);
    const int64_t wstride = chunks * 32; /* bytes per row block */
    /* dynamic: on a busy machine a descheduled thread must not hold the others up */
#pragma omp parallel for schedule(dynamic, 1) num_threads(pk_threads_for((double)batch * out_features * in_features))
    for (int64_t p = 0; p < npanels; p++) {
        const int64_t ob0 = p * PANEL;
        const int64_t ob1 = ob0 + PANEL < nblocks ? ob0 + PANEL : nblocks;
        int32_t res[4][32];
        for (int64_t b0 = 0; b0 < batch; b0 += 4) {
            const int nc = batch - b0 < 4 ? (int)(batch - b0) : 4;
            const int rmax = nc <= 2 ? 4 : 2;
            for (int64_t ob = ob0; ob < ob1; ob += rmax) {
                const int R = ob1 - ob < rmax ? (int)(ob1 - ob) : rmax;
                tiles[R - 1][nc - 1](packed + ob * wstride, wstride, chunks, xq + b0 * ldq,
                                     xa + b0 * ldq, ldq, res);
                for (int j = 0; j < nc; j++) {
                    const int64_t b = b0 + j;
                    const float sx = xs[b];
                    float *yr = y + b * out_features;
                    for (int i = 0; i < R * 8; i++) {
                        const int64_t o = ob * 8 + i;
                        if (o >= out_features) break;
                        const float v = (float)res[j][i] * (sx * scale[o]);
                        yr[o] = pk_quant_store(v, bias, o, activation, bad[b]);
                    }
                }
            }
        }
    }
    pk_aligned_free(parts[0]);
    return PK_OK;
}
