/* The scalar exp and erfc tail of eltwise_math.h, for the portable kernels. */
#ifndef PK_ELTWISE_SCALAR_H
#define PK_ELTWISE_SCALAR_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/eltwise_math.h"

/* c[0] t^(n-1) + ... + c[n-1], Horner. */
static inline float pk_poly_scalar(float t, const float *c, int n) {
    float p = c[0];
    for (int i = 1; i < n; i++) p = p * t + c[i];
    return p;
}

/* 2^n as a float, -126 <= n <= 127. */
static inline float pk_pow2i_scalar(int n) {
    const uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* e^(hi + lo), lo a small correction (|lo| < 1e-3 or so); NaN stays NaN. */
static inline float pk_exp_scalar(float hi, float lo) {
    if (isnan(hi)) return hi;
    if (hi > PK_EXP_MAX) return INFINITY;
    if (hi < PK_EXP_MIN) return 0.0f;
    const float n = rintf(hi * PK_LOG2E);
    float r = hi - n * PK_LN2_HI;
    r = r - n * PK_LN2_LO;
    r = r + lo;
    const float p = 1.0f + (r + (r * r) * pk_poly_scalar(r, PK_EXP_POLY, 6));
    const int ni = (int)n, n1 = ni / 2; /* two factors: 2^n may be subnormal */
    return p * pk_pow2i_scalar(n1) * pk_pow2i_scalar(ni - n1);
}

/* erfc(a / sqrt 2) for sqrt 2 <= a < 14. */
static inline float pk_erfc_tail_scalar(float a) {
    uint32_t bits;
    memcpy(&bits, &a, sizeof bits);
    bits &= PK_SPLIT_MASK;
    float ah;
    memcpy(&ah, &bits, sizeof ah);
    /* -a^2 / 2 = hi + lo, hi exact */
    const float hi = -0.5f * (ah * ah), lo = -0.5f * ((a - ah) * (a + ah));
    const float t = 1.0f / (1.0f + 0.5f * (a * PK_SQRT1_2));
    return pk_exp_scalar(hi, lo) * pk_poly_scalar(t, PK_ERFC_POLY, 10);
}

#endif /* PK_ELTWISE_SCALAR_H */
