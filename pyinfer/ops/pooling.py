"""Pooling ops: MaxPool2d, AvgPool2d and GlobalAvgPool (NCHW)."""

from __future__ import annotations

import numpy as np

from kernels import eltwise, pooling
from kernels.conv import conv_output_shape
from pyinfer.ops import REQUIRED, Attr, Node, OpSpec, input_shape, register

_POOL_ATTRS = {
    "kernel_size": Attr("pair", REQUIRED, (1,)),
    "stride": Attr("pair", None, (1,)),  # default: kernel_size
    "padding": Attr("pair", (0, 0), (0,)),
}


def _pool_params(node: Node):
    a = node.attrs
    k = a["kernel_size"]
    s = a["stride"] or k
    p = a["padding"]
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding {p} must be at most half the kernel size {k}")
    return k, s, p


def _pooled_size(hw: tuple, k, s, p) -> tuple[int, int]:
    """Output (height, width) of a window op: a one-channel conv's, as kernels count it."""
    return conv_output_shape((1, 1, *hw), (1, 1, *k), s, p)[2:]


def _infer_pool(node: Node):
    k, s, p = _pool_params(node)
    shape = input_shape(node, 0, 4)
    if shape is None:
        return None
    n, c, h, w = shape
    if h is None or w is None:
        return (n, c, None, None)  # sizes known only at run time
    return (n, c, *_pooled_size((h, w), k, s, p))


def _sizes(k, s, p):
    """Output sizes by input (height, width), computed once per input size."""
    known: dict[tuple, tuple[int, int]] = {}

    def sizes(hw: tuple) -> tuple[int, int]:
        if hw not in known:
            known[hw] = _pooled_size(hw, k, s, p)
        return known[hw]

    return sizes


def _windows(xp, k, s, oh, ow):
    for i in range(k[0]):
        for j in range(k[1]):
            yield xp[:, :, i : i + s[0] * (oh - 1) + 1 : s[0], j : j + s[1] * (ow - 1) + 1 : s[1]]


def _build_maxpool(node: Node):
    k, s, p = _pool_params(node)
    sizes = _sizes(k, s, p)

    fast = pooling.bind_pool2d(k, s, p, "max") if eltwise.available() else None

    def max_pool(x):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d: input must be NCHW, got shape {x.shape}")
        oh, ow = sizes(x.shape[2:])
        if fast is not None:
            return fast(x, (oh, ow))
        xp = np.pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2), constant_values=-np.inf)
        windows = _windows(xp, k, s, oh, ow)
        out = np.array(next(windows))
        for win in windows:
            np.maximum(out, win, out=out)
        return out

    return max_pool


def _build_avgpool(node: Node):
    k, s, p = _pool_params(node)
    include_pad = node.attrs["count_include_pad"]
    sizes = _sizes(k, s, p)

    mode = "avg" if include_pad or not any(p) else "avg_valid"
    fast = pooling.bind_pool2d(k, s, p, mode) if eltwise.available() else None

    def avg_pool(x):
        if x.ndim != 4:
            raise ValueError(f"AvgPool2d: input must be NCHW, got shape {x.shape}")
        oh, ow = sizes(x.shape[2:])
        if fast is not None:
            return fast(x, (oh, ow))
        xp = np.pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2))
        out = np.zeros((x.shape[0], x.shape[1], oh, ow), np.float32)
        for win in _windows(xp, k, s, oh, ow):
            out += win
        if include_pad or not any(p):
            out /= np.float32(k[0] * k[1])
        else:
            ones = np.pad(
                np.ones((1, 1) + x.shape[2:], np.float32),
                ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2),
            )
            count = sum(_windows(ones, k, s, oh, ow))
            out /= count
        return out

    return avg_pool


register(
    OpSpec(
        "MaxPool2d",
        ("tensor",),
        _POOL_ATTRS,
        infer=_infer_pool,
        build=_build_maxpool,
        description="max over kh x kw windows (pad -inf)",
    )
)
register(
    OpSpec(
        "AvgPool2d",
        ("tensor",),
        {**_POOL_ATTRS, "count_include_pad": Attr("bool", True)},
        infer=_infer_pool,
        build=_build_avgpool,
        description="mean over kh x kw windows",
    )
)


def _infer_gap(node: Node):
    s = input_shape(node, 0, 4)
    if s is None:
        return None
    return (s[0], s[1], 1, 1) if node.attrs["keepdims"] else (s[0], s[1])


def _build_gap(node: Node):
    keep = node.attrs["keepdims"]

    def global_avg_pool(x):
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPool: input must be NCHW, got shape {x.shape}")
        return x.mean(axis=(2, 3), keepdims=keep, dtype=np.float32)

    return global_avg_pool


register(
    OpSpec(
        "GlobalAvgPool",
        ("tensor",),
        {"keepdims": Attr("bool", True)},
        infer=_infer_gap,
        build=_build_gap,
        description="mean over H and W: [N, C, 1, 1] (or [N, C] without keepdims)",
    )
)
