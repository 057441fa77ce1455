/* int8 linear, AVX2. Rows of x are quantized with AVX2 (same float32 division and
 * round-half-to-even as the reference), then register tiles of up to 4 row blocks
 * (8 rows each, one per 32-bit lane) x up to 4 batch rows accumulate exact int32 sums
 * (linear_int8_body.h): vpmaddubsw multiplies |x| (u8) by w*sign(x) (s8) -- both within
 * 0..127 in magnitude, so a pair sums to at most 2*127*127 = 32258 and never saturates
 * int16 -- and vpmaddwd by ones widens the pairs to int32. */
#include "pk_avx2.h"

/* The AVX2 twin of pk_quantize_row_scalar: same results bit for bit. When qabs is not
 * NULL it also receives |q| as bytes. */
void pk_quantize_row_avx2(const float *x, int64_t in, int64_t ldq, float act_scale, int8_t *q,
                          uint8_t *qabs, float *scale, unsigned char *bad) {
    int nonfinite = 0;
    const float amax = pk_absmax_avx2(x, in, &nonfinite);
    memset(q, 0, (size_t)ldq);
    if (qabs) memset(qabs, 0, (size_t)ldq);
    *bad = (unsigned char)nonfinite;
    if (nonfinite) {
        *scale = 0.0f;
        return;
    }
    float s = act_scale > 0.0f ? act_scale : amax / 127.0f;
    *scale = s;
    if (!(s > 0.0f)) return;
    const __m256 vs = _mm256_set1_ps(s);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t k = 0;
    for (; k + 32 <= in; k += 32) {
        __m256i a = pk_quant8(x + k, vs), b = pk_quant8(x + k + 8, vs);
        __m256i c = pk_quant8(x + k + 16, vs), d = pk_quant8(x + k + 24, vs);
        __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        bytes = _mm256_permutevar8x32_epi32(bytes, order);
        _mm256_storeu_si256((__m256i *)(q + k), bytes);
        if (qabs) _mm256_storeu_si256((__m256i *)(qabs + k), _mm256_abs_epi8(bytes));
    }
    for (; k < in; k++) {
        float r = nearbyintf(x[k] / s);
        r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
        q[k] = (int8_t)r;
        if (qabs) qabs[k] = (uint8_t)(r < 0 ? -r : r);
    }
}

/* |x| * (w sign x) in int16 pairs (never saturating, see above), widened to int32 */
#define PK_I8_DOT(acc, a, b) \
    _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((a), (b)), _mm256_set1_epi16(1)))
#define PK_I8_NAME pk_linear_int8_avx2
#include "linear_int8_body.h"
