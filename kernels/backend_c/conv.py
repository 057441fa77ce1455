"""C building blocks of conv2d (csrc/conv): padding, im2col/im2row, offset GEMM, CSR,
depthwise, int8 and binary kernels. Arguments are validated by :mod:`kernels.conv` when
a conv is planned. kernels/backend_numba/conv.py has the same names and signatures."""

from __future__ import annotations

import numpy as np

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library, ptr

#: Largest kh·kw·ceil(cg/64) of the binary kernel (PK_CONV_BINARY_WORDS); larger convs
#: run the NumPy reference.
MAX_BINARY_WORDS = 256


def pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, out: np.ndarray) -> None:
    """out[n, c] = x[n, c] framed by zeros; x and out C-contiguous float32."""
    ffi, lib = library()
    n, c, h, w = x.shape
    status = lib.pk_conv_pad_f32(
        ptr(ffi, "float *", x), n, c, h, w, top, bottom, left, right, ptr(ffi, "float *", out)
    )
    check(status, "conv2d padding")


def im2col(x, kh, kw, stride, dilation, pad_top, pad_left, out_h, out_w, out) -> None:
    """out [n, C·kh·kw, out_h·out_w]: patches as columns (rows k = (c, ky, kx))."""
    ffi, lib = library()
    n, c, h, w = x.shape
    status = lib.pk_im2col_f32(
        ptr(ffi, "float *", x), n, c, h, w, kh, kw, stride[0], stride[1],
        dilation[0], dilation[1], pad_top, pad_left, out_h, out_w, ptr(ffi, "float *", out),
    )  # fmt: skip
    check(status, "conv2d im2col")


def im2row(x, c0, cg, kh, kw, stride, dilation, pad_top, pad_left, out_h, out_w, out) -> None:
    """out [n·out_h·out_w, cg·kh·kw]: one patch of channels [c0, c0+cg) per row."""
    ffi, lib = library()
    n, c, h, w = x.shape
    status = lib.pk_im2row_f32(
        ptr(ffi, "float *", x), n, c, h, w, c0, cg, kh, kw, stride[0], stride[1],
        dilation[0], dilation[1], pad_top, pad_left, out_h, out_w, ptr(ffi, "float *", out),
    )  # fmt: skip
    check(status, "conv2d im2row")


