/* Max and average pooling of NCHW float32 planes (pk_pool2d_f32): the planes split into
 * runs on the thread pool. Portable C, but for the 2x2 stride-2 max-pool of CNNs, a slot
 * of the kernel list (pool_max2x2: this file's SSE2 kernel, pooling_avx2.c): in a small
 * CNN at batch 1 it measured as much as a third of a conv.
 *
 * Results equal the NumPy reference (pyinfer/ops/pooling.py) bit for bit: max is
 * np.maximum's (NaN propagates, signed zeros as it orders them), and averages add a window's taps in the reference's order
 * (row by row of the kernel) in float32, then divide once. */
#include "pk_internal.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

typedef struct {
    const float *x;
    float *y;
    int64_t h, w, kh, kw, sh, sw, pt, pl, oh, ow;
    int mode;
} pool_job;

/* np.maximum(m, v): NaN if either is (m's first), else m > v ? m : v (so v on a tie:
 * max(0.0, -0.0) is -0.0, as NumPy gives it). */
static inline float max_nan(float m, float v) {
    return ((m != m) | (m > v)) ? m : v; /* | not ||: no branch to mispredict */
}

#ifdef __SSE2__
/* max_nan on 4 lanes: maxps(m, v) is m > v ? m : v, v when either is NaN, so only a
 * NaN in m needs putting back. */
static inline __m128 max_nan4(__m128 m, __m128 v) {
    const __m128 m_nan = _mm_cmpunord_ps(m, m);
    return _mm_or_ps(_mm_and_ps(m_nan, m), _mm_andnot_ps(m_nan, _mm_max_ps(m, v)));
}

/* Outputs y[0:4] of two input rows r0, r1 (8 columns each). */
static inline void max_2x2_4(const float *r0, const float *r1, float *y) {
    const __m128 a0 = _mm_loadu_ps(r0), a1 = _mm_loadu_ps(r0 + 4);
    const __m128 b0 = _mm_loadu_ps(r1), b1 = _mm_loadu_ps(r1 + 4);
    /* even and odd columns of each row, in the scalar loop's order */
    const __m128 ae = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 ao = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1));
    const __m128 be = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 bo = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1));
    _mm_storeu_ps(y, max_nan4(max_nan4(max_nan4(ae, ao), be), bo));
}
#endif

/* The 2x2 stride-2 max-pool of CNNs (the pool_max2x2 slot's portable kernel): two input
 * rows -> one output row, 4 outputs at a time where SSE2 is there (every x86-64). */
int pk_pool_max2x2_scalar(const float *x, int64_t planes, int64_t height, int64_t width,
                          int64_t oh, int64_t ow, float *y) {
    const int64_t w = width;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < oh; i++) {
            const float *r0 = x + p * height * w + 2 * i * w, *r1 = r0 + w;
            float *yo = y + (p * oh + i) * ow;
            int64_t j = 0;
#ifdef __SSE2__
            if (ow >= 4) { /* the last group of 4 overlaps the one before: no scalar tail */
                for (;; j += 4) {
                    if (j + 4 > ow) j = ow - 4;
                    max_2x2_4(r0 + 2 * j, r1 + 2 * j, yo + j);
                    if (j + 4 == ow) break;
                }
                j = ow;
            }
#endif
            for (; j < ow; j++)
                yo[j] = max_nan(max_nan(max_nan(r0[2 * j], r0[2 * j + 1]), r1[2 * j]),
                                r1[2 * j + 1]);
        }
    return PK_OK;
}

static void pool_plane(const pool_job *a, const float *x, float *y) {
    const float taps = (float)(a->kh * a->kw);
    for (int64_t i = 0; i < a->oh; i++) {
        const int64_t top = i * a->sh - a->pt;
        const int64_t r0 = top < 0 ? 0 : top;
        const int64_t r1 = top + a->kh < a->h ? top + a->kh : a->h;
        for (int64_t j = 0; j < a->ow; j++) {
            const int64_t left = j * a->sw - a->pl;
            const int64_t c0 = left < 0 ? 0 : left;
            const int64_t c1 = left + a->kw < a->w ? left + a->kw : a->w;
            float v;
            if (a->mode == PK_POOL_MAX) {
                v = x[r0 * a->w + c0];
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++) v = max_nan(v, x[r * a->w + c]);
            } else {
                v = 0.0f;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++) v += x[r * a->w + c];
                v /= a->mode == PK_POOL_AVG ? taps : (float)((r1 - r0) * (c1 - c0));
            }
            y[i * a->ow + j] = v;
        }
    }
}

static void pool_planes(void *ctx, int64_t p0, int64_t p1, int worker) {
    (void)worker;
    const pool_job *a = ctx;
    if (a->mode == PK_POOL_MAX && a->kh == 2 && a->kw == 2 && a->sh == 2 && a->sw == 2 &&
        a->pt == 0 && a->pl == 0) { /* the CNN case: the dispatched kernel */
        pk_kernels()->pool_max2x2(a->x + p0 * a->h * a->w, p1 - p0, a->h, a->w, a->oh, a->ow,
                                  a->y + p0 * a->oh * a->ow);
        return;
    }
    for (int64_t p = p0; p < p1; p++)
        pool_plane(a, a->x + p * a->h * a->w, a->y + p * a->oh * a->ow);
}

int pk_pool2d_f32(const float *x, int64_t planes, int64_t height, int64_t width, int64_t kh,
                  int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                  int64_t pad_left, int64_t out_h, int64_t out_w, int mode, float *y) {
    if (planes < 0 || height < 1 || width < 1 || kh < 1 || kw < 1 || stride_h < 1 ||
        stride_w < 1 || pad_top < 0 || pad_left < 0 || pad_top >= kh || pad_left >= kw ||
        out_h < 0 || out_w < 0 || mode < PK_POOL_MAX || mode > PK_POOL_AVG_VALID)
        return PK_ERR_ARG;
    /* every window must hold at least one input element (and start inside the input) */
    if ((out_h > 0 && (out_h - 1) * stride_h - pad_top >= height) ||
        (out_w > 0 && (out_w - 1) * stride_w - pad_left >= width))
        return PK_ERR_ARG;
    if (planes == 0 || out_h == 0 || out_w == 0) return PK_OK;
    if (!x || !y) return PK_ERR_ARG;
    pool_job a = {x, y, height, width, kh, kw, stride_h, stride_w, pad_top, pad_left,
                  out_h, out_w, mode};
    const double work = (double)planes * (double)(out_h * out_w) * (double)(kh * kw);
    pk_parallel_for(pk_threads_for(work), planes, 1, pool_planes, &a);
    return PK_OK;
}
