"""More shape ops: Squeeze, Unsqueeze, Slice, Pad, and the two whose target shape depends
on the sizes of other tensors at run time, DynamicReshape and Expand (Slice's ends may too).

A target shape is the ``shape`` attribute, some of whose entries ``dims`` overrides with a
size read at run time: ``dims`` is a flat list of groups ``[position, coefficient, count,
input, axis, input, axis, ...]`` meaning ``shape[position] = coefficient * prod(
inputs[input].shape[axis] for each of the count pairs)``, where ``inputs[0]`` is the tensor
reshaped and the others are tensors passed only for their sizes (e.g. the graph input that
carries the batch and sequence lengths). This is how an imported transformer's
``Shape -> Gather -> Concat -> Reshape`` chain runs for any batch size and sequence length.
"""

from __future__ import annotations

import math

import numpy as np

from pyinfer.ops import (
    REQUIRED,
    Attr,
    Node,
    OpSpec,
    axis_index,
    broadcast_shapes,
    dtype_of_data,
    fmt_shape,
    register,
)
from pyinfer.ops.shape import reshape_target


def unique_axes(axes, rank: int) -> tuple[int, ...]:
    """``axes`` (negative count from the end) as sorted indices; ValueError on repeats."""
    out = tuple(sorted({axis_index(a, rank) for a in axes}))
    if len(out) != len(axes):
        raise ValueError(f"axes {list(axes)} name an axis twice")
    return out


def _squeeze_axes(axes, shape) -> tuple[int, ...]:
    if not axes:
        return tuple(i for i, d in enumerate(shape) if d == 1)
    out = unique_axes(axes, len(shape))
    for a in out:
        if shape[a] is not None and shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of shape {fmt_shape(shape)}: size is not 1")
    return out


def _infer_squeeze(node: Node):
    s = node.in_shapes[0]
    if s is None:
        return None
    if not node.attrs["axes"] and None in s:
        return None  # which axes are 1 is known only at run time
    axes = _squeeze_axes(node.attrs["axes"], s)
    return tuple(d for i, d in enumerate(s) if i not in axes)


def _build_squeeze(node: Node):
    axes = node.attrs["axes"]

    def squeeze(x):
        return np.squeeze(x, axis=_squeeze_axes(axes, x.shape))

    return squeeze


def _unsqueeze_axes(axes, rank: int) -> tuple[int, ...]:
    return unique_axes(axes, rank + len(axes))


def _infer_unsqueeze(node: Node):
    s = node.in_shapes[0]
    if s is None:
        return None
    axes = _unsqueeze_axes(node.attrs["axes"], len(s))
    dims = iter(s)
    return tuple(1 if i in axes else next(dims) for i in range(len(s) + len(axes)))


def _build_unsqueeze(node: Node):
    axes = node.attrs["axes"]

    def unsqueeze(x):
        return np.expand_dims(x, _unsqueeze_axes(axes, x.ndim))

    return unsqueeze


register(
    OpSpec(
        "Squeeze",
        ("tensor",),
        {"axes": Attr("ints", ())},
        infer=_infer_squeeze,
        build=_build_squeeze,
        dtypes=dtype_of_data,
        view=True,
        description="drop axes of size 1 (every such axis when axes is empty)",
    )
)
register(
    OpSpec(
        "Unsqueeze",
        ("tensor",),
        {"axes": Attr("ints", REQUIRED)},
        infer=_infer_unsqueeze,
        build=_build_unsqueeze,
        dtypes=dtype_of_data,
        view=True,
        description="insert axes of size 1 at the given positions of the output",
    )
)


# ----------------------------------------------------------------- Slice


def _slice_params(node: Node, rank: int, ends=None):
    a = node.attrs
    starts, ends = a["starts"], a["ends"] if ends is None else ends
    axes = a["axes"] or tuple(range(len(starts)))
    steps = a["steps"] or (1,) * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("starts, ends, axes and steps must have the same length")
    if 0 in steps:
        raise ValueError("steps must not be 0")
    index = [slice(None)] * rank
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[axis_index(ax, rank)] = slice(s, e, st)
    return tuple(index)


