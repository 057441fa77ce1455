/* Dense float32 kernels, AVX-512 (F). Same contract as linear_dense_scalar.c; a panel of
 * 16 columns is one zmm register.
 *
 * - gemm: a 12 x 16 micro-tile, 12 accumulators; each k loads the panel row once and
 *   broadcasts one value of each of 12 rows of A (13 loads per 12 FMAs).
 * - gemv: four panels at a time (four streams of weights in flight).
 * - dot: 4 rows of B (B's columns) against x at a time, the k tail masked. */
#include <immintrin.h>
#include <string.h>

#include "pk_internal.h"

#define NR PK_DENSE_NR
#define MR 12
/* Prefetch distance of gemm in k steps (one 64-byte line of a panel each). */
#define PF 64

static inline __m512 activate16(__m512 v, int activation) {
    /* max/min return their second operand when either is NaN: NaN passes */
    if (activation == PK_ACT_RELU) return _mm512_max_ps(_mm512_setzero_ps(), v);
    if (activation == PK_ACT_RELU6)
        return _mm512_min_ps(_mm512_set1_ps(6.0f), _mm512_max_ps(_mm512_setzero_ps(), v));
    return v;
}

/* One output row: (c +) v, + bias, activation, the first `cols` columns. */
static inline void store_row(float *cr, __m512 v, int64_t cols, int accumulate,
                             const float *bias, int activation) {
    const __mmask16 m = (__mmask16)((1u << cols) - 1u);
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, cr), v);
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias));
    v = activate16(v, activation);
    if (cols == NR) {
        _mm512_storeu_ps(cr, v);
    } else {
        float t[NR];
        _mm512_storeu_ps(t, v);
        memcpy(cr, t, (size_t)cols * sizeof(float));
    }
}

/* Row r of the tile: one broadcast of A, one FMA (skipped for r >= rows). */
#define PK_DENSE_ROW(r, acc) \
    if (rows > (r)) acc = _mm512_fmadd_ps(_mm512_set1_ps(a[(r) * lda + k]), b0, acc);
#define PK_DENSE_STORE(r, acc) \
    if (rows > (r)) store_row(c + (r) * ldc, acc, cols, accumulate, bias, activation);

/* rows (<= 12, a constant after inlining) rows of A times one [kc][16] panel. */
PK_ALWAYS_INLINE void tile(const int rows, const float *a, int64_t lda, const float *b,
                           int64_t kc, float *c, int64_t ldc, int64_t cols, int accumulate,
                           const float *bias, int activation) {
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
    __m512 c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    for (int64_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(b + k * NR);
        _mm_prefetch((const char *)(b + (k + PF) * NR), _MM_HINT_T0);
        PK_DENSE_ROW(0, c0)
        PK_DENSE_ROW(1, c1)
        PK_DENSE_ROW(2, c2)
        PK_DENSE_ROW(3, c3)
        PK_DENSE_ROW(4, c4)
        PK_DENSE_ROW(5, c5)
        PK_DENSE_ROW(6, c6)
        PK_DENSE_ROW(7, c7)
        PK_DENSE_ROW(8, c8)
        PK_DENSE_ROW(9, c9)
        PK_DENSE_ROW(10, c10)
        PK_DENSE_ROW(11, c11)
    }
    PK_DENSE_STORE(0, c0)
    PK_DENSE_STORE(1, c1)
    PK_DENSE_STORE(2, c2)
    PK_DENSE_STORE(3, c3)
    PK_DENSE_STORE(4, c4)
    PK_DENSE_STORE(5, c5)
    PK_DENSE_STORE(6, c6)
    PK_DENSE_STORE(7, c7)
    PK_DENSE_STORE(8, c8)
    PK_DENSE_STORE(9, c9)
    PK_DENSE_STORE(10, c10)
    PK_DENSE_STORE(11, c11)
}
#undef PK_DENSE_ROW
#undef PK_DENSE_STORE

