"""conv2d's sizes: validation and output size, the one place that computes them."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from kernels.api import _as_float32, as_weight
from kernels.encodings.base import EncodedWeight


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Every size of one conv2d, validated. ``n`` is None when any batch goes."""

    n: int | None
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
        """Input channels per group."""
        return self.c // self.groups

    @property
    def og(self) -> int:
        """Output channels per group."""
        return self.out // self.groups

    @property
    def kg(self) -> int:
        """Columns of one group's weight matrix: cg·kh·kw."""
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

    @property
    def stride(self) -> tuple[int, int]:
        return self.sh, self.sw

    @property
    def dilation(self) -> tuple[int, int]:
        return self.dh, self.dw

    def out_shape(self, n: int | None = None) -> tuple:
        """(n, out, ho, wo); ``n`` defaults to the planned batch (None: any)."""
        return (self.n if n is None else n, self.out, self.ho, self.wo)


def as_conv_weight(w: Any) -> EncodedWeight:
    """A 4-D conv weight as an encoded weight (a dense array wrapped, not copied)."""
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


def geometry(
    x_shape: tuple,
    w_shape: tuple,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Geometry:
    """Validate one conv's sizes and derive its output size.

    Parameters
    ----------
    x_shape : (n, c, h, w)
        ``n`` may be None (any batch).
    w_shape : (out, in/groups, kh, kw)
    stride, padding, dilation, groups
        As :func:`kernels.conv2d` takes them.

    Returns
    -------
    Geometry

    Raises
    ------
    ValueError
        Saying which size is impossible.
    """
    if len(x_shape) != 4:
        raise ValueError(
            f"x must be NCHW [batch, channels, height, width], got shape {tuple(x_shape)}"
        )
    n = None if x_shape[0] is None else int(x_shape[0])
    c, h, wd = (int(s) for s in x_shape[1:])
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


def conv_output_shape(
    x_shape: tuple,
    w_shape: tuple,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> tuple:
    """(n, out, ho, wo) of a conv2d, with :func:`geometry`'s validation; n may be None."""
    return geometry(x_shape, w_shape, stride, padding, dilation, groups).out_shape()
