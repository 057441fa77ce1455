/* int8 conv2d (groups < channels), AVX-512 VNNI: the x86 primitives (conv_int8_x86.h)
 * with one vpdpwssd (on 256-bit vectors, AVX512VL) in place of vpmaddwd + vpaddd; same
 * int32 sums. Then the body. */
#include <immintrin.h>

#define PK_CI8_DOT(acc, a, b) _mm256_dpwssd_epi32((acc), (a), (b))
#include "conv_int8_x86.h"
#define PK_CI8_NAME pk_conv_int8_avx512vnni
#include "conv_int8_body.h"
