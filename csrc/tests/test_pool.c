/* The thread pool (pool.c): every task runs once, worker indices are distinct among
 * running tasks, nested and concurrent calls, a forked child, a stalled worker, and
 * kernel results that do not depend on the thread count. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pk_test.h"

#define TASKS 1000
#define THREADS 4

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct counting {
    int threads;
    int runs[TASKS];
    int busy[PK_MAX_THREADS]; /* 1 while a task of that worker index runs */
    int bad_worker, overlap;
};

static void count_task(void *ctx, int64_t task, int worker) {
    struct counting *c = ctx;
    if (worker < 0 || worker >= c->threads) {
        __atomic_store_n(&c->bad_worker, 1, __ATOMIC_RELAXED);
        return;
    }
    int idle = 0;
    if (!__atomic_compare_exchange_n(&c->busy[worker], &idle, 1, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        __atomic_store_n(&c->overlap, 1, __ATOMIC_RELAXED);
    for (volatile int spin = 0; spin < 200; spin++) {
    }
    __atomic_add_fetch(&c->runs[task], 1, __ATOMIC_RELAXED);
    __atomic_store_n(&c->busy[worker], 0, __ATOMIC_RELEASE);
}

/* Runs a counting job; returns 1 when every task ran once on a valid, unshared index. */
static int counting_job_ok(int threads, int64_t tasks) {
    struct counting *c = calloc(1, sizeof *c);
    c->threads = threads;
    pk_parallel(threads, tasks, count_task, c);
    int ok = !c->bad_worker && !c->overlap;
    for (int64_t t = 0; t < TASKS; t++) ok &= c->runs[t] == (t < tasks);
    free(c);
    return ok;
}

static void test_every_task_once(void) {
    for (int threads = 1; threads <= 8; threads++)
        for (int64_t tasks = 0; tasks <= TASKS; tasks += tasks < 10 ? 1 : 331)
            CHECK(counting_job_ok(threads, tasks), "threads %d, tasks %lld", threads,
                  (long long)tasks);
}

struct nested {
    int inner_runs;
    int bad;
};

static void inner_task(void *ctx, int64_t task, int worker) {
    struct nested *n = ctx;
    if (worker < 0 || worker >= THREADS) __atomic_store_n(&n->bad, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&n->inner_runs, 1, __ATOMIC_RELAXED);
}

static void outer_task(void *ctx, int64_t task, int worker) {
    pk_parallel(THREADS, 10, inner_task, ctx);
}

static void test_nested(void) {
    struct nested n = {0, 0};
    pk_parallel(THREADS, 50, outer_task, &n);
    CHECK(n.inner_runs == 500 && !n.bad, "nested: %d inner runs", n.inner_runs);
}

static void *caller_main(void *arg) {
    int *ok = arg;
    for (int i = 0; i < 100; i++) *ok &= counting_job_ok(THREADS, 1 + (i * 37) % TASKS);
    return NULL;
}

static void test_concurrent_callers(void) {
    pthread_t threads[4];
    int ok[4] = {1, 1, 1, 1};
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, caller_main, &ok[i]);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < 4; i++) CHECK(ok[i], "concurrent caller %d", i);
}

static int stop_background;

static void *background_main(void *arg) {
    while (!__atomic_load_n(&stop_background, __ATOMIC_ACQUIRE)) counting_job_ok(THREADS, 300);
    return NULL;
}

/* A child forked while the pool has workers (and, with `busy`, while another thread runs
 * jobs) runs jobs itself; it must not hang (alarm) or fail. */
