/* conv_int8 / depthwise int8: the dispatched kernel (and from the first SIMD level on also
 * the portable scalar one) against a plain-loop statement of the semantics (per-image
 * quantization, exact integer sums), bit for bit: kernel 1/3/5, stride 1/2, dilation 1/2,
 * padding, groups 1/2 with odd channels per group, batch 1 and 3, dynamic and static
 * scales, bias and activations, inputs at rounding ties, a zero image (scale 0: y =
 * act(bias), no NaN) and an image holding NaN; then bad arguments refused by the public
 * entries. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

typedef struct {
    int64_t n, c, h, w, groups, out, kh, kw, sh, sw, dh, dw, pt, pl;
} geo;

static int64_t out_size(int64_t size, int64_t pad, int64_t k, int64_t s, int64_t d) {
    return (size + 2 * pad - (k - 1) * d - 1) / s + 1;
}

/* The semantics, written out: quantize each image, sum exactly, then the epilogue. */
static void naive(const geo *g, const float *x, const int8_t *q, const float *scale,
                  float act_scale, const float *bias, int activation, float *y) {
    const int64_t cg = g->c / g->groups, og = g->out / g->groups;
    const int64_t ho = out_size(g->h, g->pt, g->kh, g->sh, g->dh);
    const int64_t wo = out_size(g->w, g->pl, g->kw, g->sw, g->dw);
    const int64_t image = g->c * g->h * g->w;
    for (int64_t n = 0; n < g->n; n++) {
        const float *xn = x + n * image;
        float amax = 0.0f;
        int bad = 0;
        for (int64_t i = 0; i < image; i++) {
            if (!isfinite(xn[i])) bad = 1;
            else if (fabsf(xn[i]) > amax) amax = fabsf(xn[i]);
        }
        const float s = act_scale > 0.0f ? act_scale : amax / 127.0f;
        for (int64_t o = 0; o < g->out; o++)
            for (int64_t oh = 0; oh < ho; oh++)
                for (int64_t ow = 0; ow < wo; ow++) {
                    int32_t acc = 0;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t ky = 0; ky < g->kh; ky++)
                            for (int64_t kx = 0; kx < g->kw; kx++) {
                                const int64_t ih = oh * g->sh + ky * g->dh - g->pt;
                                const int64_t iw = ow * g->sw + kx * g->dw - g->pl;
                                if (bad || ih < 0 || ih >= g->h || iw < 0 || iw >= g->w || !(s > 0))
                                    continue;
                                const int64_t ch = (o / og) * cg + c;
                                float r = nearbyintf(xn[(ch * g->h + ih) * g->w + iw] / s);
                                r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
                                acc += (int32_t)r * q[((o * cg + c) * g->kh + ky) * g->kw + kx];
                            }
                    float v = (float)acc * (s * scale[o]);
                    if (bias) v = v + bias[o];
                    v = bad ? NAN : pk_activate(v, activation);
                    y[((n * g->out + o) * ho + oh) * wo + ow] = v;
                }
    }
}

/* q [out, cg, kh, kw] in the kernel's layout (see pk_conv_int8_f32). */
static int32_t *pack(const geo *g, const int8_t *q) {
    const int64_t cg = g->c / g->groups, og = g->out / g->groups, cg2 = (cg + 1) / 2;
    const int64_t taps = g->kh * g->kw, kg2 = cg2 * taps, mr = PK_CONV_INT8_MR;
    const int64_t blocks = (og + mr - 1) / mr;
    int32_t *w = calloc((size_t)(g->groups * blocks * kg2 * mr), sizeof(int32_t));
    for (int64_t gr = 0; gr < g->groups; gr++)
        for (int64_t o = 0; o < og; o++)
            for (int64_t c2 = 0; c2 < cg2; c2++)
                for (int64_t t = 0; t < taps; t++) {
                    const int8_t *qo = q + (gr * og + o) * cg * taps;
                    const int32_t lo = qo[(2 * c2) * taps + t];
                    const int32_t hi = 2 * c2 + 1 < cg ? qo[(2 * c2 + 1) * taps + t] : 0;
                    w[((gr * blocks + o / mr) * kg2 + c2 * taps + t) * mr + o % mr] =
                        (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16));
                }
    return w;
}

