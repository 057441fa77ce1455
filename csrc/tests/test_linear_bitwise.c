/* linear_binary / linear_pow2 / conv_binary: bad arguments refused; from the first SIMD
 * level on, the dispatched kernels against the portable scalar ones on random weights (in
 * tails of every SIMD width, several column blocks, out not a multiple of the row blocks,
 * batch 1 and odd batches, bias and activations, zero and NaN activation rows): binary
 * activations and int8 activations bit for bit, float activations within tolerance; bad
 * arguments refused by the public entries. Also the binary conv2d kernel, bit for bit
 * against its scalar version. */
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

/* x [batch, in] in [-2, 2), row 1 all zero, row 3 with a NaN when the batch has them. */
static float *bw_make_x(pk_rng *r, int64_t batch, int64_t in) {
    float *x = malloc((size_t)(batch * in) * sizeof(float) + 1);
    for (int64_t i = 0; i < batch * in; i++) x[i] = 2.0f * pk_rng_float(r);
    if (batch > 1) memset(x + in, 0, (size_t)in * sizeof(float));
    if (batch > 3) x[3 * in + in / 2] = NAN;
    return x;
}

typedef struct {
    int64_t in, out;
    const uint64_t *bits;
    const uint8_t *codes;
    const float *alpha, *bias;
    int mode, activation;
} bw_case;

static int bw_run(const bw_case *c, const float *x, int64_t batch, float *y) {
    if (c->bits)
        return pk_linear_binary_f32(x, batch, c->in, c->bits, c->alpha, c->out, c->mode, c->bias,
                                    c->activation, y);
    return pk_linear_pow2_f32(x, batch, c->in, c->codes, c->alpha, c->out, c->mode, c->bias,
                              c->activation, y);
}

/* The case at `level` and at scalar: equal bits when `exact`, else close. */
static void bw_compare(const char *what, const bw_case *c, int64_t batch, const float *x,
                       int level, int exact) {
    float *y1 = malloc((size_t)(batch * c->out) * sizeof(float) + 1);
    float *y2 = malloc((size_t)(batch * c->out) * sizeof(float) + 1);
    pk_set_isa_cap(level);
    const int s1 = bw_run(c, x, batch, y1);
    pk_set_isa_cap(0);
    const int s2 = bw_run(c, x, batch, y2);
    pk_set_isa_cap(level);
    CHECK(s1 == PK_OK && s2 == PK_OK, "%s: status %d / %d", what, s1, s2);
    int64_t bad = 0, first = -1;
    for (int64_t b = 0; b < batch; b++) {
        double scale = 0.0; /* bounds |sum of terms| of a row */
        for (int64_t k = 0; k < c->in; k++) scale += fabs((double)x[b * c->in + k]);
        for (int64_t o = 0; o < c->out; o++) {
            const int64_t i = b * c->out + o;
            const double s = scale * c->alpha[o] + (c->bias ? fabs(c->bias[o]) : 0.0);
            const int ok = exact ? pk_same(y1[i], y2[i]) : pk_close(y1[i], y2[i], s, 1e-5);
            if (!ok && bad++ == 0) first = i;
        }
    }
    CHECK(bad == 0, "%s mode=%d batch=%lld in=%lld out=%lld: %lld outputs differ, first at "
          "%lld (%g vs %g)", what, c->mode, (long long)batch, (long long)c->in,
          (long long)c->out, (long long)bad, (long long)first, first >= 0 ? y1[first] : 0.0,
          first >= 0 ? y2[first] : 0.0);
    free(y1);
    free(y2);
}

/* binary (pow2 == 0) or pow2 weights of one size, both activation modes. */
static void check_sizes(pk_rng *r, int64_t batch, int64_t in, int64_t out, int level, int pow2) {
    const int64_t words = (in + 63) / 64, row_bytes = (in + 1) / 2;
    uint64_t *bits = malloc((size_t)(out * words) * sizeof(uint64_t) + 1);
    uint8_t *codes = malloc((size_t)(out * row_bytes) + 1);
    float *alpha = malloc((size_t)out * sizeof(float)), *bias = malloc((size_t)out * sizeof(float));
    for (int64_t o = 0; o < out; o++) {
        for (int64_t i = 0; i < words; i++) bits[o * words + i] = pk_rng_next(r);
        if (in % 64) bits[o * words + words - 1] &= (1ULL << (in % 64)) - 1; /* padding 0 */
        for (int64_t j = 0; j < row_bytes; j++) {
            int lo = (int)pk_rng_below(r, 16), hi = (int)pk_rng_below(r, 16);
            if (lo == 8) lo = 0; /* code 8 is invalid */
            if (hi == 8 || (in % 2 && j == row_bytes - 1)) hi = 0;
            codes[o * row_bytes + j] = (uint8_t)(lo | hi << 4);
        }
        alpha[o] = o == 0 ? 0.0f : (float)pk_rng_unit(r); /* row 0: all-zero weights */
        bias[o] = pk_rng_float(r);
    }
    float *x = bw_make_x(r, batch, in);
    for (int mode = 0; mode < 2; mode++) {
        bw_case c = {in, out, pow2 ? NULL : bits, pow2 ? codes : NULL, alpha,
                     batch % 2 ? bias : NULL, mode, (int)(batch % 3)};
        bw_compare(pow2 ? "pow2" : "binary", &c, batch, x, level, mode == 1);
    }
    free(bits);
    free(codes);
    free(alpha);
    free(bias);
    free(x);
}

