"""Planning a graph: validation, activation fusion, buffer reuse and the list of steps.

:func:`check_graph` checks the graph (known ops, typed attributes, every input produced
before use, each input's dtype one its op takes (``OpSpec.out_dtype``), shapes consistent)
and returns its nodes with their shapes and dtypes. :func:`build_steps`
folds each Relu/Relu6 into the Linear or Conv2d feeding it, gives outputs that stay inside a
call reusable buffers (by liveness, one set per thread), and builds one step per node,
resolving each weighted layer's kernel once. Every op property the planner uses (pooled,
view, fusible activation) is a field of the op's :class:`pyinfer.ops.OpSpec`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from kernels import backends
from kernels.encodings.base import EncodedWeight
from pyinfer import ops
from pyinfer.format import FormatError, is_int

#: dtypes a graph input may declare.
INPUT_DTYPES = ("float32", "int64", "int32", "bool")
#: Largest dimension of a weight (kernels index with 32-bit integers).
MAX_DIM = 2**31 - 1


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, shape (None for a free dim such as the batch) and dtype.

    ``dim_names`` optionally names the free dims (None for an unnamed one): free dims of
    the same name, in this input or another, must have the same size in a call (the
    ``batch`` and ``seq`` of ``input_ids`` and ``attention_mask``).
    """

    name: str
    shape: tuple
    dtype: str
    dim_names: tuple | None = None

    @functools.cached_property
    def _dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @functools.cached_property
    def _fixed_dims(self) -> tuple:
        """(axis, size) of every dim that is not free."""
        return tuple((i, d) for i, d in enumerate(self.shape) if d is not None)

    def check(self, value: Any) -> np.ndarray:
        """The value as an array of this input's dtype; TypeError/ValueError otherwise.

        Floats convert to float32 and integers to the declared integer dtype (ValueError
        if a value does not fit); any other kind is a TypeError.
        """
        if type(value) is np.ndarray and value.dtype is self._dtype:  # the common case
            shape = value.shape
            if len(shape) == len(self.shape):
                for i, want in self._fixed_dims:
                    if shape[i] != want:
                        break
                else:
                    return value
            a = value
        else:
            a = np.asarray(value)
        if self.dtype == "float32":
            if a.dtype != np.float32:
                if a.dtype.kind != "f":
                    raise TypeError(
                        f"input {self.name!r} must hold floats (float32), got dtype {a.dtype}"
                    )
                a = a.astype(np.float32)
        elif self.dtype == "bool":
            if a.dtype != np.bool_:
                raise TypeError(f"input {self.name!r} must hold bools, got dtype {a.dtype}")
        elif a.dtype != self.dtype:
            if a.dtype.kind not in "iu":
                raise TypeError(
                    f"input {self.name!r} must hold integers ({self.dtype}), got dtype {a.dtype}"
                )
            a = _as_int(self.name, a, np.dtype(self.dtype))
        if a.ndim != len(self.shape) or any(a.shape[i] != want for i, want in self._fixed_dims):
            raise ValueError(
                f"input {self.name!r} must have shape {ops.fmt_shape(self.shape)}, "
                f"got {list(a.shape)}"
            )
        return a


def _as_int(name: str, a: np.ndarray, want: np.dtype) -> np.ndarray:
    """Integer array ``a`` as ``want``; ValueError if a value lies outside its range."""
    if not np.can_cast(a.dtype, want) and a.size:
        info = np.iinfo(want)
        low, high = int(a.min()), int(a.max())
        if low < info.min or high > info.max:
            raise ValueError(
                f"input {name!r} holds values in [{low}, {high}], outside the range of {want}"
            )
    return a.astype(want)


def shared_dims(specs: list[InputSpec]) -> list[tuple[str, list[tuple[int, int]]]]:
    """The named free dims that occur more than once: (name, [(input index, axis), ...])."""
    where: dict[str, list[tuple[int, int]]] = {}
    for i, spec in enumerate(specs):
        for axis, dim in enumerate(spec.dim_names or ()):
            if dim is not None:
                where.setdefault(dim, []).append((i, axis))
    return [(dim, places) for dim, places in where.items() if len(places) > 1]


def check_shared_dims(
    groups: list[tuple[str, list[tuple[int, int]]]], specs: list[InputSpec], values: list
) -> None:
    """ValueError unless the free dims sharing a name have one size in ``values``."""
    for dim, places in groups:
        sizes = [values[i].shape[axis] for i, axis in places]
        if any(s != sizes[0] for s in sizes):
            said = ", ".join(
                f"{specs[i].name!r} axis {axis} is {s}" for (i, axis), s in zip(places, sizes)
            )
            raise ValueError(f"inputs disagree on the size {dim!r}: {said}")


