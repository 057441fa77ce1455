"""Ops of masks: comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual), logic
(Not, And, Or, Xor), Where and Cast.

Transformers compute their attention masks from integer inputs at run time: HF BERT casts
``attention_mask`` to float and scales ``1 - mask``; PyTorch's ``src_key_padding_mask``
exports as ``Equal`` -> ``Where``. These ops carry such bool and integer tensors.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pyinfer.ops import (
    BOOL,
    DTYPES,
    NUMERIC,
    REQUIRED,
    Attr,
    Node,
    OpSpec,
    broadcast_shapes,
    check_dtype,
    one_dtype,
    register,
    same_shape,
    spec,
)


def _dtype_compare(allowed):
    def rule(node: Node, dtypes) -> np.dtype:
        one_dtype(node, dtypes, allowed)
        return BOOL

    return rule


def _dtype_logic(node: Node, dtypes) -> np.dtype:
    return one_dtype(node, dtypes, (BOOL,))


for _name, _fn, _rule, _desc in [
    ("Equal", np.equal, _dtype_compare(DTYPES), "a == b, broadcasting; bool out"),
    ("Less", np.less, _dtype_compare(NUMERIC), "a < b, broadcasting; bool out"),
    ("Greater", np.greater, _dtype_compare(NUMERIC), "a > b, broadcasting; bool out"),
    ("LessOrEqual", np.less_equal, _dtype_compare(NUMERIC), "a <= b, broadcasting; bool out"),
    ("GreaterOrEqual", np.greater_equal, _dtype_compare(NUMERIC), "a >= b; bool out"),
    ("And", np.logical_and, _dtype_logic, "a and b on bool tensors, broadcasting"),
    ("Or", np.logical_or, _dtype_logic, "a or b on bool tensors, broadcasting"),
    ("Xor", np.logical_xor, _dtype_logic, "a xor b on bool tensors, broadcasting"),
]:
    # the same op as Add but for the function and the dtypes
    register(
        dataclasses.replace(
            spec("Add"), name=_name, build=lambda node, f=_fn: f, dtypes=_rule, description=_desc
        )
    )

# the same op as Tanh but for the function and the dtypes
register(
    dataclasses.replace(
        spec("Tanh"),
        name="Not",
        build=lambda node: np.logical_not,
        dtypes=_dtype_logic,
        description="not x on a bool tensor",
    )
)


def _dtype_where(node: Node, dtypes) -> np.dtype:
    check_dtype(node, 0, dtypes[0], (BOOL,))
    return one_dtype(node, dtypes, DTYPES, first=1)


register(
    OpSpec(
        "Where",
        ("tensor", "tensor", "tensor"),
        {},
        infer=lambda node: broadcast_shapes(
            broadcast_shapes(node.in_shapes[0], node.in_shapes[1]), node.in_shapes[2]
        ),
        build=lambda node: np.where,
        dtypes=_dtype_where,
        description="x where cond else y, broadcasting; cond bool, x and y of one dtype",
    )
)


def _dtype_cast(node: Node, dtypes) -> np.dtype:
    check_dtype(node, 0, dtypes[0], DTYPES)
    return np.dtype(node.attrs["to"])


def _build_cast(node: Node):
    to = np.dtype(node.attrs["to"])

    def cast(x):
        # a copy even to the same dtype: the output may be a graph output, always fresh
        return x.astype(to)

    return cast


register(
    OpSpec(
        "Cast",
        ("tensor",),
        {"to": Attr("str", REQUIRED, tuple(str(d) for d in DTYPES))},
        infer=same_shape,
        build=_build_cast,
        dtypes=_dtype_cast,
        description="convert to the dtype named by to (float32, int64, int32 or bool)",
    )
)
