/* conv_gemm / conv_csr / conv_depthwise: the kernel serving each level against a
 * double-precision statement of its contract (pyinfer_kernels.h) on random inputs: output
 * widths around the 8- and 16-column tiles, channel blocks with remainders, groups, row
 * pitches wider than the output, stride, dilation and padding, bias and activations;
 * buffers of exact size, so AddressSanitizer sees any read past them. */
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

static float *random_floats(pk_rng *r, int64_t n) {
    float *a = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) a[i] = pk_rng_float(r);
    return a;
}

/* got against want (within 1e-5 of scale) over n outputs. */
static void check_close(const char *what, int level, int64_t n, const float *got,
                        const float *want, const double *scale) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!pk_close(got[i], want[i], scale[i], 1e-5) && bad++ == 0) first = i;
    CHECK(bad == 0, "%s [%s]: %lld of %lld outputs differ, first at %lld (%g vs %g)", what,
          pk_isa_name(level), (long long)bad, (long long)n, (long long)first,
          first >= 0 ? got[first] : 0.0, first >= 0 ? want[first] : 0.0);
}

/* Offsets into one image: a random shift per k, leaving room for the output span. */
static int64_t *random_offsets(pk_rng *r, int64_t n, int64_t max_offset) {
    int64_t *off = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) off[i] = pk_rng_below(r, max_offset + 1);
    return off;
}

static void gemm_case(pk_rng *r, int level, int64_t images, int64_t groups, int64_t og,
                      int64_t kg, int64_t out_h, int64_t out_w, int64_t pitch_extra, int act) {
    const int64_t x_row = out_w + pitch_extra, max_off = 23;
    const int64_t span = (out_h - 1) * x_row + out_w, x_image = max_off + span;
    const int64_t out_c = groups * og, ny = images * out_c * out_h * out_w, mr = PK_CONV_GEMM_MR;
    const int64_t blocks = (og + mr - 1) / mr;
    float *x = random_floats(r, images * x_image), *wt = random_floats(r, out_c * kg);
    float *bias = random_floats(r, out_c);
    int64_t *off = random_offsets(r, groups * kg, max_off);
    float *w = calloc((size_t)(groups * blocks * kg * mr + 1), sizeof(float));
    for (int64_t g = 0; g < groups; g++)
        for (int64_t o = 0; o < og; o++)
            for (int64_t k = 0; k < kg; k++)
                w[((g * blocks + o / mr) * kg + k) * mr + o % mr] = wt[(g * og + o) * kg + k];
    float *got = malloc((size_t)ny * sizeof(float)), *want = malloc((size_t)ny * sizeof(float));
    double *scale = malloc((size_t)ny * sizeof(double));
    const float *b = act == PK_ACT_RELU ? NULL : bias;
    for (int64_t n = 0; n < images; n++)
        for (int64_t oc = 0; oc < out_c; oc++)
            for (int64_t oh = 0; oh < out_h; oh++)
                for (int64_t ow = 0; ow < out_w; ow++) {
                    const int64_t g = oc / og, i = ((n * out_c + oc) * out_h + oh) * out_w + ow;
                    double acc = b ? b[oc] : 0.0, s = b ? fabs(b[oc]) : 0.0;
                    for (int64_t k = 0; k < kg; k++) {
                        const double t = (double)wt[oc * kg + k] *
                                         x[n * x_image + off[g * kg + k] + oh * x_row + ow];
                        acc += t;
                        s += fabs(t);
                    }
                    want[i] = pk_activate((float)acc, act);
                    scale[i] = s;
                }
    const int st = pk_conv_gemm_f32(x, images, x_image, x_row, off, groups, kg, w, og, out_h,
                                    out_w, b, act, got);
    CHECK(st == PK_OK, "conv_gemm status %d", st);
    char what[96];
    snprintf(what, sizeof what, "conv_gemm n=%lld g=%lld og=%lld kg=%lld %lldx%lld pitch+%lld",
             (long long)images, (long long)groups, (long long)og, (long long)kg,
             (long long)out_h, (long long)out_w, (long long)pitch_extra);
    check_close(what, level, ny, got, want, scale);
    free(x), free(wt), free(bias), free(off), free(w), free(got), free(want), free(scale);
}