class CheckedGraph(NamedTuple):
    inputs: list[InputSpec]
    nodes: list[ops.Node]  # as stored, in topological order
    output_names: list[str]
    shapes: dict[str, Any]  # value name -> shape
    dtypes: dict[str, np.dtype]  # value name -> dtype


class Steps(NamedTuple):
    """What a call runs; swapped as one object, so a call sees an old or a new plan."""

    steps: tuple  # (step(env), node name, op)
    template: list  # env before a call: constants in their slots
    input_slots: list
    output_slots: list
    arena_slot: int
    n_buffers: int
    local: threading.local  # .arena: this thread's reusable buffers
    backend: str  # the backend setting the kernels were resolved under
    functions: tuple  # the step functions alone, in order (what the call loop runs)


# ---------------------------------------------------------------------- validation


def check_graph(
    graph: Any, weights: Mapping[str, Any], constants: Mapping[str, Any]
) -> CheckedGraph:
    """Check ``graph`` against its weights and constants; FormatError naming what is wrong."""
    if not isinstance(graph, Mapping) or not {"inputs", "outputs", "nodes"} <= set(graph):
        raise FormatError("graph must be an object with inputs, outputs and nodes")
    for name, w in weights.items():
        if not isinstance(w, EncodedWeight):
            raise FormatError(f"weight {name!r} is a {type(w).__name__}, not an EncodedWeight")
    for name, c in constants.items():
        if not isinstance(c, np.ndarray):
            raise FormatError(f"constant {name!r} is a {type(c).__name__}, not an array")
    clash = set(weights) & set(constants)
    if clash:
        raise FormatError(f"names used by both a weight and a constant: {sorted(clash)}")

    # value name -> (shape, dtype); weights are not values
    info: dict[str, tuple] = {n: (c.shape, c.dtype) for n, c in constants.items()}
    inputs = _check_inputs(graph["inputs"], info)
    for spec in inputs:
        info[spec.name] = (spec.shape, np.dtype(spec.dtype))

    nodes = graph["nodes"]
    if not isinstance(nodes, list):
        raise FormatError("graph nodes must be a list")
    checked = [_check_node(i, raw, info, weights, constants) for i, raw in enumerate(nodes)]
    names = [n.name for n in checked]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise FormatError(f"node name {dup!r} is used by more than one node")

    outputs = graph["outputs"]
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
        raise FormatError("graph outputs must be a non-empty list of value names")
    for o in outputs:
        if o not in info:
            raise FormatError(
                f"graph output {o!r} is not produced by any node, nor an input or constant"
            )
    return CheckedGraph(
        inputs,
        checked,
        list(outputs),
        {n: s for n, (s, _) in info.items()},
        {n: d for n, (_, d) in info.items()},
    )


def _check_inputs(raw: Any, info: dict) -> list[InputSpec]:
    if not isinstance(raw, list):
        raise FormatError("graph inputs must be a list")
    specs = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not (
            {"name", "shape", "dtype"} <= set(item) <= {"name", "shape", "dtype", "dim_names"}
        ):
            raise FormatError(
                f"graph input {i} must be an object with name, shape and dtype "
                "(and optionally dim_names)"
            )
        name, shape, dtype = item["name"], item["shape"], item["dtype"]
        if not isinstance(name, str) or not name:
            raise FormatError(f"graph input {i}: name must be a non-empty string")
        if name in info or any(s.name == name for s in specs):
            raise FormatError(f"graph input {name!r}: the name is already used")
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) > 8
            or not all(d is None or (is_int(d) and 0 <= d <= MAX_DIM) for d in shape)
        ):
            raise FormatError(
                f"graph input {name!r}: shape must be a list of up to 8 sizes "
                f"(null for a free dim), got {shape!r:.80}"
            )
        if dtype not in INPUT_DTYPES:
            raise FormatError(
                f"graph input {name!r}: dtype must be one of {list(INPUT_DTYPES)}, "
                f"got {dtype!r:.40}"
            )
        dim_names = item.get("dim_names")
        if dim_names is not None and (
            not isinstance(dim_names, (list, tuple))
            or len(dim_names) != len(shape)
            or not all(
                n is None or (isinstance(n, str) and 0 < len(n) <= 64 and d is None)
                for n, d in zip(dim_names, shape)
            )
        ):
            raise FormatError(
                f"graph input {name!r}: dim_names must give, per axis, a name of up to 64 "
                f"characters for a free dim or null, got {dim_names!r:.80}"
            )
        specs.append(
            InputSpec(name, tuple(shape), dtype, None if dim_names is None else tuple(dim_names))
        )
    return specs


