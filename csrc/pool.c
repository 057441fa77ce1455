/* The thread pool. (Serial placeholder: every task runs on the calling thread.) */
#include "pk_internal.h"

void pk_parallel(int threads, int64_t tasks, pk_task_fn *fn, void *ctx) {
    (void)threads;
    for (int64_t t = 0; t < tasks; t++) fn(ctx, t, 0);
}
