/* Tiny test framework shared by the C test program (the files of csrc/tests): counters,
 * a CHECK macro that reports and counts, a seeded random generator, tolerances. Each slot
 * of the kernel list has a `void test_<slot>(int level)` in one of those files; the
 * program runs them all (test_kernels.c). */
#ifndef PK_TEST_H
#define PK_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "pk_internal.h"

extern long pk_test_passed, pk_test_failed;

/* Count a check; on failure print where and why (printf-style), but keep going. */
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            pk_test_passed++;                                                   \
        } else {                                                                \
            pk_test_failed++;                                                   \
            fprintf(stderr, "FAIL %s:%d [%s] ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
        }                                                                       \
    } while (0)

/* xorshift64*: deterministic across platforms. */
typedef struct { uint64_t s; } pk_rng;

static inline uint64_t pk_rng_next(pk_rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}

/* Uniform in [0, 1). */
static inline double pk_rng_unit(pk_rng *r) { return (double)(pk_rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform in [-1, 1) as float. */
static inline float pk_rng_float(pk_rng *r) { return (float)(2.0 * pk_rng_unit(r) - 1.0); }

/* Uniform integer in [0, n). */
static inline int64_t pk_rng_below(pk_rng *r, int64_t n) {
    return n > 0 ? (int64_t)(pk_rng_next(r) % (uint64_t)n) : 0;
}

/* Do two float results agree? Same NaN-ness and same infinities; finite values within
 * rtol * scale, where scale bounds the magnitude of the summed terms. */
static inline int pk_close(float got, float want, double scale, double rtol) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got)) return got == want;
    return fabs((double)got - (double)want) <= rtol * (scale + 1.0);
}

/* Same value, or both NaN (for results promised bit for bit). */
static inline int pk_same(float a, float b) { return (isnan(a) && isnan(b)) || a == b; }

/* The level changing under running kernels (test_isa_switch.c). */
void test_isa_switch(void);
/* The thread pool (test_pool.c). */
void test_pool(void);
/* Max and average pooling (test_pooling.c). */
void test_pool2d(void);

#endif /* PK_TEST_H */
