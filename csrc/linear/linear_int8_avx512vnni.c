/* int8 linear, AVX-512 VNNI: the tiles of linear_int8_body.h with one vpdpbusd (on
 * 256-bit vectors, AVX512VL: on Zen 4 and Intel cores two of them per cycle do as many
 * products as one 512-bit one, and they keep the 8-row layout of the packed weights) per
 * 8 rows x 4 k. Its operands are x + 128 (u8) and w (s8), corrected by 128 * the row sums
 * in the epilogue (PK_I8_OFFSET): vpdpbusd adds the four products in int32 (no int16
 * stage that could saturate). Rows of x are quantized by the AVX2 code. */
#include <immintrin.h>

#include "pk_internal.h"

#define PK_I8_DOT(acc, a, b) _mm256_dpbusd_epi32((acc), (a), (b))
#define PK_I8_OFFSET
#define PK_I8_NAME linear_int8_offset
static int linear_int8_offset(const float *x, int64_t batch, int64_t in_features,
                              const int8_t *packed, const float *scale, int64_t out_features,
                              float act_scale, const float *bias, int activation, float *y);
#include "linear_int8_body.h"

int pk_linear_int8_avx512vnni(const float *x, int64_t batch, int64_t in_features,
                              const int8_t *packed, const float *scale, int64_t out_features,
                              float act_scale, const float *bias, int activation, float *y) {
    /* Batch 1 streams the weights once, and the row sums' extra dot products cost more
     * than AVX2's vpsignb there (6 % on a Fashion-MNIST MLP, Zen 4); from batch 2 on the
     * offset tiles win (1.3x at batch 2, 2.2x at 64). Same results either way. */
    if (batch == 1)
        return pk_linear_int8_avx2(x, batch, in_features, packed, scale, out_features,
                                   act_scale, bias, activation, y);
    return linear_int8_offset(x, batch, in_features, packed, scale, out_features, act_scale,
                              bias, activation, y);
}
