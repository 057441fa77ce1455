/* linear_int8 / linear_int4: from the first SIMD level on, the dispatched kernels against
 * the portable scalar ones, bit for bit, on random packed weights (in tails of every tile
 * width, group tails, out not a multiple of 8, batch 1 and odd batches, dynamic and static
 * activation scales, bias and activations, zero / NaN / Inf / +-FLT_MAX activation rows),
 * thread-count independence, and bad arguments refused by the public entries. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

/* x [batch, in]: uniform values, with row 1 all zero, row 2 at +-FLT_MAX, row 3 holding a
 * NaN and row 4 an Inf when the batch has them. */
static float *make_x(pk_rng *r, int64_t batch, int64_t in) {
    float *x = malloc((size_t)(batch * in) * sizeof(float) + 1);
    for (int64_t i = 0; i < batch * in; i++) x[i] = 4.0f * pk_rng_float(r);
    if (batch > 1) memset(x + in, 0, (size_t)in * sizeof(float));
    if (batch > 2)
        for (int64_t k = 0; k < in; k++) x[2 * in + k] = k % 2 ? FLT_MAX : -FLT_MAX;
    if (batch > 3) x[3 * in + in / 2] = NAN;
    if (batch > 4) x[4 * in] = -INFINITY;
    return x;
}

static float *make_floats(pk_rng *r, int64_t n, float lo, float hi) {
    float *v = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * (float)pk_rng_unit(r);
    return v;
}

typedef int (*run_fn)(const void *ctx, const float *x, int64_t batch, float *y);

/* Runs `fast` and `slow` on the same inputs and compares every output. */
static void compare(const char *what, int64_t batch, int64_t in, int64_t out, run_fn fast,
                    run_fn slow, const void *ctx, const float *x) {
    float *y1 = malloc((size_t)(batch * out) * sizeof(float) + 1);
    float *y2 = malloc((size_t)(batch * out) * sizeof(float) + 1);
    const int s1 = fast(ctx, x, batch, y1), s2 = slow(ctx, x, batch, y2);
    CHECK(s1 == PK_OK && s2 == PK_OK, "%s: status %d / %d", what, s1, s2);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < batch * out; i++)
        if (!pk_same(y1[i], y2[i]) && bad++ == 0) first = i;
    CHECK(bad == 0, "%s batch=%lld in=%lld out=%lld: %lld outputs differ, first at %lld "
          "(%g vs %g)", what, (long long)batch, (long long)in, (long long)out, (long long)bad,
          (long long)first, first >= 0 ? y1[first] : 0.0, first >= 0 ? y2[first] : 0.0);
    free(y1);
    free(y2);
}

typedef struct {
    int64_t in, out;
    int group_size;
    const void *packed;
    const float *scale, *bias;
    float act_scale;
    int activation;
} quant_case;

static int int8_fast(const void *c, const float *x, int64_t batch, float *y) {
    const quant_case *q = c;
    return pk_kernels()->linear_int8(x, batch, q->in, q->packed, q->scale, q->out, q->act_scale,
                                q->bias, q->activation, y);
}
static int int8_slow(const void *c, const float *x, int64_t batch, float *y) {
    const quant_case *q = c;
    return pk_linear_int8_scalar(x, batch, q->in, q->packed, q->scale, q->out, q->act_scale,
                                 q->bias, q->activation, y);
}
static int int4_fast(const void *c, const float *x, int64_t batch, float *y) {
    const quant_case *q = c;
    return pk_kernels()->linear_int4(x, batch, q->in, q->packed, q->scale, q->out, q->group_size,
                                q->act_scale, q->bias, q->activation, y);
}
static int int4_slow(const void *c, const float *x, int64_t batch, float *y) {
    const quant_case *q = c;
    return pk_linear_int4_scalar(x, batch, q->in, q->packed, q->scale, q->out, q->group_size,
                                 q->act_scale, q->bias, q->activation, y);
}

static void check_int8(pk_rng *r, int64_t batch, int64_t in, int64_t out, float act_scale,
                       int activation) {
    const int64_t blocks = (out + 7) / 8, chunks = (in + 3) / 4;
    const size_t bytes = (size_t)(blocks * chunks * 32);
    int8_t *packed = malloc(bytes ? bytes : 1); /* exact size: ASan sees any overread */
    for (size_t i = 0; i < bytes; i++) packed[i] = (int8_t)(pk_rng_below(r, 255) - 127);
    float *scale = make_floats(r, out, 0.0f, 0.1f);
    float *bias = make_floats(r, out, -1.0f, 1.0f);
    float *x = make_x(r, batch, in);
    quant_case q = {in, out, 0, packed, scale, activation ? bias : NULL, act_scale, activation};
    compare("linear_int8", batch, in, out, int8_fast, int8_slow, &q, x);
    free(packed);
    free(scale);
    free(bias);
    free(x);
}

static void check_int4(pk_rng *r, int64_t batch, int64_t in, int64_t out, int group_size,
                       float act_scale, int activation) {
    const int64_t blocks = (out + 7) / 8, groups = (in + group_size - 1) / group_size;
    const size_t bytes = (size_t)(blocks * groups * group_size / 8 * 32);
    uint8_t *packed = malloc(bytes ? bytes : 1);
    for (size_t i = 0; i < bytes; i++) packed[i] = (uint8_t)pk_rng_below(r, 256);
    float *scale = make_floats(r, blocks * groups * 8, -0.2f, 0.2f);
    float *bias = make_floats(r, out, -1.0f, 1.0f);
    float *x = make_x(r, batch, in);
    quant_case q = {in, out, group_size, packed, scale, activation ? bias : NULL, act_scale,
                    activation};
    compare("linear_int4", batch, in, out, int4_fast, int4_slow, &q, x);
    free(packed);
    free(scale);
    free(bias);
    free(x);
}

