/* Internal declarations shared by the kernel sources: ISA levels, the kernel types and
 * the dispatch table (from kernels.inc), threads, scratch memory and the fused epilogue.
 * Not part of the public API. */
#ifndef PK_INTERNAL_H
#define PK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pyinfer_kernels.h"

/* ISA levels: each level implies the ones below it on its architecture. */
#if defined(__x86_64__) || defined(_M_X64)
#define PK_ARCH_X86 1
enum { PK_ISA_SCALAR = 0, PK_ISA_AVX2, PK_ISA_AVX512, PK_ISA_AVX512VNNI, PK_ISA_COUNT };
#elif defined(__aarch64__) || defined(__arm__)
#define PK_ARCH_ARM 1
enum { PK_ISA_SCALAR = 0, PK_ISA_NEON, PK_ISA_NEONDOT, PK_ISA_COUNT };
#else
enum { PK_ISA_SCALAR = 0, PK_ISA_COUNT };
#endif

/* Forces inlining where a loop must be specialised on constant arguments. */
#define PK_ALWAYS_INLINE static inline __attribute__((always_inline))

/* One function type per dispatched slot, pk_<slot>_fn, and a prototype per kernel, all
 * from the kernel list. */
#define PK_SLOT(slot, params) typedef int pk_##slot##_fn params;
#include "kernels.inc"
#define PK_KERNEL(slot, level, features, fn) pk_##slot##_fn fn;
#include "kernels.inc"

/* The dispatch table: the kernel serving each slot and its name. Each table is built
 * once, whole, for one ISA level and never changed; pk_set_isa_cap() publishes another
 * one with a single atomic store. */
struct pk_functable {
    int level; /* the ISA level it serves */
#define PK_SLOT(slot, params) pk_##slot##_fn *slot; const char *slot##_impl;
#include "kernels.inc"
};

/* The published table (NULL until the library has initialised). */
extern const struct pk_functable *pk_published_table;

/* Builds the tables once and publishes the one PYINFER_ISA asks for; returns the
 * published table. Safe to call from any thread, any number of times. */
const struct pk_functable *pk_dispatch_init(void);

/* The table serving this call. An entry point reads the pointer once and calls through
 * it: a concurrent pk_set_isa_cap() changes which table the next call gets, and the one a
 * call holds stays whole (tables are never changed or freed). */
static inline const struct pk_functable *pk_kernels(void) {
    const struct pk_functable *t = __atomic_load_n(&pk_published_table, __ATOMIC_ACQUIRE);
    return t ? t : pk_dispatch_init();
}

/* Has the CPU (and OS) every feature in mask? */
int pk_cpu_has(unsigned mask);

/* Threads for the next parallel region, read per call: the count pk_set_num_threads set,
 * else OMP_NUM_THREADS as it is now, else the CPUs this process may run on. */
int pk_threads(void);

/* ---- the thread pool (pool.c) ---- */
/* One task of a parallel loop. `worker` is the index, in [0, threads), of the thread
 * running it: distinct among tasks that run at the same time (per-thread scratch). */
typedef void pk_task_fn(void *ctx, int64_t task, int worker);
/* Runs fn(ctx, task, worker) for every task in [0, tasks) on up to `threads` threads, the
 * calling thread included, and returns when all have run. Tasks are claimed one at a
 * time, in order: make each worth a few microseconds at least. */
void pk_parallel(int threads, int64_t tasks, pk_task_fn *fn, void *ctx);
/* Most threads a job runs on. */
#define PK_MAX_THREADS 256
/* One part [begin, end) of a parallel loop over [0, n). */
typedef void pk_range_fn(void *ctx, int64_t begin, int64_t end, int worker);
/* Runs fn over [0, n) in consecutive parts of a multiple of `grain` iterations, about
 * PK_TASKS_PER_THREAD parts per thread (as pk_parallel, whose tasks they are): for
 * loops whose iterations are independent. One thread: one part, [0, n). */
void pk_parallel_for(int threads, int64_t n, int64_t grain, pk_range_fn *fn, void *ctx);
#define PK_TASKS_PER_THREAD 4
/* As pk_parallel_for, in parts that shrink: each the rest divided by the thread count
 * (OpenMP's guided schedule). The first threads take long runs of adjacent iterations,
 * the last parts even out the finish. */