static void check_bad_binary(void) {
    const uint64_t bits[2] = {0, 0};
    const float x[4] = {0}, alpha[2] = {1, 1};
    float y[4];
    CHECK(pk_linear_binary_f32(x, -1, 2, bits, alpha, 2, 0, NULL, 0, y) == PK_ERR_ARG, "batch<0");
    CHECK(pk_linear_binary_f32(x, 1, 2, bits, alpha, 2, 2, NULL, 0, y) == PK_ERR_ARG, "mode 2");
    CHECK(pk_linear_binary_f32(x, 1, 2, bits, alpha, 2, 0, NULL, 3, y) == PK_ERR_ARG, "act 3");
    CHECK(pk_linear_binary_f32(NULL, 1, 2, bits, alpha, 2, 1, NULL, 0, y) == PK_ERR_ARG, "x NULL");
    CHECK(pk_linear_binary_f32(x, 1, 2, NULL, alpha, 2, 0, NULL, 0, y) == PK_ERR_ARG, "w NULL");
    CHECK(pk_linear_binary_f32(x, 0, 2, bits, alpha, 2, 1, NULL, 0, y) == PK_OK, "empty batch");
}

static void check_bad_pow2(void) {
    const uint8_t codes[2] = {0, 0};
    const float x[4] = {0}, alpha[2] = {1, 1};
    float y[4];
    CHECK(pk_linear_pow2_f32(x, 1, 2, codes, alpha, -2, 0, NULL, 0, y) == PK_ERR_ARG, "out<0");
    CHECK(pk_linear_pow2_f32(x, 1, 2, codes, NULL, 2, 1, NULL, 0, y) == PK_ERR_ARG, "alpha NULL");
    CHECK(pk_linear_pow2_f32(x, 1, 2, codes, alpha, 2, 1, NULL, 0, NULL) == PK_ERR_ARG, "y NULL");
    CHECK(pk_linear_pow2_f32(x, 1, 264209, codes, alpha, 2, 1, NULL, 0, y) == PK_ERR_OVERFLOW,
          "int8 accumulation limit");
    CHECK(pk_linear_pow2_f32(x, 0, 2, codes, alpha, 2, 1, NULL, 0, y) == PK_OK, "empty batch");
}

static void check_bad_conv_binary(void) {
    const uint64_t w[9] = {0};
    const float x[16] = {0}, alpha[1] = {1};
    float y[16];
    CHECK(pk_conv_binary_f32(x, 1, 1, 4, 4, 2, w, alpha, 1, 3, 3, 1, 1, 1, 1, 1, 1, 4, 4, NULL,
                             0, y) == PK_ERR_ARG,
          "channels not divisible by groups");
    CHECK(pk_conv_binary_f32(x, 1, 1, 4, 4, 1, w, alpha, 1, 3, 3, 0, 1, 1, 1, 1, 1, 4, 4, NULL,
                             0, y) == PK_ERR_ARG,
          "stride 0");
    CHECK(pk_conv_binary_f32(x, 1, 1, 4, 4, 1, NULL, alpha, 1, 3, 3, 1, 1, 1, 1, 1, 1, 4, 4,
                             NULL, 0, y) == PK_ERR_ARG,
          "wbits NULL");
    CHECK(pk_conv_binary_f32(x, 1, 1, 4, 4, 1, w, alpha, 1, 17, 17, 1, 1, 1, 1, 8, 8, 4, 4,
                             NULL, 0, y) == PK_ERR_ARG,
          "patch past the stack limit");
    CHECK(pk_conv_binary_f32(x, 0, 1, 4, 4, 1, w, alpha, 1, 3, 3, 1, 1, 1, 1, 1, 1, 4, 4, NULL,
                             0, y) == PK_OK,
          "empty batch");
}

/* conv2d with binary weights and activations: the dispatched kernel against the scalar one,
 * bit for bit (padding, stride, dilation, groups, one to three words per pixel, rows
 * of 1..19 output columns: the 2 x 4 tiles and their remainders; channel octets and
 * their remainder, images of several 256-pixel packing chunks and a pixel tail). */
