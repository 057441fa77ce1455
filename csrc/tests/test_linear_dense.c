/* dense_gemm / dense_gemv / dense_dot through their public entries (pk_linear_dense_f32
 * on packed weights, pk_matmul_f32 on row-major and transposed right operands): the
 * kernel serving each level against a double-precision oracle (panel tails, k and row
 * blocks, bias and activations, Inf/NaN), thread-count independence, bad arguments. */
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

static float *random_floats(pk_rng *r, int64_t n) {
    float *a = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) a[i] = pk_rng_float(r);
    return a;
}

/* want[z][i][j] = act(sum_k A[z][i][k] * B[z][k][j] + bias[j]) in double; B[z][k][j] is
 * b[z * k * n + k * rs + j * cs]; scale bounds the rounding error of any float order. */
static void oracle(const float *a, const float *b, int64_t rs, int64_t cs, int64_t batches,
                   int64_t m, int64_t k, int64_t n, const float *bias, int act, float *want,
                   double *scale) {
    for (int64_t z = 0; z < batches; z++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = bias ? bias[j] : 0.0, s = bias ? fabs(bias[j]) : 0.0;
                for (int64_t p = 0; p < k; p++) {
                    const double t = (double)a[(z * m + i) * k + p] * b[z * k * n + p * rs + j * cs];
                    acc += t;
                    s += fabs(t);
                }
                want[(z * m + i) * n + j] = pk_activate((float)acc, act);
                scale[(z * m + i) * n + j] = s;
            }
}

/* One product: via pk_linear_dense_f32 on packed weights (mode 0, batches 1), or
 * pk_matmul_f32 with B row-major (mode 1) or transposed, B[k][j] = W[j][k] (mode 2). */
static int run(int mode, const float *a, const float *b, const float *packed, int64_t batches,
               int64_t m, int64_t k, int64_t n, const float *bias, int act, float *c) {
    if (mode == 0) return pk_linear_dense_f32(a, m, k, packed, n, bias, act, c);
    int64_t *a_off = malloc((size_t)batches * sizeof(int64_t));
    int64_t *b_off = malloc((size_t)batches * sizeof(int64_t));
    for (int64_t z = 0; z < batches; z++) a_off[z] = z * m * k, b_off[z] = z * k * n;
    const int64_t rs = mode == 1 ? n : 1, cs = mode == 1 ? 1 : k;
    const int st = pk_matmul_f32(a, a_off, b, b_off, rs, cs, batches, m, k, n, bias, act, c);
    free(a_off), free(b_off);
    return st;
}

static void check_shape(pk_rng *r, int level, int mode, int64_t batches, int64_t m, int64_t k,
                        int64_t n, int special) {
    float *a = random_floats(r, batches * m * k), *b = random_floats(r, batches * k * n);
    float *bias = random_floats(r, n), *packed = NULL;
    if (special && m * k > 0) { /* Inf and NaN activations must propagate */
        a[pk_rng_below(r, m * k)] = INFINITY;
        a[pk_rng_below(r, m * k)] = NAN;
    }
    if (mode == 0) { /* b is W [n][k] */
        packed = malloc((size_t)(pk_dense_packed_floats(n, k) + 1) * sizeof(float));
        CHECK(pk_dense_pack_f32(b, n, k, packed) == PK_OK, "pack");
    }
    const int64_t rs = mode == 1 ? n : 1, cs = mode == 1 ? 1 : k;
    const size_t size = (size_t)(batches * m * n > 0 ? batches * m * n : 1);
    float *got = malloc(size * sizeof(float)), *two = malloc(size * sizeof(float));
    float *want = malloc(size * sizeof(float));
    double *scale = malloc(size * sizeof(double));
    for (int act = PK_ACT_NONE; act <= PK_ACT_RELU6; act++) {
        const float *bs = act == PK_ACT_RELU ? NULL : bias;
        oracle(a, b, rs, cs, batches, m, k, n, bs, act, want, scale);
        pk_set_num_threads(1);
        int st = run(mode, a, b, packed, batches, m, k, n, bs, act, got);
        CHECK(st == PK_OK, "status %d", st);
        pk_set_num_threads(2);
        st = run(mode, a, b, packed, batches, m, k, n, bs, act, two);
        CHECK(st == PK_OK, "status %d (2 threads)", st);
        long bad = 0, first = -1;
        for (int64_t i = 0; i < batches * m * n; i++)
            if (!pk_close(got[i], want[i], scale[i], 1e-5) && bad++ == 0) first = (long)i;
        CHECK(bad == 0,
              "%s mode=%d batches=%lld m=%lld k=%lld n=%lld act=%d: %ld outputs differ, first "
              "at %ld (%g vs %g)",
              pk_isa_name(level), mode, (long long)batches, (long long)m, (long long)k,
              (long long)n, act, bad, first, first >= 0 ? got[first] : 0.0,
              first >= 0 ? want[first] : 0.0);
        CHECK(memcmp(got, two, (size_t)(batches * m * n) * sizeof(float)) == 0,
              "%s mode=%d m=%lld k=%lld n=%lld: 1 and 2 threads differ", pk_isa_name(level),
              mode, (long long)m, (long long)k, (long long)n);
    }
    pk_set_num_threads(0);
    free(a), free(b), free(bias), free(packed), free(got), free(two), free(want), free(scale);
}

