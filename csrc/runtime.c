/* The library's runtime: its version, the thread budget of parallel regions (read per
 * call), and aligned scratch memory. */
#define _GNU_SOURCE /* posix_memalign, sched_getaffinity under -std=c99 */
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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

/* The leading count of an OMP_NUM_THREADS value ("4", or "4,2": one per nesting level);
 * 0 when unset or unreadable. */
static int omp_num_threads(void) {
    const char *s = getenv("OMP_NUM_THREADS");
    if (!s) return 0;
    while (*s == ' ' || *s == '\t') s++;
    int n = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (*s - '0');
        if (n > PK_MAX_THREADS) n = PK_MAX_THREADS;
    }
    return n;
}

#define AFFINITY_RECHECK_NS 100000000L /* the affinity count is re-read at most this often */
static int affinity_count;             /* cached; relaxed atomics: any thread may refresh it */
static long affinity_checked_ns;

/* CPUs this process may run on (its affinity mask), re-read every AFFINITY_RECHECK_NS:
 * the system call costs more than a small kernel call saves. */
static int affinity_threads(void) {
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    const long now = (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
    int n = __atomic_load_n(&affinity_count, __ATOMIC_RELAXED);
    if (n > 0 && now - __atomic_load_n(&affinity_checked_ns, __ATOMIC_RELAXED) < AFFINITY_RECHECK_NS)
        return n;
#ifdef __linux__
    cpu_set_t set;
    n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
#else
    n = 0;
#endif
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    __atomic_store_n(&affinity_count, n, __ATOMIC_RELAXED);
    __atomic_store_n(&affinity_checked_ns, now, __ATOMIC_RELAXED);
    return n;
}

/* Read per call, so that a process told its budget late (Dask and Ray set
 * OMP_NUM_THREADS per worker process, a reused worker may change it) follows it. */
int pk_threads(void) {
    int n = __atomic_load_n(&thread_budget, __ATOMIC_RELAXED);
    if (n <= 0) n = omp_num_threads();
    if (n <= 0) n = affinity_threads();
    return n < PK_MAX_THREADS ? n : PK_MAX_THREADS;
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
