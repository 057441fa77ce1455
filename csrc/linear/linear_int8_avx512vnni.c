/* int8 linear, AVX-512 VNNI: the tiles of linear_int8_body.h with one vpdpbusd (on
 * 256-bit vectors, AVX512VL: on Zen 4 and Intel cores two of them per cycle do as many
 * products as one 512-bit one, and they keep the 8-row layout of the packed weights) per
 * 8 rows x 4 k. Its operands are x + 128 (u8) and w (s8), corrected by 128 * the row sums
 * in the epilogue (PK_I8_OFFSET): vpdpbusd adds the four products in int32 (no int16
 * stage that could saturate). Rows of x are quantized by the AVX2 code. */
#include <immintrin.h>

#define PK_I8_DOT(acc, a, b) _mm256_dpbusd_epi32((acc), (a), (b))
#define PK_I8_OFFSET
#define PK_I8_NAME pk_linear_int8_avx512vnni
#include "linear_int8_body.h"
