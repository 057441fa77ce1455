/* GELU, portable C: the exact (erf) form and the tanh form, element by element, on the
 * float32 approximations of eltwise_math.h. NaN and Inf come out as NumPy's float64
 * formulas give them (GELU(-Inf) is NaN: -Inf * 0). */
#include <math.h>
#include <string.h>

#include "ops/eltwise_scalar.h"
#include "pk_internal.h"

/* x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2, written so that the negative tail keeps its
 * relative precision. */
static float gelu_erf(float x) {
    const float a = fabsf(x);
    float phi;
    if (a < PK_GELU_ERFC_FROM) {
        const float z = a * PK_SQRT1_2, z2 = z * z;
        const float half_erf = 0.5f * (z * pk_poly_scalar(z2, PK_ERF_POLY, 6));
        phi = x >= 0.0f ? 0.5f + half_erf : 0.5f - half_erf;
    } else {
        float half_erfc = 0.0f; /* from |x| = 14 on, and for NaN (x * phi is NaN anyway) */
        if (a < PK_GELU_FLAT_FROM) half_erfc = 0.5f * pk_erfc_tail_scalar(a);
        phi = x >= 0.0f ? 1.0f - half_erfc : half_erfc;
    }
    return x * phi;
}

/* 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2 / pi) (x + 0.044715 x^3) */
static float gelu_tanh(float x) {
    const float v = PK_GELU_TANH_K * x * (1.0f + PK_GELU_TANH_C * (x * x));
    return x / (1.0f + pk_exp_scalar(v, 0.0f));
}

int pk_gelu_scalar(const float *x, int64_t n, int approximate, float *y) {
    if (approximate)
        for (int64_t i = 0; i < n; i++) y[i] = gelu_tanh(x[i]);
    else
        for (int64_t i = 0; i < n; i++) y[i] = gelu_erf(x[i]);
    return PK_OK;
}
