"""``conv2d`` for every encoding: validation, the NumPy reference, and the lowering.

``conv2d(x, w, ...)`` takes NCHW float32 input and a weight [out, in/groups, kh, kw]
(dense, or encoded by ``kernels.encode``, which stores it as the matrix
[out, in/groups·kh·kw] with columns ordered (c, ky, kx), as PyTorch flattens it).

Lowering, chosen per call (backend ``c``; ``numba`` has the same structure):

* **dense, groups < channels** -- an *offset GEMM* in C (csrc/conv/conv_dense_*.c):
  ``y[o, oh, ow] = Σ_k W[o, k] · X[off[k] + oh·row + ow]``. For stride 1 (any dilation,
  any padding) X is the input zero-padded once (CHW, row pitch ``row`` = padded width)
  and ``off[k]`` is the shift of tap (c, ky, kx): a direct convolution with no im2col
  matrix; each k is one broadcast weight times 16 contiguous activations. A 1×1 stride-1
  unpadded conv is the same with no padding copy at all: W [out, in] @ X [in, H·W].
  Stride > 1 first builds the im2col matrix [C·kh·kw, Ho·Wo] in C (threaded), then runs
  the same kernel as a plain GEMM. Output is written straight into NCHW.
* **csr** -- the same addressing with one offset per nonzero (csrc/conv/conv_csr_*.c):
  each nonzero multiplies a contiguous run of up to 64 output columns held in registers
  (the CHW layout makes every nonzero a contiguous vector op, XNNPACK's SpMM idea).
  Groups are folded into the offsets (a group's channel base), so every output channel
  is one CSR row whatever ``groups`` is.
* **int8** -- quantize once, then an exact integer conv. Semantics (every backend, bit
  for bit; :func:`int8_reference`): each *image* n is quantized once, like one row of the
  int8 linear (:mod:`kernels.encodings.quant`): static ``s_n = activation_scale`` (per
  tensor, as ONNX Runtime's ``QLinearConv``) or dynamic ``s_n = max |x[n]| / 127`` over
  the whole image (all channels and positions; *not* per patch), ``xq = clip(rint(x /
  s_n), -127, 127)``; the zero padding is the quantized zero; ``acc = Σ xq · q`` exact in
  int32; ``y = act(f32(acc) · (s_n · scale[o]) + bias[o])``; an image holding NaN/Inf
  gives NaN everywhere, a zero image gives ``act(bias)``. C (csrc/conv/conv_int8_*.c):
  the image is quantized into int16 channel pairs (two input channels per 32-bit lane),
  zero-padded and split into stride phases, so every tap of every output row is a
  contiguous run at any stride (no im2col); an offset GEMM of 4 output channels × 16
  columns then runs on ``vpmaddwd`` (exact: |pair sum| <= 2·127², no int16 saturation)
  with the scale, bias and activation fused into the store into NCHW. Small calls
  prepare the input on the calling thread and the GEMM is one parallel region over
  every tile of every image (each barrier costs on a busy machine). Depthwise int8
  has its own C kernel with the same semantics (csrc/conv/depthwise_int8.c); Numba runs
  direct integer loops.
* **depthwise** (in/groups == 1) -- its own direct kernel per plane for dense weights.
* **binary / pow2 weights with float activations** (``conv_as_dense`` in the registry)
  -- their effective dense weights (``decode()``: ±α, ±α·2^−e), made once per weight, on
  the dense paths above. Their linear kernels save multiplies, which an FMA CPU does not
  need saved, and stream few weight bytes, which conv (each weight reused at every
  output pixel) does not need either: through patch rows they ran 4x slower than dense.
* **any other encoding** (generic) -- patches one per row (im2row in C, [N·Ho·Wo,
  Cg·kh·kw]; for a 1×1 stride-1 unpadded conv simply the NHWC transpose of x) feed the
  encoding's ``linear`` kernel, once per group, and the [N·Ho·Wo, out] result is
  transposed back to NCHW once. Its semantics are those of the encoding's ``linear`` on
  each patch row (e.g. ``int4`` quantizes each patch row; the zero padding quantizes to
  the integer zero). ``binary`` weights with binary activations are the exception: a
  padded position contributes 0 to the ±1 dot product instead of sign(0) = +1 (Larq's
  rule); β is still the mean |x| over the whole patch, padding counted as 0. They have
  their own kernels (C: csrc/conv/conv_binary_*.c; Numba: the same loop nest): the input
  signs are packed once per pixel (channels-last bits), then each patch is an
  XNOR-popcount over its in-bounds taps.

The ``numpy`` backend runs the reference: explicit padding, then a sum over kernel
offsets of strided slices (float64) for dense and csr weights, and the encoding's NumPy
``reference_linear`` on NumPy-built patch rows for the others (int8: per-image
quantization, then an int64 sum of strided slices).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from kernels import backends, registry
from kernels.api import _as_float32, as_weight, check_activation, check_bias, encode
from kernels.encodings.base import EncodedWeight, apply_epilogue, derived

#: Encodings whose conv has its own kernels; every other registry row goes generic.
SPECIAL = ("dense", "csr")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Every size of one conv2d call, validated."""

    n: int
    c: int
    h: int
    w: int
    out: int
    groups: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pb: int
    pl: int
    pr: int
    ho: int
    wo: int

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def og(self) -> int:
        return self.out // self.groups

    @property
    def kg(self) -> int:
        return self.cg * self.kh * self.kw

    @property
    def hp(self) -> int:
        return self.h + self.pt + self.pb

    @property
    def wp(self) -> int:
        return self.w + self.pl + self.pr

    @property
    def padded(self) -> bool:
        return bool(self.pt or self.pb or self.pl or self.pr)

    @property
    def depthwise(self) -> bool:
        return self.cg == 1 and self.groups > 1


