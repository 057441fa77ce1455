/* int4 linear, AVX2. Rows of x are quantized as for int8. Each 32-byte weight tile
 * splits (& 0x0F, >> 4) into two 8-row x 4-k tiles of unsigned nibbles u = q + 8; a row
 * per 32-bit lane, vpmaddubsw multiplies u (0..15) by the broadcast int8 x: a pair is at
 * most 2*15*127 = 3810 in magnitude, so the 8 products of 32 k sum exactly in int16
 * before one vpmaddwd widens them (the tiles and the driver: linear_int4_body.h). */
#include <immintrin.h>

/* one byte column of nibbles x int8 in int16 pairs, exact (see above) */
#define PK_I4_DOT(part, lo, xl, hi, xh)                                                 \
    _mm256_add_epi16((part), _mm256_add_epi16(_mm256_maddubs_epi16((lo), (xl)),          \
                                              _mm256_maddubs_epi16((hi), (xh))))
#define PK_I4_WIDEN(acc, part) _mm256_add_epi32((acc), _mm256_madd_epi16((part), _mm256_set1_epi16(1)))
#define PK_I4_NAME pk_linear_int4_avx2
#include "linear_int4_body.h"