static void csr_case(pk_rng *r, int level, int64_t images, int64_t out_c, int64_t out_h,
                     int64_t out_w, int64_t pitch_extra, double density, int act) {
    const int64_t x_row = out_w + pitch_extra, max_off = 40;
    const int64_t span = (out_h - 1) * x_row + out_w, x_image = max_off + span;
    const int64_t ny = images * out_c * out_h * out_w;
    int32_t *indptr = malloc((size_t)(out_c + 1) * sizeof(int32_t));
    indptr[0] = 0;
    for (int64_t o = 0; o < out_c; o++) {
        int32_t count = 0;
        for (int k = 0; k < 27; k++) count += pk_rng_unit(r) < density;
        indptr[o + 1] = indptr[o] + count;
    }
    const int64_t nnz = indptr[out_c];
    float *x = random_floats(r, images * x_image), *values = random_floats(r, nnz);
    float *bias = random_floats(r, out_c);
    int64_t *off = random_offsets(r, nnz, max_off);
    float *got = malloc((size_t)ny * sizeof(float)), *want = malloc((size_t)ny * sizeof(float));
    double *scale = malloc((size_t)ny * sizeof(double));
    const float *b = act == PK_ACT_RELU ? NULL : bias;
    for (int64_t n = 0; n < images; n++)
        for (int64_t o = 0; o < out_c; o++)
            for (int64_t oh = 0; oh < out_h; oh++)
                for (int64_t ow = 0; ow < out_w; ow++) {
                    const int64_t i = ((n * out_c + o) * out_h + oh) * out_w + ow;
                    double acc = b ? b[o] : 0.0, s = b ? fabs(b[o]) : 0.0;
                    for (int64_t p = indptr[o]; p < indptr[o + 1]; p++) {
                        const double t =
                            (double)values[p] * x[n * x_image + off[p] + oh * x_row + ow];
                        acc += t;
                        s += fabs(t);
                    }
                    want[i] = pk_activate((float)acc, act);
                    scale[i] = s;
                }
    const int st = pk_conv_csr_f32(x, images, x_image, x_row, indptr, off, values, out_c, out_h,
                                   out_w, b, act, got);
    CHECK(st == PK_OK, "conv_csr status %d", st);
    char what[96];
    snprintf(what, sizeof what, "conv_csr n=%lld out=%lld %lldx%lld pitch+%lld",
             (long long)images, (long long)out_c, (long long)out_h, (long long)out_w,
             (long long)pitch_extra);
    check_close(what, level, ny, got, want, scale);
    free(indptr), free(x), free(values), free(bias), free(off), free(got), free(want);
    free(scale);
}

static int64_t out_size(int64_t size, int64_t pad, int64_t k, int64_t s, int64_t d) {
    return (size + 2 * pad - (k - 1) * d - 1) / s + 1;
}

/* c: n, channels, height, width, multiplier, k, stride, dilation, padding */
static void depthwise_case(pk_rng *r, int level, const int64_t c[9], int act) {
    const int64_t n = c[0], ch = c[1], h = c[2], wd = c[3], out_c = ch * c[4], k = c[5];
    const int64_t st = c[6], dl = c[7], pad = c[8];
    const int64_t oh = out_size(h, pad, k, st, dl), ow = out_size(wd, pad, k, st, dl);
    const int64_t ny = n * out_c * oh * ow;
    float *x = random_floats(r, n * ch * h * wd), *w = random_floats(r, out_c * k * k);
    float *bias = random_floats(r, out_c);
    float *got = malloc((size_t)ny * sizeof(float)), *want = malloc((size_t)ny * sizeof(float));
    double *scale = malloc((size_t)ny * sizeof(double));
    const float *b = act == PK_ACT_RELU ? NULL : bias;
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out_c; o++)
            for (int64_t y = 0; y < oh; y++)
                for (int64_t xo = 0; xo < ow; xo++) {
                    const int64_t j = ((i * out_c + o) * oh + y) * ow + xo;
                    double acc = b ? b[o] : 0.0, s = b ? fabs(b[o]) : 0.0;
                    for (int64_t ky = 0; ky < k; ky++)
                        for (int64_t kx = 0; kx < k; kx++) {
                            const int64_t ih = y * st + ky * dl - pad, iw = xo * st + kx * dl - pad;
                            if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                            const double t = (double)w[(o * k + ky) * k + kx] *
                                             x[((i * ch + o / c[4]) * h + ih) * wd + iw];
                            acc += t;
                            s += fabs(t);
                        }
                    want[j] = pk_activate((float)acc, act);
                    scale[j] = s;
                }
    const int status = pk_conv_depthwise_f32(x, n, ch, h, wd, w, out_c, k, k, st, st, dl, dl,
                                             pad, pad, oh, ow, b, act, got);
    CHECK(status == PK_OK, "conv_depthwise status %d", status);
    char what[96];
    snprintf(what, sizeof what, "conv_depthwise c=%lld %lldx%lld x%lld k=%lld s=%lld d=%lld p=%lld",
             (long long)ch, (long long)h, (long long)wd, (long long)c[4], (long long)k,
             (long long)st, (long long)dl, (long long)pad);
    check_close(what, level, ny, got, want, scale);
    free(x), free(w), free(bias), free(got), free(want), free(scale);
}

