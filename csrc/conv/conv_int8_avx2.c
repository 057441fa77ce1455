/* int8 conv2d (groups < channels), AVX2: the x86 primitives (conv_int8_x86.h) with
 * vpmaddwd + vpaddd, then the body. */
#include <immintrin.h>

#define PK_CI8_DOT(acc, a, b) _mm256_add_epi32((acc), _mm256_madd_epi16((a), (b)))
#include "conv_int8_x86.h"
#define PK_CI8_NAME pk_conv_int8_avx2
#include "conv_int8_body.h"
