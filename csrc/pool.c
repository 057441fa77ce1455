/* The thread pool behind pk_parallel: pyinfer's own, in place of OpenMP.
 *
 * Why this mechanism:
 * - Tasks are claimed one at a time from one atomic counter by the calling thread and by
 *   whichever workers are awake, and the caller's join waits only for tasks already
 *   claimed (in progress). A call therefore never waits for a worker that has not
 *   started: when the workers cannot get a core (another library's spinning threads,
 *   another process), the caller runs the remaining tasks itself. A static fork-join
 *   (OpenMP's parallel for) waits at its barrier for every thread of the team, which
 *   measured 38-57x slower with one of 2 cores busy.
 * - The wait policy is ours, whatever the process loaded first. libgomp's is set once,
 *   by whoever loads it first: sleeping workers cost a wake-up per layer, spinning ones
 *   starve NumPy's BLAS threads and are starved by them. Here idle workers spin briefly
 *   (SPIN_NS) and then sleep on a futex; while the runtime keeps the pool ready
 *   (pk_pool_keep_ready, for the length of a model run) they keep checking for up to
 *   READY_SPIN_NS, yielding the core between checks, so that the next layer finds them
 *   awake; never indefinitely. A job wakes the futex only when someone sleeps on it.
 * - No call ever blocks on a lock: one job runs at a time, taken with a try-lock, and a
 *   caller that finds the pool busy (another Python thread, or pk_parallel inside a
 *   task) runs its tasks itself, in order, as worker 0.
 * - Fork: no lock is held across fork() and the child has none of the parent's workers,
 *   so the child handler only resets the pool; the child creates workers again on first
 *   use. (No prepare or parent handler is needed: a job running on another thread at the
 *   fork is simply absent in the child, whose next job starts a new generation.)
 *
 * A job lives in one of two slots, chosen by its generation, and the claim word holds
 * (generation << 32 | next task). A worker reads the word, then the slot, and claims with
 * a compare-and-swap on the whole word: the claim succeeds only while that generation's
 * job is open, so the slot it read belongs to the task it claimed (a slot is rewritten
 * two generations later, after the word has moved on). */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "pk_internal.h"

#define SPIN_NS 50000L        /* idle workers check for a new job this long, then sleep */
#define READY_SPIN_NS 2000000L /* ... and this long while the pool is kept ready */
#define JOIN_SPINS 4096       /* pause loops before a waiting caller starts to yield */

struct job_slot {
    pk_task_fn *fn;
    void *ctx;
    int64_t tasks;
    int threads; /* workers with index >= threads take no task */
    int64_t done; /* tasks finished */
};

static struct {
    int busy;       /* the try-lock: 1 while a job is running */
    int started;    /* workers created (index 1 .. started); changed by the lock holder */
    uint32_t gen;   /* generation of the last job (lock holder only) */
    uint64_t claim; /* gen << 32 | next task */
    uint32_t wake;  /* futex word: bumped once per job */
    int sleepers;   /* workers asleep (or about to be) on `wake` */
    int keep_ready; /* pk_pool_keep_ready nesting count */
    struct job_slot slot[2];
    uint32_t seen_at_start[PK_MAX_THREADS]; /* `wake` when each worker was created */
} pool;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* futex wait/wake on `wake`; elsewhere a short sleep stands in for the wait. */
static void wait_for_change(uint32_t *word, uint32_t value) {
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    (void)word;
    (void)value;
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
#endif
}

