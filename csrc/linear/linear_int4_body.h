/* Body of the AVX2-class int4 linear kernels, included by linear_int4_avx2.c and
 * linear_int4_avx512vnni.c. The including file defines
 *
 *   PK_I4_NAME                       the function name
 *   PK_I4_DOT(part, lo, xl, hi, xh)  part + the products of one byte column (8 k): lo and
 *                                    hi the unsigned nibbles u = q + 8 (0..15) of k 0-3
 *                                    and 4-7, a row per 32-bit lane; xl, xh the matching
 *                                    4 bytes of int8 x broadcast to every lane
 *   PK_I4_WIDEN(acc, part)           acc (int32 lanes) + part, after every 32 k
 *
 * Packed weights (kernels/encodings/int4.py): row blocks of 8 output rows, each a run of
 * byte columns of 32 bytes (8 k: the low nibbles hold k 0-3, the high ones k 4-7, row i
 * in bytes 4i..4i+3). Per group, acc = sum(u*x) - 8*sum(x) exactly, and
 * t += (float)acc * scale in float32 (mul then add, groups in order: the reference). */
#ifndef PK_I4_NAME
#error "define PK_I4_NAME, PK_I4_DOT and PK_I4_WIDEN before including linear_int4_body.h"
#endif
#include "pk_avx2.h"


#define AHEAD 16 /* byte columns of weights prefetched ahead (512 bytes per row block) */

/* complete unrolling of the small loops early, so that the accumulators stay in registers
 * (without it GCC keeps copies of them on the stack) */
#define PK_UNROLL _Pragma("GCC unroll 8")

/* res[j][8r + i] = sum over groups of (float)acc * scale for row i of row block r
 * (R blocks, wstride bytes and sstride floats apart) and batch row j (NC of them); GS is
 * the group size. Several row blocks share each broadcast of x (batch 1 and 2). */
PK_ALWAYS_INLINE void tile(const uint8_t *w, int64_t wstride, const float *sc, int64_t sstride,
                           int R, int64_t groups, int GS, const int8_t *xq, const int32_t *xsum,
                           int64_t ldq, int NC, float res[4][16]) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    __m256 t[2][4];
    PK_UNROLL
    for (int r = 0; r < R; r++)
        PK_UNROLL
        for (int j = 0; j < NC; j++) t[r][j] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        __m256i a32[2][4];
        PK_UNROLL
        for (int r = 0; r < R; r++)
            PK_UNROLL
            for (int j = 0; j < NC; j++) a32[r][j] = _mm256_setzero_si256();
        for (int s = 0; s < GS / 32; s++) {
            __m256i part[2][4];
            PK_UNROLL
            for (int r = 0; r < R; r++)
                PK_UNROLL
                for (int j = 0; j < NC; j++) part[r][j] = _mm256_setzero_si256();
            PK_UNROLL
            for (int u = 0; u < 4; u++) {
                const int64_t c = g * (GS / 8) + s * 4 + u; /* byte column: 8 k */
                __m256i lo[2], hi[2];
                PK_UNROLL
                for (int r = 0; r < R; r++) {
                    /* this row block's weights AHEAD columns on, as in int8 (never the
                     * next tile: another thread may be reading it) */
                    if (!(u & 1))
                        _mm_prefetch((const char *)(w + r * wstride + (c + AHEAD) * 32),
                                     _MM_HINT_T0);
                    const __m256i v =
                        _mm256_loadu_si256((const __m256i *)(w + r * wstride + c * 32));
                    lo[r] = _mm256_and_si256(v, mask);
                    hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                }
                PK_UNROLL
                for (int j = 0; j < NC; j++) {
                    const int8_t *xj = xq + j * ldq + c * 8;
                    const __m256i xl = pk_bcast4(xj), xh = pk_bcast4(xj + 4);
                    PK_UNROLL
                    for (int r = 0; r < R; r++)
                        part[r][j] = PK_I4_DOT(part[r][j], lo[r], xl, hi[r], xh);
                }
            }
            PK_UNROLL
            for (int r = 0; r < R; r++)
                PK_UNROLL
                for (int j = 0; j < NC; j++)
                    a32[r][j] = PK_I4_WIDEN(a32[r][j], part[r][j]);
        }
        PK_UNROLL
        for (int r = 0; r < R; r++) {
            _mm_prefetch((const char *)(sc + (r + R) * sstride + g * 8), _MM_HINT_T0);
            const __m256 sv = _mm256_loadu_ps(sc + r * sstride + g * 8);
            PK_UNROLL
            for (int j = 0; j < NC; j++) {
                __m256i acc =
                    _mm256_sub_epi32(a32[r][j], _mm256_set1_epi32(8 * xsum[j * groups + g]));
                t[r][j] = _mm256_add_ps(t[r][j], _mm256_mul_ps(_mm256_cvtepi32_ps(acc), sv));
            }
        }
    }
    PK_UNROLL
    for (int r = 0; r < R; r++)
        PK_UNROLL
        for (int j = 0; j < NC; j++) _mm256_storeu_ps(&res[j][r * 8], t[r][j]);
}

#define TILE_FN(GS, R, NC)                                                                 \
    static void tile_##GS##_##R##_##NC(const uint8_t *w, int64_t ws, const float *sc,      \
                                       int64_t ss, int64_t groups, const int8_t *xq,       \
                                       const int32_t *xsum, int64_t ldq,                   \
                                       float res[4][16]) {                                 \
        tile(w, ws, sc, ss, R, groups, GS, xq, xsum, ldq, NC, res);                        \
    }
