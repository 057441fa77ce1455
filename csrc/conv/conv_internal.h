/* Helpers shared by the conv2d kernel files (private to csrc/conv). */
#ifndef PK_CONV_INTERNAL_H
#define PK_CONV_INTERNAL_H

#include <string.h>

#include "pk_internal.h"

/* Output column tile of the offset GEMM / CSR kernels, and rows per dense micro-tile. */
#define PK_CONV_NR 16
#define PK_CONV_MR PK_CONV_GEMM_MR
#define PK_CONV_CSR_TILE 64
/* Largest kh * kw * ceil(cg / 64) the binary conv kernel takes (its patch lives on the stack). */
#define PK_CONV_BINARY_WORDS 256

/* Work (multiply-adds or elements moved) below which a call runs on the calling thread:
 * a parallel region costs more than it saves there, and far more on a busy machine. */
#define PK_CONV_SERIAL_WORK 1.0e6

static inline int pk_conv_threads(double work) {
    return work < PK_CONV_SERIAL_WORK ? 1 : pk_threads();
}

/* Copies the window of one input plane that a depthwise conv reads into `dst`
 * [hp][wp] (row pitch wp), zero where the window leaves the plane. */
static inline void pk_conv_window(const float *src, int64_t height, int64_t width,
                                  int64_t pad_top, int64_t pad_left, int64_t hp, int64_t wp,
                                  float *dst) {
    for (int64_t r = 0; r < hp; r++) {
        float *d = dst + r * wp;
        const int64_t ih = r - pad_top;
        if (ih < 0 || ih >= height) {
            memset(d, 0, (size_t)wp * sizeof(float));
            continue;
        }
        int64_t lo = pad_left, hi = pad_left + width; /* d[lo:hi] = row ih */
        if (hi > wp) hi = wp;
        if (lo > hi) lo = hi;
        memset(d, 0, (size_t)lo * sizeof(float));
        memcpy(d + lo, src + ih * width, (size_t)(hi - lo) * sizeof(float));
        memset(d + hi, 0, (size_t)(wp - hi) * sizeof(float));
    }
}

#endif /* PK_CONV_INTERNAL_H */
