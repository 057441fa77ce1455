/* Public entries of the dense float32 kernels (packing, linear, batched matmul): argument
 * checks, then one blocked driver shared by every ISA, which calls the dispatched
 * kernels of the dense_* slots.
 *
 * The right operand B [k, n] is read in panels of PK_DENSE_NR columns interleaved along k
 * ([k][16]): packed once per weight for linear, or slice by slice into per-thread scratch
 * for matmul and for unpacked weights. Threads share the panels (tasks of a few panels
 * each, claimed in order); within a task the loop is rows blocked by MC, then k blocked
 * by KC, then the task's panels: the MC x KC block of A (in L2, copied first when its
 * stride would crowd one L1 set, see A_LD) meets each panel's KC x 16 slice (16 KB),
 * which stays in L1 while every row tile of the block passes over it. Every output is
 * summed by one task in an order fixed by the shape alone, so results do not depend on
 * the thread count. */
#include <string.h>

#include "pk_internal.h"

#define NR PK_DENSE_NR
/* k per block: a panel slice of KC x 16 floats is 16 KB, half of a 32 KB L1. */
#define KC 256
/* rows per block: MC x KC of A (384 KB) stays in a 512 KB L2; a multiple of the row
 * tiles of every ISA (6, 12). */
#define MC 384
/* Up to this many rows of A times a transposed B (B's columns contiguous: unpacked
 * weights) run as one dot product per output, reading B once per row: packing B's panels
 * would cost more than those passes. */
#define DOT_ROWS 8
/* Row stride of the copies of A's blocks. Rows of A whose stride is a multiple of 4 KB
 * (k a multiple of 1024: most layer widths) all fall in one set of a 4 KB-per-way L1, and
 * a tile's 12 rows then evict each other (30 % slower at k = 1024, 2048, 4096); such
 * blocks are copied at this stride first (KC + 16 floats: rows 1088 bytes apart). */
#define A_LD (KC + 16)
/* tasks aimed for per thread, so that a late or slow thread leaves work to others */
#define TASKS_PER_THREAD 4

int64_t pk_dense_packed_floats(int64_t out_features, int64_t in_features) {
    if (out_features < 0 || in_features < 0) return -1;
    return (out_features + NR - 1) / NR * NR * in_features;
}

int pk_dense_pack_f32(const float *w, int64_t out_features, int64_t in_features,
                      float *packed) {
    if (out_features < 0 || in_features < 0) return PK_ERR_ARG;
    if (out_features > INT32_MAX || in_features > INT32_MAX) return PK_ERR_OVERFLOW;
    if (out_features == 0 || in_features == 0) return PK_OK;
    if (!w || !packed) return PK_ERR_ARG;
    for (int64_t p = 0; p < (out_features + NR - 1) / NR; p++) {
        float *panel = packed + p * in_features * NR;
        for (int64_t j = 0; j < NR; j++) {
            const int64_t o = p * NR + j;
            if (o < out_features) {
                const float *row = w + o * in_features;
                for (int64_t k = 0; k < in_features; k++) panel[k * NR + j] = row[k];
            } else {
                for (int64_t k = 0; k < in_features; k++) panel[k * NR + j] = 0.0f;
            }
        }
    }
    return PK_OK;
}

/* One call of the driver: c[z] = act(a[z] @ b[z] + bias) for z < batches. */
typedef struct {
    const struct pk_functable *kt; /* the dispatch table, read once per call */
    const float *a;                /* rows [m][k], row stride k */
    const int64_t *a_offsets;      /* first element of a[z] (NULL: 0) */
    const float *packed;           /* B packed as pk_dense_pack_f32 does, or NULL */
    const float *b;                /* else B[kk][j] = b[b_offsets[z] + kk*rs + j*cs] */
    const int64_t *b_offsets;
    int64_t rs, cs;
    int64_t batches, m, k, n;
    int64_t panels, per_task, groups; /* panels of n; per task; tasks per batch item */
    const float *bias;
    int activation;
    float *c;       /* [batches][m][n] */
    float *scratch;   /* k * NR floats per worker (a panel packed on the fly) */
    float *a_scratch; /* a_rows * A_LD floats per worker (blocks of A copied), or NULL */
    int64_t a_rows;   /* rows of a copied block: min(m, MC) */
} dense_job;

