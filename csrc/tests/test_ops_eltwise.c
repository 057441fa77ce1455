/* Test families of the activation and normalisation slots (gelu, softmax, layer_norm):
 * at the scalar level the public entries against float64 statements of the semantics
 * (special values included) and bad arguments; from the first SIMD level on the
 * dispatched kernel against the portable one, on every tail length. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

/* Within rtol of want, relative, or both NaN, or the same infinity. */
static int close_rel(float got, double want, double rtol, double atol) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got)) return (double)got == want;
    return fabs((double)got - want) <= rtol * fabs(want) + atol;
}

static double gelu_ref(double x, int approximate) {
    /* 0.5 x (1 + tanh(u)) written without the cancellation of 1 + tanh(u) for u << 0 */
    if (approximate) return x / (1.0 + exp(-2.0 * 0.7978845608028654 * (x + 0.044715 * x * x * x)));
    return 0.5 * x * erfc(-x / sqrt(2.0));
}

/* Inputs for GELU: random over [-16, 16], then specials and the branch boundaries. */
static float *gelu_inputs(int64_t n, pk_rng *rng) {
    static const float special[] = {0.0f,   -0.0f,     INFINITY, -INFINITY,  NAN,   FLT_MAX,
                                    -FLT_MAX, 1e-30f,  -1e-30f,  1.41421356f, -1.41421356f,
                                    1.4142134f, -1.4142134f, 14.0f, -14.0f, -13.9f, -9.5f,
                                    -5.0f,  1e20f,     -1e20f,   100.0f,     -100.0f};
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = 16.0f * pk_rng_float(rng);
    const int64_t ns = (int64_t)(sizeof special / sizeof special[0]);
    for (int64_t i = 0; i < n && i < ns; i++) x[(i * 7) % n] = special[i];
    return x;
}

void test_gelu(int level) {
    pk_rng rng = {0x5eed1234u};
    if (level == PK_ISA_SCALAR) {
        float v = 1.0f;
        CHECK(pk_gelu_f32(&v, -1, 0, &v) == PK_ERR_ARG, "negative n accepted");
        CHECK(pk_gelu_f32(&v, 1, 2, &v) == PK_ERR_ARG, "unknown form accepted");
        CHECK(pk_gelu_f32(NULL, 1, 0, &v) == PK_ERR_ARG, "NULL x accepted");
        CHECK(pk_gelu_f32(&v, 1, 0, NULL) == PK_ERR_ARG, "NULL y accepted");
        CHECK(pk_gelu_f32(NULL, 0, 0, NULL) == PK_OK, "n = 0 refused");
        const int64_t n = 20000;
        float *x = gelu_inputs(n, &rng), *y = malloc((size_t)n * sizeof(float));
        for (int approximate = 0; approximate <= 1; approximate++) {
            CHECK(pk_gelu_f32(x, n, approximate, y) == PK_OK, "gelu failed");
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                const double want = (float)gelu_ref(x[i], approximate);
                /* the tanh form's exponent v carries its float32 rounding */
                const double v = 1.5957691216 * fabs(x[i]) * (1.0 + 0.044715 * x[i] * x[i]);
                const double rtol = approximate ? 1e-6 + 3e-7 * v : 1e-6;
                if (!close_rel(y[i], want, rtol, 1e-37) && bad++ < 5)
                    CHECK(0, "gelu(%g, %d) = %.9g, want %.9g", x[i], approximate, y[i], want);
            }
            CHECK(bad == 0, "%d gelu values off", bad);
        }
        free(x);
        free(y);
        return;
    }
    for (int64_t n = 1; n <= 40; n++) {
        float *x = gelu_inputs(n, &rng), *y = malloc((size_t)n * sizeof(float));
        float *want = malloc((size_t)n * sizeof(float));
        for (int approximate = 0; approximate <= 1; approximate++) {
            pk_kernels()->gelu(x, n, approximate, y);
            pk_gelu_scalar(x, n, approximate, want);
            for (int64_t i = 0; i < n; i++)
                CHECK(close_rel(y[i], want[i], 1e-6, 1e-37), "n %lld form %d: gelu(%g) %g vs %g",
                      (long long)n, approximate, x[i], y[i], want[i]);
            memcpy(y, x, (size_t)n * sizeof(float)); /* in place */
            pk_kernels()->gelu(y, n, approximate, y);
            for (int64_t i = 0; i < n; i++)
                CHECK(close_rel(y[i], want[i], 1e-6, 1e-37), "in place: gelu(%g)", x[i]);
        }
        free(x);
        free(y);
        free(want);
    }
}

