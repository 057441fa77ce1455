/* A threaded streaming read, used by `pyinfer bench` to measure memory bandwidth
 * with the same threads the kernels use. */
#include "pk_internal.h"

#define LANES 16

float pk_stream_sum_f32(const float *a, int64_t n) {
    if (!a || n <= 0) return 0.0f;
    float total = 0.0f;
    int64_t blocks = n / LANES;
#pragma omp parallel reduction(+ : total) num_threads(pk_threads())
    {
        float acc[LANES] = {0};  /* independent lanes: the compiler vectorises this */
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++)
            for (int j = 0; j < LANES; j++) acc[j] += a[b * LANES + j];
        for (int j = 0; j < LANES; j++) total += acc[j];
    }
    for (int64_t i = blocks * LANES; i < n; i++) total += a[i];
    return total;
}