/* The row tail of a gemm: rows % 12 rows, dispatched to a tile of that constant size. */
static void tail_tile(int rows, const float *a, int64_t lda, const float *b, int64_t kc,
                      float *c, int64_t ldc, int64_t cols, int accumulate, const float *bias,
                      int activation) {
#define PK_TAIL(n) \
    case n: tile(n, a, lda, b, kc, c, ldc, cols, accumulate, bias, activation); break;
    switch (rows) {
        PK_TAIL(1)
        PK_TAIL(2)
        PK_TAIL(3)
        PK_TAIL(4)
        PK_TAIL(5)
        PK_TAIL(6)
        PK_TAIL(7)
        PK_TAIL(8)
        PK_TAIL(9)
        PK_TAIL(10)
        PK_TAIL(11)
    default: break;
    }
#undef PK_TAIL
}

int pk_dense_gemm_avx512(const float *a, int64_t lda, int64_t rows, const float *b,
                         int64_t kc, int64_t cols, float *c, int64_t ldc, int accumulate,
                         const float *bias, int activation) {
    int64_t r = 0;
    for (; r + MR <= rows; r += MR)
        tile(MR, a + r * lda, lda, b, kc, c + r * ldc, ldc, cols, accumulate, bias, activation);
    if (r < rows)
        tail_tile((int)(rows - r), a + r * lda, lda, b, kc, c + r * ldc, ldc, cols, accumulate,
                  bias, activation);
    return PK_OK;
}

int pk_dense_gemv_avx512(const float *x, int64_t k, const float *b, int64_t cols,
                         const float *bias, int activation, float *y) {
    int64_t n0 = 0;
    /* four panels at a time: four streams of weights in flight */
    for (; n0 + 4 * NR <= cols; n0 += 4 * NR) {
        const float *p0 = b + n0 * k, *p1 = p0 + NR * k, *p2 = p1 + NR * k, *p3 = p2 + NR * k;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int64_t i = 0; i < k; i++) {
            const __m512 xi = _mm512_set1_ps(x[i]);
            s0 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(p0 + i * NR), s0);
            s1 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(p1 + i * NR), s1);
            s2 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(p2 + i * NR), s2);
            s3 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(p3 + i * NR), s3);
        }
        const float *bs = bias ? bias + n0 : NULL;
        store_row(y + n0, s0, NR, 0, bs, activation);
        store_row(y + n0 + NR, s1, NR, 0, bs ? bs + NR : NULL, activation);
        store_row(y + n0 + 2 * NR, s2, NR, 0, bs ? bs + 2 * NR : NULL, activation);
        store_row(y + n0 + 3 * NR, s3, NR, 0, bs ? bs + 3 * NR : NULL, activation);
    }
    for (; n0 < cols; n0 += NR) { /* the last panels, one at a time */
        const float *p = b + n0 * k;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0;
        int64_t i = 0;
        for (; i + 2 <= k; i += 2) {
            s0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]), _mm512_loadu_ps(p + i * NR), s0);
            s1 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 1]), _mm512_loadu_ps(p + i * NR + NR), s1);
        }
        if (i < k) s0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]), _mm512_loadu_ps(p + i * NR), s0);
        const int64_t n = cols - n0 < NR ? cols - n0 : NR;
        store_row(y + n0, _mm512_add_ps(s0, s1), n, 0, bias ? bias + n0 : NULL, activation);
    }
    return PK_OK;
}

#define PK_DOT_ROW(r, acc)                                                              \
    if (rows > (r))                                                                     \
        acc = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, w + (r) * ldw + i), acc);

/* sum_k x[k] * w[r * ldw + k] for r < rows (<= 4, a constant after inlining). */
PK_ALWAYS_INLINE void dot_rows(const int rows, const float *x, int64_t k, const float *w,
                               int64_t ldw, float *sums) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < k; i += 16) {
        const __mmask16 m = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1u);
        const __m512 x0 = _mm512_maskz_loadu_ps(m, x + i);
        PK_DOT_ROW(0, s0)
        PK_DOT_ROW(1, s1)
        PK_DOT_ROW(2, s2)
        PK_DOT_ROW(3, s3)
    }
    sums[0] = _mm512_reduce_add_ps(s0);
    if (rows > 1) sums[1] = _mm512_reduce_add_ps(s1);
    if (rows > 2) sums[2] = _mm512_reduce_add_ps(s2);
    if (rows > 3) sums[3] = _mm512_reduce_add_ps(s3);
}
#undef PK_DOT_ROW

int pk_dense_dot_avx512(const float *x, int64_t k, const float *w, int64_t ldw, int64_t rows,
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