static void wake_all(uint32_t *word) {
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Claims and runs tasks of the current job until none is left for this worker. */
static void run_tasks(int me) {
    for (;;) {
        uint64_t word = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
        const uint32_t gen = (uint32_t)(word >> 32), task = (uint32_t)word;
        struct job_slot *s = &pool.slot[gen & 1];
        /* relaxed: a stale read (the slot reused) only comes with a failing claim */
        const int64_t tasks = __atomic_load_n(&s->tasks, __ATOMIC_RELAXED);
        const int threads = __atomic_load_n(&s->threads, __ATOMIC_RELAXED);
        pk_task_fn *fn = __atomic_load_n(&s->fn, __ATOMIC_RELAXED);
        void *ctx = __atomic_load_n(&s->ctx, __ATOMIC_RELAXED);
        if (me >= threads || (int64_t)task >= tasks) return;
        if (!__atomic_compare_exchange_n(&pool.claim, &word, word + 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;
        fn(ctx, task, me);
        __atomic_add_fetch(&s->done, 1, __ATOMIC_RELEASE);
    }
}

/* Returns when `wake` differs from *seen (a new job), updating *seen. */
static void idle_wait(uint32_t *seen) {
    const long start = now_ns();
    for (unsigned i = 1;; i++) {
        const uint32_t w = __atomic_load_n(&pool.wake, __ATOMIC_ACQUIRE);
        if (w != *seen) {
            *seen = w;
            return;
        }
        if (i % 64) {
            cpu_relax();
            continue;
        }
        const long spent = now_ns() - start;
        if (spent < SPIN_NS) continue;
        if (spent >= READY_SPIN_NS || !__atomic_load_n(&pool.keep_ready, __ATOMIC_RELAXED))
            break;
        sched_yield(); /* kept ready: check now and then, leaving the core to others */
    }
    for (;;) {
        __atomic_add_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
        uint32_t w = __atomic_load_n(&pool.wake, __ATOMIC_SEQ_CST);
        if (w == *seen) wait_for_change(&pool.wake, w);
        __atomic_sub_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
        w = __atomic_load_n(&pool.wake, __ATOMIC_ACQUIRE);
        if (w != *seen) {
            *seen = w;
            return;
        }
    }
}

static void *worker_main(void *arg) {
    const int me = (int)(intptr_t)arg;
    uint32_t seen = pool.seen_at_start[me];
    for (;;) {
        idle_wait(&seen);
        run_tasks(me);
    }
    return NULL;
}

/* Creates workers 1 .. n (lock holder only); stops at the first that cannot start. */
static void ensure_workers(int n) {
    if (pool.started >= n) return;
    sigset_t all, saved;
    sigfillset(&all);
    /* workers block signals: they are delivered to the application's threads */
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (pool.started < n) {
        const int me = pool.started + 1;
        pthread_t thread;
        pool.seen_at_start[me] = __atomic_load_n(&pool.wake, __ATOMIC_RELAXED);
        if (pthread_create(&thread, &attr, worker_main, (void *)(intptr_t)me) != 0) break;
        pool.started = me;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

static void after_fork_in_child(void) {
    pool.busy = 0;
    pool.started = 0;
    pool.sleepers = 0;
    pool.keep_ready = 0;
}

__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

static void run_serially(int64_t tasks, pk_task_fn *fn, void *ctx) {
    for (int64_t t = 0; t < tasks; t++) fn(ctx, t, 0);
}

void pk_parallel(int threads, int64_t tasks, pk_task_fn *fn, void *ctx) {
    if (tasks <= 0) return;
    if (threads > tasks) threads = (int)tasks;
    if (threads > PK_MAX_THREADS) threads = PK_MAX_THREADS;
    int expected = 0;
    if (threads <= 1 || tasks > INT32_MAX ||
        !__atomic_compare_exchange_n(&pool.busy, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED)) {
        run_serially(tasks, fn, ctx);
        return;
    }
    ensure_workers(threads - 1);
    const uint32_t gen = ++pool.gen;
    struct job_slot *s = &pool.slot[gen & 1];
    __atomic_store_n(&s->fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&s->ctx, ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&s->tasks, tasks, __ATOMIC_RELAXED);
    __atomic_store_n(&s->threads, threads, __ATOMIC_RELAXED);
    __atomic_store_n(&s->done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.claim, (uint64_t)gen << 32, __ATOMIC_RELEASE);
    __atomic_add_fetch(&pool.wake, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool.sleepers, __ATOMIC_SEQ_CST) > 0) wake_all(&pool.wake);
    run_tasks(0);
    /* the join: only tasks in progress remain, each on a thread that is running it */
    for (unsigned i = 0; __atomic_load_n(&s->done, __ATOMIC_ACQUIRE) < tasks; i++) {
        if (i < JOIN_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
    __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
}

struct range_job {
    pk_range_fn *fn;
    void *ctx;
    int64_t n, chunk;
};

static void range_task(void *ctx, int64_t task, int worker) {
    const struct range_job *job = ctx;
    const int64_t begin = task * job->chunk;
    const int64_t end = begin + job->chunk < job->n ? begin + job->chunk : job->n;
    job->fn(job->ctx, begin, end, worker);
}

void pk_parallel_for(int threads, int64_t n, int64_t grain, pk_range_fn *fn, void *ctx) {
    if (n <= 0) return;
    if (threads <= 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    /* about PK_TASKS_PER_THREAD tasks per thread, so that a slow thread's share is
     * taken over by the others */
    int64_t chunk = (n + (int64_t)threads * PK_TASKS_PER_THREAD - 1) /
                    ((int64_t)threads * PK_TASKS_PER_THREAD);
    if (grain < 1) grain = 1;
    chunk = (chunk + grain - 1) / grain * grain;
    struct range_job job = {fn, ctx, n, chunk};
    pk_parallel(threads, (n + chunk - 1) / chunk, range_task, &job);
}

#define GUIDED_MAX_TASKS 256

struct guided_job {
    pk_range_fn *fn;
    void *ctx;
    const int64_t *bounds;
};

static void guided_task(void *ctx, int64_t task, int worker) {
    const struct guided_job *job = ctx;
    job->fn(job->ctx, job->bounds[task], job->bounds[task + 1], worker);
}

void pk_parallel_guided(int threads, int64_t n, pk_range_fn *fn, void *ctx) {
    if (n <= 0) return;
    if (threads <= 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    int64_t bounds[GUIDED_MAX_TASKS + 1];
    int tasks = 0;
    bounds[0] = 0;
    for (int64_t start = 0; start < n && tasks < GUIDED_MAX_TASKS;) {
        start += (n - start + threads - 1) / threads; /* the rest / threads, at least 1 */
        bounds[++tasks] = start;
    }
    bounds[tasks] = n;
    struct guided_job job = {fn, ctx, bounds};
    pk_parallel(threads, tasks, guided_task, &job);
}

void pk_pool_keep_ready(int on) {
    if (on) {
        __atomic_add_fetch(&pool.keep_ready, 1, __ATOMIC_RELAXED);
        return;
    }
    int n = __atomic_load_n(&pool.keep_ready, __ATOMIC_RELAXED);
    while (n > 0 && !__atomic_compare_exchange_n(&pool.keep_ready, &n, n - 1, 1,
                                                 __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}