static void check_fork(int busy) {
    pthread_t bg;
    stop_background = 0;
    if (busy) pthread_create(&bg, NULL, background_main, NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        int ok = 1;
        for (int i = 0; i < 20; i++) ok &= counting_job_ok(THREADS, 500);
        _exit(ok ? 0 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (busy) {
        __atomic_store_n(&stop_background, 1, __ATOMIC_RELEASE);
        pthread_join(bg, NULL);
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "forked child (busy parent: %d): status %d", busy, status);
}

struct stall {
    int64_t tasks;
    int done;     /* tasks finished */
    int stalled;  /* a worker's task waited for all the others */
    int timed_out;
};

/* The first task a worker (not the caller) runs waits until every other task is done:
 * the job completes only if the caller takes the rest instead of waiting for it. */
static void stall_task(void *ctx, int64_t task, int worker) {
    struct stall *s = ctx;
    int expected = 0;
    if (worker != 0 &&
        __atomic_compare_exchange_n(&s->stalled, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED)) {
        const double until = seconds() + 10.0;
        while (__atomic_load_n(&s->done, __ATOMIC_ACQUIRE) < s->tasks - 1)
            if (seconds() > until) {
                __atomic_store_n(&s->timed_out, 1, __ATOMIC_RELAXED);
                break;
            }
    } else if (worker == 0) {
        const double until = seconds() + 1e-4; /* give the workers time to wake */
        while (seconds() < until) {
        }
    }
    __atomic_add_fetch(&s->done, 1, __ATOMIC_RELEASE);
}

static void test_stalled_worker(void) {
    struct stall s = {64, 0, 0, 0};
    pk_parallel(2, s.tasks, stall_task, &s);
    CHECK(s.done == s.tasks && !s.timed_out, "stalled worker: %d done, timed out %d", s.done,
          s.timed_out);
}

/* A CSR linear layer large enough to run in parallel gives the same bits on 1..8 threads,
 * and so does the streaming sum. */
static void test_results_follow_no_thread_count(void) {
    enum { OUT = 512, IN = 512, BATCH = 37 };
    pk_rng rng = {12345};
    int32_t *indptr = malloc((OUT + 1) * sizeof(int32_t));
    int32_t *indices = malloc((size_t)OUT * IN * sizeof(int32_t));
    float *values = malloc((size_t)OUT * IN * sizeof(float));
    float *x = malloc((size_t)BATCH * IN * sizeof(float));
    float *want = malloc((size_t)BATCH * OUT * sizeof(float));
    float *got = malloc((size_t)BATCH * OUT * sizeof(float));
    int64_t nnz = 0;
    for (int o = 0; o < OUT; o++) {
        indptr[o] = (int32_t)nnz;
        for (int k = 0; k < IN; k++)
            if (pk_rng_unit(&rng) < 0.5) {
                indices[nnz] = k;
                values[nnz++] = pk_rng_float(&rng);
            }
    }
    indptr[OUT] = (int32_t)nnz;
    for (int i = 0; i < BATCH * IN; i++) x[i] = pk_rng_float(&rng);
    const int counts[] = {1, 2, 3, 8};
    for (int batch = 1; batch <= BATCH; batch += BATCH - 1) {
        float sum_want = 0.0f;
        for (int c = 0; c < 4; c++) {
            pk_set_num_threads(counts[c]);
            float *y = c == 0 ? want : got;
            CHECK(pk_linear_csr_f32(x, batch, IN, indptr, indices, 4, values, OUT, NULL,
                                    PK_ACT_NONE, y) == PK_OK, "csr call");
            const float sum = pk_stream_sum_f32(x, (int64_t)BATCH * IN);
            if (c == 0) sum_want = sum;
            else {
                CHECK(memcmp(want, got, (size_t)batch * OUT * sizeof(float)) == 0,
                      "csr batch %d differs on %d threads", batch, counts[c]);
                CHECK(sum == sum_want, "stream sum differs on %d threads", counts[c]);
            }
        }
    }
    pk_set_num_threads(0);
    free(indptr), free(indices), free(values), free(x), free(want), free(got);
}

static void test_budget(void) {
    pk_set_num_threads(3);
    CHECK(pk_get_num_threads() == 3, "an explicit count: %d", pk_get_num_threads());
    pk_set_num_threads(0);
    setenv("OMP_NUM_THREADS", "5,2", 1);
    CHECK(pk_get_num_threads() == 5, "OMP_NUM_THREADS=5,2: %d", pk_get_num_threads());
    setenv("OMP_NUM_THREADS", "1", 1);
    CHECK(pk_get_num_threads() == 1, "OMP_NUM_THREADS=1: %d", pk_get_num_threads());
    unsetenv("OMP_NUM_THREADS");
    CHECK(pk_get_num_threads() >= 1, "affinity count: %d", pk_get_num_threads());
}

void test_pool(void) {
    pk_pool_keep_ready(1);
    pk_pool_keep_ready(1);
    test_every_task_once();
    pk_pool_keep_ready(0);
    test_nested();
    test_concurrent_callers();
    test_stalled_worker();
    pk_pool_keep_ready(0);
    pk_pool_keep_ready(0); /* one too many: ignored */
    check_fork(0);
    check_fork(1);
    test_results_follow_no_thread_count();
    test_budget();
}
