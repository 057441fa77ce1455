/* Dense float32 kernels, portable C: the dense_* slots of the kernel list, called by the
 * driver in linear_dense.c on one panel (gemm) or a run of panels (gemv, dot). */
#include "pk_internal.h"

#define NR PK_DENSE_NR

/* c[r][j] (+)= sum_k a[r*lda + k] * b[k*16 + j] for r < rows, j < cols, then bias and
 * activation (given on the last k block only). */
int pk_dense_gemm_scalar(const float *a, int64_t lda, int64_t rows, const float *b,
                         int64_t kc, int64_t cols, float *c, int64_t ldc, int accumulate,
                         const float *bias, int activation) {
    for (int64_t r = 0; r < rows; r++) {
        float acc[NR] = {0};
        const float *ar = a + r * lda;
        for (int64_t k = 0; k < kc; k++)
            for (int j = 0; j < NR; j++) acc[j] += ar[k] * b[k * NR + j];
        float *cr = c + r * ldc;
        for (int64_t j = 0; j < cols; j++) {
            float v = accumulate ? cr[j] + acc[j] : acc[j];
            if (bias) v += bias[j];
            cr[j] = pk_activate(v, activation);
        }
    }
    return PK_OK;
}

/* y[j] = act(sum_k x[k] * panels[j / 16][k][j % 16] + bias[j]) for j < cols. */
int pk_dense_gemv_scalar(const float *x, int64_t k, const float *b, int64_t cols,
                         const float *bias, int activation, float *y) {
    for (int64_t n0 = 0; n0 < cols; n0 += NR) {
        const float *panel = b + n0 * k;
        float acc[NR] = {0};
        for (int64_t i = 0; i < k; i++)
            for (int j = 0; j < NR; j++) acc[j] += x[i] * panel[i * NR + j];
        for (int64_t j = 0; j < NR && n0 + j < cols; j++)
            y[n0 + j] = pk_activate(bias ? acc[j] + bias[n0 + j] : acc[j], activation);
    }
    return PK_OK;
}

/* y[o] = act(sum_k x[k] * w[o*ldw + k] + bias[o]) for o < rows. */
int pk_dense_dot_scalar(const float *x, int64_t k, const float *w, int64_t ldw, int64_t rows,
                        const float *bias, int activation, float *y) {
    for (int64_t o = 0; o < rows; o++) {
        const float *row = w + o * ldw;
        float acc = 0.0f;
        for (int64_t i = 0; i < k; i++) acc += x[i] * row[i];
        y[o] = pk_activate(bias ? acc + bias[o] : acc, activation);
    }
    return PK_OK;
}
