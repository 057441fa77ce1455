/* pyinfer kernel library: the public C API. The part between the cdef markers is
 * also the cffi cdef (read by kernels/backend_c/ffi.py), so keep it to plain
 * declarations and integer #defines. */
#ifndef PYINFER_KERNELS_H
#define PYINFER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */

/* Status codes returned by every kernel entry point. */
#define PK_OK 0
#define PK_ERR_ARG -1        /* a null pointer, a negative size or an unknown option */
#define PK_ERR_OVERFLOW -2   /* a size whose accumulation could overflow */
#define PK_ERR_NOMEM -3      /* scratch allocation failed */

/* Epilogue activations (fused into the store loop). */
#define PK_ACT_NONE 0
#define PK_ACT_RELU 1
#define PK_ACT_RELU6 2

/* CPU features (bits of pk_cpu_features()). */
#define PK_CPU_AVX2 1
#define PK_CPU_FMA 2
#define PK_CPU_AVX512F 4
#define PK_CPU_AVX512BW 8
#define PK_CPU_AVX512DQ 16
#define PK_CPU_AVX512VL 32
#define PK_CPU_AVX512VNNI 64
#define PK_CPU_AVX512VPOPCNTDQ 128
#define PK_CPU_NEON 256
#define PK_CPU_DOTPROD 512

/* ---- library, CPU and dispatch ---- */
const char *pk_version(void);          /* package version the library was built for */
const char *pk_arch(void);             /* "x86_64", "aarch64", "armv7" or "generic" */
unsigned pk_cpu_features(void);        /* PK_CPU_* bits this CPU and OS support */
int pk_isa_count(void);                /* number of ISA levels of this architecture */
const char *pk_isa_name(int level);    /* level 0 is "scalar"; NULL past the last */
int pk_isa_compiled(int level);        /* 1 if this build has kernels for the level */
int pk_isa_supported(int level);       /* 1 if compiled and the CPU/OS supports it */
int pk_isa_level(void);                /* level serving kernels now */
int pk_set_isa_cap(int level);         /* serve from the best level <= level; returns it.
                                        * Safe while other threads run kernels. */
int pk_kernel_count(void);             /* number of dispatched kernel slots */
const char *pk_kernel_slot(int i);     /* slot name, e.g. "linear_csr" */
int pk_kernel_index(const char *slot); /* index of the slot of that name, or -1 */
const char *pk_kernel_impl(int i);     /* function serving the slot, e.g. "pk_linear_csr_avx2" */
void pk_set_num_threads(int n);        /* n > 0 wins; n <= 0: no count set, each call then
                                        * reads OMP_NUM_THREADS, else the CPU affinity */
int pk_get_num_threads(void);          /* threads the next call would use */
void pk_pool_keep_ready(int on);       /* nestable: while on, idle workers of the thread
                                        * pool stay awake a little longer (a model run) */
float pk_stream_sum_f32(const float *a, int64_t n); /* for bandwidth measurement */

/* ---- linear: y[b, o] = act(sum_k x[b, k] * W[o, k] + bias[o]) ---- */

/* CSR weights W [out, in]: row pointers indptr[out + 1], column indices (uint16 when
 * index_bytes == 2, int32 when 4), values. x [batch, in] and y [batch, out] row-major.
 * bias may be NULL. */
int pk_linear_csr_f32(const float *x, int64_t batch, int64_t in_features,
                      const int32_t *indptr, const void *indices, int index_bytes,
                      const float *values, int64_t out_features,
                      const float *bias, int activation, float *y);

/* Batch 1 on CSR rows regrouped into slices of 8 (SELL-8), built once per weight by the
 * caller: no per-row loop, tail or reduction, which cost more than the nonzeros of a
 * ~100-nonzero row. Lane i of slice s is output row slice_rows[8s + i] (-1: none); its
 * entries are e = slice_ptr[s] + 8j + i for j < (slice_ptr[s + 1] - slice_ptr[s]) / 8,
 * so slice_ptr[s] is a multiple of 8. Padding entries have value 0 and column
 * in_features, which reads as x = 0 (so an Inf or NaN in x never meets padding):
 *   y[slice_rows[8s + i]] = act(sum_j values[e] * x[indices[e]] + bias[row]).
 * index_bytes 2 (uint16, in_features < 65536) or 4 (int32). Any assignment of rows to
 * lanes is correct; threads split the slices at multiples of 8, so keeping the rows of
 * slices 8g .. 8g+7 among rows 64g .. 64g+63 means no two threads write one cache line
 * of y. */