void pk_parallel_guided(int threads, int64_t n, pk_range_fn *fn, void *ctx);

/* Below this many multiply-adds (or equivalent) a call runs on the calling thread: a
 * parallel region costs more than it saves there, and far more on a busy machine. */
#define PK_SERIAL_WORK 262144.0

/* Threads for a parallel region doing `work` multiply-adds. */
static inline int pk_threads_for(double work) {
    return work < PK_SERIAL_WORK ? 1 : pk_threads();
}

/* The fused epilogue for one output value. */
static inline float pk_activate(float v, int activation) {
    /* written so that NaN passes through, as np.maximum / np.clip do */
    if (activation == PK_ACT_RELU) return v < 0.0f ? 0.0f : v;
    if (activation == PK_ACT_RELU6) return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
    return v;
}

/* 64-byte aligned scratch memory; NULL on failure. */
void *pk_aligned_alloc(size_t bytes);
void pk_aligned_free(void *p);
/* One allocation carved into n 64-byte aligned parts (a call's scratch: one malloc, not
 * n); returns parts[0], which pk_aligned_free releases; NULL and all parts NULL on
 * failure. */
void *pk_alloc_parts(int n, const size_t *bytes, void **parts);

/* ---- helpers shared across kernel files ---- */
/* First row of part t of n of a CSR matrix's rows, for the SIMD CSR kernels: the parts
 * hold about equal work, a row costing its nonzeros plus PK_CSR_ROW_COST (loop set-up,
 * reduction, stores). */
#define PK_CSR_ROW_COST 4
static inline int64_t pk_csr_first_row(const int32_t *indptr, int64_t rows, int64_t t,
                                       int64_t n) {
    if (t <= 0) return 0;
    if (t >= n) return rows;
    const int64_t target = ((int64_t)indptr[rows] + PK_CSR_ROW_COST * rows) * t / n;
    int64_t lo = 0, hi = rows;
    while (lo < hi) { /* first r with cost(r) >= target */
        const int64_t mid = lo + (hi - lo) / 2;
        if ((int64_t)indptr[mid] + PK_CSR_ROW_COST * mid < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
/* Shared by the int8/int4 kernels (linear_int8.c): argument checks (1: work to do),
 * the portable row quantizer, and the epilogue of one output value. */
int pk_quant_check_args(const float *x, int64_t batch, int64_t in_features,
                        const void *packed, const float *scale, int64_t out_features,
                        float act_scale, int activation, float *y);
void pk_quantize_row_scalar(const float *x, int64_t in, int64_t ldq, float act_scale,
                            int8_t *q, float *scale, unsigned char *bad);
/* Every row of x quantized (pk_quantize_row_scalar) into one allocation: q [batch][ldq],
 * then scale [batch] and bad [batch]. Free it with pk_aligned_free(rows->q). Returns 0
 * when out of memory. */
typedef struct {
    int8_t *q;
    float *scale;
    unsigned char *bad;
} pk_quant_rows;
int pk_quantize_rows_scalar(const float *x, int64_t batch, int64_t in, int64_t ldq,
                            float act_scale, pk_quant_rows *rows);
static inline float pk_quant_store(float v, const float *bias, int64_t o, int activation,
                                   int bad) {
    if (bad) return __builtin_nanf(""); /* a row with NaN/Inf activations */
    if (bias) v = v + bias[o];
    return pk_activate(v, activation);
}
#ifdef PK_HAVE_AVX2
/* The AVX2 twin of pk_quantize_row_scalar (linear_int8_avx2.c); qabs may be NULL. */
void pk_quantize_row_avx2(const float *x, int64_t in, int64_t ldq, float act_scale,
                          int8_t *q, uint8_t *qabs, float *scale, unsigned char *bad);
/* The float-activation path of pk_linear_binary_avx2, reused by the AVX-512 variant. */
int pk_linear_binary_float_avx2(const float *x, int64_t batch, int64_t in_features,
                                const uint64_t *bits, const float *alpha, int64_t out_features,
                                const float *bias, int activation, float *y);
#endif

#endif /* PK_INTERNAL_H */
