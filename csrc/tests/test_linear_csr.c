/* linear_csr / linear_csr_slices: the kernel serving each level against a double-precision
 * oracle on random CSR weights (tails of every SIMD width, empty rows, batch 1 and odd
 * batches, both index widths, bias and activations, Inf/NaN activations), thread-count
 * independence, bad arguments. */
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

typedef struct {
    int64_t out, in, nnz;
    int index_bytes;
    int32_t *indptr;
    void *indices;
    float *values;
} csr;

/* A random [out, in] CSR matrix with the given density; every fourth row is empty. */
static csr make_csr(pk_rng *r, int64_t out, int64_t in, double density, int index_bytes) {
    csr m = {out, in, 0, index_bytes, NULL, NULL, NULL};
    m.indptr = malloc((size_t)(out + 1) * sizeof(int32_t));
    int64_t cap = 0;
    m.indptr[0] = 0;
    for (int64_t o = 0; o < out; o++) { /* first pass: count */
        int64_t n = 0;
        if (o % 4 != 3)
            for (int64_t k = 0; k < in; k++) n += pk_rng_unit(r) < density;
        cap += n;
        m.indptr[o + 1] = (int32_t)cap;
    }
    m.nnz = cap;
    /* exact sizes, so that AddressSanitizer sees any read past the end */
    m.indices = malloc((size_t)(cap ? cap : 1) * (size_t)index_bytes);
    m.values = malloc((size_t)(cap ? cap : 1) * sizeof(float));
    for (int64_t o = 0; o < out; o++) { /* second pass: sorted distinct columns */
        const int64_t lo = m.indptr[o], n = m.indptr[o + 1] - lo;
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++) {
            /* spread n columns over [0, in): column i lies in its own slice */
            const int64_t slice_lo = i * in / n, slice_hi = (i + 1) * in / n;
            k = slice_lo + pk_rng_below(r, slice_hi - slice_lo);
            if (index_bytes == 2)
                ((uint16_t *)m.indices)[lo + i] = (uint16_t)k;
            else
                ((int32_t *)m.indices)[lo + i] = (int32_t)k;
            m.values[lo + i] = pk_rng_float(r);
        }
    }
    return m;
}

static void free_csr(csr *m) {
    free(m->indptr);
    free(m->indices);
    free(m->values);
}

static int64_t column(const csr *m, int64_t p) {
    return m->index_bytes == 2 ? ((const uint16_t *)m->indices)[p]
                               : ((const int32_t *)m->indices)[p];
}

static float *random_floats(pk_rng *r, int64_t n) {
    float *a = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) a[i] = pk_rng_float(r);
    return a;
}

/* The row-slice layout of pk_linear_csr_slices_f32, rows in their own order: slice s holds
 * rows 8s .. 8s+7 (the layout allows any order; the Python builder sorts by length). */
typedef struct {
    int64_t slices;
    int64_t *ptr;
    int32_t *rows;
    void *indices;
    float *values;
} sliced;

static sliced make_slices(const csr *m) {
    sliced t = {(m->out + 7) / 8, NULL, NULL, NULL, NULL};
    t.ptr = malloc((size_t)(t.slices + 1) * sizeof(int64_t));
    t.rows = malloc((size_t)(t.slices ? t.slices * 8 : 1) * sizeof(int32_t));
    t.ptr[0] = 0;
    for (int64_t s = 0; s < t.slices; s++) {
        int64_t steps = 0;
        for (int64_t i = 0; i < 8; i++) {
            const int64_t o = 8 * s + i;
            t.rows[8 * s + i] = o < m->out ? (int32_t)o : -1;
            if (o < m->out && m->indptr[o + 1] - m->indptr[o] > steps)
                steps = m->indptr[o + 1] - m->indptr[o];
        }
        t.ptr[s + 1] = t.ptr[s] + 8 * steps;
    }
    const int64_t n = t.ptr[t.slices];
    t.indices = malloc((size_t)(n ? n : 1) * (size_t)m->index_bytes);
    t.values = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t s = 0; s < t.slices; s++)
        for (int64_t e = t.ptr[s]; e < t.ptr[s + 1]; e++) {
            const int64_t o = 8 * s + e % 8, p = (o < m->out ? m->indptr[o] : 0) + (e - t.ptr[s]) / 8;
            const int real = o < m->out && p < m->indptr[o + 1];
            const int64_t col = real ? column(m, p) : m->in; /* padding reads x[in] = 0 */
            if (m->index_bytes == 2)
                ((uint16_t *)t.indices)[e] = (uint16_t)col;
            else
                ((int32_t *)t.indices)[e] = (int32_t)col;
            t.values[e] = real ? m->values[p] : 0.0f;
        }
    return t;
}