def conv2d(
    x: Any,
    w: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
) -> np.ndarray:
    """y = activation(conv2d(x, w) + bias), dispatched on the weight's encoding.

    Parameters
    ----------
    x : array_like of float, shape [batch, in_channels, height, width]
        NCHW activations; converted to C-contiguous float32.
    w : ndarray [out, in/groups, kh, kw] or EncodedWeight of that shape
    bias : array_like of float, shape [out], optional
    stride, dilation : int or (int, int)
        Per (height, width); >= 1.
    padding : int, (int, int), "valid" or "same"
        Zeros added on both sides of (height, width); ``"same"`` is TensorFlow's SAME:
        output size ceil(in / stride), the odd extra pixel at the bottom/right.
    groups : int
        in_channels and out must both be divisible by it.
    activation : {None, "relu", "relu6"}
        Fused with the bias into the kernel's store loop.

    Returns
    -------
    ndarray of float32, shape [batch, out, out_height, out_width]

    Raises
    ------
    ValueError
        Wrong ranks, channels not divisible by ``groups``, weight in-channels not
        in_channels / groups, a kernel larger than the padded input, bad stride etc.
    TypeError
        Non-floating input.
    """
    weight = _as_conv_weight(w)
    xa = _as_float32("x", x)
    if xa.ndim != 4:
        raise ValueError(f"x must be NCHW [batch, channels, height, width], got shape {xa.shape}")
    geo = geometry(xa.shape, weight.shape, stride, padding, dilation, groups)
    b = check_bias(bias, geo.out)
    check_activation(activation)
    xa = np.ascontiguousarray(xa)
    y = np.empty((geo.n, geo.out, geo.ho, geo.wo), np.float32)
    if y.size == 0:
        return y
    backend = _backend()
    if backend == "numpy":
        y[...] = conv2d_reference(xa, weight, b, geo, activation)
        return y
    as_dense = registry.get(weight.encoding).conv_as_dense
    if as_dense is not None and as_dense(weight):
        weight = _decoded(weight)
    if weight.encoding == "dense" and geo.depthwise:
        _depthwise(backend, xa, weight, b, geo, activation, y)
    elif weight.encoding == "dense":
        _dense(backend, xa, weight, b, geo, activation, y)
    elif weight.encoding == "int8":
        _int8(backend, xa, weight, b, geo, activation, y)
    elif weight.encoding == "csr":
        _csr(backend, xa, weight, b, geo, activation, y)
    elif weight.encoding == "binary" and getattr(weight, "activations", "") == "binary":
        _binary(backend, xa, weight, b, geo, activation, y)
    else:
        _generic(backend, xa, weight, b, geo, activation, y)
    return y