int pk_linear_csr_slices_f32(const float *x, int64_t in_features, int64_t slices,
                             const int64_t *slice_ptr, const int32_t *slice_rows,
                             const void *indices, int index_bytes, const float *values,
                             int64_t out_features, const float *bias, int activation,
                             float *y);

/* int8 weights: packed[ceil(out/8)][ceil(in/4)][8][4] with packed[ob][c][r][j] =
 * q[8*ob + r][4*c + j] in -127..127 (never -128), scale[out] per output channel.
 * Activations are quantized per row to int8 (act_scale > 0: that static scale; 0:
 * dynamic max|x|/127), accumulated exactly in int32 (in_features <= 133144), then
 * y = act((float)acc * (x_scale * scale[o]) + bias[o]); rows with NaN/Inf give NaN. */
int pk_linear_int8_f32(const float *x, int64_t batch, int64_t in_features,
                       const int8_t *packed, const float *scale, int64_t out_features,
                       float act_scale, const float *bias, int activation, float *y);

/* int4 weights: packed[ceil(out/8)][groups*group_size/8][8][4] bytes holding offset-binary
 * nibbles u = q + 8: low nibble = u[8*ob + r][8*c + j], high = u[8*ob + r][8*c + 4 + j];
 * scale[ceil(out/8)][groups][8] per row and group (group_size 32, 64 or 128). Activations
 * as for int8; t = sum over groups g in order of (float)acc_g * scale_g, then
 * y = act(t * x_scale + bias[o]). */
int pk_linear_int4_f32(const float *x, int64_t batch, int64_t in_features,
                       const uint8_t *packed, const float *scale, int64_t out_features,
                       int group_size, float act_scale, const float *bias, int activation,
                       float *y);

/* binary weights: bits [out][ceil(in/64)] uint64; bit j of word i is column 64*i + j,
 * 1 means +1, 0 means -1, padding bits of the last word 0; alpha[out] >= 0.
 * binary_activations 0: y = act(alpha[o] * (sum_{bit=1} x - sum_{bit=0} x) + bias[o]);
 * 1: each x row becomes beta * sign(x) (beta = mean |x|, sign(0) = +1) and
 * y = act((alpha[o] * beta) * (in - 2 * popcount(xbits ^ wbits)) + bias[o]), exact. */
int pk_linear_binary_f32(const float *x, int64_t batch, int64_t in_features,
                         const uint64_t *bits, const float *alpha, int64_t out_features,
                         int binary_activations, const float *bias, int activation,
                         float *y);

/* pow2 weights: codes [out][ceil(in/2)] bytes, column 2j in the low nibble, 2j + 1 in
 * the high one (padding 0); code 0 is zero, else bit 3 = sign and bits 0..2 = e + 1
 * (e = 0..6), value alpha[o] * (+-2^-e); code 8 is invalid. int8_activations 0: float
 * activations; 1: dynamic per-row int8 (as pk_linear_int8_f32), acc = sum +-(q << (6 - e))
 * exact (in_features <= 264208), y = act(((alpha[o] * sx) * acc) / 64 + bias[o]). */
int pk_linear_pow2_f32(const float *x, int64_t batch, int64_t in_features,
                       const uint8_t *codes, const float *alpha, int64_t out_features,
                       int int8_activations, const float *bias, int activation, float *y);

/* Dense float32 weights W [out, in], packed once by pk_dense_pack_f32 into panels of
 * PK_DENSE_NR output rows interleaved along k: packed[p][k][j] = W[16p + j][k], 0 for rows
 * past out; pk_dense_packed_floats(out, in) floats (-1 for a negative size). */
#define PK_DENSE_NR 16
int64_t pk_dense_packed_floats(int64_t out_features, int64_t in_features);
int pk_dense_pack_f32(const float *w, int64_t out_features, int64_t in_features,
                      float *packed);

