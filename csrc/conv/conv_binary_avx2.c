/* Binary weights x binary activations conv2d, AVX2: the same contract and arithmetic as
 * conv_binary_body.h, but four output channels per register: the XOR of a patch word with
 * the words of 4 channels is counted with the nibble-LUT popcount (vpshufb), bytes
 * accumulated over up to 31 words, then summed with vpsadbw. Weights are transposed per
 * call to [tap * cw][out] so the 4 channels' words are contiguous. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "conv_internal.h"

static inline __m256i popcount_bytes(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(v, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

int pk_conv_binary_avx2(const float *x, int64_t images, int64_t channels, int64_t height,
                        int64_t width, int64_t groups, const uint64_t *wbits,
                        const float *alpha, int64_t out_channels, int64_t kh, int64_t kw,
                        int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                        int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                        const float *bias, int activation, float *y) {
    const int64_t cg = channels / groups, og = out_channels / groups;
    const int64_t cw = (cg + 63) / 64, taps = kh * kw, pixels = height * width;
    const int64_t kg = cg * taps, words = taps * cw;
    const int64_t opad = (out_channels + 3) / 4 * 4;
    uint64_t *xbits = calloc((size_t)(images * groups * pixels * cw), sizeof(uint64_t));
    double *absum = malloc((size_t)(images * groups * pixels) * sizeof(double));
    uint64_t *wt = pk_aligned_alloc((size_t)(words * opad) * sizeof(uint64_t));
    if (!xbits || !absum || !wt) {
        free(xbits);
        free(absum);
        pk_aligned_free(wt);
        return PK_ERR_NOMEM;
    }
    for (int64_t i = 0; i < words; i++) /* transpose; padding channels repeat channel 0 */
        for (int64_t o = 0; o < opad; o++)
            wt[i * opad + o] = wbits[(o < out_channels ? o : 0) * words + i];
    const int nthreads =
        pk_conv_threads((double)images * out_channels * out_h * out_w * taps * cw +
                        (double)images * channels * pixels);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t row = 0; row < images * groups * height; row++) {
        const int64_t n = row / (groups * height), g = (row / height) % groups;
        const int64_t h = row % height;
        uint64_t *bits = xbits + ((n * groups + g) * pixels + h * width) * cw;
        double *sums = absum + (n * groups + g) * pixels + h * width;
        for (int64_t w = 0; w < width; w++) sums[w] = 0.0;
        for (int64_t c = 0; c < cg; c++) {
            const float *src = x + ((n * channels + g * cg + c) * height + h) * width;
            const uint64_t bit = (uint64_t)1 << (c % 64);
            uint64_t *bw = bits + c / 64;
            int64_t w = 0;
            if (cw == 1) { /* 4 pixels at a time: compare, widen to 64-bit lanes, OR the bit */
                const __m256i vbit = _mm256_set1_epi64x((long long)bit);
                const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
                for (; w + 4 <= width; w += 4) {
                    const __m128 v = _mm_loadu_ps(src + w);
                    const __m256i ge = _mm256_cvtepi32_epi64(
                        _mm_castps_si128(_mm_cmp_ps(v, _mm_setzero_ps(), _CMP_GE_OQ)));
                    __m256i cur = _mm256_loadu_si256((const __m256i *)(bw + w));
                    cur = _mm256_or_si256(cur, _mm256_and_si256(ge, vbit));
                    _mm256_storeu_si256((__m256i *)(bw + w), cur);
                    const __m256d a = _mm256_and_pd(_mm256_cvtps_pd(v), absmask);
                    _mm256_storeu_pd(sums + w, _mm256_add_pd(_mm256_loadu_pd(sums + w), a));
                }
            }
            for (; w < width; w++) {
                const float v = src[w];
                if (v >= 0.0f) bw[w * cw] |= bit;
                sums[w] += v < 0.0f ? -(double)v : (double)v;
            }
        }
    }
    const int64_t tasks = images * groups * out_h;
    int status = PK_OK;
#pragma omp parallel num_threads(nthreads)
    {
        /* one output row of every channel of the group: dots [og rounded up to 4][out_w]
         * and beta per column, then the epilogue writes each channel's row contiguously */
        float *betas = pk_aligned_alloc((size_t)out_w * sizeof(float));
        int32_t *dots = pk_aligned_alloc((size_t)(((og + 3) / 4 * 4) * out_w) * sizeof(int32_t));
        if (!betas || !dots) {
#pragma omp atomic write
            status = PK_ERR_NOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            if (!betas || !dots) continue;
            const int64_t n = t / (groups * out_h), g = (t / out_h) % groups, oh = t % out_h;
            const uint64_t *bits = xbits + (n * groups + g) * pixels * cw;
            const double *sums = absum + (n * groups + g) * pixels;
            uint64_t pw[PK_CONV_BINARY_WORDS], mw[PK_CONV_BINARY_WORDS];
            for (int64_t ow = 0; ow < out_w; ow++) {
                int64_t valid;
                const double s = pk_conv_binary_patch(bits, sums, cw, height, width, kh, kw,
                    oh * stride_h - pad_top, ow * stride_w - pad_left,
                    dil_h, dil_w, pw, mw, &valid);
                const float beta = (float)(s / (double)kg);
                const int full = valid == taps;
                for (int64_t ob = 0; ob < og; ob += 4) {
                    const int64_t o0 = g * og + ob;
                    __m256i total = _mm256_setzero_si256();
                    for (int64_t i0 = 0; i0 < words; i0 += 31) { /* bytes hold <= 31 * 8 */
                        const int64_t i1 = words - i0 < 31 ? words : i0 + 31;
                        __m256i acc = _mm256_setzero_si256();
                        for (int64_t i = i0; i < i1; i++) {
                            __m256i v = _mm256_xor_si256(
                                _mm256_set1_epi64x((long long)pw[i]),
                                _mm256_loadu_si256((const __m256i *)(wt + i * opad + o0)));
                            if (!full)
                                v = _mm256_and_si256(v, _mm256_set1_epi64x((long long)mw[i]));
                            acc = _mm256_add_epi8(acc, popcount_bytes(v));
                        }
                        total = _mm256_add_epi64(total,
                                                 _mm256_sad_epu8(acc, _mm256_setzero_si256()));
                    }
                    int64_t differ[4];
                    _mm256_storeu_si256((__m256i *)differ, total);
                    for (int l = 0; l < 4; l++)
                        dots[(ob + l) * out_w + ow] = (int32_t)(valid * cg - 2 * differ[l]);
                }
                betas[ow] = beta;
            }
            /* epilogue, 8 columns at a time: (alpha * beta) * n + bias, activation */
            float *out = y + ((n * out_channels + g * og) * out_h + oh) * out_w;
            for (int64_t o = 0; o < og; o++) {
                const float a = alpha[g * og + o];
                const float b = bias ? bias[g * og + o] : 0.0f;
                float *yo = out + o * out_h * out_w;
                const int32_t *d = dots + o * out_w;
                for (int64_t ow = 0; ow < out_w; ow++) {
                    const float scale = a * betas[ow]; /* float32 product, then times n */
                    float v = scale * (float)d[ow];
                    if (bias) v += b;
                    yo[ow] = pk_activate(v, activation);
                }
            }
        }
        pk_aligned_free(betas);
        pk_aligned_free(dots);
    }
    free(xbits);
    free(absum);
    pk_aligned_free(wt);
    return status;
}
