/* Dense float32 kernels, AVX2 + FMA. Same contract as linear_dense_scalar.c.
 *
 * - gemm: a 6 x 16 micro-tile, 12 accumulators in registers; each k broadcasts one value
 *   of each of 6 rows of A and multiplies two vectors of the panel (2 loads + 6
 *   broadcasts per 12 FMAs, so the FMA units, not the loads, set the pace).
 * - gemv: four panels at a time, so that four streams of weights are in flight (one
 *   stream reaches well under the memory bandwidth).
 * - dot: 4 rows of B (B's columns) against x at a time, 16 floats per step. */
#include "pk_avx2.h"

#define NR PK_DENSE_NR
#define MR 6
/* Prefetch distance of gemm in k steps (one 64-byte line of a panel each): at small
 * batches the weights stream from memory, where the hardware prefetcher alone lags. */
#define PF 64

static inline __m256i lanes_below(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One row of the output tile: (c +) v, + bias, activation, the first `cols` columns. */
PK_ALWAYS_INLINE void store_row(float *cr, __m256 v0, __m256 v1, int64_t cols, int accumulate,
                                const float *bias, int activation) {
    if (cols == NR) {
        if (accumulate) {
            v0 = _mm256_add_ps(_mm256_loadu_ps(cr), v0);
            v1 = _mm256_add_ps(_mm256_loadu_ps(cr + 8), v1);
        }
        if (bias) {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias + 8));
        }
        _mm256_storeu_ps(cr, pk_activate8(v0, activation));
        _mm256_storeu_ps(cr + 8, pk_activate8(v1, activation));
        return;
    }
    float t[NR];
    _mm256_storeu_ps(t, v0);
    _mm256_storeu_ps(t + 8, v1);
    for (int64_t j = 0; j < cols; j++) {
        float v = accumulate ? cr[j] + t[j] : t[j];
        if (bias) v += bias[j];
        cr[j] = pk_activate(v, activation);
    }
}

/* The first `rows` rows of a tile t [6][16] into c. */
static __attribute__((noinline)) void store_tile(const float *t, int rows, float *c,
                                                 int64_t ldc, int64_t cols, int accumulate,
                                                 const float *bias, int activation) {
    for (int r = 0; r < rows; r++)
        store_row(c + r * ldc, _mm256_loadu_ps(t + r * NR), _mm256_loadu_ps(t + r * NR + 8),
                  cols, accumulate, bias, activation);
}

/* Row r of the tile: one broadcast of A, two FMAs (skipped for r >= rows). */
#define PK_DENSE_ROW(r, lo, hi)                                  \
    if (rows > (r)) {                                            \
        const __m256 x = _mm256_broadcast_ss(a + (r) * lda + k); \
        lo = _mm256_fmadd_ps(x, b0, lo);                         \
        hi = _mm256_fmadd_ps(x, b1, hi);                         \
    }

/* rows (<= 6, a constant after inlining) rows of A times one [kc][16] panel; named
 * accumulators, which the compiler keeps in registers (an array here spills). */
PK_ALWAYS_INLINE void tile(const int rows, const float *a, int64_t lda, const float *b,
                           int64_t kc, float *c, int64_t ldc, int64_t cols, int accumulate,
                           const float *bias, int activation) {
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0, l4 = l0, l5 = l0;
    __m256 h0 = l0, h1 = l0, h2 = l0, h3 = l0, h4 = l0, h5 = l0;
    for (int64_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_loadu_ps(b + k * NR), b1 = _mm256_loadu_ps(b + k * NR + 8);
        _mm_prefetch((const char *)(b + (k + PF) * NR), _MM_HINT_T0);
        PK_DENSE_ROW(0, l0, h0)
        PK_DENSE_ROW(1, l1, h1)
        PK_DENSE_ROW(2, l2, h2)
        PK_DENSE_ROW(3, l3, h3)
        PK_DENSE_ROW(4, l4, h4)
        PK_DENSE_ROW(5, l5, h5)
    }
    /* the epilogue out of line: inlined here, it made the compiler spill accumulators */
    float t[MR * NR];
    _mm256_storeu_ps(t, l0), _mm256_storeu_ps(t + 8, h0);
    _mm256_storeu_ps(t + 16, l1), _mm256_storeu_ps(t + 24, h1);
    _mm256_storeu_ps(t + 32, l2), _mm256_storeu_ps(t + 40, h2);
    _mm256_storeu_ps(t + 48, l3), _mm256_storeu_ps(t + 56, h3);
    _mm256_storeu_ps(t + 64, l4), _mm256_storeu_ps(t + 72, h4);
    _mm256_storeu_ps(t + 80, l5), _mm256_storeu_ps(t + 88, h5);
    store_tile(t, rows, c, ldc, cols, accumulate, bias, activation);
}
#undef PK_DENSE_ROW

int pk_dense_gemm_avx2(const float *a, int64_t lda, int64_t rows, const float *b, int64_t kc,
                       int64_t cols, float *c, int64_t ldc, int accumulate, const float *bias,
                       int activation) {
    int64_t r = 0;
    for (; r + MR <= rows; r += MR)
        tile(MR, a + r * lda, lda, b, kc, c + r * ldc, ldc, cols, accumulate, bias, activation);
    const float *ar = a + r * lda;
    float *cr = c + r * ldc;
    switch (rows - r) {
    case 5: tile(5, ar, lda, b, kc, cr, ldc, cols, accumulate, bias, activation); break;
    case 4: tile(4, ar, lda, b, kc, cr, ldc, cols, accumulate, bias, activation); break;
    case 3: tile(3, ar, lda, b, kc, cr, ldc, cols, accumulate, bias, activation); break;
    case 2: tile(2, ar, lda, b, kc, cr, ldc, cols, accumulate, bias, activation); break;
    case 1: tile(1, ar, lda, b, kc, cr, ldc, cols, accumulate, bias, activation); break;
    default: break;
    }
    return PK_OK;
}

