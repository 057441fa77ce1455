"""conv2d lowerings: how each encoding's conv runs on the C or Numba kernels.

A lowering is ``lower(w, geo, bias, activation, ops) -> run`` (or None: "not this
one", and the plan takes :func:`patch_rows`), called once per plan; ``run(x, y)``
computes one call into ``y`` [n, out, ho, wo], x float32 C-contiguous NCHW, reading the
batch from x. ``ops`` is :mod:`kernels.backend_c.conv` or :mod:`kernels.backend_numba.conv`,
which share their function names and signatures. Registry rows name their lowering per
backend (``"conv2d/c": "kernels.conv.lowerings:int8"``).

* :func:`dense` -- an *offset GEMM* (csrc/conv/conv_dense_*.c):
  ``y[o, oh, ow] = Σ_k W[o, k] · X[off[k] + oh·row + ow]``. For stride 1 (any dilation,
  any padding) X is the input zero-padded once (CHW, row pitch ``row`` = padded width)
  and ``off[k]`` is the shift of tap (c, ky, kx): a direct convolution with no im2col
  matrix; each k is one broadcast weight times 16 contiguous activations. A 1×1 stride-1
  unpadded conv needs no padding copy at all: W [out, in] @ X [in, H·W]. Stride > 1
  first builds the im2col matrix [C·kh·kw, Ho·Wo], then runs the same kernel as a plain
  GEMM. Output is written straight into NCHW. Depthwise (in/groups == 1) has its own
  direct kernel per plane.
* :func:`csr` -- the same addressing with one offset per nonzero (csrc/conv/conv_csr_*.c):
  each nonzero multiplies a contiguous run of output columns held in registers (the
  CHW layout makes every nonzero a contiguous vector op, XNNPACK's SpMM idea). Groups
  are folded into the offsets, so every output channel is one CSR row.
* :func:`int8` -- quantize each image once, then an exact integer conv, bit for bit
  :func:`kernels.conv.reference.int8_reference`. C (csrc/conv/conv_int8_*.c) quantizes
  the image into int16 channel pairs, zero-padded and split into stride phases, so every
  tap of every output row is a contiguous run at any stride, then runs an offset GEMM on
  ``vpmaddwd`` (exact: |pair sum| <= 2·127², no int16 saturation) with scale, bias and
  activation fused into the store. Depthwise int8 has its own kernel.
* :func:`binary` -- binary weights and activations: the input signs are packed once per
  pixel (channels-last bits), then each patch is an XNOR-popcount over its in-bounds
  taps (Larq's padding rule, see :func:`kernels.conv.reference.binary_reference`).
* :func:`decoded_if_float` (binary and pow2 with float activations) -- the weight's
  effective dense matrix (``decode()``: ±α, ±α·2^−e), made once per weight, on
  :func:`dense`. Their linear kernels save multiplies, which an FMA CPU does not need
  saved, and stream few weight bytes, which conv (each weight reused at every output
  pixel) does not need either, so the dense kernels run them faster than patch rows.
* :func:`patch_rows` (the default) -- patches one per row (im2row, [N·Ho·Wo,
  Cg·kh·kw]; for a 1×1 stride-1 unpadded conv simply the NHWC transpose of x) feed the
  encoding's ``linear`` kernel once per group (row slices of the weight, see
  :mod:`kernels.conv.groups`), and the [N·Ho·Wo, out] result is transposed back to NCHW
  once. Its semantics are those of the encoding's ``linear`` on each patch row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kernels import backends
from kernels.conv.groups import group_weight
from kernels.conv.reference import binary_reference
from kernels.conv.shapes import Geometry
from kernels.encodings.base import EncodedWeight, apply_epilogue, derived

Run = Callable[[np.ndarray, np.ndarray], None]


def _tap_offsets(geo: Geometry, channel: np.ndarray, k: np.ndarray, plane: int, row: int):
    """Offset of column k (c, ky, kx) of the weight matrix in padded CHW input."""
    taps = geo.kh * geo.kw
    ky, kx = (k % taps) // geo.kw, k % geo.kw
    return (channel * plane + ky * geo.dh * row + kx * geo.dw).astype(np.int64)


def _offset_run(geo: Geometry, ops, offsets_for, kernel) -> Run:
    """Stride 1 reads (padded) x directly; otherwise an im2col matrix feeds a plain GEMM.

    ``offsets_for(plane, row, direct)`` gives the int64 offsets (made here, once);
    ``kernel(xs, x_image, x_row, offsets, out_h, out_w, y)`` runs the offset kernel.
    """
    if geo.sh == 1 and geo.sw == 1:
        plane, row = geo.hp * geo.wp, geo.wp
        offsets = offsets_for(plane, row, direct=True)
        flat = geo.wp == geo.wo
        out_h, out_w = (1, geo.ho * geo.wo) if flat else (geo.ho, geo.wo)
        x_row = 0 if flat else row
        x_image = geo.c * plane
        if not geo.padded:

            def run(x, y):
                kernel(x, x_image, x_row, offsets, out_h, out_w, y)

            return run
        padded_shape = (geo.c, geo.hp, geo.wp)
        pads = (geo.pt, geo.pb, geo.pl, geo.pr)

        def run_padded(x, y):
            xp = np.empty((x.shape[0],) + padded_shape, np.float32)
            ops.pad(x, *pads, xp)
            kernel(xp, x_image, x_row, offsets, out_h, out_w, y)

        return run_padded
    positions = geo.ho * geo.wo
    offsets = offsets_for(positions, 0, direct=False)
    col_shape = (geo.c * geo.kh * geo.kw, positions)
    x_image = col_shape[0] * positions

    def run_im2col(x, y):
        cols = np.empty((x.shape[0],) + col_shape, np.float32)
        ops.im2col(x, geo.kh, geo.kw, geo.stride, geo.dilation, geo.pt, geo.pl, geo.ho,
                   geo.wo, cols)  # fmt: skip
        kernel(cols, x_image, 0, offsets, 1, positions, y)

    return run_im2col


def dense(w: EncodedWeight, geo: Geometry, bias, activation, ops) -> Run:
    """Float weights (``w.decode_matrix()``): the offset GEMM, or the depthwise kernel."""
    run = _dense(w, geo, bias, activation, ops)
    run.lowering = "dense"  # what Conv2dPlan.lowering reports, whichever row asked for it
    return run


def _dense(w: EncodedWeight, geo: Geometry, bias, activation, ops) -> Run:
    cache = derived(w)
    if geo.depthwise:
        if "depthwise" not in cache:
            cache["depthwise"] = np.ascontiguousarray(w.decode_matrix(), np.float32).reshape(
                geo.out, geo.kh, geo.kw
            )
        wk = cache["depthwise"]

        def run(x, y):
            ops.depthwise(x, wk, geo.stride, geo.dilation, geo.pt, geo.pl, geo.ho, geo.wo,
                          bias, activation, y)  # fmt: skip

        return run
    key = ("packed", ops.__name__, geo.groups)
    if key not in cache:
        matrix = np.ascontiguousarray(w.decode_matrix(), np.float32)
        cache[key] = ops.pack_gemm_weight(matrix, geo.groups)
    packed = cache[key]
    k = np.arange(geo.kg)

    def offsets_for(plane, row, direct):
        per_group = []
        for g in range(geo.groups):
            if direct:
                channel = g * geo.cg + k // (geo.kh * geo.kw)
                per_group.append(_tap_offsets(geo, channel, k, plane, row))
            else:
                per_group.append(((g * geo.kg + k) * plane).astype(np.int64))
        return np.concatenate(per_group)

    def kernel(xs, x_image, x_row, offsets, out_h, out_w, y):
        ops.gemm(xs, y.shape[0], x_image, x_row, offsets, geo.groups, packed, geo.og, out_h,
                 out_w, bias, activation, y)  # fmt: skip

    return _offset_run(geo, ops, offsets_for, kernel)


def csr(w: EncodedWeight, geo: Geometry, bias, activation, ops) -> Run:
    """CSR weights: one offset per nonzero, groups folded into the offsets."""
    k = w.indices.astype(np.int64)
    group = np.repeat(np.arange(geo.out) // geo.og, np.diff(w.indptr))

    def offsets_for(plane, row, direct):
        if direct:
            return _tap_offsets(geo, group * geo.cg + k // (geo.kh * geo.kw), k, plane, row)
        return ((group * geo.kg + k) * plane).astype(np.int64)

    def kernel(xs, x_image, x_row, offsets, out_h, out_w, y):
        ops.csr(xs, y.shape[0], x_image, x_row, w.indptr, offsets, w.values, out_h, out_w,
                bias, activation, y)  # fmt: skip

    return _offset_run(geo, ops, offsets_for, kernel)


def int8(w: EncodedWeight, geo: Geometry, bias, activation, ops) -> Run:
    """int8 weights: per-image quantization, then an exact integer conv."""
    static = 0.0 if w.activation_scale is None else float(w.activation_scale)
    cache = derived(w)
    scale = w.scale
    if geo.depthwise:
        if "depthwise_q" not in cache:
            q = w.quantized().reshape(geo.out, geo.kh, geo.kw)
            cache["depthwise_q"] = np.ascontiguousarray(q)
        wq = cache["depthwise_q"]

        def run_depthwise(x, y):
            ops.depthwise_int8(x, wq, scale, static, geo.stride, geo.dilation, geo.pt, geo.pl,
                               geo.ho, geo.wo, bias, activation, y)  # fmt: skip

        return run_depthwise
    key = ("int8", ops.__name__, geo.groups)
    if key not in cache:
        q = np.ascontiguousarray(w.quantized().reshape(w.shape))
        cache[key] = ops.pack_int8_weight(q, geo.groups)
    packed = cache[key]

    def run(x, y):
        ops.conv_int8(x, geo.groups, packed, scale, static, geo.kh, geo.kw, geo.stride,
                      geo.dilation, geo.pt, geo.pl, geo.ho, geo.wo, bias, activation,
                      y)  # fmt: skip

    return run


def decoded_if_float(w: EncodedWeight, geo: Geometry, bias, activation, ops) -> Run | None:
    """Float activations: :func:`dense` on ``w.decode()``; otherwise None (patch rows)."""
    if w.activations != "float":
        return None
    return dense(w, geo, bias, activation, ops)


def binary(w: EncodedWeight, geo: Geometry, bias, activation, ops) -> Run | None:
    """Binary activations: XNOR-popcount over packed sign bits; float: as dense."""
    if w.activations != "binary":
        return decoded_if_float(w, geo, bias, activation, ops)
    cw = -(-geo.cg // 64)
    if ops.MAX_BINARY_WORDS is not None and geo.kh * geo.kw * cw > ops.MAX_BINARY_WORDS:

        def run_reference(x, y):
            y[...] = binary_reference(x, w, bias, geo, activation)

        return run_reference
    cache = derived(w)
    if "tap_bits" not in cache:
        from kernels.encodings.binary import pack_signs

        signs = w.signs().reshape(geo.out, geo.cg, geo.kh * geo.kw)
        per_tap = np.ascontiguousarray(signs.transpose(0, 2, 1)).reshape(-1, geo.cg)
        cache["tap_bits"] = np.ascontiguousarray(
            pack_signs(per_tap).reshape(geo.out, geo.kh * geo.kw, cw)
        )
    bits, alpha = cache["tap_bits"], w.alpha

    def run(x, y):
        ops.binary(x, geo.groups, bits, alpha, geo.kh, geo.kw, geo.stride, geo.dilation,
                   geo.pt, geo.pl, geo.ho, geo.wo, bias, activation, y)  # fmt: skip

    return run


def patch_rows(w: EncodedWeight, geo: Geometry, bias, activation, ops) -> Run:
    """Any encoding: patch rows through the encoding's linear kernel, per group."""
    linear_backend, linear = backends.resolve("linear", w.encoding)
    numba = linear_backend == "numba"
    parts = []
    for g in range(geo.groups):
        wg, cols = group_weight(w, geo.groups, g)
        bg = None if bias is None else np.ascontiguousarray(bias[g * geo.og : (g + 1) * geo.og])
        parts.append((wg, cols, bg))
    one_by_one = geo.kh == geo.kw == 1 and geo.sh == geo.sw == 1 and not geo.padded

    def run(x, y):
        if numba:
            backends.apply_numba_threads()
        n = x.shape[0]
        positions = n * geo.ho * geo.wo
        if one_by_one:
            nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(positions, geo.c)
        else:
            rows = np.empty((positions, geo.kg), np.float32)
        result = np.empty((positions, geo.out), np.float32)
        for g, (wg, cols, bg) in enumerate(parts):
            if one_by_one:
                rows = nhwc[:, g * geo.cg : (g + 1) * geo.cg]
                rows = rows if geo.groups == 1 else np.ascontiguousarray(rows)
            else:
                ops.im2row(x, g * geo.cg, geo.cg, geo.kh, geo.kw, geo.stride, geo.dilation,
                           geo.pt, geo.pl, geo.ho, geo.wo, rows)  # fmt: skip
            if cols == slice(None):
                part = result if geo.groups == 1 else np.empty((positions, geo.og), np.float32)
                linear(rows, wg, bg, activation, part)
            else:
                full = np.empty((positions, geo.out), np.float32)
                linear(rows, wg, None, None, full)
                part = apply_epilogue(full[:, cols], bg, activation).astype(np.float32)
            if geo.groups > 1:
                result[:, g * geo.og : (g + 1) * geo.og] = part
        y[...] = result.reshape(n, geo.ho, geo.wo, geo.out).transpose(0, 3, 1, 2)

    return run