/* Rows for softmax / LayerNorm: random, with row 1 holding -Inf entries, row 2 all -Inf,
 * row 3 a NaN, row 4 +Inf (when there are that many rows). */
static float *norm_inputs(int64_t rows, int64_t cols, pk_rng *rng) {
    float *x = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++) x[i] = 8.0f * pk_rng_float(rng);
    if (rows > 1) x[cols + cols / 2] = -INFINITY;
    if (rows > 2)
        for (int64_t i = 0; i < cols; i++) x[2 * cols + i] = -INFINITY;
    if (rows > 3) x[3 * cols + cols - 1] = NAN;
    if (rows > 4) x[4 * cols] = INFINITY;
    return x;
}

static void softmax_ref(const float *x, int64_t cols, double *want) {
    double m = -INFINITY;
    int nan = 0;
    for (int64_t i = 0; i < cols; i++) {
        nan |= isnan(x[i]);
        if (x[i] > m) m = x[i];
    }
    double s = 0.0;
    for (int64_t i = 0; i < cols; i++) s += want[i] = nan ? NAN : exp((double)x[i] - m);
    for (int64_t i = 0; i < cols; i++) want[i] /= s;
}

static void layer_norm_ref(const float *x, int64_t cols, const float *scale,
                           const float *bias, float eps, double *want) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < cols; i++) mean += x[i];
    mean /= (double)cols;
    for (int64_t i = 0; i < cols; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (double)cols;
    for (int64_t i = 0; i < cols; i++) {
        want[i] = (x[i] - mean) / sqrt(var + eps);
        if (scale) want[i] *= scale[i];
        if (bias) want[i] += bias[i];
    }
}

static const int64_t COLS[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 128, 384, 1001};

void test_softmax(int level) {
    pk_rng rng = {0xabcdefu};
    if (level == PK_ISA_SCALAR) {
        float v = 1.0f;
        CHECK(pk_softmax_f32(&v, -1, 1, &v) == PK_ERR_ARG, "negative rows accepted");
        CHECK(pk_softmax_f32(&v, 1, -1, &v) == PK_ERR_ARG, "negative cols accepted");
        CHECK(pk_softmax_f32(NULL, 1, 1, &v) == PK_ERR_ARG, "NULL x accepted");
        CHECK(pk_softmax_f32(NULL, 0, 5, NULL) == PK_OK, "rows = 0 refused");
    }
    for (size_t c = 0; c < sizeof COLS / sizeof COLS[0]; c++) {
        const int64_t rows = 6, cols = COLS[c];
        float *x = norm_inputs(rows, cols, &rng), *y = malloc((size_t)(rows * cols) * 4);
        float *want = malloc((size_t)(rows * cols) * 4);
        double *ref = malloc((size_t)cols * sizeof(double));
        if (level == PK_ISA_SCALAR) {
            CHECK(pk_softmax_f32(x, rows, cols, y) == PK_OK, "softmax failed");
            for (int64_t r = 0; r < rows; r++) {
                softmax_ref(x + r * cols, cols, ref);
                for (int64_t i = 0; i < cols; i++)
                    CHECK(close_rel(y[r * cols + i], ref[i], 1e-5, 1e-30),
                          "cols %lld row %lld: %g vs %g", (long long)cols, (long long)r,
                          y[r * cols + i], ref[i]);
            }
        } else {
            pk_kernels()->softmax(x, rows, cols, y);
            pk_softmax_scalar(x, rows, cols, want);
            for (int64_t i = 0; i < rows * cols; i++)
                CHECK(close_rel(y[i], want[i], 2e-6, 1e-30), "cols %lld [%lld]: %g vs %g",
                      (long long)cols, (long long)i, y[i], want[i]);
            memcpy(y, x, (size_t)(rows * cols) * 4);
            pk_kernels()->softmax(y, rows, cols, y);
            for (int64_t i = 0; i < rows * cols; i++)
                CHECK(close_rel(y[i], want[i], 2e-6, 1e-30), "in place, cols %lld",
                      (long long)cols);
        }
        free(x);
        free(y);
        free(want);
        free(ref);
    }
}