/* sum_k x[k] * panel[k][0:16] into lo, hi; k unrolled by 2 into independent sums. */
#define PK_GEMV_STEP(p, i, l, h)                                          \
    l = _mm256_fmadd_ps(xi, _mm256_loadu_ps((p) + (i) * NR), l);          \
    h = _mm256_fmadd_ps(xi, _mm256_loadu_ps((p) + (i) * NR + 8), h);

int pk_dense_gemv_avx2(const float *x, int64_t k, const float *b, int64_t cols,
                       const float *bias, int activation, float *y) {
    int64_t n0 = 0;
    /* four panels at a time: four streams of weights in flight */
    for (; n0 + 4 * NR <= cols; n0 += 4 * NR) {
        const float *p0 = b + n0 * k, *p1 = p0 + NR * k, *p2 = p1 + NR * k, *p3 = p2 + NR * k;
        __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0;
        __m256 h0 = l0, h1 = l0, h2 = l0, h3 = l0;
        for (int64_t i = 0; i < k; i++) {
            const __m256 xi = _mm256_broadcast_ss(x + i);
            PK_GEMV_STEP(p0, i, l0, h0)
            PK_GEMV_STEP(p1, i, l1, h1)
            PK_GEMV_STEP(p2, i, l2, h2)
            PK_GEMV_STEP(p3, i, l3, h3)
        }
        const float *bs = bias ? bias + n0 : NULL;
        store_row(y + n0, l0, h0, NR, 0, bs, activation);
        store_row(y + n0 + NR, l1, h1, NR, 0, bs ? bs + NR : NULL, activation);
        store_row(y + n0 + 2 * NR, l2, h2, NR, 0, bs ? bs + 2 * NR : NULL, activation);
        store_row(y + n0 + 3 * NR, l3, h3, NR, 0, bs ? bs + 3 * NR : NULL, activation);
    }
    for (; n0 < cols; n0 += NR) { /* the last panels, one at a time */
        const float *p = b + n0 * k;
        __m256 l0 = _mm256_setzero_ps(), l1 = l0, h0 = l0, h1 = l0;
        int64_t i = 0;
        for (; i + 2 <= k; i += 2) {
            __m256 xi = _mm256_broadcast_ss(x + i);
            PK_GEMV_STEP(p, i, l0, h0)
            xi = _mm256_broadcast_ss(x + i + 1);
            PK_GEMV_STEP(p, i + 1, l1, h1)
        }
        if (i < k) {
            const __m256 xi = _mm256_broadcast_ss(x + i);
            PK_GEMV_STEP(p, i, l0, h0)
        }
        const int64_t n = cols - n0 < NR ? cols - n0 : NR;
        store_row(y + n0, _mm256_add_ps(l0, l1), _mm256_add_ps(h0, h1), n, 0,
                  bias ? bias + n0 : NULL, activation);
    }
    return PK_OK;
}
#undef PK_GEMV_STEP

/* One row of dot_rows: two FMAs per 16 columns (skipped for r >= rows). */
#define PK_DOT_ROW(r, lo, hi)                                                    \
    if (rows > (r)) {                                                            \
        lo = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + (r) * ldw + i), lo);        \
        hi = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w + (r) * ldw + i + 8), hi);    \
    }
#define PK_DOT_TAIL(r, lo)                                                       \
    if (rows > (r)) lo = _mm256_fmadd_ps(x0, _mm256_maskload_ps(w + (r) * ldw + i, m), lo);

/* sum_k x[k] * w[r * ldw + k] for r < rows (<= 4, a constant after inlining). */
PK_ALWAYS_INLINE void dot_rows(const int rows, const float *x, int64_t k, const float *w,
                               int64_t ldw, float *sums) {
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0;
    __m256 h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
        PK_DOT_ROW(0, l0, h0)
        PK_DOT_ROW(1, l1, h1)
        PK_DOT_ROW(2, l2, h2)
        PK_DOT_ROW(3, l3, h3)
    }
    for (; i < k; i += 8) {
        const __m256i m = lanes_below(k - i);
        const __m256 x0 = _mm256_maskload_ps(x + i, m);
        PK_DOT_TAIL(0, l0)
        PK_DOT_TAIL(1, l1)
        PK_DOT_TAIL(2, l2)
        PK_DOT_TAIL(3, l3)
    }
    sums[0] = pk_hsum8(_mm256_add_ps(l0, h0));
    if (rows > 1) sums[1] = pk_hsum8(_mm256_add_ps(l1, h1));
    if (rows > 2) sums[2] = pk_hsum8(_mm256_add_ps(l2, h2));
    if (rows > 3) sums[3] = pk_hsum8(_mm256_add_ps(l3, h3));
}
#undef PK_DOT_ROW
#undef PK_DOT_TAIL

int pk_dense_dot_avx2(const float *x, int64_t k, const float *w, int64_t ldw, int64_t rows,
                      const float *bias, int activation, float *y) {
    float s[4];
    int64_t o = 0;
    for (; o + 4 <= rows; o += 4) {
        dot_rows(4, x, k, w + o * ldw, ldw, s);
        for (int r = 0; r < 4; r++)
            y[o + r] = pk_activate(bias ? s[r] + bias[o + r] : s[r], activation);
    }
    for (; o < rows; o++) {
        dot_rows(1, x, k, w + o * ldw, ldw, s);
        y[o] = pk_activate(bias ? s[0] + bias[o] : s[0], activation);
    }
    return PK_OK;
}
