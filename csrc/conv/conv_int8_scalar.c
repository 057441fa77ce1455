/* int8 conv2d (groups < channels), portable C: the driver of conv_int8_body.h with plain
 * loops. The reference the AVX2 kernel is tested against, bit for bit. */
#include "conv_internal.h"

static float ci8_absmax(const float *x, int64_t n, int *nonfinite) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        if (!(a <= FLT_MAX)) *nonfinite = 1;
        else if (a > amax) amax = a;
    }
    return amax;
}

static int ci8_quant_pairs(const float *a, const float *b, int64_t n, float s, int32_t *dst) {
    int nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        const float va = a[i], vb = b ? b[i] : 0.0f;
        if (!(fabsf(va) <= FLT_MAX) || !(fabsf(vb) <= FLT_MAX)) { /* no rint of NaN/Inf */
            nonfinite = 1;
            dst[i] = 0;
            continue;
        }
        dst[i] = ci8_pair(ci8_quant1(va, s), b ? ci8_quant1(vb, s) : 0);
    }
    return nonfinite;
}

static inline int32_t lo16(int32_t v) { return (int16_t)(uint16_t)((uint32_t)v & 0xffffu); }
static inline int32_t hi16(int32_t v) { return (int16_t)(uint16_t)((uint32_t)v >> 16); }

static void ci8_block(const int32_t *xb, const int64_t *off, int64_t kc, const int32_t *wp,
                      int32_t *buf) {
    for (int64_t k = 0; k < kc; k++) {
        const int32_t *b = xb + off[k];
        int32_t xl[CI8_NR], xh[CI8_NR];
        for (int j = 0; j < CI8_NR; j++) xl[j] = lo16(b[j]), xh[j] = hi16(b[j]);
        for (int r = 0; r < CI8_MR; r++) {
            const int32_t wl = lo16(wp[k * CI8_MR + r]), wh = hi16(wp[k * CI8_MR + r]);
            if (!wl && !wh) continue;
            int32_t *acc = buf + r * CI8_NR;
            for (int j = 0; j < CI8_NR; j++) acc[j] += xl[j] * wl + xh[j] * wh;
        }
    }
}

static void ci8_finish(const int32_t *acc, float mul, float bias, int has_bias, int activation,
                       float *out) {
    for (int j = 0; j < CI8_NR; j++) {
        float v = (float)acc[j] * mul;
        if (has_bias) v = v + bias;
        out[j] = pk_activate(v, activation);
    }
}

#define PK_CI8_NAME pk_conv_int8_scalar
#include "conv_int8_body.h"
