/* The library's runtime: its version, the thread budget of parallel regions, and
 * aligned scratch memory. */
#define _GNU_SOURCE /* posix_memalign under -std=c99 */
#include <stdlib.h>

#include "pk_internal.h"

#ifndef PK_VERSION_STRING
#define PK_VERSION_STRING "unknown"
#endif

/* read per call and set from any thread, hence relaxed atomics */
static int thread_budget;

const char *pk_version(void) { return PK_VERSION_STRING; }

void pk_set_num_threads(int n) {
    __atomic_store_n(&thread_budget, n > 0 ? n : 0, __ATOMIC_RELAXED);
}

int pk_threads(void) {
#ifdef _OPENMP
    const int n = __atomic_load_n(&thread_budget, __ATOMIC_RELAXED);
    return n > 0 ? n : omp_get_num_procs();
#else
    return 1;
#endif
}

int pk_get_num_threads(void) { return pk_threads(); }

void *pk_aligned_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}

void pk_aligned_free(void *p) { free(p); }

void *pk_alloc_parts(int n, const size_t *bytes, void **parts) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (bytes[i] + 63) & ~(size_t)63;
    char *base = pk_aligned_alloc(total);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        parts[i] = base ? base + off : NULL;
        off += (bytes[i] + 63) & ~(size_t)63;
    }
    return base;
}