/* B rows k0 .. k0+kc-1, columns n0 .. n0+cols-1 into one zero-padded [kc][16] panel. */
static void pack_panel(const float *b, int64_t rs, int64_t cs, int64_t k0, int64_t kc,
                       int64_t n0, int64_t cols, float *panel) {
    if (cols < NR) memset(panel, 0, (size_t)(kc * NR) * sizeof(float));
    if (cs == 1) {
        for (int64_t kk = 0; kk < kc; kk++)
            memcpy(panel + kk * NR, b + (k0 + kk) * rs + n0, (size_t)cols * sizeof(float));
    } else { /* column by column: each column of B is a contiguous run when rs == 1 */
        for (int64_t j = 0; j < cols; j++) {
            const float *col = b + (n0 + j) * cs + k0 * rs;
            for (int64_t kk = 0; kk < kc; kk++) panel[kk * NR + j] = col[kk * rs];
        }
    }
}

static void dense_task(void *ctx, int64_t task, int worker) {
    const dense_job *j = ctx;
    const int64_t z = task / j->groups, g = task % j->groups;
    const int64_t p0 = g * j->per_task;
    const int64_t p1 = p0 + j->per_task < j->panels ? p0 + j->per_task : j->panels;
    const float *a = j->a + (j->a_offsets ? j->a_offsets[z] : 0);
    const float *b = j->b ? j->b + (j->b_offsets ? j->b_offsets[z] : 0) : NULL;
    float *c = j->c + z * j->m * j->n;
    const int64_t n0 = p0 * NR, cols = (p1 * NR < j->n ? p1 * NR : j->n) - n0;
    const float *bias = j->bias ? j->bias + n0 : NULL;
    if (j->m == 1 && j->packed) { /* GEMV: the packed panels streamed once, whole k */
        j->kt->dense_gemv(a, j->k, j->packed + p0 * j->k * NR, cols, bias, j->activation,
                          c + n0);
        return;
    }
    if (j->m <= DOT_ROWS && j->rs == 1) { /* GEMVs on B's columns as contiguous rows */
        for (int64_t r = 0; r < j->m; r++)
            j->kt->dense_dot(a + r * j->k, j->k, b + n0 * j->cs, j->cs, cols, bias,
                             j->activation, c + r * j->n + n0);
        return;
    }
    float *buf = j->scratch ? j->scratch + (int64_t)worker * j->k * NR : NULL;
    float *abuf = j->a_scratch ? j->a_scratch + (int64_t)worker * j->a_rows * A_LD : NULL;
    for (int64_t m0 = 0; m0 < j->m; m0 += MC) {
        const int64_t mc = j->m - m0 < MC ? j->m - m0 : MC;
        for (int64_t k0 = 0; k0 < j->k; k0 += KC) {
            const int64_t kc = j->k - k0 < KC ? j->k - k0 : KC;
            const int last = k0 + kc == j->k;
            const float *ab = a + m0 * j->k + k0;
            int64_t lda = j->k;
            if (abuf) { /* the block at a stride that spreads its rows over the L1 sets */
                for (int64_t r = 0; r < mc; r++)
                    memcpy(abuf + r * A_LD, ab + r * lda, (size_t)kc * sizeof(float));
                ab = abuf, lda = A_LD;
            }
            /* each KC x 16 slice of the task's panels, in order, against the block */
            for (int64_t p = p0; p < p1; p++) {
                const int64_t pc = j->n - p * NR < NR ? j->n - p * NR : NR;
                const float *slice = j->packed ? j->packed + (p * j->k + k0) * NR : buf;
                if (!j->packed) pack_panel(b, j->rs, j->cs, k0, kc, p * NR, pc, buf);
                j->kt->dense_gemm(ab, lda, mc, slice, kc, pc, c + m0 * j->n + p * NR, j->n,
                                  k0 > 0, last && j->bias ? j->bias + p * NR : NULL,
                                  last ? j->activation : PK_ACT_NONE);
            }
        }
    }
}

/* y = act(bias) everywhere: the product of an empty k. */
static void fill_bias(float *c, int64_t rows, int64_t n, const float *bias, int activation) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++)
            c[r * n + i] = pk_activate(bias ? bias[i] : 0.0f, activation);
}

