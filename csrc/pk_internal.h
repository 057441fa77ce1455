/* Internal declarations shared by the kernel sources: ISA levels, the dispatch
 * table, threading and the fused epilogue. Not part of the public API. */
#ifndef PK_INTERNAL_H
#define PK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pyinfer_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

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

/* ---- kernel function types (one per dispatched slot) ---- */
typedef int (*pk_linear_csr_fn)(const float *x, int64_t batch, int64_t in_features,
                                const int32_t *indptr, const void *indices, int index_bytes,
                                const float *values, int64_t out_features,
                                const float *bias, int activation, float *y);
/* CSR row slices at batch 1 (pk_linear_csr_slices_f32); xs is x with xs[in] = 0. */
typedef int (*pk_linear_csr_slices_fn)(const float *xs, int64_t slices, const int64_t *slice_ptr,
                                       const int32_t *slice_rows, const void *indices,
                                       int index_bytes, const float *values, const float *bias,
                                       int activation, float *y);
/* int8 / int4 quantized linear (csrc/linear/linear_int8*.c, linear_int4*.c). */
typedef int (*pk_linear_int8_fn)(const float *x, int64_t batch, int64_t in_features,
                                 const int8_t *packed, const float *scale,
                                 int64_t out_features, float act_scale, const float *bias,
                                 int activation, float *y);
typedef int (*pk_linear_int4_fn)(const float *x, int64_t batch, int64_t in_features,
                                 const uint8_t *packed, const float *scale,
                                 int64_t out_features, int group_size, float act_scale,
                                 const float *bias, int activation, float *y);

/* conv2d (csrc/conv): offset GEMM (dense), CSR, depthwise. */
typedef int (*pk_conv_gemm_fn)(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                               const int64_t *offsets, int64_t groups, int64_t kg,
                               const float *w, int64_t og, int64_t out_h, int64_t out_w,
                               const float *bias, int activation, float *y);
typedef int (*pk_conv_csr_fn)(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                              const int32_t *indptr, const int64_t *offsets,
                              const float *values, int64_t out_channels, int64_t out_h,
                              int64_t out_w, const float *bias, int activation, float *y);
typedef int (*pk_conv_depthwise_fn)(const float *x, int64_t images, int64_t channels,
                                    int64_t height, int64_t width, const float *w,
                                    int64_t out_channels, int64_t kh, int64_t kw,
                                    int64_t stride_h, int64_t stride_w, int64_t dil_h,
                                    int64_t dil_w, int64_t pad_top, int64_t pad_left,
                                    int64_t out_h, int64_t out_w, const float *bias,
                                    int activation, float *y);
typedef int (*pk_conv_binary_fn)(const float *x, int64_t images, int64_t channels,
                                 int64_t height, int64_t width, int64_t groups,
                                 const uint64_t *wbits, const float *alpha,
                                 int64_t out_channels, int64_t kh, int64_t kw,
                                 int64_t stride_h, int64_t stride_w, int64_t dil_h,
                                 int64_t dil_w, int64_t pad_top, int64_t pad_left,
                                 int64_t out_h, int64_t out_w, const float *bias,
                                 int activation, float *y);

/* int8 conv2d, groups < channels (csrc/conv/conv_int8*.c); w as in pk_conv_int8_f32. */
typedef int (*pk_conv_int8_fn)(const float *x, int64_t images, int64_t channels,
                               int64_t height, int64_t width, int64_t groups, const int32_t *w,
                               const float *scale, float act_scale, int64_t out_channels,
                               int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                               int64_t dil_h, int64_t dil_w, int64_t pad_top, int64_t pad_left,
                               int64_t out_h, int64_t out_w, const float *bias, int activation,
                               float *y);

/* binary / pow2 linear (csrc/linear/linear_binary*.c, linear_pow2*.c). The public
 * entries prepare the activations: binary gets xbits/beta (NULL: float activations),
 * pow2 gets int8 rows xq of stride xq_stride and their scales (NULL: float). */
typedef int (*pk_linear_binary_fn)(const float *x, const uint64_t *xbits, const float *beta,
                                   int64_t batch, int64_t in_features, const uint64_t *bits,
                                   const float *alpha, int64_t out_features,
                                   const float *bias, int activation, float *y);
typedef int (*pk_linear_pow2_fn)(const float *x, const int8_t *xq, const float *xscale,
                                 int64_t xq_stride, int64_t batch, int64_t in_features,
                                 const uint8_t *codes, const float *alpha,
                                 int64_t out_features, const float *bias, int activation,
                                 float *y);

/* Every dispatched kernel: X(slot, function type). Add a row per new kernel family;
 * the table, its names and pk_kernel_slot()/pk_kernel_impl() follow from it. */
#define PK_KERNEL_SLOTS(X) \
    X(linear_csr, pk_linear_csr_fn) \
    X(linear_csr_slices, pk_linear_csr_slices_fn) \
    X(linear_binary, pk_linear_binary_fn) \
    X(linear_pow2, pk_linear_pow2_fn) \
    X(linear_int8, pk_linear_int8_fn) \
    X(linear_int4, pk_linear_int4_fn) \
    X(conv_gemm, pk_conv_gemm_fn) \
    X(conv_csr, pk_conv_csr_fn) \
    X(conv_depthwise, pk_conv_depthwise_fn) \
    X(conv_binary, pk_conv_binary_fn) \
    X(conv_int8, pk_conv_int8_fn)

#define PK_SLOT_FIELD(slot, type) type slot; const char *slot##_impl;
struct pk_functable { PK_KERNEL_SLOTS(PK_SLOT_FIELD) };
#undef PK_SLOT_FIELD

extern struct pk_functable pk_table;

