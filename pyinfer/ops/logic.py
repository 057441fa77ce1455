"""Ops of masks: comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual), logic
(Not, And, Or, Xor), Where and Cast.

Transformers compute their attention masks from integer inputs at run time: HF BERT casts
``attention_mask`` to float and scales ``1 - mask``; PyTorch's ``src_key_padding_mask``
exports as ``Equal`` -> ``Where``. These ops carry such bool and integer tensors.
"""

from __future__ import annotations

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
)


def _infer_broadcast(node: Node):
    out = node.in_shapes[0]
    for s in node.in_shapes[1:]:
        out = broadcast_shapes(out, s)
    return out


def _dtype_compare(allowed):
    def rule(node: Node, dtypes) -> np.dtype:
        one_dtype(node, dtypes, allowed)
        return BOOL

    return rule


for _name, _fn, _allowed, _desc in [
    ("Equal", np.equal, DTYPES, "a == b, broadcasting; bool out"),
    ("Less", np.less, NUMERIC, "a < b, broadcasting; bool out"),
    ("Greater", np.greater, NUMERIC, "a > b, broadcasting; bool out"),
    ("LessOrEqual", np.less_equal, NUMERIC, "a <= b, broadcasting; bool out"),
    ("GreaterOrEqual", np.greater_equal, NUMERIC, "a >= b, broadcasting; bool out"),
]:
    register(
        OpSpec(
            _name,
            ("tensor", "tensor"),
            {},
            infer=_infer_broadcast,
            build=lambda node, f=_fn: f,
            dtypes=_dtype_compare(_allowed),
            description=_desc,
        )
    )


def _dtype_logic(node: Node, dtypes) -> np.dtype:
    return one_dtype(node, dtypes, (BOOL,))


for _name, _fn, _desc in [
    ("And", np.logical_and, "a and b on bool tensors, broadcasting"),
    ("Or", np.logical_or, "a or b on bool tensors, broadcasting"),
    ("Xor", np.logical_xor, "a xor b on bool tensors, broadcasting"),
]:
    register(
        OpSpec(
            _name,
            ("tensor", "tensor"),
            {},
            infer=_infer_broadcast,
            build=lambda node, f=_fn: f,
            dtypes=_dtype_logic,
            description=_desc,
        )
    )

register(
    OpSpec(
        "Not",
        ("tensor",),
        {},
        infer=same_shape,
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
        infer=_infer_broadcast,
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