void test_layer_norm(int level) {
    pk_rng rng = {0x1a7e4u};
    if (level == PK_ISA_SCALAR) {
        float v = 1.0f;
        CHECK(pk_layer_norm_f32(&v, -1, 1, NULL, NULL, 1e-5f, &v) == PK_ERR_ARG,
              "negative rows accepted");
        CHECK(pk_layer_norm_f32(&v, 1, 1, NULL, NULL, 1e-5f, NULL) == PK_ERR_ARG,
              "NULL y accepted");
        CHECK(pk_layer_norm_f32(NULL, 3, 0, NULL, NULL, 1e-5f, NULL) == PK_OK,
              "cols = 0 refused");
    }
    for (size_t c = 0; c < sizeof COLS / sizeof COLS[0]; c++) {
        const int64_t rows = 6, cols = COLS[c];
        float *x = norm_inputs(rows, cols, &rng), *y = malloc((size_t)(rows * cols) * 4);
        float *want = malloc((size_t)(rows * cols) * 4);
        float *scale = malloc((size_t)cols * 4), *bias = malloc((size_t)cols * 4);
        double *ref = malloc((size_t)cols * sizeof(double));
        for (int64_t i = 0; i < cols; i++) {
            scale[i] = 1.0f + pk_rng_float(&rng);
            bias[i] = pk_rng_float(&rng);
        }
        for (int with = 0; with < 2; with++) {
            const float *s = with ? scale : NULL, *b = with ? bias : NULL;
            if (level == PK_ISA_SCALAR) {
                CHECK(pk_layer_norm_f32(x, rows, cols, s, b, 1e-5f, y) == PK_OK, "failed");
                for (int64_t r = 0; r < rows; r++) {
                    layer_norm_ref(x + r * cols, cols, s, b, 1e-5f, ref);
                    for (int64_t i = 0; i < cols; i++)
                        CHECK(close_rel(y[r * cols + i], ref[i], 1e-5, 1e-5),
                              "cols %lld row %lld: %g vs %g", (long long)cols, (long long)r,
                              y[r * cols + i], ref[i]);
                }
            } else {
                pk_kernels()->layer_norm(x, rows, cols, s, b, 1e-5f, y);
                pk_layer_norm_scalar(x, rows, cols, s, b, 1e-5f, want);
                for (int64_t i = 0; i < rows * cols; i++)
                    CHECK(close_rel(y[i], want[i], 1e-5, 1e-5), "cols %lld [%lld]: %g vs %g",
                          (long long)cols, (long long)i, y[i], want[i]);
                memcpy(y, x, (size_t)(rows * cols) * 4);
                pk_kernels()->layer_norm(y, rows, cols, s, b, 1e-5f, y);
                for (int64_t i = 0; i < rows * cols; i++)
                    CHECK(close_rel(y[i], want[i], 1e-5, 1e-5), "in place, cols %lld",
                          (long long)cols);
            }
        }
        free(x);
        free(y);
        free(want);
        free(scale);
        free(bias);
        free(ref);
    }
}