def pack_gemm_weight(matrix: np.ndarray, groups: int) -> np.ndarray:
    """W [groups·og, kg] in the offset GEMM's layout [groups][ceil(og/MR)][kg][MR]."""
    mr = library()[1].PK_CONV_GEMM_MR
    out, kg = matrix.shape
    og = out // groups
    blocks = -(-og // mr)
    padded = np.zeros((groups, blocks * mr, kg), np.float32)
    padded[:, :og] = matrix.reshape(groups, og, kg)
    packed = padded.reshape(groups, blocks, mr, kg).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(packed)


def gemm(x, images, x_image, x_row, offsets, groups, w, og, out_h, out_w, bias, activation, y):
    """Offset GEMM (see pk_conv_gemm_f32): w packed by pack_gemm_weight, offsets int64."""
    ffi, lib = library()
    status = lib.pk_conv_gemm_f32(
        ptr(ffi, "float *", x), images, x_image, x_row, ptr(ffi, "int64_t *", offsets),
        groups, w.shape[2], ptr(ffi, "float *", w), og, out_h, out_w,
        ptr(ffi, "float *", bias), ACTIVATION_CODES[activation], ptr(ffi, "float *", y),
    )  # fmt: skip
    check(status, "conv2d dense")


def csr(x, images, x_image, x_row, indptr, offsets, values, out_h, out_w, bias, activation, y):
    """CSR conv (see pk_conv_csr_f32): one int64 offset per nonzero."""
    ffi, lib = library()
    status = lib.pk_conv_csr_f32(
        ptr(ffi, "float *", x), images, x_image, x_row, ptr(ffi, "int32_t *", indptr),
        ptr(ffi, "int64_t *", offsets), ptr(ffi, "float *", values), indptr.shape[0] - 1,
        out_h, out_w, ptr(ffi, "float *", bias), ACTIVATION_CODES[activation],
        ptr(ffi, "float *", y),
    )  # fmt: skip
    check(status, "conv2d csr")


def depthwise(x, w, stride, dilation, pad_top, pad_left, out_h, out_w, bias, activation, y):
    """Depthwise conv (in/groups == 1): w float32 [out, kh, kw]."""
    ffi, lib = library()
    n, c, h, wd = x.shape
    o, kh, kw = w.shape
    status = lib.pk_conv_depthwise_f32(
        ptr(ffi, "float *", x), n, c, h, wd, ptr(ffi, "float *", w), o, kh, kw,
        stride[0], stride[1], dilation[0], dilation[1], pad_top, pad_left, out_h, out_w,
        ptr(ffi, "float *", bias), ACTIVATION_CODES[activation], ptr(ffi, "float *", y),
    )  # fmt: skip
    check(status, "conv2d depthwise")


def binary(x, groups, wbits, alpha, kh, kw, stride, dilation, pad_top, pad_left, out_h, out_w,
           bias, activation, y):  # fmt: skip
    """Binary weights x binary activations (pk_conv_binary_f32); wbits uint64 [out, taps, cw]."""
    ffi, lib = library()
    n, c, h, wd = x.shape
    status = lib.pk_conv_binary_f32(
        ptr(ffi, "float *", x), n, c, h, wd, groups, ptr(ffi, "uint64_t *", wbits),
        ptr(ffi, "float *", alpha), alpha.shape[0], kh, kw, stride[0], stride[1],
        dilation[0], dilation[1], pad_top, pad_left, out_h, out_w,
        ptr(ffi, "float *", bias), ACTIVATION_CODES[activation], ptr(ffi, "float *", y),
    )  # fmt: skip
    check(status, "conv2d binary")


def depthwise_int8(x, wq, scale, act_scale, stride, dilation, pad_top, pad_left, out_h, out_w,
                   bias, activation, y):  # fmt: skip
    """Depthwise conv with int8 weights wq [out, kh, kw] (pk_conv_depthwise_int8_f32)."""
    ffi, lib = library()
    n, c, h, wd = x.shape
    o, kh, kw = wq.shape
    status = lib.pk_conv_depthwise_int8_f32(
        ptr(ffi, "float *", x), n, c, h, wd, ptr(ffi, "int8_t *", wq),
        ptr(ffi, "float *", scale), act_scale, o, kh, kw, stride[0], stride[1],
        dilation[0], dilation[1], pad_top, pad_left, out_h, out_w,
        ptr(ffi, "float *", bias), ACTIVATION_CODES[activation], ptr(ffi, "float *", y),
    )  # fmt: skip
    check(status, "conv2d depthwise int8")


def pack_int8_weight(q: np.ndarray, groups: int) -> np.ndarray:
    """int8 q [out, cg, kh, kw] as pk_conv_int8_f32 reads it: int16 channel pairs, one per
    int32 lane, [groups][ceil(og/MR)][ceil(cg/2)·kh·kw][MR]."""
    mr = library()[1].PK_CONV_INT8_MR
    out, cg, kh, kw = q.shape
    og, cg2 = out // groups, -(-cg // 2)
    blocks = -(-og // mr)
    padded = np.zeros((groups, blocks * mr, cg2 * 2, kh * kw), np.int16)
    padded[:, :og, :cg] = q.reshape(groups, og, cg, kh * kw)
    pairs = padded.reshape(groups, blocks, mr, cg2, 2, kh * kw).transpose(0, 1, 3, 5, 2, 4)
    lanes = np.ascontiguousarray(pairs).astype("<i2", copy=False).view("<i4")
    return np.ascontiguousarray(lanes.reshape(groups, blocks, cg2 * kh * kw, mr))


def conv_int8(x, groups, w, scale, act_scale, kh, kw, stride, dilation, pad_top, pad_left,
              out_h, out_w, bias, activation, y) -> None:  # fmt: skip
    """int8 conv, groups < channels (pk_conv_int8_f32); w packed by pack_int8_weight."""
    ffi, lib = library()
    n, c, h, wd = x.shape
    status = lib.pk_conv_int8_f32(
        ptr(ffi, "float *", x), n, c, h, wd, groups, ptr(ffi, "int32_t *", w),
        ptr(ffi, "float *", scale), act_scale, scale.shape[0], kh, kw, stride[0], stride[1],
        dilation[0], dilation[1], pad_top, pad_left, out_h, out_w,
        ptr(ffi, "float *", bias), ACTIVATION_CODES[activation], ptr(ffi, "float *", y),
    )  # fmt: skip
    check(status, "conv2d int8")
