/* A threaded streaming read, used by `pyinfer bench` to measure memory bandwidth
 * with the same threads the kernels use. */
#include "pk_internal.h"

#define LANES 16
#define PARTS 64 /* fixed, so that the sum does not depend on the thread count */

struct stream_args {
    const float *a;
    int64_t blocks;
    float partial[PARTS];
};

static void stream_part(void *ctx, int64_t part, int worker) {
    struct stream_args *s = ctx;
    const int64_t b0 = s->blocks * part / PARTS, b1 = s->blocks * (part + 1) / PARTS;
    float acc[LANES] = {0}; /* independent lanes: the compiler vectorises this */
    for (int64_t b = b0; b < b1; b++)
        for (int j = 0; j < LANES; j++) acc[j] += s->a[b * LANES + j];
    float total = 0.0f;
    for (int j = 0; j < LANES; j++) total += acc[j];
    s->partial[part] = total;
}

float pk_stream_sum_f32(const float *a, int64_t n) {
    if (!a || n <= 0) return 0.0f;
    struct stream_args s = {a, n / LANES, {0}};
    pk_parallel(pk_threads(), PARTS, stream_part, &s);
    float total = 0.0f;
    for (int p = 0; p < PARTS; p++) total += s.partial[p];
    for (int64_t i = s.blocks * LANES; i < n; i++) total += a[i];
    return total;
}
