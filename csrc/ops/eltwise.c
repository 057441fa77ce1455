/* Public entries of GELU, softmax and LayerNorm: argument checks, then the rows split
 * into tasks of a few thousand elements on the thread pool, each task one call of the
 * dispatched kernel on its rows. */
#include "ops/eltwise_math.h"
#include "pk_internal.h"

/* Elements per task: enough to be worth a task, few enough to share among threads. */
#define TASK_ELEMENTS 8192

/* Rows per task for rows of `cols` elements (at least one row). */
static int64_t rows_per_task(int64_t cols) {
    return cols >= TASK_ELEMENTS ? 1 : TASK_ELEMENTS / (cols > 0 ? cols : 1);
}

typedef struct {
    const struct pk_functable *kernels;
    const float *x, *scale, *bias;
    float *y;
    int64_t rows, cols, step; /* step: rows per task */
    int approximate;
    float eps;
} rows_job;

static void gelu_task(void *ctx, int64_t task, int worker) {
    (void)worker;
    const rows_job *j = ctx;
    const int64_t first = task * j->step;
    const int64_t n = j->rows - first < j->step ? j->rows - first : j->step;
    j->kernels->gelu(j->x + first, n, j->approximate, j->y + first);
}

static void softmax_task(void *ctx, int64_t task, int worker) {
    (void)worker;
    const rows_job *j = ctx;
    const int64_t first = task * j->step;
    const int64_t n = j->rows - first < j->step ? j->rows - first : j->step;
    j->kernels->softmax(j->x + first * j->cols, n, j->cols, j->y + first * j->cols);
}

static void layer_norm_task(void *ctx, int64_t task, int worker) {
    (void)worker;
    const rows_job *j = ctx;
    const int64_t first = task * j->step;
    const int64_t n = j->rows - first < j->step ? j->rows - first : j->step;
    j->kernels->layer_norm(j->x + first * j->cols, n, j->cols, j->scale, j->bias, j->eps,
                           j->y + first * j->cols);
}

/* Runs fn over the job's rows (set in j, step filled in here). */
static int run_rows(rows_job *j, pk_task_fn *fn, double cost) {
    j->kernels = pk_kernels(); /* once per call */
    j->step = rows_per_task(j->cols);
    const int64_t tasks = (j->rows + j->step - 1) / j->step;
    pk_parallel(pk_threads_for((double)j->rows * (double)j->cols * cost), tasks, fn, j);
    return PK_OK;
}

int pk_gelu_f32(const float *x, int64_t n, int approximate, float *y) {
    if (n < 0 || (approximate != PK_GELU_ERF && approximate != PK_GELU_TANH)) return PK_ERR_ARG;
    if (n == 0) return PK_OK;
    if (!x || !y) return PK_ERR_ARG;
    /* elements as rows of one: tasks of TASK_ELEMENTS */
    rows_job j = {.x = x, .y = y, .rows = n, .approximate = approximate};
    j.kernels = pk_kernels();
    j.step = TASK_ELEMENTS;
    const int64_t tasks = (n + j.step - 1) / j.step;
    pk_parallel(pk_threads_for((double)n * PK_GELU_COST), tasks, gelu_task, &j);
    return PK_OK;
}

int pk_softmax_f32(const float *x, int64_t rows, int64_t cols, float *y) {
    if (rows < 0 || cols < 0) return PK_ERR_ARG;
    if (rows == 0 || cols == 0) return PK_OK;
    if (!x || !y) return PK_ERR_ARG;
    rows_job j = {.x = x, .y = y, .rows = rows, .cols = cols};
    return run_rows(&j, softmax_task, PK_SOFTMAX_COST);
}

int pk_layer_norm_f32(const float *x, int64_t rows, int64_t cols, const float *scale,
                      const float *bias, float eps, float *y) {
    if (rows < 0 || cols < 0) return PK_ERR_ARG;
    if (rows == 0 || cols == 0) return PK_OK;
    if (!x || !y) return PK_ERR_ARG;
    rows_job j = {.x = x, .scale = scale, .bias = bias, .y = y, .rows = rows, .cols = cols,
                  .eps = eps};
    return run_rows(&j, layer_norm_task, PK_LAYER_NORM_COST);
}
