"""Arithmetic ops beyond Add and Mul: Sub, Div, Pow, Max, Min, the unary maths (Sqrt, Exp,
Log, Neg, Abs, Reciprocal, Erf), Clip, HardSigmoid and the reductions (ReduceMean,
ReduceSum, ReduceMax).

These are what ONNX exporters write for layers the runtime has no single op for (a
LayerNorm or GELU spelled out, a scaled attention); the converter folds the common
patterns back into LayerNorm and Gelu, and the rest runs here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pyinfer.ops import Attr, Node, OpSpec, dtype_arithmetic, register, same_shape, spec
from pyinfer.ops.elementwise import erf  # also registers Add and Tanh, copied below
from pyinfer.ops.shape_ops import unique_axes


def _pow(a, b):
    # x ** 2 is the common case (a variance); np.square is exact and faster
    if b.size == 1 and b.reshape(-1)[0] == 2:
        return np.square(a)
    return np.power(a, b)


for _name, _fn, _rule, _desc in [
    ("Sub", np.subtract, dtype_arithmetic, "a - b, broadcasting"),
    ("Div", np.divide, None, "a / b, broadcasting"),
    ("Pow", _pow, None, "a ** b, broadcasting"),
    ("Max", np.maximum, dtype_arithmetic, "elementwise maximum, broadcasting"),
    ("Min", np.minimum, dtype_arithmetic, "elementwise minimum, broadcasting"),
]:
    # the same op as Add but for the function (and the dtypes: Div and Pow float32 only,
    # as integer division and powers round differently in NumPy and ONNX)
    register(
        dataclasses.replace(
            spec("Add"), name=_name, build=lambda node, f=_fn: f, dtypes=_rule, description=_desc
        )
    )


def _erf32(x):
    return erf(x.astype(np.float64)).astype(np.float32)


def _reciprocal(x):
    return np.float32(1) / x


for _name, _fn, _rule, _desc in [
    ("Sqrt", np.sqrt, None, "square root"),
    ("Exp", np.exp, None, "e ** x"),
    ("Log", np.log, None, "natural logarithm"),
    ("Neg", np.negative, dtype_arithmetic, "-x"),
    ("Abs", np.abs, dtype_arithmetic, "|x|"),
    ("Reciprocal", _reciprocal, None, "1 / x"),
    ("Erf", _erf32, None, "the error function"),
]:
    # the same op as Tanh but for the function: one input, its shape out, no attributes
    register(
        dataclasses.replace(
            spec("Tanh"), name=_name, build=lambda node, f=_fn: f, dtypes=_rule, description=_desc
        )
    )


def _build_clip(node: Node):
    low, high = node.attrs["min"], node.attrs["max"]
    low = None if low is None else np.float32(low)
    high = None if high is None else np.float32(high)
    if low is not None and high is not None and low > high:
        raise ValueError(f"Clip min {low} is above max {high}")

    def clip(x):
        return np.clip(x, low, high)

    return clip


register(
    OpSpec(
        "Clip",
        ("tensor",),
        {"min": Attr("float", None), "max": Attr("float", None)},
        infer=same_shape,
        build=_build_clip,
        description="min(max(x, min), max); a missing bound is no bound",
    )
)


def _build_hard_sigmoid(node: Node):
    alpha, beta = np.float32(node.attrs["alpha"]), np.float32(node.attrs["beta"])

    def hard_sigmoid(x):
        return np.clip(x * alpha + beta, np.float32(0), np.float32(1))

    return hard_sigmoid


register(
    OpSpec(
        "HardSigmoid",
        ("tensor",),
        {"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)},
        infer=same_shape,
        build=_build_hard_sigmoid,
        description="max(0, min(1, alpha * x + beta))",
    )
)


def _reduce_axes(axes, rank: int) -> tuple[int, ...]:
    return unique_axes(axes, rank) if axes else tuple(range(rank))


def _infer_reduce(node: Node):
    s = node.in_shapes[0]
    if s is None:
        return None
    axes = _reduce_axes(node.attrs["axes"], len(s))
    if node.attrs["keepdims"]:
        return tuple(1 if i in axes else d for i, d in enumerate(s))
    return tuple(d for i, d in enumerate(s) if i not in axes)


def _build_reduce(fn):
    def build(node: Node):
        axes, keep = node.attrs["axes"], node.attrs["keepdims"]

        def reduce(x):
            return fn(x, axis=_reduce_axes(axes, x.ndim), keepdims=keep)

        return reduce

    return build


for _name, _fn, _desc in [
    ("ReduceMean", np.mean, "mean over axes (every axis when axes is empty)"),
    ("ReduceSum", np.sum, "sum over axes (every axis when axes is empty)"),
    ("ReduceMax", np.max, "maximum over axes (every axis when axes is empty)"),
]:
    register(
        OpSpec(
            _name,
            ("tensor",),
            {"axes": Attr("ints", ()), "keepdims": Attr("bool", True)},
            infer=_infer_reduce,
            build=_build_reduce(_fn),
            description=_desc,
        )
    )
