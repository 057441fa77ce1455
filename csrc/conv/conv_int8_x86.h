/* The x86 primitives of the int8 conv2d kernel (groups < channels) for conv_int8_body.h,
 * included before it by conv_int8_avx2.c and conv_int8_avx512vnni.c, which first define
 * PK_CI8_DOT(acc, a, b): acc plus the int16-pair dot products of a and b per 32-bit lane,
 * in int32. They are
 * - quantization 8 floats at a time (same float32 division and round-half-to-even as the
 *   scalar code), two channels packed into one int16 pair per 32-bit lane;
 * - a 4-channel x 16-column micro-tile: per pair-tap k, two loads of 8 lanes, and per
 *   output channel one broadcast weight pair and two PK_CI8_DOT into 8 int32
 *   accumulators (AVX2: vpmaddwd + vpaddd; on Zen 1 vpmaddwd issues on one pipe, so more
 *   accumulators buy nothing). Operands are within -127..127, so a pair sums to at most
 *   2 * 127 * 127 and the int32 sum is exact (no vpmaddubsw saturation).
 * - the epilogue converts, scales, adds the bias and applies relu/relu6 8 lanes at a time. */
#ifndef PK_CI8_DOT
#error "define PK_CI8_DOT before including conv_int8_x86.h"
#endif
#include "conv_internal.h"
#include "pk_avx2.h"

#if PK_CONV_INT8_MR != 4
#error "the x86 int8 conv micro-tile holds 4 output channels"
#endif

static float ci8_absmax(const float *x, int64_t n, int *nonfinite) {
    return pk_absmax_avx2(x, n, nonfinite);
}

/* 8 lanes of pairs: channel a's value (low half) and b's (high half, 0 without b) of
 * columns i < m (m <= 8: masked loads and store, which never touch memory past them);
 * vbad gains the lanes holding NaN/Inf. */
PK_ALWAYS_INLINE void ci8_pairs8(const float *a, const float *b, __m256i m, __m256 vs,
                                 int32_t *dst, __m256 *vbad) {
    const __m256i low = _mm256_set1_epi32(0xffff);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 big = _mm256_set1_ps(FLT_MAX);
    const __m256 va = _mm256_maskload_ps(a, m);
    *vbad = _mm256_or_ps(*vbad, _mm256_cmp_ps(_mm256_and_ps(va, absmask), big, _CMP_NLE_UQ));
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
#define CI8_Q(v)                                                                         \
    _mm256_cvtps_epi32(_mm256_min_ps(                                                    \
        _mm256_max_ps(_mm256_round_ps(_mm256_div_ps((v), vs),                            \
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),    \
                      lo),                                                               \
        hi))
    const __m256i qa = _mm256_and_si256(CI8_Q(va), low);
    __m256i qb = _mm256_setzero_si256();
    if (b) {
        const __m256 vb = _mm256_maskload_ps(b, m);
        *vbad = _mm256_or_ps(*vbad, _mm256_cmp_ps(_mm256_and_ps(vb, absmask), big, _CMP_NLE_UQ));
        qb = _mm256_slli_epi32(CI8_Q(vb), 16);
    }
#undef CI8_Q
    _mm256_maskstore_epi32(dst, m, _mm256_or_si256(qa, qb));
}

static int ci8_quant_pairs(const float *a, const float *b, int64_t n, float s, int32_t *dst) {
    const __m256 vs = _mm256_set1_ps(s);
    const __m256i all = _mm256_set1_epi32(-1);
    __m256 vbad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) ci8_pairs8(a + i, b ? b + i : NULL, all, vs, dst + i, &vbad);
    if (i < n) { /* the last columns: masked, not one division each */
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        ci8_pairs8(a + i, b ? b + i : NULL, m, vs, dst + i, &vbad);
    }
    return _mm256_movemask_ps(vbad) != 0;
}

/* One output channel of the tile. The empty asm statements pin the order (broadcast,
 * use, next broadcast): left alone, GCC hoists all six broadcasts ahead of the
 * multiplies and shuffles (or spills) accumulators between registers every k. */
#define ROW(r, c0, c1)                                                              \
    do {                                                                            \
        __m256i a;                                                                  \
        __asm__ volatile("vpbroadcastd %1, %0" : "=x"(a) : "m"(wk[r]));             \
        c0 = PK_CI8_DOT(c0, b0, a);                                                 \
        c1 = PK_CI8_DOT(c1, b1, a);                                                 \
        __asm__ volatile("" : "+x"(c0), "+x"(c1));                                  \
    } while (0)

/* 4 output channels x 16 columns: 8 accumulators (6 x 16 leaves no spare ymm
 * register). */
static void ci8_block(const int32_t *xb, const int64_t *off, int64_t kc, const int32_t *wp,
                      int32_t *buf) {
#define LD(i) _mm256_loadu_si256((const __m256i *)(buf + (i)))
    __m256i c00 = LD(0), c01 = LD(8), c10 = LD(16), c11 = LD(24);
    __m256i c20 = LD(32), c21 = LD(40), c30 = LD(48), c31 = LD(56);
#undef LD
    for (int64_t k = 0; k < kc; k++) {
        const int32_t *b = xb + off[k];
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 8));
        const int32_t *wk = wp + k * CI8_MR;
        ROW(0, c00, c01);
        ROW(1, c10, c11);
        ROW(2, c20, c21);
        ROW(3, c30, c31);
    }
#define ST(i, v) _mm256_storeu_si256((__m256i *)(buf + (i)), v)
    ST(0, c00), ST(8, c01), ST(16, c10), ST(24, c11);
    ST(32, c20), ST(40, c21), ST(48, c30), ST(56, c31);
#undef ST
}
#undef ROW

/* act(v) as pk_activate: comparisons are false for NaN, so NaN passes through. */
PK_ALWAYS_INLINE __m256 activate8(__m256 v, int activation) {
    if (activation == PK_ACT_NONE) return v;
    const __m256 zero = _mm256_setzero_ps();
    v = _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
    if (activation == PK_ACT_RELU6) {
        const __m256 six = _mm256_set1_ps(6.0f);
        v = _mm256_blendv_ps(v, six, _mm256_cmp_ps(v, six, _CMP_GT_OQ));
    }
    return v;
}

static void ci8_finish(const int32_t *acc, float mul, float bias, int has_bias, int activation,
                       float *out) {
    const __m256 m = _mm256_set1_ps(mul), bv = _mm256_set1_ps(bias);
    for (int j = 0; j < CI8_NR; j += 8) {
        __m256 v = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(acc + j))), m);
        if (has_bias) v = _mm256_add_ps(v, bv);
        _mm256_storeu_ps(out + j, activate8(v, activation));
    }
}