void test_conv_gemm(int level) {
    pk_rng r = {0x6e33ULL + (uint64_t)level};
    /* images, groups, og, kg, out_h, out_w, pitch_extra */
    static const int64_t cases[][7] = {
        {1, 1, 1, 1, 1, 1, 0},   {1, 1, 6, 9, 3, 16, 2},  {2, 1, 7, 27, 4, 17, 2},
        {1, 2, 5, 18, 5, 8, 0},  {1, 3, 13, 4, 2, 33, 1}, {2, 1, 12, 200, 2, 15, 2},
        {1, 1, 4, 7, 6, 5, 3},   {3, 2, 1, 3, 1, 40, 0},  {1, 1, 6, 1, 7, 23, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t *c = cases[i];
        gemm_case(&r, level, c[0], c[1], c[2], c[3], c[4], c[5], c[6], (int)(i % 3));
    }
    float x[4] = {0}, y[4];
    const int64_t off[1] = {0};
    CHECK(pk_conv_gemm_f32(x, 1, 4, 1, off, 0, 1, x, 1, 2, 2, NULL, 0, y) == PK_ERR_ARG,
          "groups 0");
    CHECK(pk_conv_gemm_f32(x, 1, 4, 1, off, 1, 1, x, 1, 2, 2, NULL, 0, y) == PK_ERR_ARG,
          "row pitch below the output width");
    CHECK(pk_conv_gemm_f32(NULL, 1, 4, 2, off, 1, 1, x, 1, 2, 2, NULL, 0, y) == PK_ERR_ARG,
          "x NULL");
}

void test_conv_csr(int level) {
    pk_rng r = {0xc5ULL + (uint64_t)level};
    /* images, out_c, out_h, out_w, pitch_extra, density in percent */
    static const int64_t cases[][6] = {
        {1, 1, 1, 1, 0, 100}, {1, 5, 3, 8, 2, 50},  {2, 7, 4, 17, 2, 30}, {1, 3, 2, 64, 0, 40},
        {1, 4, 3, 70, 1, 20}, {1, 9, 5, 129, 0, 10}, {2, 3, 2, 5, 3, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t *c = cases[i];
        csr_case(&r, level, c[0], c[1], c[2], c[3], c[4], (double)c[5] / 100.0, (int)(i % 3));
    }
    float x[4] = {0}, y[4];
    const int32_t indptr[2] = {0, 0};
    CHECK(pk_conv_csr_f32(x, 1, 4, 2, indptr, NULL, NULL, -1, 2, 2, NULL, 0, y) == PK_ERR_ARG,
          "out_channels < 0");
    CHECK(pk_conv_csr_f32(x, 1, 4, 2, NULL, NULL, NULL, 1, 2, 2, NULL, 0, y) == PK_ERR_ARG,
          "indptr NULL");
    CHECK(pk_conv_csr_f32(x, 1, 4, 2, indptr, NULL, NULL, 1, 2, 2, NULL, 3, y) == PK_ERR_ARG,
          "activation 3");
}

void test_conv_depthwise(int level) {
    pk_rng r = {0xd3ULL + (uint64_t)level};
    /* n, channels, height, width, multiplier, k, stride, dilation, padding */
    static const int64_t cases[][9] = {
        {1, 1, 1, 1, 1, 1, 1, 1, 0},   {1, 3, 7, 9, 1, 3, 1, 1, 1},  {2, 4, 12, 21, 1, 3, 1, 1, 1},
        {1, 2, 9, 17, 2, 3, 2, 1, 1},  {1, 3, 11, 13, 1, 5, 1, 2, 4}, {1, 2, 8, 33, 1, 5, 1, 1, 2},
        {1, 5, 6, 6, 1, 3, 2, 2, 2},   {2, 1, 10, 40, 3, 1, 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        depthwise_case(&r, level, cases[i], (int)(i % 3));
    float x[4] = {0}, y[4];
    CHECK(pk_conv_depthwise_f32(x, 1, 2, 2, 2, x, 3, 1, 1, 1, 1, 1, 1, 0, 0, 2, 2, NULL, 0, y) ==
              PK_ERR_ARG,
          "out_channels not a multiple of channels");
    CHECK(pk_conv_depthwise_f32(x, 1, 1, 2, 2, NULL, 1, 1, 1, 1, 1, 1, 1, 0, 0, 2, 2, NULL, 0,
                                y) == PK_ERR_ARG,
          "w NULL");
}
