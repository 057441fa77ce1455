"""conv2d's NumPy references: plain, readable, the definition the fast lowerings match.

Each registry row names its conv reference (``Encoding.reference_conv2d``); a row that
names none gets :func:`patch_rows_reference`, the encoding's ``reference_linear`` on
every patch. All of them take ``(x, w, bias, geo, activation)`` with x float32
C-contiguous NCHW and read the batch from x.
"""

from __future__ import annotations

import numpy as np

from kernels import registry
from kernels.conv.groups import group_weight
from kernels.conv.shapes import Geometry
from kernels.encodings.base import EncodedWeight, apply_epilogue


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


def _tap_index(size: int, size_out: int, k: int, s: int, d: int, pad: int) -> np.ndarray:
    """Along one axis, the input index each (output, tap) pair reads: [size_out, k];
    -1 where it reads padding."""
    idx = np.arange(size_out, dtype=np.int64)[:, None] * s + np.arange(k, dtype=np.int64) * d
    idx -= pad
    idx[(idx < 0) | (idx >= size)] = -1
    return idx


def patch_rows_in_bounds(x: np.ndarray, geo: Geometry, group: int):
    """:func:`patch_rows` gathered from x itself, never padding it: (rows, in_bounds).

    rows [n·ho·wo, cg·kh·kw] as :func:`patch_rows` (zero where a tap reads padding) and
    in_bounds bool [ho·wo, cg·kh·kw], whether each entry reads the input. Memory follows
    x and the patches, not the padding (padding 3000 on an 8x8 input pads nothing).
    """
    rows_at = _tap_index(geo.h, geo.ho, geo.kh, geo.sh, geo.dh, geo.pt)  # [ho, kh]
    cols_at = _tap_index(geo.w, geo.wo, geo.kw, geo.sw, geo.dw, geo.pl)  # [wo, kw]
    xg = x[:, group * geo.cg : (group + 1) * geo.cg]
    # one zero row and column at the end: what index -1 reads
    xg = np.pad(xg, ((0, 0), (0, 0), (0, 1), (0, 1)))
    taps = np.take(np.take(xg, rows_at, axis=2), cols_at, axis=4)  # [n, cg, ho, kh, wo, kw]
    rows = np.ascontiguousarray(taps.transpose(0, 2, 4, 1, 3, 5)).reshape(-1, geo.kg)
    inside = (rows_at >= 0)[:, None, :, None] & (cols_at >= 0)[None, :, None, :]  # ho wo kh kw
    inside = np.broadcast_to(inside[:, :, None], (geo.ho, geo.wo, geo.cg, geo.kh, geo.kw))
    return rows, inside.reshape(geo.ho * geo.wo, geo.kg)


def rows_to_nchw(y: np.ndarray, n: int, geo: Geometry) -> np.ndarray:
    """[n·ho·wo, out] patch-row results as NCHW [n, out, ho, wo]."""
    return np.ascontiguousarray(y.reshape(n, geo.ho, geo.wo, geo.out).transpose(0, 3, 1, 2))


def _tap_sums(xpad: np.ndarray, wd: np.ndarray, geo: Geometry, dtype) -> np.ndarray:
    """Σ over groups and taps of tap(xpad) · w, in ``dtype``: [n, out, ho, wo]."""
    y = np.zeros((xpad.shape[0], geo.out, geo.ho, geo.wo), dtype)
    for g in range(geo.groups):
        cs, os_ = slice(g * geo.cg, (g + 1) * geo.cg), slice(g * geo.og, (g + 1) * geo.og)
        for ky in range(geo.kh):
            for kx in range(geo.kw):
                y[:, os_] += np.einsum(
                    "ncyx,oc->noyx", tap(xpad[:, cs], geo, ky, kx), wd[os_, :, ky, kx]
                )
    return y


def float_reference(x, w: EncodedWeight, bias, geo: Geometry, activation) -> np.ndarray:
    """Float activations times ``w.decode()``: a float64 sum of strided slices."""
    wd = w.decode().astype(np.float64)  # [out, cg, kh, kw]
    y = _tap_sums(pad_input(x, geo).astype(np.float64), wd, geo, np.float64)
    b = None if bias is None else bias.astype(np.float64)[:, None, None]
    return apply_epilogue(y, b, activation).astype(np.float32)