static void check_conv_binary(pk_rng *r, int level) {
    /* n, c, h, w, groups, out, k, stride, dil, pad */
    static const int64_t cases[][10] = {
        {1, 64, 9, 19, 1, 9, 3, 1, 1, 1},  {2, 70, 6, 11, 1, 5, 3, 1, 1, 1},
        {1, 8, 7, 21, 2, 6, 5, 1, 1, 2},   {1, 130, 3, 17, 1, 5, 1, 1, 1, 0},
        {1, 5, 12, 23, 1, 4, 3, 2, 2, 2},  {1, 3, 1, 1, 1, 2, 3, 1, 1, 1},
        {2, 32, 5, 13, 2, 6, 3, 1, 1, 1},  {1, 128, 4, 16, 1, 3, 3, 1, 1, 1},
        {2, 16, 17, 19, 1, 4, 3, 1, 1, 1}, {1, 76, 23, 13, 1, 3, 3, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t *q = cases[i];
        const int64_t n = q[0], c = q[1], h = q[2], w = q[3], g = q[4], o = q[5], k = q[6];
        const int64_t st = q[7], dl = q[8], pad = q[9], cg = c / g, cw = (cg + 63) / 64;
        const int64_t oh = (h + 2 * pad - dl * (k - 1) - 1) / st + 1;
        const int64_t ow = (w + 2 * pad - dl * (k - 1) - 1) / st + 1;
        const int64_t nw = o * k * k * cw;
        uint64_t *wb = malloc((size_t)nw * sizeof(uint64_t));
        float *alpha = malloc((size_t)o * sizeof(float)), *bias = malloc((size_t)o * sizeof(float));
        float *x = malloc((size_t)(n * c * h * w) * sizeof(float));
        float *y1 = malloc((size_t)(n * o * oh * ow) * sizeof(float));
        float *y2 = malloc((size_t)(n * o * oh * ow) * sizeof(float));
        for (int64_t j = 0; j < nw; j++) {
            wb[j] = pk_rng_next(r);
            if (cg % 64 && j % cw == cw - 1) wb[j] &= (1ULL << (cg % 64)) - 1; /* padding 0 */
        }
        for (int64_t j = 0; j < o; j++) alpha[j] = (float)pk_rng_unit(r), bias[j] = pk_rng_float(r);
        for (int64_t j = 0; j < n * c * h * w; j++) x[j] = 2.0f * pk_rng_float(r);
        pk_set_isa_cap(level);
        const int s1 = pk_conv_binary_f32(x, n, c, h, w, g, wb, alpha, o, k, k, st, st, dl, dl,
                                          pad, pad, oh, ow, i % 2 ? bias : NULL, (int)(i % 3), y1);
        pk_set_isa_cap(0);
        const int s2 = pk_conv_binary_f32(x, n, c, h, w, g, wb, alpha, o, k, k, st, st, dl, dl,
                                          pad, pad, oh, ow, i % 2 ? bias : NULL, (int)(i % 3), y2);
        pk_set_isa_cap(level);
        int64_t bad = 0;
        for (int64_t j = 0; j < n * o * oh * ow; j++) bad += !pk_same(y1[j], y2[j]);
        CHECK(s1 == PK_OK && s2 == PK_OK && bad == 0, "conv binary case %zu: status %d / %d, "
              "%lld outputs differ", i, s1, s2, (long long)bad);
        free(wb);
        free(alpha);
        free(bias);
        free(x);
        free(y1);
        free(y2);
    }
}

static const int64_t INS[] = {1, 7, 31, 32, 63, 64, 65, 130, 1025, 4097};
static const int64_t OUTS[] = {1, 5, 9, 70}; /* 70: several row panels and a partial one */
static const int64_t BATCHES[] = {1, 3, 4, 5, 17};

static void check_all_sizes(int level, int pow2) {
    pk_rng r = {0x9e3779b97f4a7c15ULL + (uint64_t)level + (uint64_t)pow2};
    for (size_t i = 0; i < sizeof INS / sizeof INS[0]; i++)
        for (size_t o = 0; o < sizeof OUTS / sizeof OUTS[0]; o++)
            for (size_t b = 0; b < sizeof BATCHES / sizeof BATCHES[0]; b++)
                check_sizes(&r, BATCHES[b], INS[i], OUTS[o], level, pow2);
}

/* The scalar kernels are the reference of these tests: at level 0 only the refusals. */
void test_linear_binary(int level) {
    check_bad_binary();
    if (level > 0) check_all_sizes(level, 0);
}

void test_linear_pow2(int level) {
    check_bad_pow2();
    if (level > 0) check_all_sizes(level, 1);
}

void test_conv_binary(int level) {
    check_bad_conv_binary();
    pk_rng r = {0xb17c0411ULL + (uint64_t)level};
    if (level > 0) check_conv_binary(&r, level);
}