#define TILE_FNS(GS)                                                                       \
    TILE_FN(GS, 1, 1) TILE_FN(GS, 1, 2) TILE_FN(GS, 1, 3) TILE_FN(GS, 1, 4)                \
    TILE_FN(GS, 2, 1) TILE_FN(GS, 2, 2)
TILE_FNS(32)
TILE_FNS(64)
TILE_FNS(128)
#undef TILE_FNS
#undef TILE_FN

typedef void (*tile_fn)(const uint8_t *, int64_t, const float *, int64_t, int64_t,
                        const int8_t *, const int32_t *, int64_t, float[4][16]);
/* [group size][R - 1][NC - 1]: two row blocks at a time for batch 1 and 2 */
#define TILE_ROW(GS)                                                                       \
    {{tile_##GS##_1_1, tile_##GS##_1_2, tile_##GS##_1_3, tile_##GS##_1_4},                 \
     {tile_##GS##_2_1, tile_##GS##_2_2, NULL, NULL}}
static const tile_fn tiles[3][2][4] = {TILE_ROW(32), TILE_ROW(64), TILE_ROW(128)};
#undef TILE_ROW

#define PANEL 4 /* row blocks per parallel work item */

/* The call's arguments and its quantized rows, shared by the parallel parts. */
struct int4_args {
    const float *x;
    int64_t batch, in_features, groups, ldq, nblocks, wstride, out_features;
    int group_size, gi, activation;
    float act_scale;
    const uint8_t *packed;
    const float *scale, *bias;
    int8_t *xq;
    int32_t *xsum;
    float *xs;
    unsigned char *bad;
    float *y;
};

/* Quantize rows b0..b1 and sum each group of them. */
static void quantize_part(void *ctx, int64_t b0, int64_t b1, int worker) {
    const struct int4_args *a = ctx;
    const int64_t groups = a->groups;
    for (int64_t b = b0; b < b1; b++) {
        int8_t *qr = a->xq + b * a->ldq;
        pk_quantize_row_avx2(a->x + b * a->in_features, a->in_features, a->ldq, a->act_scale,
                             qr, NULL, a->xs + b, a->bad + b);
        for (int64_t g = 0; g < groups; g++) {
            int32_t s = 0;
            for (int k = 0; k < a->group_size; k++) s += qr[g * a->group_size + k];
            a->xsum[b * groups + g] = s;
        }
    }
}

/* Output rows of PANEL row blocks, for every batch row. */
static void panel(void *ctx, int64_t p, int worker) {
    const struct int4_args *a = ctx;
    const int64_t groups = a->groups, wstride = a->wstride, ldq = a->ldq;
    const int64_t ob1 = (p + 1) * PANEL < a->nblocks ? (p + 1) * PANEL : a->nblocks;
    float res[4][16];
    for (int64_t b0 = 0; b0 < a->batch; b0 += 4) {
        const int nc = a->batch - b0 < 4 ? (int)(a->batch - b0) : 4;
        const int rmax = nc <= 2 ? 2 : 1;
        for (int64_t ob = p * PANEL; ob < ob1; ob += rmax) {
            const int R = ob1 - ob < rmax ? (int)(ob1 - ob) : rmax;
            tiles[a->gi][R - 1][nc - 1](a->packed + ob * wstride, wstride,
                                        a->scale + ob * groups * 8, groups * 8, groups,
                                        a->xq + b0 * ldq, a->xsum + b0 * groups, ldq, res);
            for (int j = 0; j < nc; j++) {
                const int64_t b = b0 + j;
                float *yr = a->y + b * a->out_features;
                for (int i = 0; i < R * 8 && ob * 8 + i < a->out_features; i++) {
                    const int64_t o = ob * 8 + i;
                    yr[o] = pk_quant_store(res[j][i] * a->xs[b], a->bias, o, a->activation,
                                           a->bad[b]);
                }
            }
        }
    }
}

int PK_I4_NAME(const float *x, int64_t batch, int64_t in_features,
                        const uint8_t *packed, const float *scale, int64_t out_features,
                        int group_size, float act_scale, const float *bias, int activation,
                        float *y) {
    const int64_t groups = (in_features + group_size - 1) / group_size;
    const int64_t ldq = groups * group_size;
    const int64_t nblocks = (out_features + 7) / 8, npanels = (nblocks + PANEL - 1) / PANEL;
    void *parts[4];
    const size_t bytes[4] = {(size_t)(batch * ldq),
                             (size_t)(batch * groups) * sizeof(int32_t),
                             (size_t)batch * sizeof(float),
                             (size_t)batch};
    if (!pk_alloc_parts(4, bytes, parts)) return PK_ERR_NOMEM;
    struct int4_args a = {x, batch, in_features, groups, ldq, nblocks,
                          ldq / 8 * 32 /* bytes per row block */, out_features, group_size,
                          group_size == 32 ? 0 : (group_size == 64 ? 1 : 2), activation,
                          act_scale, packed, scale, bias, parts[0], parts[1], parts[2],
                          parts[3], y};
    pk_parallel_for(batch > 1 ? pk_threads() : 1, batch, 1, quantize_part, &a);
    pk_parallel(pk_threads_for((double)batch * out_features * in_features), npanels, panel, &a);
    pk_aligned_free(parts[0]);
    return PK_OK;
}