def _infer_slice(node: Node):
    s = node.in_shapes[0]
    dims = parse_dims(node.attrs["dims"], len(node.inputs), len(node.attrs["ends"]))
    _check_ref_axes(node, dims)
    if s is None:
        return None
    index = _slice_params(node, len(s))
    axes = node.attrs["axes"] or tuple(range(len(node.attrs["starts"])))
    late = {axis_index(axes[pos], len(s)) for pos, _, _ in dims}
    return tuple(
        None if i in late else d if d is None or sl == slice(None) else len(range(d)[sl])
        for i, (d, sl) in enumerate(zip(s, index))
    )


def _build_slice(node: Node):
    known: dict[int, tuple] = {}
    ends = node.attrs["ends"]
    dims = parse_dims(node.attrs["dims"], len(node.inputs), len(ends))

    def slice_(x, *refs):
        if dims:
            return x[_slice_params(node, x.ndim, _runtime_target(ends, dims, (x, *refs)))]
        index = known.get(x.ndim)
        if index is None:
            index = known[x.ndim] = _slice_params(node, x.ndim)
        return x[index]

    return slice_


register(
    OpSpec(
        "Slice",
        ("tensor", "tensor+"),
        {
            "starts": Attr("ints", REQUIRED),
            "ends": Attr("ints", REQUIRED),  # clamped to the size, as Python's slices
            "axes": Attr("ints", ()),
            "steps": Attr("ints", ()),
            "dims": Attr("ints", ()),  # ends read at run time, as DynamicReshape's dims
        },
        infer=_infer_slice,
        build=_build_slice,
        dtypes=dtype_of_data,
        view=True,
        description="x[starts:ends:steps] on the given axes (Python slice semantics); "
        "ends named in dims are read from input sizes at run time",
    )
)


# ----------------------------------------------------------------- Pad


def _infer_pad(node: Node):
    s = node.in_shapes[0]
    pads = node.attrs["pads"]
    if any(p < 0 for p in pads):
        raise ValueError(f"pads {list(pads)} must not be negative")
    if s is None:
        return None
    if len(pads) != 2 * len(s):
        raise ValueError(f"pads {list(pads)} must hold 2 entries per axis of {fmt_shape(s)}")
    r = len(s)
    return tuple(None if d is None else d + pads[i] + pads[i + r] for i, d in enumerate(s))


def _build_pad(node: Node):
    pads, mode = node.attrs["pads"], node.attrs["mode"]
    value = np.float32(node.attrs["value"])

    def pad(x):
        r = x.ndim
        if len(pads) != 2 * r:
            raise ValueError(f"pads {list(pads)} must hold 2 entries per axis of {x.shape}")
        widths = [(pads[i], pads[i + r]) for i in range(r)]
        if mode == "constant":
            return np.pad(x, widths, constant_values=value)
        return np.pad(x, widths, mode=mode)

    return pad


register(
    OpSpec(
        "Pad",
        ("tensor",),
        {
            "pads": Attr("ints", REQUIRED),  # ONNX order: all begins, then all ends
            "mode": Attr("str", "constant", ("constant", "reflect", "edge")),
            "value": Attr("float", 0.0),
        },
        infer=_infer_pad,
        build=_build_pad,
        description="pad each axis before and after (constant, reflect or edge)",
    )
)


# ----------------------------------------------------------------- sizes read at run time


def parse_dims(dims, n_inputs: int, rank: int) -> list[tuple[int, int, tuple]]:
    """``dims`` as (position, coefficient, ((input, axis), ...)); ValueError if malformed."""
    out, i = [], 0
    while i < len(dims):
        if i + 3 > len(dims):
            raise ValueError(f"dims {list(dims)} ends inside a group")
        pos, coef, count = dims[i : i + 3]
        pairs = dims[i + 3 : i + 3 + 2 * count]
        if count < 0 or len(pairs) != 2 * count:
            raise ValueError(f"dims {list(dims)}: group at {i} has a bad count {count}")
        if not 0 <= pos < rank or coef < 1:
            raise ValueError(f"dims {list(dims)}: bad position {pos} or coefficient {coef}")
        refs = tuple(zip(pairs[::2], pairs[1::2]))
        if any(not 0 <= j < n_inputs for j, _ in refs):
            raise ValueError(f"dims {list(dims)} names an input beyond the {n_inputs} given")
        out.append((pos, coef, refs))
        i += 3 + 2 * count
    return out