/* Splits the job into tasks and runs them on the pool. */
static int run_dense(dense_job *j) {
    if (j->k == 0) {
        fill_bias(j->c, j->batches * j->m, j->n, j->bias, j->activation);
        return PK_OK;
    }
    j->kt = pk_kernels();
    j->panels = (j->n + NR - 1) / NR;
    const int threads = pk_threads_for((double)j->batches * (double)j->m * (double)j->n *
                                       (double)j->k);
    /* enough groups of panels per batch item for TASKS_PER_THREAD tasks per thread */
    int64_t groups = 1;
    if (threads > 1 && j->batches < (int64_t)threads * TASKS_PER_THREAD)
        groups = ((int64_t)threads * TASKS_PER_THREAD + j->batches - 1) / j->batches;
    if (groups > j->panels) groups = j->panels;
    j->per_task = (j->panels + groups - 1) / groups;
    j->groups = (j->panels + j->per_task - 1) / j->per_task;
    j->scratch = j->a_scratch = NULL;
    const int direct = j->packed || (j->m <= DOT_ROWS && j->rs == 1);
    if (!direct) {
        j->scratch = pk_aligned_alloc((size_t)threads * (size_t)j->k * NR * sizeof(float));
        if (!j->scratch) return PK_ERR_NOMEM;
    }
    const int gemm = !(j->m == 1 && j->packed) && !(j->m <= DOT_ROWS && j->rs == 1);
    if (gemm && j->k % 1024 == 0) {
        j->a_rows = j->m < MC ? j->m : MC;
        j->a_scratch = pk_aligned_alloc((size_t)threads * (size_t)j->a_rows * A_LD * sizeof(float));
        if (!j->a_scratch) {
            pk_aligned_free(j->scratch);
            return PK_ERR_NOMEM;
        }
    }
    pk_parallel(threads, j->batches * j->groups, dense_task, j);
    pk_aligned_free(j->a_scratch);
    pk_aligned_free(j->scratch);
    return PK_OK;
}

int pk_linear_dense_f32(const float *x, int64_t batch, int64_t in_features,
                        const float *packed, int64_t out_features, const float *bias,
                        int activation, float *y) {
    if (batch < 0 || in_features < 0 || out_features < 0) return PK_ERR_ARG;
    if (in_features > INT32_MAX || out_features > INT32_MAX) return PK_ERR_OVERFLOW;
    if (activation < PK_ACT_NONE || activation > PK_ACT_RELU6) return PK_ERR_ARG;
    if (batch == 0 || out_features == 0) return PK_OK;
    if (!y || (in_features > 0 && (!x || !packed))) return PK_ERR_ARG;
    dense_job j = {0};
    j.a = x;
    j.packed = packed;
    j.batches = 1;
    j.m = batch;
    j.k = in_features;
    j.n = out_features;
    j.bias = bias;
    j.activation = activation;
    j.c = y;
    return run_dense(&j);
}

int pk_matmul_f32(const float *a, const int64_t *a_offsets, const float *b,
                  const int64_t *b_offsets, int64_t b_row_stride, int64_t b_col_stride,
                  int64_t batches, int64_t m, int64_t k, int64_t n, const float *bias,
                  int activation, float *c) {
    if (batches < 0 || m < 0 || k < 0 || n < 0) return PK_ERR_ARG;
    if (b_row_stride < 0 || b_col_stride < 0) return PK_ERR_ARG;
    if (k > INT32_MAX || n > INT32_MAX) return PK_ERR_OVERFLOW;
    if (activation < PK_ACT_NONE || activation > PK_ACT_RELU6) return PK_ERR_ARG;
    if (batches == 0 || m == 0 || n == 0) return PK_OK;
    if (!c || (k > 0 && (!a || !b))) return PK_ERR_ARG;
    dense_job j = {0};
    j.a = a;
    j.a_offsets = a_offsets;
    j.b = b;
    j.b_offsets = b_offsets;
    j.rs = b_row_stride;
    j.cs = b_col_stride;
    j.batches = batches;
    j.m = m;
    j.k = k;
    j.n = n;
    j.bias = bias;
    j.activation = activation;
    j.c = c;
    return run_dense(&j);
}