def _check_node(i: int, raw: Any, info: dict, weights: Mapping, constants: Mapping) -> ops.Node:
    if not isinstance(raw, Mapping):
        raise FormatError(f"node {i} must be an object, got {type(raw).__name__}")
    extra = set(raw) - {"name", "op", "inputs", "outputs", "attrs"}
    if extra:
        raise FormatError(f"node {i}: unknown field(s) {sorted(extra)}")
    op = raw.get("op")
    name = raw.get("name", f"{op}_{i}")
    if not isinstance(name, str):
        raise FormatError(f"node {i}: name must be a string, got {name!r:.60}")
    try:
        spec = ops.spec(op)
    except ValueError as exc:
        raise FormatError(f"node {name!r}: {exc}") from None
    label = f"node {name!r} ({op})"
    inputs, outputs = raw.get("inputs"), raw.get("outputs")
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise FormatError(f"{label}: inputs must be a list of value names")
    if (
        not isinstance(outputs, list)
        or len(outputs) != 1
        or not isinstance(outputs[0], str)
        or not outputs[0]
    ):
        raise FormatError(f"{label}: outputs must be a list of exactly one value name")
    low, high = spec.arity()
    if len(inputs) < low or (high is not None and len(inputs) > high):
        want = f"{low}" if low == high else f"{low} to {high if high else 'any'}"
        raise FormatError(f"{label}: takes {want} inputs, got {len(inputs)}")
    try:
        attrs = ops.check_attrs(label, spec, raw.get("attrs", {}))
    except ValueError as exc:
        raise FormatError(str(exc)) from None

    static, in_shapes, in_dtypes = [], [], []
    for pos, value in enumerate(inputs):
        role = spec.role(pos)
        if role == "weight":
            w = weights.get(value)
            if w is None:
                raise FormatError(f"{label}: input {pos} ({value!r}) must be an encoded weight")
            static.append(w)
            in_shapes.append(w.shape)
            in_dtypes.append(None)
            continue
        if value in weights:
            raise FormatError(
                f"{label}: input {pos} ({value!r}) is an encoded weight; "
                f"{op} takes a weight only at its weight input"
            )
        if value not in info:
            raise FormatError(
                f"{label}: input {value!r} is not a graph input, constant or weight, nor "
                "produced by an earlier node (nodes must be in topological order)"
            )
        shape, dtype = info[value]
        in_dtypes.append(dtype)
        if role == "param":
            if value not in constants:
                raise FormatError(f"{label}: input {pos} ({value!r}) must be a constant")
            static.append(constants[value])
        else:
            static.append(None)
        in_shapes.append(shape)
    node = ops.Node(name, op, list(inputs), list(outputs), attrs, static, in_shapes)
    try:
        # dtypes first: shape inference and builders may rely on them
        node.out_dtype = spec.out_dtype(node, in_dtypes)
        node.out_shape = spec.infer(node)
    except ValueError as exc:
        raise FormatError(f"{label}: {exc}") from None
    out = outputs[0]
    if out in info or out in weights:
        raise FormatError(f"{label}: output {out!r} is already defined")
    info[out] = (node.out_shape, node.out_dtype)
    return node


# ---------------------------------------------------------------------- fusion, buffers


def fuse(nodes: list[ops.Node], output_names: list[str]) -> list[ops.Node]:
    """Nodes after folding each activation op (``OpSpec.as_activation``) into the op
    with a fused epilogue (``OpSpec.fuses_activation``) that alone feeds it."""
    consumers: dict[str, int] = {}
    for node in nodes:
        for v in node.inputs:
            consumers[v] = consumers.get(v, 0) + 1
    producer = {n.outputs[0]: n for n in nodes}
    result: dict[int, ops.Node] = {}  # id(original) -> node to run (fused or not)
    for node in nodes:
        act = ops.OPS[node.op].as_activation
        src = producer.get(node.inputs[0]) if act else None
        if (
            src is not None
            and ops.OPS[src.op].fuses_activation
            and src.attrs["activation"] is None
            and consumers[src.outputs[0]] == 1
            and src.outputs[0] not in output_names
            and id(src) in result
        ):
            merged = ops.Node(
                src.name,
                src.op,
                src.inputs,
                node.outputs,
                {**src.attrs, "activation": act},
                src.static,
                src.in_shapes,
                node.out_shape,
                node.out_dtype,
            )
            result[id(src)] = merged  # the activation node itself is not kept
        else:
            result[id(node)] = node
    return list(result.values())