/* Dense linear on packed weights: a GEMV at batch 1, a blocked GEMM above. */
int pk_linear_dense_f32(const float *x, int64_t batch, int64_t in_features,
                        const float *packed, int64_t out_features, const float *bias,
                        int activation, float *y);

/* Batched matmul c[z] = act(A[z] @ B[z] + bias) for z < batches: A[z] row-major [m, k]
 * at a + a_offsets[z]; B[z][i][j] = b[b_offsets[z] + i * b_row_stride + j * b_col_stride]
 * (strides in floats, >= 0); c[z] row-major [m, n] at c + z * m * n. NULL offsets: all
 * 0. bias [n] may be NULL. */
int pk_matmul_f32(const float *a, const int64_t *a_offsets, const float *b,
                  const int64_t *b_offsets, int64_t b_row_stride, int64_t b_col_stride,
                  int64_t batches, int64_t m, int64_t k, int64_t n, const float *bias,
                  int activation, float *c);

/* ---- conv2d building blocks (NCHW float32; kernels/conv/shapes.py validates every size) ---- */

/* xpad[n, c] = x[n, c] with pad_* zero rows/columns around it. */
int pk_conv_pad_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                    int64_t width, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                    int64_t pad_right, float *xpad);

/* cols[n, k, oh * out_w + ow] with k = (c * kh + ky) * kw + kx: the input at
 * (oh * stride_h + ky * dil_h - pad_top, ow * stride_w + kx * dil_w - pad_left), 0 outside. */
int pk_im2col_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                  int64_t width, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                  int64_t dil_h, int64_t dil_w, int64_t pad_top, int64_t pad_left,
                  int64_t out_h, int64_t out_w, float *cols);

/* rows[n, oh, ow, k]: the same patches, one per row, for channels [c0, c0 + cg). */
int pk_im2row_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                  int64_t width, int64_t c0, int64_t cg, int64_t kh, int64_t kw,
                  int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                  int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                  float *rows);

/* Offset GEMM: y[n, g*og + o, oh, ow] = act(bias + sum_k W[g*og + o, k] *
 * x[n * x_image + offsets[g * kg + k] + oh * x_row + ow]), x_row >= out_w when out_h > 1.
 * w is W packed [groups][ceil(og / MR)][kg][MR] with MR = PK_CONV_GEMM_MR:
 * w[((g * blocks + o / MR) * kg + k) * MR + o % MR] = W[g*og + o, k], 0 past og. */
#define PK_CONV_GEMM_MR 6
int pk_conv_gemm_f32(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                     const int64_t *offsets, int64_t groups, int64_t kg, const float *w,
                     int64_t og, int64_t out_h, int64_t out_w, const float *bias,
                     int activation, float *y);

/* CSR conv: y[n, o, oh, ow] = act(bias[o] + sum over row o's nonzeros p of
 * values[p] * x[n * x_image + offsets[p] + oh * x_row + ow]). */
int pk_conv_csr_f32(const float *x, int64_t images, int64_t x_image, int64_t x_row,
                    const int32_t *indptr, const int64_t *offsets, const float *values,
                    int64_t out_channels, int64_t out_h, int64_t out_w, const float *bias,
                    int activation, float *y);

/* Depthwise conv (in/groups == 1): output channel o reads input channel
 * o / (out_channels / channels); w is [out_channels, kh, kw]. */
int pk_conv_depthwise_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                          int64_t width, const float *w, int64_t out_channels, int64_t kh,
                          int64_t kw, int64_t stride_h, int64_t stride_w, int64_t dil_h,
                          int64_t dil_w, int64_t pad_top, int64_t pad_left, int64_t out_h,
                          int64_t out_w, const float *bias, int activation, float *y);

/* Binary weights and binary activations (XNOR + popcount); a padded position adds 0 to
 * the +-1 dot product (Larq). wbits [out][kh * kw][ceil(cg / 64)]: channel c of a tap is
 * bit c % 64 of word c / 64, set for +1. alpha [out]. kh * kw * ceil(cg / 64) <= 256. */
int pk_conv_binary_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                       int64_t width, int64_t groups, const uint64_t *wbits,
                       const float *alpha, int64_t out_channels, int64_t kh, int64_t kw,
                       int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                       int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                       const float *bias, int activation, float *y);

