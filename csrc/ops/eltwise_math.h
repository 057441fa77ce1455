/* Shared by the activation and normalisation kernels: the float32 approximations of exp
 * and erf/erfc (one set of coefficients for every ISA), the row-split helper of the
 * public entries and the slot-level kernel prototypes' conventions.
 *
 * exp: x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite: ln2 in two parts, n ln2_hi exact),
 * e^r = 1 + r + r^2 P(r) with P a degree-5 least-squares (near minimax) fit, 2^n applied
 * as two factors so that results down to the subnormals come out right; relative error
 * below 7e-8 evaluated in float32.
 * erf(z) = z P(z^2) for z < 1 (degree 5), erfc(z) = e^(-z^2) R(1 / (1 + z/2)) for
 * 1 <= z <= 10 (degree 9): near-minimax fits of relative error, below 3e-7 in float32.
 * e^(-z^2) is computed from x = z sqrt 2 split as x_hi + x_lo (x_hi has 12 significant
 * bits, so x_hi^2 is exact): the exponent keeps full precision out in the tail. */
#ifndef PK_ELTWISE_MATH_H
#define PK_ELTWISE_MATH_H

#define PK_EXP_MAX 88.72283f /* e^x overflows above */
#define PK_EXP_MIN -104.0f   /* e^x rounds to 0 below */
#define PK_LOG2E 1.44269504f
#define PK_LN2_HI 0.693359375f
#define PK_LN2_LO -2.12194440e-4f
/* P(r), highest power first */
static const float PK_EXP_POLY[6] = {1.99075555e-4f, 1.39336428e-3f, 8.33328627e-3f,
                                     4.16664667e-2f, 1.66666672e-1f, 0.5f};

/* erf(z) / z as a polynomial in z^2, z < 1 */
static const float PK_ERF_POLY[6] = {-5.63175650e-4f, 4.91764396e-3f, -2.67114043e-2f,
                                     1.12801842e-1f,  -3.76123279e-1f, 1.12837911f};

/* erfc(z) e^(z^2) as a polynomial in t = 1 / (1 + z/2), 1 <= z <= 10 */
static const float PK_ERFC_POLY[10] = {-6.34249449e-2f, 3.11701387e-1f, -5.49392760e-1f,
                                       3.52025390e-1f,  -7.82108679e-2f, 2.24803030e-1f,
                                       2.37252250e-1f,  2.83297509e-1f,  2.82007903e-1f,
                                       2.74866079e-6f};

#define PK_SQRT1_2 0.707106781f
/* GELU's exact form switches from erf to erfc at |x| = sqrt 2 (z = 1) and is x or 0
 * from |x| = 14 on (erfc(14 / sqrt 2) * 14 is below the smallest float) */
#define PK_GELU_ERFC_FROM 1.41421356f
#define PK_GELU_FLAT_FROM 14.0f
/* the tanh form: x / (1 + e^(K x (1 + C x^2))), K = -2 sqrt(2 / pi) */
#define PK_GELU_TANH_K -1.59576912f
#define PK_GELU_TANH_C 0.044715f
/* bits kept of x for x_hi (12 significant bits) */
#define PK_SPLIT_MASK 0xfffff000u

/* Rough cost of one element, in multiply-adds, for pk_threads_for(). */
#define PK_GELU_COST 40.0
#define PK_SOFTMAX_COST 20.0
#define PK_LAYER_NORM_COST 8.0

#endif /* PK_ELTWISE_MATH_H */