static void free_slices(sliced *t) {
    free(t->ptr);
    free(t->rows);
    free(t->indices);
    free(t->values);
}

static int run_slices(const csr *m, const sliced *t, const float *x, const float *bias, int act,
                      float *y) {
    return pk_linear_csr_slices_f32(x, m->in, t->slices, t->ptr, t->rows, t->indices,
                                    m->index_bytes, t->values, m->out, bias, act, y);
}

static int run(const csr *m, const float *x, int64_t batch, const float *bias, int act,
               float *y) {
    return pk_linear_csr_f32(x, batch, m->in, m->indptr, m->indices, m->index_bytes, m->values,
                             m->out, bias, act, y);
}

/* want[b, o] = act(sum_p values[p] * x[b, col(p)] + bias[o]) summed in double, and
 * scale[b, o] = sum_p |values[p] * x[b, col(p)]| + |bias[o]|, which bounds the rounding
 * error of a float32 sum in any order. */
static void oracle(const csr *m, const float *x, int64_t batch, const float *bias, int act,
                  float *want, double *scale) {
    for (int64_t b = 0; b < batch; b++)
        for (int64_t o = 0; o < m->out; o++) {
            double acc = bias ? bias[o] : 0.0, s = bias ? fabs(bias[o]) : 0.0;
            for (int64_t p = m->indptr[o]; p < m->indptr[o + 1]; p++) {
                const double t = (double)m->values[p] * x[b * m->in + column(m, p)];
                acc += t;
                s += fabs(t);
            }
            want[b * m->out + o] = pk_activate((float)acc, act);
            scale[b * m->out + o] = s;
        }
}

/* got against the oracle within 1e-5 of the scale; `what` names the case. */
static void check_close(const char *what, int level, const csr *m, int64_t batch, int act,
                        const float *got, const float *want, const double *scale) {
    long bad = 0, first = -1;
    for (int64_t i = 0; i < batch * m->out; i++)
        if (!pk_close(got[i], want[i], scale[i], 1e-5) && bad++ == 0) first = (long)i;
    CHECK(bad == 0,
          "%s %s batch=%lld in=%lld out=%lld idx=%d act=%d: %ld outputs differ, first at %ld "
          "(%g vs %g)",
          what, pk_isa_name(level), (long long)batch, (long long)m->in, (long long)m->out,
          m->index_bytes, act, bad, first, first >= 0 ? got[first] : 0.0,
          first >= 0 ? want[first] : 0.0);
}

/* One shape through pk_linear_csr_f32 (slices == 0) or, at batch 1, through the row-slice
 * layout (slices == 1): the oracle for every bias/activation, 1 vs 2 threads bit-equal. */
static void check_shape(pk_rng *r, int level, int64_t batch, int64_t in, int64_t out,
                        double density, int index_bytes, int special, int slices) {
    csr m = make_csr(r, out, in, density, index_bytes);
    float *x = random_floats(r, batch * in), *bias = random_floats(r, out);
    if (special && batch * in > 0) { /* Inf and NaN activations must propagate */
        x[pk_rng_below(r, batch * in)] = INFINITY;
        x[pk_rng_below(r, batch * in)] = -INFINITY;
        x[pk_rng_below(r, batch * in)] = NAN;
    }
    const size_t n = (size_t)(batch * out > 0 ? batch * out : 1);
    float *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    float *two = malloc(n * sizeof(float));
    double *scale = malloc(n * sizeof(double));
    sliced t = {0, NULL, NULL, NULL, NULL};
    if (slices) t = make_slices(&m);
    for (int act = PK_ACT_NONE; act <= PK_ACT_RELU6; act++) {
        const float *b = act == PK_ACT_RELU ? NULL : bias;
        oracle(&m, x, batch, b, act, want, scale);
        pk_set_num_threads(1);
        int st = slices ? run_slices(&m, &t, x, b, act, got) : run(&m, x, batch, b, act, got);
        CHECK(st == PK_OK, "status %d", st);
        pk_set_num_threads(2);
        st = slices ? run_slices(&m, &t, x, b, act, two) : run(&m, x, batch, b, act, two);
        CHECK(st == PK_OK, "status %d (2 threads)", st);
        check_close(slices ? "slices" : "csr", level, &m, batch, act, got, want, scale);
        CHECK(memcmp(got, two, (size_t)(batch * out) * sizeof(float)) == 0,
              "%s batch=%lld in=%lld out=%lld: 1 and 2 threads differ", pk_isa_name(level),
              (long long)batch, (long long)in, (long long)out);
    }
    pk_set_num_threads(0);
    if (slices) free_slices(&t);
    free(got), free(want), free(two), free(scale), free(x), free(bias);
    free_csr(&m);
}