static void run_case(pk_rng *r, geo g, float act_scale, int with_bias, int activation,
                     int level, int ties) {
    const int64_t cg = g.c / g.groups;
    const int64_t ho = out_size(g.h, g.pt, g.kh, g.sh, g.dh);
    const int64_t wo = out_size(g.w, g.pl, g.kw, g.sw, g.dw);
    const int64_t xs = g.n * g.c * g.h * g.w, ys = g.n * g.out * ho * wo;
    const int64_t qs = g.out * cg * g.kh * g.kw;
    float *x = malloc((size_t)xs * sizeof(float)), *scale = malloc((size_t)g.out * 4);
    float *bias = malloc((size_t)g.out * 4);
    int8_t *q = malloc((size_t)qs);
    float *want = malloc((size_t)ys * 4), *fast = malloc((size_t)ys * 4);
    float *slow = malloc((size_t)ys * 4);
    for (int64_t i = 0; i < xs; i++) x[i] = 3.0f * pk_rng_float(r);
    if (ties) /* (n + 1/2) * s and one ulp around it: round half to even of x / s */
        for (int64_t i = 0; i < xs; i++) {
            const float v = (float)(((double)pk_rng_below(r, 300) - 150.0 + 0.5) * act_scale);
            x[i] = i % 3 == 0 ? v : nextafterf(v, i % 3 == 1 ? INFINITY : -INFINITY);
        }
    if (g.n > 1) memset(x + g.c * g.h * g.w, 0, (size_t)(g.c * g.h * g.w) * sizeof(float));
    if (g.n > 2) x[2 * g.c * g.h * g.w + 1] = NAN;
    for (int64_t i = 0; i < qs; i++) q[i] = (int8_t)(pk_rng_below(r, 255) - 127);
    for (int64_t o = 0; o < g.out; o++) {
        scale[o] = 0.01f + 0.01f * (float)pk_rng_unit(r);
        bias[o] = pk_rng_float(r);
    }
    int32_t *w = pack(&g, q);
    const float *b = with_bias ? bias : NULL;
    naive(&g, x, q, scale, act_scale, b, activation, want);
    const int s1 = pk_conv_int8_f32(x, g.n, g.c, g.h, g.w, g.groups, w, scale, act_scale,
                                    g.out, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, ho,
                                    wo, b, activation, fast);
    int s2 = PK_OK; /* at level 0 the dispatched kernel is the scalar one */
    if (level > 0)
        s2 = pk_conv_int8_scalar(x, g.n, g.c, g.h, g.w, g.groups, w, scale, act_scale, g.out,
                                 g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, ho, wo, b,
                                 activation, slow);
    else
        memcpy(slow, fast, (size_t)ys * sizeof(float));
    CHECK(s1 == PK_OK && s2 == PK_OK, "conv_int8 status %d / %d", s1, s2);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < ys; i++)
        if ((!pk_same(fast[i], want[i]) || !pk_same(slow[i], want[i])) && bad++ == 0) first = i;
    CHECK(bad == 0,
          "conv_int8 [%s] n=%lld c=%lld %lldx%lld g=%lld out=%lld k=%lldx%lld s=%lld d=%lld "
          "p=%lld static=%g: %lld outputs differ, first at %lld (%g, %g vs %g)",
          pk_isa_name(level), (long long)g.n, (long long)g.c, (long long)g.h, (long long)g.w,
          (long long)g.groups, (long long)g.out, (long long)g.kh, (long long)g.kw,
          (long long)g.sh, (long long)g.dh, (long long)g.pt, act_scale, (long long)bad,
          (long long)first, first >= 0 ? fast[first] : 0.0, first >= 0 ? slow[first] : 0.0,
          first >= 0 ? want[first] : 0.0);
    if (g.n > 1) { /* the zero image: act(bias), never NaN */
        int nan_found = 0;
        for (int64_t i = g.out * ho * wo; i < 2 * g.out * ho * wo; i++)
            nan_found |= isnan(fast[i]);
        CHECK(!nan_found, "conv_int8: a zero image gave NaN");
    }
    /* depthwise: the same semantics through its own kernel (groups == channels) */
    if (g.groups == g.c) {
        const int s3 = pk_conv_depthwise_int8_f32(x, g.n, g.c, g.h, g.w, q, scale, act_scale,
                                                  g.out, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw,
                                                  g.pt, g.pl, ho, wo, b, activation, fast);
        int64_t diff = 0;
        for (int64_t i = 0; i < ys; i++) diff += !pk_same(fast[i], want[i]);
        CHECK(s3 == PK_OK && diff == 0, "depthwise_int8: status %d, %lld outputs differ", s3,
              (long long)diff);
    }
    free(x), free(scale), free(bias), free(q), free(want), free(fast), free(slow), free(w);
}