def assign_buffers(planned: list[ops.Node], output_names: list[str]) -> int:
    """Give each pooled op's output that never leaves the call a reusable buffer id.

    A buffer is live from the step producing it to the last step reading it or any view
    of it (ops with ``OpSpec.view`` pass their input's storage on). Buffers of equal
    width (last dim) whose lives do not overlap share an id, so a chain of layers
    ping-pongs between two arrays. Graph outputs (and what they view) are always fresh
    arrays. Returns the number of ids.
    """
    root: dict[str, str] = {}
    for node in planned:
        node.buffer = None
        out, spec = node.outputs[0], ops.OPS[node.op]
        if spec.pooled:
            root[out] = out
        elif spec.view and node.inputs[0] in root:
            root[out] = root[node.inputs[0]]
    end = {r: k for k, node in enumerate(planned) for r in [node.outputs[0]] if r in root}
    for k, node in enumerate(planned):
        for v in node.inputs:
            if v in root:
                end[root[v]] = k
    escaping = {root[o] for o in output_names if o in root}
    free: dict[int, list[int]] = {}  # width -> ids free for reuse
    live: list[tuple[int, int, int]] = []  # (last step, width, id)
    count = 0
    for k, node in enumerate(planned):
        for item in [t for t in live if t[0] < k]:
            live.remove(item)
            free.setdefault(item[1], []).append(item[2])
        out = node.outputs[0]
        if not ops.OPS[node.op].pooled or out in escaping:
            continue
        width = node.out_shape[-1]
        if free.get(width):
            node.buffer = free[width].pop()
        else:
            node.buffer, count = count, count + 1
        live.append((end[out], width, node.buffer))
    return count


# ---------------------------------------------------------------------- steps


def build_steps(
    checked: CheckedGraph, constants: Mapping[str, np.ndarray], reuse_buffers: bool
) -> tuple[list[ops.Node], Steps]:
    """The nodes as run (after fusion) and the steps a call runs."""
    planned = fuse(checked.nodes, checked.output_names)
    n_buffers = assign_buffers(planned, checked.output_names) if reuse_buffers else 0
    if not reuse_buffers:
        for node in planned:
            node.buffer = None
    slots: dict[str, int] = {}
    for name in [
        *constants,
        *(s.name for s in checked.inputs),
        *(n.outputs[0] for n in planned),
    ]:
        slots.setdefault(name, len(slots))
    arena_slot = len(slots)  # env[arena_slot]: this thread's buffers
    last_use: dict[int, int] = {}
    for k, node in enumerate(planned):
        for v in node.inputs:
            if v in slots:
                last_use[slots[v]] = k
    keep = {slots[o] for o in checked.output_names} | {slots[c] for c in constants}
    steps = []
    for k, node in enumerate(planned):
        spec = ops.OPS[node.op]
        ins = tuple(slots[v] for pos, v in enumerate(node.inputs) if spec.role(pos) == "tensor")
        dead = tuple(sorted({s for s in ins if last_use.get(s) == k and s not in keep}))
        where = ops.Slots(ins, slots[node.outputs[0]], dead, arena_slot)
        try:
            if spec.build_step is not None:
                step = spec.build_step(node, where)
            else:
                step = bind(spec.build(node), where)
        except ValueError as exc:
            raise FormatError(f"node {node.name!r} ({node.op}): {exc}") from None
        steps.append((step, node.name, node.op))
    template = [None] * (len(slots) + 1)
    for name, c in constants.items():
        template[slots[name]] = c
    return planned, Steps(
        tuple(steps),
        template,
        [slots[s.name] for s in checked.inputs],
        [slots[o] for o in checked.output_names],
        arena_slot,
        n_buffers,
        threading.local(),
        backends.get_backend(),
        tuple(step for step, _, _ in steps),
    )


def bind(fn, where: ops.Slots) -> ops.Step:
    """A step ``step(env)`` computing ``env[out] = fn(*env[ins])``, then freeing the dead
    slots (no later step reads them, so large intermediates go back to the allocator
    early). The common arities get their own closures: one Python call fewer per layer."""
    ins, out, dead = where.inputs, where.output, where.dead
    if len(ins) == 1 and not dead:
        (a,) = ins

        def step1(env):
            env[out] = fn(env[a])

        return step1
    if len(ins) == 1 and len(dead) == 1:
        (a,), (d,) = ins, dead

        def step1_free1(env):
            env[out] = fn(env[a])
            env[d] = None

        return step1_free1
    if len(ins) == 2:
        a, b = ins

        def step2(env):
            env[out] = fn(env[a], env[b])
            for d in dead:
                env[d] = None

        return step2

    def step_n(env):
        env[out] = fn(*[env[i] for i in ins])
        for d in dead:
            env[d] = None

    return step_n