/* Arguments the public entries must refuse before any kernel runs. */
static void check_bad_arguments(void) {
    float x[12] = {0}, w[32 * 3] = {0}, y[12];
    CHECK(pk_dense_packed_floats(-1, 3) == -1, "packed size of a negative shape");
    CHECK(pk_dense_packed_floats(17, 3) == 32 * 3, "packed size");
    CHECK(pk_dense_pack_f32(w, -1, 3, w) == PK_ERR_ARG, "pack out < 0");
    CHECK(pk_dense_pack_f32(NULL, 2, 3, w) == PK_ERR_ARG, "pack w NULL");
    CHECK(pk_linear_dense_f32(x, -1, 3, w, 2, NULL, 0, y) == PK_ERR_ARG, "batch < 0");
    CHECK(pk_linear_dense_f32(x, 2, 3, w, 2, NULL, 3, y) == PK_ERR_ARG, "activation 3");
    CHECK(pk_linear_dense_f32(x, 2, 3, NULL, 2, NULL, 0, y) == PK_ERR_ARG, "packed NULL");
    CHECK(pk_linear_dense_f32(x, 2, 3, w, 2, NULL, 0, NULL) == PK_ERR_ARG, "y NULL");
    CHECK(pk_linear_dense_f32(x, 2, (int64_t)INT32_MAX + 1, w, 2, NULL, 0, y) ==
              PK_ERR_OVERFLOW,
          "in > INT32_MAX");
    CHECK(pk_linear_dense_f32(NULL, 0, 3, NULL, 2, NULL, 0, NULL) == PK_OK, "batch 0");
    CHECK(pk_matmul_f32(x, NULL, w, NULL, 3, 1, 1, 2, 3, 3, NULL, 0, y) == PK_OK, "matmul");
    CHECK(pk_matmul_f32(x, NULL, w, NULL, -3, 1, 1, 2, 3, 3, NULL, 0, y) == PK_ERR_ARG,
          "negative stride");
    CHECK(pk_matmul_f32(x, NULL, w, NULL, 3, 1, -1, 2, 3, 3, NULL, 0, y) == PK_ERR_ARG,
          "batches < 0");
    CHECK(pk_matmul_f32(NULL, NULL, w, NULL, 3, 1, 1, 2, 3, 3, NULL, 0, y) == PK_ERR_ARG,
          "a NULL");
    CHECK(pk_matmul_f32(x, NULL, w, NULL, 3, 1, 1, 2, 3, 3, NULL, -1, y) == PK_ERR_ARG,
          "activation -1");
    /* k = 0: the outputs are act(bias) */
    const float bias[3] = {-1.0f, 2.0f, 7.0f};
    CHECK(pk_matmul_f32(NULL, NULL, NULL, NULL, 3, 1, 1, 2, 0, 3, bias, PK_ACT_RELU6, y) ==
              PK_OK,
          "k = 0");
    CHECK(y[0] == 0.0f && y[1] == 2.0f && y[2] == 6.0f && y[5] == 6.0f, "k = 0 gives act(bias)");
}

/* dense_gemm: batch > 1 on packed weights and matmul with both layouts of B; rows past the
 * 6- and 12-row tiles and the row block, k past the k block, panel tails (B transposed
 * from 9 rows on: fewer run as dot products). */
void test_dense_gemm(int level) {
    pk_rng r = {0xd15eULL ^ (uint64_t)level};
    static const int64_t shapes[][3] = {
        {2, 1, 1},   {3, 17, 5},  {5, 3, 16},  {6, 64, 33},  {7, 300, 17}, {8, 1023, 20},
        {12, 9, 48}, {13, 40, 1}, {25, 257, 31}, {64, 100, 70}, {200, 520, 19}, {257, 3, 40}, {400, 20, 9},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int mode = 0; mode < 3; mode++)
            check_shape(&r, level, mode, 1, shapes[i][0], shapes[i][1], shapes[i][2], 0);
    check_shape(&r, level, 0, 1, 9, 50, 30, 1);
    check_shape(&r, level, 1, 3, 7, 24, 18, 1);
    check_shape(&r, level, 2, 4, 5, 33, 9, 0);
    check_shape(&r, level, 1, 6, 2, 64, 64, 0); /* many batch items, enough work to split */
    check_bad_arguments();
}

/* dense_gemv: batch 1 on packed weights (k tails of the 4-way unroll, panel tails). */
void test_dense_gemv(int level) {
    pk_rng r = {0x6e3dULL ^ (uint64_t)level};
    static const int64_t shapes[][2] = {{1, 1},  {3, 17},  {17, 3},  {4, 16},  {7, 33},
                                        {64, 1}, {300, 70}, {1023, 41}, {700, 400}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_shape(&r, level, 0, 1, 1, shapes[i][0], shapes[i][1], 0);
    check_shape(&r, level, 0, 1, 1, 90, 30, 1);
    check_shape(&r, level, 1, 3, 1, 40, 21, 0); /* m = 1 with B row-major: the gemm path */
}

/* dense_dot: m <= 8 with B transposed (rows of W), k tails of 8 and 16, row tails of 4. */
void test_dense_dot(int level) {
    pk_rng r = {0xd07ULL ^ (uint64_t)level};
    static const int64_t shapes[][2] = {{1, 1},  {3, 5},   {8, 4},    {15, 7},
                                        {16, 9}, {17, 18}, {1023, 13}, {700, 400}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_shape(&r, level, 2, 1, 1, shapes[i][0], shapes[i][1], 0);
    check_shape(&r, level, 2, 2, 1, 90, 30, 1);
    check_shape(&r, level, 2, 1, 5, 37, 19, 1);
    check_shape(&r, level, 2, 2, 8, 64, 40, 0);
}
