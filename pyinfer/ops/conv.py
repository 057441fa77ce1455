"""Conv2d over any encoding (NCHW, weight [out, in/groups, kh, kw])."""

from __future__ import annotations

import numpy as np

import kernels
from pyinfer.ops import Attr, Node, OpSpec, bias_param, input_shape, register


def conv_out(size, k, s, p, d):
    if size is None:
        return None
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ValueError(
            f"spatial size {size} is too small for kernel {k} (padding {p}, dilation {d})"
        )
    return out


def _infer_conv(node: Node):
    w = node.static[1]
    a = node.attrs
    if len(w.shape) != 4:
        raise ValueError(f"Conv2d weight must be [out, in/groups, kh, kw], got shape {w.shape}")
    o, cg, kh, kw = w.shape
    g = a["groups"]
    if o % g:
        raise ValueError(f"weight has {o} output channels, not divisible by groups={g}")
    bias_param(node, 2, o)
    s = input_shape(node, 0, 4)
    if s is None:
        return None
    n, c, h, wd = s
    if c is not None and c != cg * g:
        raise ValueError(
            f"input {node.inputs[0]!r} has {c} channels but the weight {w.shape} with "
            f"groups={g} expects {cg * g}"
        )
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    return (n, o, conv_out(h, kh, sh, ph, dh), conv_out(wd, kw, sw, pw, dw))


def _build_conv(node: Node):
    w = node.static[1]
    a = node.attrs
    bias = bias_param(node, 2, w.shape[0])
    activation = a["activation"]
    stride, padding, dilation, groups = a["stride"], a["padding"], a["dilation"], a["groups"]
    cg = w.shape[1]
    name = node.name

    def conv2d(x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != cg * groups:
            raise ValueError(
                f"node {name!r}: input has shape {x.shape}, expected [N, {cg * groups}, H, W]"
            )
        return kernels.conv2d(x, w, bias, stride, padding, dilation, groups, activation)

    return conv2d


register(
    OpSpec(
        "Conv2d",
        ("tensor", "weight", "param?"),
        {
            "stride": Attr("pair", (1, 1), (1,)),
            "padding": Attr("pair", (0, 0), (0,)),
            "dilation": Attr("pair", (1, 1), (1,)),
            "groups": Attr("int", 1),
            "activation": Attr("activation", None),
        },
        infer=_infer_conv,
        build=_build_conv,
        fuses_activation=True,
        description="2-D convolution, NCHW, weight [out, in/groups, kh, kw]; any encoding",
    )
)