# ---------------------------------------------------------------------------------------
# validation


def _as_conv_weight(w: Any) -> EncodedWeight:
    if isinstance(w, EncodedWeight):
        if len(w.shape) != 4:
            raise ValueError(
                f"conv2d needs a weight of shape [out, in/groups, kh, kw]; the "
                f"{w.encoding} weight has shape {w.shape} (encode the 4-D weight)"
            )
        return w
    dense = _as_float32("w", w)
    if dense.ndim != 4:
        raise ValueError(f"w must be [out, in/groups, kh, kw], got shape {dense.shape}")
    return as_weight(dense).reshaped(dense.shape)


def _pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    items = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        out.append(int(v))
    return out[0], out[1]


def _same(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow SAME: output ceil(size / s); the extra pixel goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def geometry(x_shape, w_shape, stride, padding, dilation, groups) -> Geometry:
    """Validate one call's sizes and derive the output size (ValueError when impossible)."""
    n, c, h, wd = (int(s) for s in x_shape)
    if len(w_shape) != 4:
        raise ValueError(f"w must be [out, in/groups, kh, kw], got shape {tuple(w_shape)}")
    out, cin, kh, kw = (int(s) for s in w_shape)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    groups = int(groups)
    if c % groups:
        raise ValueError(f"x has {c} channels, not divisible by groups={groups}")
    if out % groups:
        raise ValueError(f"w has {out} output channels, not divisible by groups={groups}")
    if cin != c // groups:
        raise ValueError(
            f"w expects {cin} input channels per group (shape {tuple(w_shape)}), but x has "
            f"{c} channels / groups={groups} = {c // groups}"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel size must be >= 1, got {kh}x{kw}")
    sh, sw = _pair("stride", stride, 1)
    dh, dw = _pair("dilation", dilation, 1)
    if isinstance(padding, str):
        if padding == "same":
            (pt, pb), (pl, pr) = _same(h, kh, sh, dh), _same(wd, kw, sw, dw)
        elif padding == "valid":
            pt = pb = pl = pr = 0
        else:
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        (pt, pl) = _pair("padding", padding, 0)
        pb, pr = pt, pl
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if h + pt + pb < eh or wd + pl + pr < ew:
        raise ValueError(
            f"kernel {kh}x{kw} (dilation {dh}x{dw}: {eh}x{ew}) is larger than the padded "
            f"input {h + pt + pb}x{wd + pl + pr}"
        )
    ho = (h + pt + pb - eh) // sh + 1
    wo = (wd + pl + pr - ew) // sw + 1
    return Geometry(n, c, h, wd, out, groups, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, ho, wo)


_usable: list = []


def _backend() -> str:
    """The backend conv2d's own kernels run on: the setting, or the fastest available."""
    wanted = backends.get_backend()
    if not _usable:  # NOTE: looked up once; available_backends() costs ~0.5 ms a call
        _usable.extend(backends.available_backends())
    usable = _usable
    order = (
        registry.BACKENDS
        if wanted == "auto"
        else registry.BACKENDS[registry.BACKENDS.index(wanted) :]
    )
    return next(b for b in order if b in usable)


# ---------------------------------------------------------------------------------------
# NumPy reference


def pad_input(x: np.ndarray, geo: Geometry) -> np.ndarray:
    """x with geo's zero padding, as NumPy builds it."""
    return np.pad(x, ((0, 0), (0, 0), (geo.pt, geo.pb), (geo.pl, geo.pr)))


def tap(xpad: np.ndarray, geo: Geometry, ky: int, kx: int) -> np.ndarray:
    """The input seen by kernel tap (ky, kx) at every output position: [n, c, ho, wo]."""
    r0, c0 = ky * geo.dh, kx * geo.dw
    return xpad[
        :,
        :,
        r0 : r0 + (geo.ho - 1) * geo.sh + 1 : geo.sh,
        c0 : c0 + (geo.wo - 1) * geo.sw + 1 : geo.sw,
    ]


def patch_rows(x: np.ndarray, geo: Geometry, group: int, xpad: np.ndarray | None = None):
    """Patches of one group, one per row: [n·ho·wo, cg·kh·kw], columns (c, ky, kx)."""
    xpad = pad_input(x, geo) if xpad is None else xpad
    cs = slice(group * geo.cg, (group + 1) * geo.cg)
    taps = np.stack(
        [tap(xpad[:, cs], geo, ky, kx) for ky in range(geo.kh) for kx in range(geo.kw)], axis=2
    )  # [n, cg, kh·kw, ho, wo]
    return np.ascontiguousarray(taps.transpose(0, 3, 4, 1, 2).reshape(-1, geo.kg))


def conv2d_reference(x, w: EncodedWeight, bias, geo: Geometry, activation) -> np.ndarray:
    """The definition conv2d's fast paths are tested against (see the module docstring)."""
    if w.encoding in SPECIAL:
        wd = w.decode().astype(np.float64)  # [out, cg, kh, kw]
        xpad = pad_input(x, geo).astype(np.float64)
        y = np.zeros((geo.n, geo.out, geo.ho, geo.wo), np.float64)
        for g in range(geo.groups):
            cs, os_ = slice(g * geo.cg, (g + 1) * geo.cg), slice(g * geo.og, (g + 1) * geo.og)
            for ky in range(geo.kh):
                for kx in range(geo.kw):
                    y[:, os_] += np.einsum(
                        "ncyx,oc->noyx", tap(xpad[:, cs], geo, ky, kx), wd[os_, :, ky, kx]
                    )
        b = None if bias is None else bias.astype(np.float64)[:, None, None]
        return apply_epilogue(y, b, activation).astype(np.float32)
    if w.encoding == "binary" and getattr(w, "activations", "") == "binary":
        return _binary_reference(x, w, bias, geo, activation, "numpy")
    if w.encoding == "int8":
        return int8_reference(x, w, bias, geo, activation)
    row = registry.get(w.encoding)
    xpad = pad_input(x, geo)
    y = np.empty((geo.n * geo.ho * geo.wo, geo.out), np.float32)
    for g in range(geo.groups):
        rows = patch_rows(x, geo, g, xpad)
        wg, cols = group_weight(w, geo, g)
        bg = None if bias is None else bias[g * geo.og : (g + 1) * geo.og]
        if cols == slice(None):
            yg = row.reference_linear(rows, wg, bg, activation)
        else:
            yg = apply_epilogue(row.reference_linear(rows, wg, None, None)[:, cols], bg, activation)
        y[:, g * geo.og : (g + 1) * geo.og] = yg
    return _rows_to_nchw(y, geo)


def quantize_images(x: np.ndarray, activation_scale: float | None):
    """int8 conv activations: each image quantized as one row (kernels.encodings.quant).

    Returns (xq int8 [n, c, h, w], s float32 [n], bad bool [n]): dynamic
    ``s_n = max |x[n]| / 127`` over the whole image (all channels), or the static scale;
    an image holding NaN/Inf has ``bad`` set and gives NaN everywhere.
    """
    from kernels.encodings.quant import quantize_activations

    xq, s, bad = quantize_activations(x.reshape(x.shape[0], -1), activation_scale)
    return xq.reshape(x.shape), s, bad


def int8_accumulators(xq: np.ndarray, q: np.ndarray, geo: Geometry) -> np.ndarray:
    """acc[n, o, oh, ow] = Σ over (c, ky, kx) of xq · q[o], exact, as int32.

    xq: quantized input [n, c, h, w] (zero padding is the integer 0); q: int8 weights
    [out, cg, kh, kw].
    """
    xpad = pad_input(xq, geo).astype(np.int64)
    q = q.astype(np.int64)
    acc = np.zeros((geo.n, geo.out, geo.ho, geo.wo), np.int64)
    for g in range(geo.groups):
        cs, os_ = slice(g * geo.cg, (g + 1) * geo.cg), slice(g * geo.og, (g + 1) * geo.og)
        for ky in range(geo.kh):
            for kx in range(geo.kw):
                acc[:, os_] += np.einsum(
                    "ncyx,oc->noyx", tap(xpad[:, cs], geo, ky, kx), q[os_, :, ky, kx]
                )
    return acc.astype(np.int32)


def int8_reference(x, w, bias, geo: Geometry, activation) -> np.ndarray:
    """int8 conv: y = act(f32(acc) · (s_n · scale[o]) + bias[o]) on per-image quantized x."""
    xq, s, bad = quantize_images(x, w.activation_scale)
    acc = int8_accumulators(xq, w.quantized().reshape(w.shape), geo)
    y = acc.astype(np.float32) * (s[:, None, None, None] * w.scale[None, :, None, None])
    y[bad] = np.nan
    b = None if bias is None else np.asarray(bias, np.float32)[:, None, None]
    return apply_epilogue(y, b, activation).astype(np.float32)


def _rows_to_nchw(y: np.ndarray, geo: Geometry) -> np.ndarray:
    return np.ascontiguousarray(y.reshape(geo.n, geo.ho, geo.wo, geo.out).transpose(0, 3, 1, 2))


def _binary_reference(x, w, bias, geo: Geometry, activation, backend: str) -> np.ndarray:
    """Binary weights and activations; a padded position adds 0 to the ±1 dot (Larq).

    Per patch row r (per group): β_r = mean |x| over the row (padding counted as 0),
    n[r, o] = Σ over in-bounds k of sign(x[r, k])·sign(W[o, k]) (exact integer), and
    y = act((α_o·β_r)·f32(n) + bias), the float epilogue of the binary linear kernel.
    """
    ones = np.ones((1, geo.cg) + (geo.h, geo.w), np.float32)
    one_geo = dataclasses.replace(geo, n=1, c=geo.cg, groups=1)
    valid = patch_rows(ones, one_geo, 0) != 0  # [ho·wo, kg], same for every image
    signs = w.signs().astype(np.int64)  # [out, kg]
    y = np.empty((geo.n * geo.ho * geo.wo, geo.out), np.float32)
    for g in range(geo.groups):
        rows = patch_rows(x, geo, g).reshape(geo.n, geo.ho * geo.wo, geo.kg)
        beta = np.abs(rows.astype(np.float64)).mean(axis=2).astype(np.float32).reshape(-1)
        xs = np.where(valid[None], np.where(rows >= 0, 1, -1), 0).reshape(-1, geo.kg)
        os_ = slice(g * geo.og, (g + 1) * geo.og)
        dots = xs.astype(np.int64) @ signs[os_].T
        scale = beta[:, None] * w.alpha[None, os_]
        yg = (scale * dots.astype(np.float32)).astype(np.float32)
        bg = None if bias is None else bias[os_]
        y[:, os_] = apply_epilogue(yg, bg, activation)
    return _rows_to_nchw(y, geo)


def group_weight(w: EncodedWeight, geo: Geometry, g: int):
    """(weight, columns): a weight whose linear gives group g's outputs at ``columns``.

    Rows of an encoding whose every stored array is per output row are sliced (checked
    once against decode()); otherwise the whole weight serves every group and the
    group's columns are picked from its output -- exact for every row-wise encoding,
    at ``groups`` times the work.
    """
    if geo.groups == 1:
        return w, slice(None)
    cache = derived(w)
    key = ("group", geo.groups, g)
    if key not in cache:
        cache[key] = _slice_rows(w, g * geo.og, (g + 1) * geo.og)
    return cache[key]


def _slice_int8(w, lo: int, hi: int, shape):
    from kernels.encodings import int8

    return int8.Int8Weight(
        shape=shape,
        packed=int8.pack(w.quantized()[lo:hi]),
        scale=np.ascontiguousarray(w.scale[lo:hi]),
        activation_scale=w.activation_scale,
    )


def _slice_int4(w, lo: int, hi: int, shape):
    from kernels.encodings import int4

    q = np.zeros((hi - lo, w.n_groups * w.group_size), np.int8)
    q[:, : w.in_features] = w.quantized()[lo:hi]
    packed, scale = int4.pack(q, w.group_scales()[lo:hi], w.group_size)
    return int4.Int4Weight(
        shape=shape,
        packed=packed,
        scale=scale,
        group_size=w.group_size,
        activation_scale=w.activation_scale,
    )


#: Row slicing for encodings that store rows in blocks (the others are sliced generically).
_SLICERS = {"int8": _slice_int8, "int4": _slice_int4}


def _slice_rows(w: EncodedWeight, lo: int, hi: int):
    shape = (hi - lo,) + tuple(w.shape[1:])
    arrays = w.arrays()
    try:
        if w.encoding in _SLICERS:
            part = _SLICERS[w.encoding](w, lo, hi, shape)
        elif arrays and all(a.ndim >= 1 and a.shape[0] == w.out_features for a in arrays.values()):
            sliced = {k: np.ascontiguousarray(a[lo:hi]) for k, a in arrays.items()}
            part = type(w).from_arrays(shape, sliced, w.params())
        else:
            part = None
        if part is not None and np.array_equal(
            part.decode_matrix(), w.decode_matrix()[lo:hi], equal_nan=True
        ):
            return part, slice(None)
    except (TypeError, ValueError, AttributeError, ImportError):
        pass
    return w, slice(lo, hi)


# ---------------------------------------------------------------------------------------
# fast paths


def _ops(backend: str):
    if backend == "c":
        from kernels.backend_c import conv as ops
    else:
        from kernels.backend_numba import conv as ops
    return ops


def _direct_input(ops, x: np.ndarray, geo: Geometry):
    """(X, image pitch, plane pitch, row pitch) for the offset kernels at stride 1.

    X is x itself when unpadded, else x zero-padded once (CHW).
    """
    if geo.padded:
        xp = np.empty((geo.n, geo.c, geo.hp, geo.wp), np.float32)
        ops.pad(x, geo.pt, geo.pb, geo.pl, geo.pr, xp)
    else:
        xp = x
    return xp, geo.c * geo.hp * geo.wp, geo.hp * geo.wp, geo.wp


def _tap_offsets(geo: Geometry, channel: np.ndarray, k: np.ndarray, plane: int, row: int):
    """Offset of column k (c, ky, kx) of the weight matrix in padded CHW input."""
    taps = geo.kh * geo.kw
    ky, kx = (k % taps) // geo.kw, k % geo.kw
    return (channel * plane + ky * geo.dh * row + kx * geo.dw).astype(np.int64)


def _run_offsets(x, geo: Geometry, ops, cache: dict, offsets_for, kernel) -> None:
    """Shared driver: stride 1 reads (padded) x directly; otherwise an im2col matrix."""
    if geo.sh == 1 and geo.sw == 1:
        xp, x_image, plane, row = _direct_input(ops, x, geo)
        key = ("direct", geo.groups, geo.dh, geo.dw, geo.hp, geo.wp)
        if key not in cache:
            cache[key] = offsets_for(plane, row, direct=True)
        flat = geo.wp == geo.wo
        out_h, out_w = (1, geo.ho * geo.wo) if flat else (geo.ho, geo.wo)
        kernel(xp, x_image, 0 if flat else row, cache[key], out_h, out_w)
    else:
        positions = geo.ho * geo.wo
        cols = np.empty((geo.n, geo.c * geo.kh * geo.kw, positions), np.float32)
        ops.im2col(x, geo.kh, geo.kw, (geo.sh, geo.sw), (geo.dh, geo.dw), geo.pt, geo.pl,
                   geo.ho, geo.wo, cols)  # fmt: skip
        key = ("im2col", geo.groups, positions)
        if key not in cache:
            cache[key] = offsets_for(positions, 0, direct=False)
        kernel(cols, cols[0].size, 0, cache[key], 1, positions)


def _dense(backend, x, w, bias, geo: Geometry, activation, y) -> None:
    ops = _ops(backend)
    cache = derived(w)
    key = ("packed", backend, geo.groups)
    if key not in cache:
        cache[key] = ops.pack_gemm_weight(np.ascontiguousarray(w.data, np.float32), geo.groups)
    packed = cache[key]

    def offsets_for(plane, row, direct):
        k = np.arange(geo.kg)
        per_group = []
        for g in range(geo.groups):
            if direct:
                per_group.append(
                    _tap_offsets(geo, g * geo.cg + k // (geo.kh * geo.kw), k, plane, row)
                )
            else:
                per_group.append(((g * geo.kg + k) * plane).astype(np.int64))
        return np.concatenate(per_group)

    def kernel(xs, x_image, x_row, offsets, out_h, out_w):
        ops.gemm(xs, geo.n, x_image, x_row, offsets, geo.groups, packed, geo.og, out_h, out_w,
                 bias, activation, y)  # fmt: skip

    _run_offsets(x, geo, ops, cache, offsets_for, kernel)


def _csr(backend, x, w, bias, geo: Geometry, activation, y) -> None:
    ops = _ops(backend)
    cache = derived(w)
    k = w.indices.astype(np.int64)
    group = np.repeat(np.arange(geo.out) // geo.og, np.diff(w.indptr))

    def offsets_for(plane, row, direct):
        if direct:
            return _tap_offsets(geo, group * geo.cg + k // (geo.kh * geo.kw), k, plane, row)
        return ((group * geo.kg + k) * plane).astype(np.int64)

    def kernel(xs, x_image, x_row, offsets, out_h, out_w):
        ops.csr(xs, geo.n, x_image, x_row, w.indptr, offsets, w.values, out_h, out_w, bias,
                activation, y)  # fmt: skip

    _run_offsets(x, geo, ops, cache, offsets_for, kernel)


def _depthwise(backend, x, w, bias, geo: Geometry, activation, y) -> None:
    ops = _ops(backend)
    wk = np.ascontiguousarray(w.data, np.float32).reshape(geo.out, geo.kh, geo.kw)
    ops.depthwise(x, wk, (geo.sh, geo.sw), (geo.dh, geo.dw), geo.pt, geo.pl, geo.ho, geo.wo,
                  bias, activation, y)  # fmt: skip


def _int8(backend, x, w, bias, geo: Geometry, activation, y) -> None:
    """int8: per-image quantization, then an exact integer conv (see int8_reference)."""
    static = 0.0 if w.activation_scale is None else float(w.activation_scale)
    cache = derived(w)
    if backend == "c" and geo.depthwise:
        _depthwise_int8(x, w, bias, geo, activation, y)
    elif backend == "c":
        key = ("int8_pairs", geo.groups)
        if key not in cache:
            q = w.quantized().reshape(w.shape)
            cache[key] = _ops("c").pack_int8_weight(q, geo.groups)
        _ops("c").conv_int8(x, geo.groups, cache[key], w.scale, static, geo.kh, geo.kw,
                            (geo.sh, geo.sw), (geo.dh, geo.dw), geo.pt, geo.pl, geo.ho, geo.wo,
                            bias, activation, y)  # fmt: skip
    else:
        if "q4d" not in cache:
            cache["q4d"] = np.ascontiguousarray(w.quantized().reshape(w.shape))
        backends.apply_numba_threads()
        _ops(backend).conv_int8(x, geo.groups, cache["q4d"], w.scale, static, (geo.sh, geo.sw),
                                (geo.dh, geo.dw), geo.pt, geo.pl, geo.ho, geo.wo, bias,
                                activation, y)  # fmt: skip


def _depthwise_int8(x, w, bias, geo: Geometry, activation, y) -> None:
    """int8 depthwise (C): per-image quantization, one integer plane per output channel."""
    cache = derived(w)
    if "dw_q" not in cache:
        cache["dw_q"] = np.ascontiguousarray(w.quantized().reshape(geo.out, geo.kh, geo.kw))
    static = 0.0 if w.activation_scale is None else float(w.activation_scale)
    _ops("c").depthwise_int8(x, cache["dw_q"], w.scale, static, (geo.sh, geo.sw),
                             (geo.dh, geo.dw), geo.pt, geo.pl, geo.ho, geo.wo, bias, activation,
                             y)  # fmt: skip


#: Largest kh·kw·ceil(cg/64) of the C binary kernel (PK_CONV_BINARY_WORDS).
BINARY_WORDS = 256


def _binary(backend, x, w, bias, geo: Geometry, activation, y) -> None:
    """Binary activations: XNOR-popcount (C or Numba) over sign bits packed per pixel."""
    cw = -(-geo.cg // 64)
    if backend == "numpy" or (backend == "c" and geo.kh * geo.kw * cw > BINARY_WORDS):
        y[...] = _binary_reference(x, w, bias, geo, activation, backend)
        return
    cache = derived(w)
    if "tap_bits" not in cache:
        from kernels.encodings.binary import pack_signs

        signs = w.signs().reshape(geo.out, geo.cg, geo.kh * geo.kw)
        per_tap = np.ascontiguousarray(signs.transpose(0, 2, 1)).reshape(-1, geo.cg)
        cache["tap_bits"] = np.ascontiguousarray(
            pack_signs(per_tap).reshape(geo.out, geo.kh * geo.kw, cw)
        )
    if backend == "numba":
        backends.apply_numba_threads()
    _ops(backend).binary(x, geo.groups, cache["tap_bits"], w.alpha, geo.kh, geo.kw,
                         (geo.sh, geo.sw), (geo.dh, geo.dw), geo.pt, geo.pl, geo.ho, geo.wo,
                         bias, activation, y)  # fmt: skip


def _decoded(w: EncodedWeight) -> EncodedWeight:
    """``w``'s effective dense weights as a dense weight, made once per weight."""
    cache = derived(w)
    if "decoded" not in cache:
        cache["decoded"] = encode(w.decode(), "dense")
    return cache["decoded"]


def _generic(backend, x, w, bias, geo: Geometry, activation, y) -> None:
    """Any encoding: patch rows through the encoding's linear kernel, per group."""
    ops = _ops(backend)
    linear_backend, linear = backends.resolve("linear", w.encoding)
    if linear_backend == "numba":
        backends.apply_numba_threads()
    positions = geo.n * geo.ho * geo.wo
    one_by_one = geo.kh == geo.kw == 1 and geo.sh == geo.sw == 1 and not geo.padded
    nhwc = (
        np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(positions, geo.c)
        if one_by_one
        else None
    )
    rows = None if one_by_one else np.empty((positions, geo.kg), np.float32)
    result = np.empty((positions, geo.out), np.float32)
    for g in range(geo.groups):
        if one_by_one:
            rows = nhwc[:, g * geo.cg : (g + 1) * geo.cg]
            rows = rows if geo.groups == 1 else np.ascontiguousarray(rows)
        else:
            ops.im2row(x, g * geo.cg, geo.cg, geo.kh, geo.kw, (geo.sh, geo.sw), (geo.dh, geo.dw),
                       geo.pt, geo.pl, geo.ho, geo.wo, rows)  # fmt: skip
        wg, cols = group_weight(w, geo, g)
        bg = None if bias is None else np.ascontiguousarray(bias[g * geo.og : (g + 1) * geo.og])
        if cols == slice(None):
            part = result if geo.groups == 1 else np.empty((positions, geo.og), np.float32)
            linear(rows, wg, bg, activation, part)
        else:
            full = np.empty((positions, geo.out), np.float32)
            linear(rows, wg, None, None, full)
            part = apply_epilogue(full[:, cols], bg, activation).astype(np.float32)
        if geo.groups > 1:
            result[:, g * geo.og : (g + 1) * geo.og] = part
    y[...] = result.reshape(geo.n, geo.ho, geo.wo, geo.out).transpose(0, 3, 1, 2)