/* Sets a slot's function and remembers its name for pk_kernel_impl(). */
#define PK_USE(slot, fn) (pk_table.slot = (fn), pk_table.slot##_impl = #fn)

/* Fills pk_table once (on first use); safe to call from any entry point. */
void pk_dispatch_init(void);

/* Has the CPU (and OS) every feature in mask? */
int pk_cpu_has(unsigned mask);

/* Threads for the next parallel region (set by pk_set_num_threads). */
int pk_threads(void);

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

/* ---- csr ---- */
int pk_linear_csr_scalar(const float *, int64_t, int64_t, const int32_t *, const void *, int,
                         const float *, int64_t, const float *, int, float *);
int pk_linear_csr_slices_scalar(const float *, int64_t, const int64_t *, const int32_t *,
                                const void *, int, const float *, const float *, int, float *);
#ifdef PK_HAVE_AVX2
int pk_linear_csr_avx2(const float *, int64_t, int64_t, const int32_t *, const void *, int,
                       const float *, int64_t, const float *, int, float *);
int pk_linear_csr_slices_avx2(const float *, int64_t, const int64_t *, const int32_t *,
                              const void *, int, const float *, const float *, int, float *);
#endif
#ifdef PK_HAVE_AVX512
int pk_linear_csr_avx512(const float *, int64_t, int64_t, const int32_t *, const void *, int,
                         const float *, int64_t, const float *, int, float *);
#endif

/* ---- binary / pow2 ---- */
#define PK_BINARY_POW2_PROTOS(isa)                                                           \
    int pk_linear_binary_##isa(const float *, const uint64_t *, const float *, int64_t,     \
                               int64_t, const uint64_t *, const float *, int64_t,           \
                               const float *, int, float *);                                \
    int pk_linear_pow2_##isa(const float *, const int8_t *, const float *, int64_t, int64_t, \
                             int64_t, const uint8_t *, const float *, int64_t, const float *, \
                             int, float *);
PK_BINARY_POW2_PROTOS(scalar)
#ifdef PK_HAVE_AVX2
PK_BINARY_POW2_PROTOS(avx2)
/* the float-activation path of pk_linear_binary_avx2, reused by the AVX-512 variant */
int pk_linear_binary_float_avx2(const float *, int64_t, int64_t, const uint64_t *,
                                const float *, int64_t, const float *, int, float *);
#endif
#ifdef PK_HAVE_AVX512VPOPCNT
int pk_linear_binary_avx512vpopcnt(const float *, const uint64_t *, const float *, int64_t,
                                   int64_t, const uint64_t *, const float *, int64_t,
                                   const float *, int, float *);
#endif

/* ---- conv2d ---- */
#define PK_CONV_PROTOS(isa)                                                                  \
    int pk_conv_gemm_##isa(const float *, int64_t, int64_t, int64_t, const int64_t *,       \
                           int64_t, int64_t, const float *, int64_t, int64_t, int64_t,      \
                           const float *, int, float *);                                    \
    int pk_conv_csr_##isa(const float *, int64_t, int64_t, int64_t, const int32_t *,        \
                          const int64_t *, const float *, int64_t, int64_t, int64_t,        \
                          const float *, int, float *);                                     \
    int pk_conv_depthwise_##isa(const float *, int64_t, int64_t, int64_t, int64_t,          \
                                const float *, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,       \
                                const float *, int, float *);                      \
    int pk_conv_binary_##isa(const float *, int64_t, int64_t, int64_t, int64_t, int64_t,    \
                             const uint64_t *, const float *, int64_t, int64_t, int64_t,    \
                             int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, \
                             int64_t, const float *, int, float *);
PK_CONV_PROTOS(scalar)
#ifdef PK_HAVE_AVX2
PK_CONV_PROTOS(avx2)
#endif

/* ---- int8 conv2d ---- */
#define PK_CONV_INT8_PROTOS(isa)                                                             \
    int pk_conv_int8_##isa(const float *, int64_t, int64_t, int64_t, int64_t, int64_t,      \
                           const int32_t *, const float *, float, int64_t, int64_t, int64_t, \
                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                           int64_t, const float *, int, float *);
PK_CONV_INT8_PROTOS(scalar)
#ifdef PK_HAVE_AVX2
PK_CONV_INT8_PROTOS(avx2)
#endif
#ifdef PK_HAVE_AVX512VNNI
PK_CONV_INT8_PROTOS(avx512vnni)
#endif

/* ---- int8 / int4 ---- */
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
int pk_linear_int8_scalar(const float *, int64_t, int64_t, const int8_t *, const float *,
                          int64_t, float, const float *, int, float *);
int pk_linear_int4_scalar(const float *, int64_t, int64_t, const uint8_t *, const float *,
                          int64_t, int, float, const float *, int, float *);
#ifdef PK_HAVE_AVX2
void pk_quantize_row_avx2(const float *x, int64_t in, int64_t ldq, float act_scale,
                          int8_t *q, uint8_t *qabs, float *scale, unsigned char *bad);
int pk_linear_int8_avx2(const float *, int64_t, int64_t, const int8_t *, const float *,
                        int64_t, float, const float *, int, float *);
int pk_linear_int4_avx2(const float *, int64_t, int64_t, const uint8_t *, const float *,
                        int64_t, int, float, const float *, int, float *);
#endif
#ifdef PK_HAVE_AVX512VNNI
int pk_linear_int8_avx512vnni(const float *, int64_t, int64_t, const int8_t *, const float *,
                              int64_t, float, const float *, int, float *);
int pk_linear_int4_avx512vnni(const float *, int64_t, int64_t, const uint8_t *, const float *,
                              int64_t, int, float, const float *, int, float *);
#endif

#endif /* PK_INTERNAL_H */
