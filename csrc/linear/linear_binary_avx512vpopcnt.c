/* Binary (1-bit) linear, AVX-512 with VPOPCNTDQ. Binary activations: the XNOR-popcount
 * driver of linear_binary_xnor_body.h with vpopcntq counting 8 words per instruction --
 * one broadcast weight word against the 8 interleaved activation rows of a block, or 8
 * consecutive words of 4 weight rows against one activation row (batch 1). Float
 * activations: the AVX2 table lookups (pk_linear_binary_float_avx2). */
#include <immintrin.h>

#include "pk_internal.h"

/* pop[j] = popcount(w ^ x_j), j < 8: xi[k] is word k of the block's 8 rows, one zmm */
static void xnor_rows8(const uint64_t *w, const uint64_t *xi, int64_t words, uint64_t *pop) {
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    int64_t k = 0;
    for (; k + 2 <= words; k += 2) { /* two chains: vpopcntq + vpaddq latency */
        const __m512i u0 = _mm512_set1_epi64((long long)w[k]);
        const __m512i u1 = _mm512_set1_epi64((long long)w[k + 1]);
        const __m512i v0 = _mm512_loadu_si512((const void *)(xi + 8 * k));
        const __m512i v1 = _mm512_loadu_si512((const void *)(xi + 8 * k + 8));
        a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(u0, v0)));
        a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_xor_si512(u1, v1)));
    }
    if (k < words) {
        const __m512i u = _mm512_set1_epi64((long long)w[k]);
        const __m512i v = _mm512_loadu_si512((const void *)(xi + 8 * k));
        a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(u, v)));
    }
    _mm512_storeu_si512((void *)pop, _mm512_add_epi64(a0, a1));
}

/* pop[r] = popcount(w_r ^ x) for the 4 weight rows w + r * words, r < 4; the last
 * partial run of 8 words is a masked load (reads nothing past the rows) */
static void xnor_weights4(const uint64_t *w, int64_t words, const uint64_t *x, uint64_t *pop) {
    __m512i a[4];
    for (int r = 0; r < 4; r++) a[r] = _mm512_setzero_si512();
    for (int64_t k = 0; k < words; k += 8) {
        const __mmask8 m = words - k >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (words - k)) - 1);
        const __m512i xv = _mm512_maskz_loadu_epi64(m, x + k);
        for (int r = 0; r < 4; r++) {
            const __m512i wv = _mm512_maskz_loadu_epi64(m, w + r * words + k);
            a[r] = _mm512_add_epi64(a[r], _mm512_popcnt_epi64(_mm512_xor_si512(wv, xv)));
        }
    }
    for (int r = 0; r < 4; r++) pop[r] = (uint64_t)_mm512_reduce_add_epi64(a[r]);
}

#define PK_BINARY_NAME pk_linear_binary_avx512vpopcnt
#include "linear_binary_xnor_body.h"
