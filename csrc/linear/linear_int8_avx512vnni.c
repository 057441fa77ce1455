/* int8 linear, AVX-512 VNNI: the tiles of linear_int8_body.h with one vpdpbusd (on
 * 256-bit vectors, AVX512VL) per 8 rows x 4 k. Its operands are |x| (u8, 0..127) and
 * w * sign(x) (s8), so no zero-point offset or correction term is needed, and vpdpbusd
 * adds the four products in int32 (no int16 stage that could saturate). Rows of x are
 * quantized by the AVX2 code. */
#include <immintrin.h>

#define PK_I8_DOT(acc, a, b) _mm256_dpbusd_epi32((acc), (a), (b))
#define PK_I8_NAME pk_linear_int8_avx512vnni
#include "linear_int8_body.h"