def _static_target(node: Node) -> tuple[list, list]:
    """(target with None where a size is read at run time, parsed dims)."""
    shape = list(node.attrs["shape"])
    dims = parse_dims(node.attrs["dims"], len(node.inputs), len(shape))
    for pos, coef, refs in dims:
        sizes = [node.in_shapes[j][a] if node.in_shapes[j] is not None else None for j, a in refs]
        shape[pos] = None if None in sizes else coef * math.prod(sizes)
    return shape, dims


def _runtime_target(shape: tuple, dims: list, xs: tuple) -> list:
    target = list(shape)
    for pos, coef, refs in dims:
        target[pos] = coef * math.prod(xs[j].shape[a] for j, a in refs)
    return target


def _check_ref_axes(node: Node, dims: list) -> None:
    for _, _, refs in dims:
        for j, a in refs:
            s = node.in_shapes[j]
            if s is not None and not 0 <= a < len(s):
                raise ValueError(f"dims reads axis {a} of {node.inputs[j]!r} {fmt_shape(s)}")


def _infer_dynamic_reshape(node: Node):
    target, dims = _static_target(node)
    _check_ref_axes(node, dims)
    if any(t is not None and t < -1 for t in target) or target.count(-1) > 1:
        raise ValueError(f"shape {list(node.attrs['shape'])}: at most one -1, no other negative")
    s = node.in_shapes[0]
    if s is None:
        return tuple(None if t == -1 else t for t in target)
    return reshape_target(s, target)


def _build_dynamic_reshape(node: Node):
    shape, dims = (
        tuple(node.attrs["shape"]),
        parse_dims(node.attrs["dims"], len(node.inputs), len(node.attrs["shape"])),
    )

    def dynamic_reshape(x, *refs):
        return x.reshape(_runtime_target(shape, dims, (x, *refs)))

    return dynamic_reshape


def _infer_expand(node: Node):
    target, dims = _static_target(node)
    _check_ref_axes(node, dims)
    if any(t is not None and t < 1 for t in target):
        raise ValueError(f"shape {list(node.attrs['shape'])}: sizes must be at least 1")
    s = node.in_shapes[0]
    return None if s is None else broadcast_shapes(s, tuple(target))


def _build_expand(node: Node):
    shape, dims = (
        tuple(node.attrs["shape"]),
        parse_dims(node.attrs["dims"], len(node.inputs), len(node.attrs["shape"])),
    )

    def expand(x, *refs):
        target = np.broadcast_shapes(x.shape, tuple(_runtime_target(shape, dims, (x, *refs))))
        # a copy: a broadcast view is read-only and later ops may assume fresh memory
        return np.ascontiguousarray(np.broadcast_to(x, target))

    return expand


_DIMS_ATTRS = {"shape": Attr("ints", REQUIRED), "dims": Attr("ints", ())}

register(
    OpSpec(
        "DynamicReshape",
        ("tensor", "tensor+"),
        _DIMS_ATTRS,
        infer=_infer_dynamic_reshape,
        build=_build_dynamic_reshape,
        dtypes=dtype_of_data,
        view=True,
        description="reshape to shape, entries named in dims read from input sizes at run time",
    )
)
register(
    OpSpec(
        "Expand",
        ("tensor", "tensor+"),
        _DIMS_ATTRS,
        infer=_infer_expand,
        build=_build_expand,
        dtypes=dtype_of_data,
        description="broadcast to shape (NumPy rules), entries named in dims read at run time",
    )
)
