/* pk_set_isa_cap while kernels run: one thread steps the ISA cap through every supported
 * level for about a second while two others call the int8 and CSR linear kernels. Every
 * table a call can read is complete, so the int8 results stay bit-exact (every level
 * computes the same bits), the CSR results within float tolerance, and nothing crashes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pk_test.h"

enum { BATCH = 3, IN = 300, OUT = 40, WORKERS = 2 };

typedef struct {
    int8_t packed[(OUT + 7) / 8 * ((IN + 3) / 4) * 32];
    float scale[OUT], x[BATCH * IN], int8_want[BATCH * OUT];
    int32_t indptr[OUT + 1];
    uint16_t indices[OUT * IN];
    float values[OUT * IN], csr_want[BATCH * OUT];
    double csr_scale[BATCH * OUT];
    int stop;
} shared_case;

typedef struct {
    shared_case *c;
    long calls, wrong, failed;
} worker;

static int stopped(const shared_case *c) { return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE); }

static void *flip_levels(void *arg) {
    shared_case *c = arg;
    long *flips = malloc(sizeof *flips);
    *flips = 0;
    while (!stopped(c))
        for (int level = 0; level < pk_isa_count(); level++)
            if (pk_isa_supported(level)) {
                pk_set_isa_cap(level);
                ++*flips;
            }
    return flips;
}

static void *run_kernels(void *arg) {
    worker *w = arg;
    const shared_case *c = w->c;
    float y[BATCH * OUT];
    while (!stopped(c)) {
        int st = pk_linear_int8_f32(c->x, BATCH, IN, c->packed, c->scale, OUT, 0.0f, NULL, 0, y);
        w->failed += st != PK_OK;
        for (int i = 0; i < BATCH * OUT; i++) w->wrong += !pk_same(y[i], c->int8_want[i]);
        st = pk_linear_csr_f32(c->x, BATCH, IN, c->indptr, c->indices, 2, c->values, OUT, NULL,
                               0, y);
        w->failed += st != PK_OK;
        for (int i = 0; i < BATCH * OUT; i++)
            w->wrong += !pk_close(y[i], c->csr_want[i], c->csr_scale[i], 1e-5);
        w->calls += 2;
    }
    return NULL;
}

/* Random weights and inputs; the wanted results from the scalar level. */
static void make_case(shared_case *c) {
    pk_rng r = {0x15a5ULL};
    for (size_t i = 0; i < sizeof c->packed; i++)
        c->packed[i] = (int8_t)(pk_rng_below(&r, 255) - 127);
    for (int o = 0; o < OUT; o++) c->scale[o] = 0.01f * (float)pk_rng_unit(&r);
    for (int i = 0; i < BATCH * IN; i++) c->x[i] = pk_rng_float(&r);
    c->indptr[0] = 0;
    for (int o = 0; o < OUT; o++) {
        int n = 0;
        for (int k = 0; k < IN; k++)
            if (pk_rng_unit(&r) < 0.3) {
                c->indices[c->indptr[o] + n] = (uint16_t)k;
                c->values[c->indptr[o] + n] = pk_rng_float(&r);
                n++;
            }
        c->indptr[o + 1] = c->indptr[o] + n;
    }
    for (int b = 0; b < BATCH; b++)
        for (int o = 0; o < OUT; o++) {
            double s = 0.0;
            for (int p = c->indptr[o]; p < c->indptr[o + 1]; p++)
                s += fabs((double)c->values[p] * c->x[b * IN + c->indices[p]]);
            c->csr_scale[b * OUT + o] = s;
        }
    pk_set_isa_cap(0);
    CHECK(pk_linear_int8_f32(c->x, BATCH, IN, c->packed, c->scale, OUT, 0.0f, NULL, 0,
                             c->int8_want) == PK_OK, "int8 at scalar");
    CHECK(pk_linear_csr_f32(c->x, BATCH, IN, c->indptr, c->indices, 2, c->values, OUT, NULL, 0,
                            c->csr_want) == PK_OK, "csr at scalar");
}

void test_isa_switch(void) {
    shared_case *c = calloc(1, sizeof *c);
    make_case(c);
    pthread_t flipper, threads[WORKERS];
    worker workers[WORKERS];
    CHECK(pthread_create(&flipper, NULL, flip_levels, c) == 0, "no flipping thread");
    for (int t = 0; t < WORKERS; t++) {
        workers[t] = (worker){c, 0, 0, 0};
        CHECK(pthread_create(&threads[t], NULL, run_kernels, &workers[t]) == 0, "no worker");
    }
    const struct timespec second = {1, 0};
    nanosleep(&second, NULL);
    __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
    long *flips = NULL;
    pthread_join(flipper, (void **)&flips);
    for (int t = 0; t < WORKERS; t++) {
        pthread_join(threads[t], NULL);
        CHECK(workers[t].calls > 0, "worker %d made no call", t);
        CHECK(workers[t].failed == 0, "worker %d: %ld calls failed", t, workers[t].failed);
        CHECK(workers[t].wrong == 0, "worker %d: %ld wrong outputs in %ld calls", t,
              workers[t].wrong, workers[t].calls);
    }
    CHECK(flips && *flips > 0, "the level never changed");
    free(flips);
    free(c);
}