static void check_threads(pk_rng *r) {
    const int64_t batch = 9, in = 300, out = 77;
    int8_t *packed = malloc((size_t)(10 * 75 * 32));
    for (int i = 0; i < 10 * 75 * 32; i++) packed[i] = (int8_t)(pk_rng_below(r, 255) - 127);
    float *scale = make_floats(r, out, 0.0f, 0.1f), *x = make_x(r, batch, in);
    float *y1 = malloc((size_t)(batch * out) * sizeof(float));
    float *y2 = malloc((size_t)(batch * out) * sizeof(float));
    pk_set_num_threads(1);
    pk_linear_int8_f32(x, batch, in, packed, scale, out, 0.0f, NULL, 0, y1);
    pk_set_num_threads(2);
    pk_linear_int8_f32(x, batch, in, packed, scale, out, 0.0f, NULL, 0, y2);
    pk_set_num_threads(0);
    int equal = 1;
    for (int64_t i = 0; i < batch * out; i++) equal &= pk_same(y1[i], y2[i]);
    CHECK(equal, "linear_int8 differs between 1 and 2 threads");
    free(packed);
    free(scale);
    free(x);
    free(y1);
    free(y2);
}

static void check_bad_int8(void) {
    float f[8] = {0};
    int8_t q8[32] = {0};
    CHECK(pk_linear_int8_f32(f, -1, 4, q8, f, 1, 0.0f, NULL, 0, f) == PK_ERR_ARG, "batch < 0");
    CHECK(pk_linear_int8_f32(f, 1, 4, q8, f, 1, -1.0f, NULL, 0, f) == PK_ERR_ARG, "scale < 0");
    CHECK(pk_linear_int8_f32(f, 1, 4, q8, f, 1, NAN, NULL, 0, f) == PK_ERR_ARG, "NaN scale");
    CHECK(pk_linear_int8_f32(f, 1, 4, q8, f, 1, 0.0f, NULL, 3, f) == PK_ERR_ARG, "activation");
    CHECK(pk_linear_int8_f32(NULL, 1, 4, q8, f, 1, 0.0f, NULL, 0, f) == PK_ERR_ARG, "null x");
    CHECK(pk_linear_int8_f32(f, 1, 133145, q8, f, 1, 0.0f, NULL, 0, f) == PK_ERR_OVERFLOW,
          "in past the exact-accumulation limit");
    CHECK(pk_linear_int8_f32(f, 0, 4, NULL, NULL, 1, 0.0f, NULL, 0, NULL) == PK_OK, "batch 0");
}

static void check_bad_int4(void) {
    float f[8] = {0};
    uint8_t q4[32] = {0};
    CHECK(pk_linear_int4_f32(f, 1, 4, q4, f, 1, 16, 0.0f, NULL, 0, f) == PK_ERR_ARG,
          "group size 16");
    CHECK(pk_linear_int4_f32(f, 1, 4, NULL, f, 1, 32, 0.0f, NULL, 0, f) == PK_ERR_ARG,
          "null packed");
    CHECK(pk_linear_int4_f32(f, -1, 4, q4, f, 1, 32, 0.0f, NULL, 0, f) == PK_ERR_ARG,
          "batch < 0");
    CHECK(pk_linear_int4_f32(f, 0, 4, NULL, NULL, 1, 32, 0.0f, NULL, 0, NULL) == PK_OK,
          "batch 0");
}

static const int64_t INS[] = {1, 3, 4, 31, 33, 100, 257, 1000};
static const int64_t OUTS[] = {1, 7, 9, 37};
static const int64_t BATCHES[] = {1, 2, 5, 6, 9};

/* linear_int8: bad arguments, 1 vs 2 threads; from the first SIMD level on, parity with
 * the scalar kernel. */
void test_linear_int8(int level) {
    pk_rng r = {0x9e3779b97f4a7c15ULL + (uint64_t)level};
    check_bad_int8();
    check_threads(&r);
    if (level == 0) return; /* the scalar kernel is the reference here */
    for (int i = 0; i < 8; i++)
        for (int o = 0; o < 4; o++)
            for (int b = 0; b < 5; b++) {
                const int act = (i + o + b) % 3;
                const float s = (i + b) % 2 ? 0.0f : 0.03f;
                check_int8(&r, BATCHES[b], INS[i], OUTS[o], s, act);
            }
    check_int8(&r, 3, 4095, 16, 0.0f, 0);
}

/* linear_int4: the same for int4, over group sizes 32, 64 and 128. */
void test_linear_int4(int level) {
    check_bad_int4();
    if (level == 0) return;
    static const int groups[] = {32, 64, 128};
    pk_rng r = {0x4b1d4ULL + (uint64_t)level};
    for (int i = 0; i < 8; i++)
        for (int o = 0; o < 4; o++)
            for (int b = 0; b < 5; b++) {
                const int act = (i + o + b) % 3;
                const float s = (i + b) % 2 ? 0.0f : 0.03f;
                check_int4(&r, BATCHES[b], INS[i], OUTS[o], groups[(i + o) % 3], s, act);
            }
    check_int4(&r, 3, 4095, 16, 32, 0.0f, 0);
}