/* Arguments pk_linear_csr_f32 must refuse before any kernel runs. */
static void check_bad_arguments(pk_rng *r) {
    csr m = make_csr(r, 5, 9, 0.5, 2);
    float *x = random_floats(r, 2 * 9), y[2 * 5];
    const float *v = m.values;
    const int32_t *ip = m.indptr;
    const void *ix = m.indices;
    CHECK(pk_linear_csr_f32(x, -1, 9, ip, ix, 2, v, 5, NULL, 0, y) == PK_ERR_ARG, "batch < 0");
    CHECK(pk_linear_csr_f32(x, 2, -1, ip, ix, 2, v, 5, NULL, 0, y) == PK_ERR_ARG, "in < 0");
    CHECK(pk_linear_csr_f32(x, 2, 9, ip, ix, 2, v, -5, NULL, 0, y) == PK_ERR_ARG, "out < 0");
    CHECK(pk_linear_csr_f32(x, 2, 9, ip, ix, 3, v, 5, NULL, 0, y) == PK_ERR_ARG, "index bytes");
    CHECK(pk_linear_csr_f32(x, 2, 70000, ip, ix, 2, v, 5, NULL, 0, y) == PK_ERR_ARG,
          "uint16 indices with in > 65536");
    CHECK(pk_linear_csr_f32(x, 2, 9, ip, ix, 2, v, 5, NULL, 3, y) == PK_ERR_ARG, "activation 3");
    CHECK(pk_linear_csr_f32(x, 2, 9, ip, ix, 2, v, 5, NULL, -1, y) == PK_ERR_ARG, "activation -1");
    CHECK(pk_linear_csr_f32(NULL, 2, 9, ip, ix, 2, v, 5, NULL, 0, y) == PK_ERR_ARG, "x NULL");
    CHECK(pk_linear_csr_f32(x, 2, 9, NULL, ix, 2, v, 5, NULL, 0, y) == PK_ERR_ARG, "indptr NULL");
    CHECK(pk_linear_csr_f32(x, 2, 9, ip, ix, 2, v, 5, NULL, 0, NULL) == PK_ERR_ARG, "y NULL");
    if (m.nnz > 0) {
        CHECK(pk_linear_csr_f32(x, 2, 9, ip, NULL, 2, v, 5, NULL, 0, y) == PK_ERR_ARG,
              "indices NULL");
        CHECK(pk_linear_csr_f32(x, 2, 9, ip, ix, 2, NULL, 5, NULL, 0, y) == PK_ERR_ARG,
              "values NULL");
    }
    CHECK(pk_linear_csr_f32(x, 2, (int64_t)INT32_MAX + 1, ip, ix, 4, v, 5, NULL, 0, y) ==
              PK_ERR_OVERFLOW,
          "in > INT32_MAX");
    /* nothing to compute is fine, even with NULL data */
    CHECK(pk_linear_csr_f32(NULL, 0, 9, NULL, NULL, 2, NULL, 5, NULL, 0, NULL) == PK_OK,
          "batch 0");
    free(x);
    free_csr(&m);
}

