"""Shape ops: Flatten, Reshape, Transpose, Concat and Gather."""

from __future__ import annotations

import math

import numpy as np

from pyinfer.ops import (
    DTYPES,
    REQUIRED,
    Attr,
    Node,
    OpSpec,
    axis_index,
    check_dtype,
    dtype_of_data,
    fmt_shape,
    one_dtype,
    register,
)


def _flatten_axes(start, end, rank):
    a = axis_index(start, rank, "start_dim") if rank else 0
    b = axis_index(end, rank, "end_dim") if rank else 0
    if a > b:
        raise ValueError(f"start_dim {start} comes after end_dim {end}")
    return a, b


def _infer_flatten(node: Node):
    s = node.in_shapes[0]
    if s is None:
        return None
    a, b = _flatten_axes(node.attrs["start_dim"], node.attrs["end_dim"], len(s))
    mid = s[a : b + 1]
    size = None if None in mid else math.prod(mid)
    return (*s[:a], size, *s[b + 1 :])


def _build_flatten(node: Node):
    start, end = node.attrs["start_dim"], node.attrs["end_dim"]
    s = node.in_shapes[0]
    if s is not None and len(s) >= 2 and _flatten_axes(start, end, len(s)) == (1, len(s) - 1):
        rank = len(s)

        def flatten_to_2d(x):  # [N, ...] -> [N, prod(...)], the CNN head's flatten
            if x.ndim != rank:
                raise ValueError(f"Flatten: input must have rank {rank}, got shape {x.shape}")
            return x.reshape(x.shape[0], -1)

        return flatten_to_2d

    def flatten(x):
        a, b = _flatten_axes(start, end, x.ndim)
        return x.reshape(*x.shape[:a], -1, *x.shape[b + 1 :])

    return flatten


register(
    OpSpec(
        "Flatten",
        ("tensor",),
        {"start_dim": Attr("int", 1), "end_dim": Attr("int", -1)},
        infer=_infer_flatten,
        build=_build_flatten,
        dtypes=dtype_of_data,
        view=True,
        description="merge axes start_dim..end_dim (torch.flatten)",
    )
)


def reshape_target(shape_in, target) -> tuple:
    """The shape ``target`` asks for: 0 copies the input's dim, one -1 is inferred.

    Dims may be None (unknown) in ``shape_in``; the result then may hold None too.
    """
    out = []
    for i, t in enumerate(target):
        if t == 0:
            if i >= len(shape_in):
                raise ValueError(f"shape {list(target)}: 0 at position {i} has no input dim")
            out.append(shape_in[i])
        else:
            out.append(t)
    if -1 in out:
        known = [d for d in out if d != -1]
        total = None if None in shape_in else math.prod(shape_in)
        if None in known or total is None:
            return tuple(None if d == -1 else d for d in out)
        rest = math.prod(known)
        if rest == 0 or total % rest:
            raise ValueError(f"cannot reshape {fmt_shape(shape_in)} into {list(target)}")
        out[out.index(-1)] = total // rest
    elif None not in out and None not in shape_in and math.prod(out) != math.prod(shape_in):
        raise ValueError(f"cannot reshape {fmt_shape(shape_in)} into {list(target)}")
    return tuple(out)


def _infer_reshape(node: Node):
    target = node.attrs["shape"]
    if any(t < -1 for t in target) or target.count(-1) > 1:
        raise ValueError(f"shape {list(target)}: dims must be >= -1 with at most one -1")
    s = node.in_shapes[0]
    return None if s is None else reshape_target(s, target)


def _build_reshape(node: Node):
    target = node.attrs["shape"]
    simple = 0 not in target

    def reshape(x):
        return x.reshape(target if simple else reshape_target(x.shape, target))

    return reshape


register(
    OpSpec(
        "Reshape",
        ("tensor",),
        {"shape": Attr("ints", REQUIRED)},
        infer=_infer_reshape,
        build=_build_reshape,
        dtypes=dtype_of_data,
        view=True,
        description="reshape; 0 keeps the input's dim, -1 is inferred",
    )
)


def _check_perm(perm, rank):
    if sorted(perm) != list(range(rank)):
        raise ValueError(f"perm {list(perm)} is not a permutation of the {rank} axes")


def _infer_transpose(node: Node):
    s = node.in_shapes[0]
    perm = node.attrs["perm"]
    _check_perm(perm, len(perm))
    if s is None:
        return None
    _check_perm(perm, len(s))
    return tuple(s[p] for p in perm)


def _build_transpose(node: Node):
    perm = node.attrs["perm"]

    def transpose(x):
        _check_perm(perm, x.ndim)
        return x.transpose(perm)

    return transpose


register(
    OpSpec(
        "Transpose",
        ("tensor",),
        {"perm": Attr("ints", REQUIRED)},
        infer=_infer_transpose,
        build=_build_transpose,
        dtypes=dtype_of_data,
        view=True,
        description="permute axes",
    )
)


def _infer_concat(node: Node):
    shapes = node.in_shapes
    if any(s is None for s in shapes):
        return None
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ValueError(
            f"Concat inputs must have equal ranks, got {[fmt_shape(s) for s in shapes]}"
        )
    axis = axis_index(node.attrs["axis"], rank)
    out = list(shapes[0])
    for s in shapes[1:]:
        for d in range(rank):
            if d == axis:
                out[d] = None if out[d] is None or s[d] is None else out[d] + s[d]
            elif out[d] is None:
                out[d] = s[d]
            elif s[d] is not None and s[d] != out[d]:
                raise ValueError(
                    f"Concat inputs differ on axis {d}: {[fmt_shape(s) for s in shapes]}"
                )
    return tuple(out)


def _build_concat(node: Node):
    axis = node.attrs["axis"]

    def concat(*xs):
        return np.concatenate(xs, axis=axis)

    return concat


register(
    OpSpec(
        "Concat",
        ("tensor+",),
        {"axis": Attr("int", 1)},
        infer=_infer_concat,
        build=_build_concat,
        dtypes=lambda node, dtypes: one_dtype(node, dtypes, DTYPES),
        description="join along axis",
    )
)


def _infer_gather(node: Node):
    data, idx = node.in_shapes
    if data is None or idx is None:
        return None
    axis = axis_index(node.attrs["axis"], len(data))
    return (*data[:axis], *idx, *data[axis + 1 :])


def _build_gather(node: Node):
    axis = node.attrs["axis"]
    name = node.name

    def gather(data, indices):
        ax = axis_index(axis, data.ndim)
        n = data.shape[ax]
        if indices.size and (int(indices.min()) < -n or int(indices.max()) >= n):
            raise ValueError(
                f"node {name!r}: Gather indices must lie in [{-n}, {n}), got "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        return np.take(data, indices, axis=ax)

    return gather


def _dtype_gather(node: Node, dtypes):
    if dtypes[1].kind not in "iu":
        raise ValueError(f"input {node.inputs[1]!r} must hold integers, got {dtypes[1]}")
    check_dtype(node, 0, dtypes[0], DTYPES)
    return dtypes[0]


register(
    OpSpec(
        "Gather",
        ("tensor", "tensor"),
        {"axis": Attr("int", 0)},
        infer=_infer_gather,
        build=_build_gather,
        dtypes=_dtype_gather,
        index_inputs=(1,),
        description="take rows (embeddings): data[..., indices, ...] along axis",
    )
)