def patch_rows_reference(x, w: EncodedWeight, bias, geo: Geometry, activation) -> np.ndarray:
    """The encoding's ``reference_linear`` on every patch row, group by group (the
    default of rows that name no conv reference)."""
    linear = registry.get(w.encoding).reference_linear
    n = x.shape[0]
    xpad = pad_input(x, geo)
    y = np.empty((n * geo.ho * geo.wo, geo.out), np.float32)
    for g in range(geo.groups):
        rows = patch_rows(x, geo, g, xpad)
        wg, cols = group_weight(w, geo.groups, g)
        bg = None if bias is None else bias[g * geo.og : (g + 1) * geo.og]
        if cols == slice(None):
            yg = linear(rows, wg, bg, activation)
        else:
            yg = apply_epilogue(linear(rows, wg, None, None)[:, cols], bg, activation)
        y[:, g * geo.og : (g + 1) * geo.og] = yg
    return rows_to_nchw(y, n, geo)


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
    return _tap_sums(xpad, q.astype(np.int64), geo, np.int64).astype(np.int32)


def int8_reference(x, w, bias, geo: Geometry, activation) -> np.ndarray:
    """int8 conv: per-image quantized x (the zero padding is the integer 0), an exact
    integer conv, y = act(f32(acc) · (s_n · scale[o]) + bias[o]); a NaN/Inf image is NaN."""
    xq, s, bad = quantize_images(x, w.activation_scale)
    acc = int8_accumulators(xq, w.quantized().reshape(w.shape), geo)
    y = acc.astype(np.float32) * (s[:, None, None, None] * w.scale[None, :, None, None])
    y[bad] = np.nan
    b = None if bias is None else np.asarray(bias, np.float32)[:, None, None]
    return apply_epilogue(y, b, activation).astype(np.float32)


def binary_reference(x, w, bias, geo: Geometry, activation) -> np.ndarray:
    """Binary weights: with float activations the patch-row reference; with binary
    activations a padded position adds 0 to the ±1 dot product (Larq's rule).

    Binary activations, per patch row r (per group): β_r = mean |x| over the row
    (padding counted as 0), n[r, o] = Σ over in-bounds k of sign(x[r, k])·sign(W[o, k])
    (exact integer), and y = act((α_o·β_r)·f32(n) + bias), the float epilogue of the
    binary linear kernel. The patches are gathered without padding the input
    (:func:`patch_rows_in_bounds`), so huge padding costs no memory.
    """
    if w.activations != "binary":
        return patch_rows_reference(x, w, bias, geo, activation)
    n = x.shape[0]
    signs = w.signs().astype(np.int64)  # [out, kg]
    y = np.empty((n * geo.ho * geo.wo, geo.out), np.float32)
    for g in range(geo.groups):
        rows, valid = patch_rows_in_bounds(x, geo, g)  # valid: the same for every image
        rows = rows.reshape(n, geo.ho * geo.wo, geo.kg)
        beta = np.abs(rows.astype(np.float64)).mean(axis=2).astype(np.float32).reshape(-1)
        xs = np.where(valid[None], np.where(rows >= 0, 1, -1), 0).reshape(-1, geo.kg)
        os_ = slice(g * geo.og, (g + 1) * geo.og)
        dots = xs.astype(np.int64) @ signs[os_].T
        scale = beta[:, None] * w.alpha[None, os_]
        yg = (scale * dots.astype(np.float32)).astype(np.float32)
        bg = None if bias is None else bias[os_]
        y[:, os_] = apply_epilogue(yg, bg, activation)
    return rows_to_nchw(y, n, geo)


def conv2d_reference(x, w: EncodedWeight, bias, geo: Geometry, activation) -> np.ndarray:
    """The reference of ``w``'s registry row (:func:`patch_rows_reference` if it names none)."""
    return registry.conv_reference(w.encoding)(x, w, bias, geo, activation)