/* Depthwise conv (in/groups == 1) with int8 weights wq [out, kh * kw] and scale [out]:
 * each image quantized once, as pk_conv_int8_f32 does (act_scale > 0: static, 0: dynamic
 * max|image| / 127), exact int32 sums, y = f32(acc) * (s_n * scale[o]) + bias. */
int pk_conv_depthwise_int8_f32(const float *x, int64_t images, int64_t channels,
                               int64_t height, int64_t width, const int8_t *wq,
                               const float *scale, float act_scale, int64_t out_channels,
                               int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                               int64_t dil_h, int64_t dil_w, int64_t pad_top, int64_t pad_left,
                               int64_t out_h, int64_t out_w, const float *bias, int activation,
                               float *y);

/* int8 conv2d (groups < channels): each image is quantized once (act_scale > 0: that
 * static scale; 0: dynamic max|image| / 127), padding is the quantized zero, sums are
 * exact int32 (127 * 127 * cg * kh * kw < 2^31), y = act((float)acc * (s_n * scale[o]) +
 * bias[o]); an image holding NaN/Inf gives NaN everywhere. w holds int16 pairs, one per
 * int32 (little-endian: low half = channel 2*c2 of the group, high half = 2*c2 + 1, 0 past
 * cg), packed [groups][ceil(og / MR)][cg2 * kh * kw][MR] with MR = PK_CONV_INT8_MR,
 * cg2 = ceil(cg / 2), k = (c2 * kh + ky) * kw + kx, 0 past og. */
#define PK_CONV_INT8_MR 4
int pk_conv_int8_f32(const float *x, int64_t images, int64_t channels, int64_t height,
                     int64_t width, int64_t groups, const int32_t *w, const float *scale,
                     float act_scale, int64_t out_channels, int64_t kh, int64_t kw,
                     int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
                     int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
                     const float *bias, int activation, float *y);

/* ---- activations and normalisation (float32, row-major; y may be x) ---- */

/* GELU of n values: approximate PK_GELU_ERF, x * Phi(x) = x/2 (1 + erf(x / sqrt 2));
 * PK_GELU_TANH, x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Within 1e-6
 * relative of the float64 formulas (the tanh form: 1e-6 + 3e-7 |2u|, as its exponent is
 * rounded to float32); NaN and Inf as those formulas give them (GELU(-Inf) is NaN). */
#define PK_GELU_ERF 0
#define PK_GELU_TANH 1
int pk_gelu_f32(const float *x, int64_t n, int approximate, float *y);

/* Softmax of each row of x [rows, cols]: e^(x - max) / sum, float32 throughout. A row
 * holding NaN or +Inf, or only -Inf, gives NaN, as NumPy does. */
int pk_softmax_f32(const float *x, int64_t rows, int64_t cols, float *y);

/* LayerNorm of each row of x [rows, cols]: (x - mean) / sqrt(var + eps) * scale + bias,
 * var the mean of (x - mean)^2; scale and bias [cols] may be NULL. A row holding NaN or
 * Inf gives NaN. */
int pk_layer_norm_f32(const float *x, int64_t rows, int64_t cols, const float *scale,
                      const float *bias, float eps, float *y);

/* ---- pooling (NCHW float32 planes; pyinfer/ops/pooling.py validates every size) ---- */

/* y[p] = each out_h x out_w window of x[p] (planes p of height x width; window (i, j)
 * covers rows i*stride_h - pad_top + [0, kh) and columns alike, clipped to the input):
 * PK_POOL_MAX its largest value (NaN if it holds NaN); PK_POOL_AVG its sum / (kh*kw)
 * (padding counts as zeros); PK_POOL_AVG_VALID its sum / the in-bounds taps. Every
 * window must hold an input element. */
#define PK_POOL_MAX 0
#define PK_POOL_AVG 1
#define PK_POOL_AVG_VALID 2
int pk_pool2d_f32(const float *x, int64_t planes, int64_t height, int64_t width, int64_t kh,
                  int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                  int64_t pad_left, int64_t out_h, int64_t out_w, int mode, float *y);

/* cdef-end */

#ifdef __cplusplus
}
#endif
#endif /* PYINFER_KERNELS_H */
