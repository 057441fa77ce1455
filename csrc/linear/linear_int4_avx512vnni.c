/* int4 linear, AVX-512 VNNI: the tiles of linear_int4_body.h with vpdpbusd (on 256-bit
 * vectors, AVX512VL) multiplying the unsigned nibbles u = q + 8 (0..15) by the broadcast
 * int8 x and adding each 4 products straight into int32: no int16 stage. The -8 * sum(x)
 * correction is the body's, as in AVX2. Rows of x are quantized by the AVX2 code. */
#include <immintrin.h>

#define PK_I4_DOT(part, lo, xl, hi, xh) \
    _mm256_dpbusd_epi32(_mm256_dpbusd_epi32((part), (lo), (xl)), (hi), (xh))
#define PK_I4_WIDEN(acc, part) _mm256_add_epi32((acc), (part))
#define PK_I4_NAME pk_linear_int4_avx512vnni
#include "linear_int4_body.h"