static void bad_arguments(void) {
    float x[64] = {0}, y[64], scale[4] = {1, 1, 1, 1};
    int32_t w[64] = {0};
    CHECK(pk_conv_int8_f32(x, 1, 4, 4, 4, 3, w, scale, 0, 4, 1, 1, 1, 1, 1, 1, 0, 0, 4, 4,
                           NULL, 0, y) == PK_ERR_ARG, "channels not divisible by groups");
    CHECK(pk_conv_int8_f32(x, 1, 4, 4, 4, 1, w, scale, 0, 4, 1, 1, 0, 1, 1, 1, 0, 0, 4, 4,
                           NULL, 0, y) == PK_ERR_ARG, "stride 0");
    CHECK(pk_conv_int8_f32(x, 1, 4, 4, 4, 1, w, scale, -1.0f, 4, 1, 1, 1, 1, 1, 1, 0, 0, 4,
                           4, NULL, 0, y) == PK_ERR_ARG, "negative static scale");
    CHECK(pk_conv_int8_f32(x, 1, 4, 4, 4, 1, w, scale, NAN, 4, 1, 1, 1, 1, 1, 1, 0, 0, 4, 4,
                           NULL, 0, y) == PK_ERR_ARG, "NaN static scale");
    CHECK(pk_conv_int8_f32(NULL, 1, 4, 4, 4, 1, w, scale, 0, 4, 1, 1, 1, 1, 1, 1, 0, 0, 4, 4,
                           NULL, 0, y) == PK_ERR_ARG, "null x");
    CHECK(pk_conv_int8_f32(x, 1, 4, 4, 4, 1, w, scale, 0, 4, 1, 1, 1, 1, 1, 1, 0, 0, 4, 4,
                           NULL, 7, y) == PK_ERR_ARG, "unknown activation");
    CHECK(pk_conv_int8_f32(x, 1, 200000, 4, 4, 1, w, scale, 0, 4, 1, 1, 1, 1, 1, 1, 0, 0, 4,
                           4, NULL, 0, y) == PK_ERR_OVERFLOW, "int32 overflow not refused");
    CHECK(pk_conv_int8_f32(x, 0, 4, 4, 4, 1, NULL, NULL, 0, 4, 1, 1, 1, 1, 1, 1, 0, 0, 4, 4,
                           NULL, 0, NULL) == PK_OK, "empty batch");
    CHECK(pk_conv_depthwise_int8_f32(x, 1, 4, 4, 4, NULL, scale, 0, 4, 3, 3, 1, 1, 1, 1, 1,
                                     1, 4, 4, NULL, 0, y) == PK_ERR_ARG, "depthwise null w");
}

void test_conv_int8(int level) {
    pk_rng r = {0x1d8c0ffee5ULL + (uint64_t)level};
    /* n, c, h, w, groups, out, kh, kw, sh, sw, dh, dw, pt, pl */
    static const geo cases[] = {
        {1, 8, 5, 7, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0},    {3, 5, 6, 5, 1, 7, 1, 1, 2, 2, 1, 1, 0, 0},
        {1, 3, 9, 7, 1, 13, 3, 3, 1, 1, 1, 1, 1, 1},   {3, 4, 8, 11, 1, 6, 3, 3, 1, 1, 1, 1, 0, 0},
        {1, 4, 9, 9, 1, 6, 3, 3, 2, 2, 1, 1, 1, 1},    {1, 2, 9, 8, 1, 4, 3, 3, 1, 1, 2, 2, 2, 2},
        {3, 6, 7, 9, 2, 6, 5, 5, 1, 1, 1, 1, 2, 2},    {1, 6, 11, 9, 2, 4, 3, 3, 2, 2, 2, 2, 2, 2},
        {1, 3, 11, 13, 1, 3, 5, 5, 2, 2, 1, 1, 2, 2},  {3, 4, 7, 9, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1},
        {1, 16, 13, 21, 1, 32, 3, 3, 1, 1, 1, 1, 1, 1}, {1, 3, 1, 1, 1, 4, 3, 3, 1, 1, 1, 1, 1, 1},
        {3, 5, 7, 6, 5, 10, 3, 3, 2, 1, 1, 2, 1, 2},
    };
    const int count = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < count; i++) {
        run_case(&r, cases[i], 0.0f, i % 2, i % 3, level, 0);
        run_case(&r, cases[i], 0.01f, 1, (i + 1) % 3, level, 0);
        run_case(&r, cases[i], 0.01f, 0, PK_ACT_NONE, level, 1);
    }
    /* thread-count independence on a size that runs in parallel */
    pk_set_num_threads(1);
    run_case(&r, cases[10], 0.0f, 1, PK_ACT_RELU, level, 0);
    pk_set_num_threads(0);
    bad_arguments();
}