/* Arguments pk_linear_csr_slices_f32 must refuse. */
static void check_bad_slices(pk_rng *r) {
    csr m = make_csr(r, 5, 9, 0.5, 2);
    float *x = random_floats(r, 9), y[5];
    sliced t = make_slices(&m);
    CHECK(run_slices(&m, &t, x, NULL, 0, y) == PK_OK, "slices");
    CHECK(pk_linear_csr_slices_f32(x, 9, 0, t.ptr, t.rows, t.indices, 2, t.values, 5, NULL, 0,
                                   y) == PK_ERR_ARG,
          "fewer slices than out / 8");
    CHECK(pk_linear_csr_slices_f32(x, 65536, t.slices, t.ptr, t.rows, t.indices, 2, t.values, 5,
                                   NULL, 0, y) == PK_ERR_ARG,
          "uint16 slice indices with in = 65536 (no room for the padding column)");
    CHECK(pk_linear_csr_slices_f32(x, 9, t.slices, t.ptr, t.rows, t.indices, 2, t.values, 5,
                                   NULL, 3, y) == PK_ERR_ARG,
          "slices activation 3");
    CHECK(pk_linear_csr_slices_f32(NULL, 9, t.slices, t.ptr, t.rows, t.indices, 2, t.values, 5,
                                   NULL, 0, y) == PK_ERR_ARG,
          "slices x NULL");
    CHECK(pk_linear_csr_slices_f32(x, 9, t.slices, NULL, t.rows, t.indices, 2, t.values, 5,
                                   NULL, 0, y) == PK_ERR_ARG,
          "slice_ptr NULL");
    free_slices(&t);
    free(x);
    free_csr(&m);
}

/* (batch, in, out, density): in around every SIMD width and unroll, batch tails of the
 * 8- to 64-wide tiles, batch 1 (SpMV), an all-empty matrix; then tiles of 8 to 64 lanes,
 * 64-wide tiles with tails, bands of 64 rows plus a remainder */
static const struct {
    int64_t batch, in, out;
    double density;
} SHAPES[] = {
    {1, 1, 1, 1.0},     {1, 7, 5, 0.9},     {1, 33, 17, 0.6},   {1, 100, 9, 0.5},
    {1, 300, 13, 0.3},  {2, 1, 3, 1.0},     {3, 9, 7, 0.7},     {8, 65, 12, 0.4},
    {9, 31, 11, 0.5},   {16, 40, 10, 0.3},  {17, 129, 21, 0.2}, {33, 70, 6, 0.5},
    {5, 64, 8, 0.0},    {64, 96, 19, 0.25}, {1, 0, 4, 0.5},     {4, 0, 4, 0.5},
    {40, 50, 150, 0.3}, {57, 33, 70, 0.5},  {100, 20, 9, 0.6},  {24, 12, 130, 0.5},
    {48, 70, 30, 0.4},  {55, 21, 66, 0.5},  {130, 40, 20, 0.5},
};

/* Every shape at both index widths, then the given batch with in past the uint16 range,
 * many slices and row chunks (enough work for two threads), Inf/NaN activations. */
static void check_shapes(pk_rng *r, int level, int slices) {
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        for (int index_bytes = 2; index_bytes <= 4; index_bytes += 2)
            if (!slices || SHAPES[i].batch == 1)
                check_shape(r, level, SHAPES[i].batch, SHAPES[i].in, SHAPES[i].out,
                            SHAPES[i].density, index_bytes, 0, slices);
    const int64_t batch = slices ? 1 : 17;
    check_shape(r, level, 1, 70000, 3, 0.001, 4, 0, slices);
    check_shape(r, level, batch, 70000, 3, 0.001, 4, 0, slices);
    check_shape(r, level, 1, 1000, 203, 0.1, 2, 0, slices);
    check_shape(r, level, 1, 1000, 203, 0.1, 4, 1, slices);
    check_shape(r, level, 1, 50, 30, 0.5, 2, 1, slices);
    check_shape(r, level, batch, 50, 30, 0.5, 2, 1, slices);
}

/* linear_csr: every level against the double-precision oracle. */
void test_linear_csr(int level) {
    pk_rng r = {0x9e3779b97f4a7c15ULL ^ (uint64_t)level};
    check_shapes(&r, level, 0);
    check_bad_arguments(&r);
}

/* linear_csr_slices: the same at batch 1 through the row-slice layout. */
void test_linear_csr_slices(int level) {
    pk_rng r = {0x51ce5ULL ^ (uint64_t)level};
    check_shapes(&r, level, 1);
    check_bad_slices(&r);
}
