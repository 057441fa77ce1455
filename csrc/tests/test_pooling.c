/* pk_pool2d_f32: its 2x2 fast path against its general windows, every mode against a
 * plain statement of the window, and the argument checks (under ASan: no read outside x,
 * no write outside y, for windows at every edge). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

/* One output of one plane, as pyinfer/ops/pooling.py defines it. */
static float window(const float *x, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t top,
                    int64_t left, int mode) {
    float m = NAN, sum = 0.0f;
    int64_t taps = 0;
    for (int64_t r = top; r < top + kh; r++)
        for (int64_t c = left; c < left + kw; c++) {
            if (r < 0 || r >= h || c < 0 || c >= w) continue;
            const float v = x[r * w + c];
            m = taps == 0 ? v : ((m != m || m > v) ? m : v);
            sum += v;
            taps++;
        }
    if (mode == PK_POOL_MAX) return m;
    return sum / (mode == PK_POOL_AVG ? (float)(kh * kw) : (float)taps);
}

void test_pool2d(void) {
    pk_rng rng = {0x9001u};
    const int64_t geo[][6] = {/* h, w, kh, kw, stride, pad */
                              {28, 28, 2, 2, 2, 0}, {7, 9, 2, 2, 2, 0}, {9, 9, 3, 3, 2, 1},
                              {5, 6, 3, 2, 1, 1},   {1, 1, 1, 1, 1, 0}, {8, 11, 4, 4, 1, 2}};
    for (size_t g = 0; g < sizeof geo / sizeof geo[0]; g++) {
        const int64_t h = geo[g][0], w = geo[g][1], kh = geo[g][2], kw = geo[g][3];
        const int64_t s = geo[g][4], p = geo[g][5], planes = 3;
        const int64_t oh = (h + 2 * p - kh) / s + 1, ow = (w + 2 * p - kw) / s + 1;
        float *x = malloc((size_t)(planes * h * w) * sizeof(float));
        float *y = malloc((size_t)(planes * oh * ow) * sizeof(float));
        for (int64_t i = 0; i < planes * h * w; i++) x[i] = 8.0f * pk_rng_float(&rng) - 4.0f;
        x[0] = NAN, x[h * w - 1] = -0.0f;
        for (int mode = PK_POOL_MAX; mode <= PK_POOL_AVG_VALID; mode++) {
            CHECK(pk_pool2d_f32(x, planes, h, w, kh, kw, s, s, p, p, oh, ow, mode, y) == PK_OK,
                  "pool2d refused geometry %zu", g);
            int bad = 0;
            for (int64_t q = 0; q < planes; q++)
                for (int64_t i = 0; i < oh; i++)
                    for (int64_t j = 0; j < ow; j++) {
                        const float want = window(x + q * h * w, h, w, kh, kw, i * s - p,
                                                  j * s - p, mode);
                        const float got = y[(q * oh + i) * ow + j];
                        const int same = (isnan(want) && isnan(got)) ||
                                         memcmp(&want, &got, sizeof got) == 0;
                        if (!same && bad++ < 3)
                            CHECK(0, "geometry %zu mode %d (%lld, %lld): %g, want %g", g, mode,
                                  (long long)i, (long long)j, got, want);
                    }
            CHECK(bad == 0, "geometry %zu mode %d: %d values off", g, mode, bad);
        }
        free(x);
        free(y);
    }
    float v = 1.0f, out = 0.0f;
    CHECK(pk_pool2d_f32(&v, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, &out) == PK_ERR_ARG,
          "padding as large as the kernel accepted");
    CHECK(pk_pool2d_f32(&v, 1, 1, 1, 1, 1, 1, 1, 0, 0, 2, 1, 0, &out) == PK_ERR_ARG,
          "a window past the input accepted");
    CHECK(pk_pool2d_f32(&v, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 3, &out) == PK_ERR_ARG,
          "an unknown mode accepted");
    CHECK(pk_pool2d_f32(NULL, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, &out) == PK_ERR_ARG,
          "NULL x accepted");
    CHECK(pk_pool2d_f32(NULL, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, NULL) == PK_OK,
          "no planes refused");
}

/* The pool_max2x2 slot: at the scalar level the portable kernel against window() (the
 * definition), from the first SIMD level on the dispatched kernel against the portable
 * one, bit for bit (NaN in each tap position, -0.0 against 0.0), on every row tail. */
void test_pool_max2x2(int level) {
    pk_rng rng = {0x2a2au};
    for (int64_t ow = 1; ow <= 37; ow++)
        for (int64_t odd = 0; odd <= 1; odd++) { /* an unused last row and column, or not */
            const int64_t oh = 3, planes = 2, h = 2 * oh + odd, w = 2 * ow + odd;
            const int64_t n_in = planes * h * w, n_out = planes * oh * ow;
            float *x = malloc((size_t)n_in * sizeof(float));
            float *y = malloc((size_t)n_out * sizeof(float));
            float *want = malloc((size_t)n_out * sizeof(float));
            for (int64_t i = 0; i < n_in; i++) x[i] = 4.0f * pk_rng_float(&rng) - 2.0f;
            for (int64_t i = 0; i < n_in; i += 5) x[i] = (i / 5) % 2 ? 0.0f : -0.0f;
            x[(ow * 7) % n_in] = NAN, x[(ow * 13 + 1) % n_in] = NAN;
            x[w + 1] = NAN; /* the last tap of output (0, 0) */
            if (level == PK_ISA_SCALAR) {
                for (int64_t p = 0; p < planes; p++)
                    for (int64_t i = 0; i < oh; i++)
                        for (int64_t j = 0; j < ow; j++)
                            want[(p * oh + i) * ow + j] =
                                window(x + p * h * w, h, w, 2, 2, 2 * i, 2 * j, PK_POOL_MAX);
            } else {
                CHECK(pk_pool_max2x2_scalar(x, planes, h, w, oh, ow, want) == PK_OK, "scalar");
            }
            CHECK(pk_kernels()->pool_max2x2(x, planes, h, w, oh, ow, y) == PK_OK, "kernel");
            int bad = 0;
            for (int64_t i = 0; i < n_out; i++) {
                const int same = isnan(want[i]) ? isnan(y[i])
                                                : memcmp(&y[i], &want[i], sizeof(float)) == 0;
                if (!same && bad++ < 3)
                    CHECK(0, "ow %lld odd %lld: y[%lld] = %g, want %g", (long long)ow,
                          (long long)odd, (long long)i, y[i], want[i]);
            }
            CHECK(bad == 0, "ow %lld: %d outputs differ", (long long)ow, bad);
            free(x);
            free(y);
            free(want);
        }
}
