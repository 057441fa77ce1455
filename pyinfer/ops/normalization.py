"""Normalisation ops: Softmax and LayerNorm."""

from __future__ import annotations

import numpy as np

from kernels import eltwise
from pyinfer.ops import F32, Attr, Node, OpSpec, axis_index, fmt_shape, register, static_input


def _infer_softmax(node: Node):
    s = node.in_shapes[0]
    if s is not None:
        axis_index(node.attrs["axis"], len(s))
    return s


def softmax_reference(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax in NumPy (the reference of the C kernel): max-subtracted, in x's dtype."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _build_softmax(node: Node):
    axis = node.attrs["axis"]

    def softmax(x):
        axis_index(axis, x.ndim)
        if x.dtype == F32 and x.size and eltwise.available():
            return eltwise.softmax(x, axis)
        return softmax_reference(x, axis)

    return softmax


register(
    OpSpec(
        "Softmax",
        ("tensor",),
        {"axis": Attr("int", -1)},
        infer=_infer_softmax,
        build=_build_softmax,
        description="exp(x) / sum(exp(x)) on axis",
    )
)


def _infer_layernorm(node: Node):
    s = node.in_shapes[0]
    for i in (1, 2):
        p = static_input(node, i)
        if p is not None and p.dtype != F32:
            raise ValueError(f"LayerNorm input {node.inputs[i]!r} must be float32, got {p.dtype}")
    if s is None:
        return None
    axis = axis_index(node.attrs["axis"], len(s))
    norm = s[axis:]
    for i in (1, 2):
        p = static_input(node, i)
        if p is not None and any(d is not None and d != q for d, q in zip(norm, p.shape)):
            raise ValueError(
                f"LayerNorm {node.inputs[i]!r} has shape {p.shape}, expected {fmt_shape(norm)} "
                f"(the input's axes from {node.attrs['axis']})"
            )
        if p is not None and len(p.shape) != len(norm):
            raise ValueError(
                f"LayerNorm {node.inputs[i]!r} has shape {p.shape}, expected {fmt_shape(norm)}"
            )
    return s


def _build_layernorm(node: Node):
    axis, eps = node.attrs["axis"], np.float32(node.attrs["eps"])
    scale = static_input(node, 1)
    shift = static_input(node, 2)

    def layer_norm(x):
        first = axis_index(axis, x.ndim)
        for p in (scale, shift):
            if p is not None and x.shape[first:] != p.shape:
                raise ValueError(f"LayerNorm: input {x.shape} does not end with {p.shape}")
        if x.dtype == F32 and x.size and eltwise.available():
            return eltwise.layer_norm(x, scale, shift, eps, first)
        return layer_norm_reference(x, scale, shift, eps, first)

    return layer_norm


def layer_norm_reference(
    x: np.ndarray, scale: np.ndarray | None, shift: np.ndarray | None, eps, axis: int
) -> np.ndarray:
    """LayerNorm in NumPy over the axes from ``axis`` on (the reference of the C kernel)."""
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    d = x - mean
    var = np.mean(np.square(d), axis=axes, keepdims=True)
    d /= np.sqrt(var + eps)
    if scale is not None:
        d *= scale
    if shift is not None:
        d += shift
    return d


register(
    OpSpec(
        "LayerNorm",
        ("tensor", "param?", "param?"),
        {"axis": Attr("int", -1), "eps": Attr("float", 1e-5)},
        infer=_infer_layernorm,
        build=_build_layernorm,
        description="(x - mean) / sqrt(var + eps) * scale + bias over the axes from axis on",
    )
)
