/* XOR + popcount helper shared by the AVX2 binary linear and conv2d kernels
 * (linear_binary_avx2.c, conv_binary_avx2.c); include only from files built with POPCNT. */
#ifndef PK_LINEAR_BINARY_XNOR_AVX2_H
#define PK_LINEAR_BINARY_XNOR_AVX2_H

#include <immintrin.h>
#include <stdint.h>

/* popcount(w ^ u) over `words` words */
static inline uint64_t pk_xnor_pop_scalar(const uint64_t *w, const uint64_t *u, int64_t words) {
    uint64_t p = 0;
    for (int64_t i = 0; i < words; i++) p += (uint64_t)_mm_popcnt_u64(w[i] ^ u[i]);
    return p;
}

#endif /* PK_LINEAR_BINARY_XNOR_AVX2_H */
