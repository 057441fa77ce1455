"""Convs whose attributes would make a lowering's scratch memory outgrow its work.

A stride much larger than the kernel, or padding or dilation that spreads the taps over
a padded extent far larger than the rows and columns any output reads, make the padded
copies and the int8 kernel's stride-phase buffer grow with the attributes, not with the
input and output (an 8×8 input with stride 16384: 2 GB). Such a conv is rewritten, per
axis, into one on a *compacted* input: slot ``o`` of the new axis holds the ``k`` input
rows (zero for padding) that output ``o`` reads, then one spare row, so the same
lowering runs with stride ``k + 1``, dilation 1 and no padding, on ``ho · (k + 1)`` rows.
Every output reads exactly the values it read before, in the same order.

The spare row of the first slot holds the image's largest ``|x|`` (NaN/Inf when the
image holds one): no output reads it, but the int8 kernels' per-image scale and NaN rule
see the whole image, as in :func:`kernels.conv.reference.int8_reference`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from kernels.conv.shapes import Geometry

#: An axis is compacted when the extent its lowering would hold (padded span read plus
#: one stride of phase rounding) exceeds this many times the compacted length.
MAX_SPREAD = 8


def _spread(size_out: int, k: int, s: int, d: int) -> bool:
    extent = (size_out - 1) * s + (k - 1) * d + 1
    return extent + s > MAX_SPREAD * size_out * (k + 1)


def needs_compaction(geo: Geometry) -> bool:
    """Whether :func:`compact` would rewrite ``geo`` (some axis is spread out)."""
    return _spread(geo.ho, geo.kh, geo.sh, geo.dh) or _spread(geo.wo, geo.kw, geo.sw, geo.dw)


def _slots(size: int, size_out: int, k: int, s: int, d: int, pad: int) -> np.ndarray:
    """Source index of each position of a compacted axis; -1 for zero (padding, spare)."""
    idx = np.arange(size_out, dtype=np.int64)[:, None] * s + np.arange(k) * d - pad
    idx = np.concatenate([idx, np.full((size_out, 1), -1, np.int64)], axis=1).ravel()
    idx[(idx < 0) | (idx >= size)] = -1
    return idx


def _take(a: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """``a`` indexed by ``idx`` along ``axis``, index -1 giving zeros."""
    zero_shape = list(a.shape)
    zero_shape[axis] = 1
    padded = np.concatenate([a, np.zeros(zero_shape, a.dtype)], axis=axis)
    return np.take(padded, idx, axis=axis)


def compact(geo: Geometry) -> tuple[Geometry, Callable[[np.ndarray], np.ndarray]] | None:
    """The compacted conv of ``geo`` and the function making its input, or None.

    Returns None when no axis is spread out (``needs_compaction``). Otherwise
    ``(geometry, gather)``: running ``geometry`` on ``gather(x)`` gives the same output,
    value for value, as ``geo`` on ``x``; ``gather(x)`` has ``c·ho·(kh+1)·wo·(kw+1)``
    values at most per image.
    """
    rows = cols = None
    new = geo
    if _spread(geo.ho, geo.kh, geo.sh, geo.dh):
        rows = _slots(geo.h, geo.ho, geo.kh, geo.sh, geo.dh, geo.pt)
        new = dataclasses.replace(new, h=len(rows), sh=geo.kh + 1, dh=1, pt=0, pb=0)
    if _spread(geo.wo, geo.kw, geo.sw, geo.dw):
        cols = _slots(geo.w, geo.wo, geo.kw, geo.sw, geo.dw, geo.pl)
        new = dataclasses.replace(new, w=len(cols), sw=geo.kw + 1, dw=1, pl=0, pr=0)
    if rows is None and cols is None:
        return None
    # where the image's largest |x| goes: a spare row (or column) no output reads
    spare = (geo.kh, 0) if rows is not None else (0, geo.kw)

    def gather(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        flat = x.reshape(n, -1)
        largest = np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(n, np.float32)
        xc = x
        if rows is not None:
            xc = _take(xc, rows, axis=2)
        if cols is not None:
            xc = _take(xc, cols, axis=3)
        xc = np.ascontiguousarray(xc, np.float32)
        xc[:, 0, spare[0], spare[1]] = largest
        return xc

    return new, gather
