"""The runtime: a graph of ops over encoded weights, planned once and run as a list of steps.

``Model(graph, weights, constants)`` checks the graph (known ops, typed attributes, every
input produced before use, shapes consistent), fuses a Relu/Relu6 into the Linear or
Conv2d feeding it, resolves each weighted layer's kernel once, and keeps a list of
prepared steps. A call copies a small list of slots, writes the inputs into it and runs
the steps: one function call per layer. Linear layers whose output stays inside the call
write into buffers reused from call to call (assigned by liveness at plan time, one set
per thread); other intermediates are released at their last use. Graph outputs are always
fresh arrays, and nothing mutable is shared between threads, so one Model may run in
several threads at once.

``load(path)`` reads a ``.pinf`` file (memory-mapped, validated; see ``pyinfer.format``)
and ``save(model, path)`` writes one atomically.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from kernels import backends, registry
from kernels.encodings.base import EncodedWeight
from pyinfer import ops
from pyinfer.format import (
    Container,
    FormatError,
    is_int,
    parse_json,
    read_container,
    write_container,
)

#: dtypes a graph input may declare.
INPUT_DTYPES = ("float32", "int64", "int32")
#: Largest dimension of a weight (kernels index with 32-bit integers).
MAX_DIM = 2**31 - 1


class _Compiled(NamedTuple):
    steps: tuple  # (step(env), node name, op)
    template: list  # env before a call: constants in their slots
    input_slots: list
    output_slots: list
    arena_slot: int
    n_buffers: int
    local: threading.local  # .arena: this thread's reusable buffers
    backend: str  # the backend setting the kernels were resolved under


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, shape (None for a free dim such as the batch) and dtype."""

    name: str
    shape: tuple
    dtype: str

    def check(self, value: Any) -> np.ndarray:
        """The value as an array of this input's dtype; TypeError/ValueError otherwise."""
        a = np.asarray(value)
        if self.dtype == "float32":
            if a.dtype != np.float32:
                if a.dtype.kind != "f":
                    raise TypeError(
                        f"input {self.name!r} must hold floats (float32), got dtype {a.dtype}"
                    )
                a = a.astype(np.float32)
        elif a.dtype.kind not in "iu":
            raise TypeError(f"input {self.name!r} must hold integers, got dtype {a.dtype}")
        if a.ndim != len(self.shape) or any(
            want is not None and got != want for got, want in zip(a.shape, self.shape)
        ):
            want = "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
            raise ValueError(f"input {self.name!r} must have shape {want}, got {list(a.shape)}")
        return a


class Model:
    """A planned graph, ready to run.

    Parameters
    ----------
    graph : dict
        ``{"inputs": [{"name", "shape", "dtype"}], "outputs": [name, ...],
        "nodes": [{"name", "op", "inputs", "outputs", "attrs"}, ...]}`` with nodes in
        topological order. Inputs of a node name graph inputs, constants, weights or
        outputs of earlier nodes.
    weights : dict of str -> EncodedWeight
        Encoded weights, by the names nodes use.
    constants : dict of str -> ndarray
        Plain arrays (biases, LayerNorm scales, embedding tables, operands).

    Raises
    ------
    FormatError
        If the graph is malformed, naming the node and what was expected.
    """

    def __init__(
        self,
        graph: Mapping[str, Any],
        weights: Mapping[str, EncodedWeight] | None = None,
        constants: Mapping[str, np.ndarray] | None = None,
        *,
        source: Container | None = None,
        reuse_buffers: bool = True,
    ):
        self.reuse_buffers = reuse_buffers
        self.graph = graph
        self.weights = dict(weights or {})
        self.constants = dict(constants or {})
        self.source = source
        self._plan()

    # ------------------------------------------------------------------ planning

    def _plan(self) -> None:
        graph = self.graph
        if not isinstance(graph, Mapping) or not {"inputs", "outputs", "nodes"} <= set(graph):
            raise FormatError("graph must be an object with inputs, outputs and nodes")
        for name, w in self.weights.items():
            if not isinstance(w, EncodedWeight):
                raise FormatError(f"weight {name!r} is a {type(w).__name__}, not an EncodedWeight")
        for name, c in self.constants.items():
            if not isinstance(c, np.ndarray):
                raise FormatError(f"constant {name!r} is a {type(c).__name__}, not an array")
        clash = set(self.weights) & set(self.constants)
        if clash:
            raise FormatError(f"names used by both a weight and a constant: {sorted(clash)}")

        # value name -> (shape, dtype); weights are not values
        info: dict[str, tuple] = {n: (c.shape, c.dtype) for n, c in self.constants.items()}
        self.inputs = self._check_inputs(graph["inputs"], info)
        for spec in self.inputs:
            info[spec.name] = (spec.shape, np.dtype(spec.dtype))

        nodes = graph["nodes"]
        if not isinstance(nodes, list):
            raise FormatError("graph nodes must be a list")
        checked = [self._check_node(i, raw, info) for i, raw in enumerate(nodes)]
        names = [n.name for n in checked]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise FormatError(f"node name {dup!r} is used by more than one node")

        outputs = graph["outputs"]
        if (
            not isinstance(outputs, list)
            or not outputs
            or not all(isinstance(o, str) for o in outputs)
        ):
            raise FormatError("graph outputs must be a non-empty list of value names")
        for o in outputs:
            if o not in info:
                raise FormatError(
                    f"graph output {o!r} is not produced by any node, nor an input or constant"
                )
        self.output_names = list(outputs)
        self.nodes = checked
        self.shapes = {n: s for n, (s, _) in info.items()}
        self._build_steps()

    @staticmethod
    def _check_inputs(raw: Any, info: dict) -> list[InputSpec]:
        if not isinstance(raw, list):
            raise FormatError("graph inputs must be a list")
        specs = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or set(item) != {"name", "shape", "dtype"}:
                raise FormatError(f"graph input {i} must be an object with name, shape and dtype")
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
            specs.append(InputSpec(name, tuple(shape), dtype))
        return specs

    def _check_node(self, i: int, raw: Any, info: dict) -> ops.Node:
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

        static, in_shapes = [], []
        for pos, value in enumerate(inputs):
            role = spec.role(pos)
            if role == "weight":
                w = self.weights.get(value)
                if w is None:
                    raise FormatError(f"{label}: input {pos} ({value!r}) must be an encoded weight")
                static.append(w)
                in_shapes.append(w.shape)
                continue
            if value in self.weights:
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
            want_int = pos in spec.index_inputs
            if want_int and dtype.kind not in "iu":
                raise FormatError(f"{label}: input {value!r} must hold integers, got {dtype}")
            if not want_int and dtype != np.float32:
                raise FormatError(f"{label}: input {value!r} must be float32, got {dtype}")
            if role == "param":
                if value not in self.constants:
                    raise FormatError(f"{label}: input {pos} ({value!r}) must be a constant")
                static.append(self.constants[value])
            else:
                static.append(None)
            in_shapes.append(shape)
        node = ops.Node(name, op, list(inputs), list(outputs), attrs, static, in_shapes)
        if op in ("Linear", "Gemm") and len(node.static[1].shape) != 2:
            raise FormatError(
                f"{label}: weight must be [out, in], got shape {node.static[1].shape}"
            )
        try:
            node.out_shape = spec.infer(node)
        except ValueError as exc:
            raise FormatError(f"{label}: {exc}") from None
        out = outputs[0]
        if out in info or out in self.weights:
            raise FormatError(f"{label}: output {out!r} is already defined")
        info[out] = (node.out_shape, np.dtype(np.float32))  # Gather data is float32 too
        return node

    def _fused(self) -> list[ops.Node]:
        """Nodes after folding each Relu/Relu6 into the Linear/Conv2d that alone feeds it."""
        consumers: dict[str, int] = {}
        for node in self.nodes:
            for v in node.inputs:
                consumers[v] = consumers.get(v, 0) + 1
        producer = {n.outputs[0]: n for n in self.nodes}
        result: dict[int, ops.Node] = {}  # id(original) -> node to run (fused or not)
        for node in self.nodes:
            act = ops.FUSIBLE_ACTIVATIONS.get(node.op)
            src = producer.get(node.inputs[0]) if act else None
            if (
                src is not None
                and ops.OPS[src.op].fuses_activation
                and src.attrs["activation"] is None
                and consumers[src.outputs[0]] == 1
                and src.outputs[0] not in self.output_names
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
                )
                result[id(src)] = merged  # the activation node itself is not kept
            else:
                result[id(node)] = node
        return list(result.values())

    def _assign_buffers(self, planned: list[ops.Node]) -> int:
        """Give each Linear output that never leaves the call a reusable buffer id.

        A buffer is live from the step producing it to the last step reading it or any
        view of it (Reshape/Flatten/Transpose pass their input's storage on). Buffers of
        equal width whose lives do not overlap share an id, so a chain of layers
        ping-pongs between two arrays. Graph outputs (and what they view) are always
        fresh arrays. Returns the number of ids.
        """
        root: dict[str, str] = {}
        for node in planned:
            node.buffer = None
            out = node.outputs[0]
            if node.op in ops.POOLED_OPS:
                root[out] = out
            elif node.op in ops.VIEW_OPS and node.inputs[0] in root:
                root[out] = root[node.inputs[0]]
        end = {r: k for k, node in enumerate(planned) for r in [node.outputs[0]] if r in root}
        for k, node in enumerate(planned):
            for v in node.inputs:
                if v in root:
                    end[root[v]] = k
        escaping = {root[o] for o in self.output_names if o in root}
        free: dict[int, list[int]] = {}  # width -> ids free for reuse
        live: list[tuple[int, int, int]] = []  # (last step, width, id)
        count = 0
        for k, node in enumerate(planned):
            for item in [t for t in live if t[0] < k]:
                live.remove(item)
                free.setdefault(item[1], []).append(item[2])
            out = node.outputs[0]
            if node.op not in ops.POOLED_OPS or out in escaping:
                continue
            width = node.static[1].out_features
            if free.get(width):
                node.buffer = free[width].pop()
            else:
                node.buffer, count = count, count + 1
            live.append((end[out], width, node.buffer))
        return count

    def _build_steps(self) -> None:
        planned = self._fused()
        n_buffers = self._assign_buffers(planned) if self.reuse_buffers else 0
        slots: dict[str, int] = {}
        for name in [
            *self.constants,
            *(s.name for s in self.inputs),
            *(n.outputs[0] for n in planned),
        ]:
            slots.setdefault(name, len(slots))
        arena_slot = len(slots)  # env[arena_slot]: this thread's buffers
        last_use: dict[int, int] = {}
        for k, node in enumerate(planned):
            for v in node.inputs:
                if v in slots:
                    last_use[slots[v]] = k
        keep = {slots[o] for o in self.output_names} | {slots[c] for c in self.constants}
        steps = []
        for k, node in enumerate(planned):
            spec = ops.OPS[node.op]
            try:
                fn = spec.build(node)
            except ValueError as exc:
                raise FormatError(f"node {node.name!r} ({node.op}): {exc}") from None
            ins = tuple(slots[v] for pos, v in enumerate(node.inputs) if spec.role(pos) == "tensor")
            dead = tuple(sorted({s for s in ins if last_use.get(s) == k and s not in keep}))
            if getattr(node, "buffer", None) is not None:
                ins += (arena_slot,)
            steps.append((_bind(fn, ins, slots[node.outputs[0]], dead), node.name, node.op))
        template = [None] * (len(slots) + 1)
        for name, c in self.constants.items():
            template[slots[name]] = c
        self.planned_nodes = planned
        # one tuple, swapped at once: a call in another thread sees an old or a new plan
        self._compiled = _Compiled(
            tuple(steps),
            template,
            [slots[s.name] for s in self.inputs],
            [slots[o] for o in self.output_names],
            arena_slot,
            n_buffers,
            threading.local(),
            backends.get_backend(),
        )

    # ------------------------------------------------------------------ running

    def _execute(self, values: list[np.ndarray]) -> list[np.ndarray]:
        plan = self._compiled
        if plan.backend != backends.get_backend():
            self._build_steps()  # kernels were resolved for another backend setting
            plan = self._compiled
        env = plan.template.copy()
        for slot, value in zip(plan.input_slots, values):
            env[slot] = value
        if plan.n_buffers:
            arena = getattr(plan.local, "arena", None)
            if arena is None:
                arena = plan.local.arena = [None] * plan.n_buffers
            env[plan.arena_slot] = arena
        steps = plan.steps
        i = 0
        try:
            for i, (step, _, _) in enumerate(steps):  # noqa: B007
                step(env)
        except (ValueError, TypeError, IndexError, ArithmeticError) as exc:
            _, name, op = steps[i]
            raise type(exc)(f"node {name!r} ({op}): {exc}") from exc
        return [env[s] for s in plan.output_slots]

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the model on named inputs.

        Parameters
        ----------
        inputs : mapping of str -> array_like
            One array per graph input; float inputs are converted to float32 (integer
            arrays for float inputs raise TypeError). Free dims (the batch) take any size.

        Returns
        -------
        dict of str -> ndarray
            Each graph output by name.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"run() takes a mapping of input name -> array, got {type(inputs).__name__}"
            )
        names = [s.name for s in self.inputs]
        if set(inputs) != set(names):
            raise ValueError(f"the model takes inputs {names}, got {sorted(inputs)}")
        values = [spec.check(inputs[spec.name]) for spec in self.inputs]
        return dict(zip(self.output_names, self._execute(values)))

    def __call__(self, x: Any) -> np.ndarray:
        """Run a model with one input and one output: ``y = model(x)``."""
        if len(self.inputs) != 1 or len(self.output_names) != 1:
            raise TypeError(
                f"model(x) needs exactly one input and one output; this model has inputs "
                f"{[s.name for s in self.inputs]} and outputs {self.output_names}: "
                "use model.run({name: array})"
            )
        return self._execute([self.inputs[0].check(x)])[0]

    # ------------------------------------------------------------------ description

    def layers(self) -> list[dict[str, Any]]:
        """One row per node (as stored, before fusion): name, op, encoding, weight shape,
        output shape, sparsity (fraction of zero weights), bytes (weights and params)."""
        rows = []
        for node in self.nodes:
            w = next((s for s in node.static if isinstance(s, EncodedWeight)), None)
            params = [s for s in node.static if isinstance(s, np.ndarray)]
            params += [
                self.constants[v]
                for pos, v in enumerate(node.inputs)
                if ops.OPS[node.op].role(pos) == "tensor" and v in self.constants
            ]
            rows.append(
                {
                    "name": node.name,
                    "op": node.op,
                    "encoding": w.encoding if w is not None else None,
                    "weight_shape": tuple(w.shape) if w is not None else None,
                    "output_shape": node.out_shape,
                    "sparsity": sparsity(w) if w is not None else None,
                    "bytes": (w.nbytes if w is not None else 0) + sum(p.nbytes for p in params),
                    "dense_bytes": (4 * int(np.prod(w.shape)) if w is not None else 0)
                    + sum(p.nbytes for p in params),
                }
            )
        return rows

    def __repr__(self) -> str:
        return (
            f"<Model inputs={[s.name for s in self.inputs]} outputs={self.output_names} "
            f"nodes={len(self.nodes)} weights={len(self.weights)}>"
        )


def sparsity(w: EncodedWeight) -> float:
    """Fraction of the weight's entries that are zero (from the encoding when it knows)."""
    density = getattr(w, "density", None)
    if density is not None:
        return 1.0 - float(density)
    size = int(np.prod(w.shape))
    if not size:
        return 0.0
    if w.encoding == "dense":
        return 1.0 - np.count_nonzero(w.data) / size
    return 1.0 - np.count_nonzero(w.decode_matrix()) / size


def _bind(fn, ins: tuple, out: int, dead: tuple):
    """A step ``step(env)`` computing ``env[out] = fn(*env[ins])``, then freeing ``dead``
    (slots no later step reads, so large intermediates go back to the allocator early)."""
    parts = getattr(fn, "parts", None)
    if parts is not None and len(ins) == 2 and len(dead) <= 1:
        return _bind_linear(parts, ins, out, dead)
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


def _bind_linear(parts, ins: tuple, out: int, dead: tuple):
    """The Linear-into-buffer step inlined (one Python call per layer instead of two):
    the same checks and kernel call as ``ops._build_linear``'s ``linear_into_buffer``."""
    kernel, w, bias, activation, k, n, slot, general = parts
    a, arena_slot = ins
    d = dead[0] if dead else None

    def linear_step(env):
        x = env[a]
        shape = x.shape
        if len(shape) == 2 and shape[1] == k and shape[0] and x.flags.c_contiguous:
            arena = env[arena_slot]
            y = arena[slot]
            if y is None or y.shape[0] != shape[0]:
                y = arena[slot] = np.empty((shape[0], n), np.float32)
            kernel(x, w, bias, activation, y)
            env[out] = y
        else:
            env[out] = general(x)
        if d is not None:
            env[d] = None

    return linear_step


# ---------------------------------------------------------------------- files


def _weights_from_file(container: Container, table: Any) -> tuple[dict, set]:
    if not isinstance(table, dict):
        raise FormatError("__metadata__.weights must be a JSON object")
    weights, used = {}, set()
    for name, entry in table.items():
        where = f"weight {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"encoding", "shape", "params", "tensors"}:
            raise FormatError(
                f"{where}: expected an object with encoding, shape, params and tensors"
            )
        try:
            row = registry.get(entry["encoding"]) if isinstance(entry["encoding"], str) else None
        except ValueError as exc:
            raise FormatError(f"{where}: {exc} (the file may need a newer pyinfer)") from None
        if row is None:
            raise FormatError(f"{where}: encoding must be a string")
        shape = entry["shape"]
        if (
            not isinstance(shape, list)
            or not 2 <= len(shape) <= 4
            or not all(is_int(d) and 0 <= d <= MAX_DIM for d in shape)
        ):
            raise FormatError(
                f"{where}: shape must be 2 to 4 sizes in [0, {MAX_DIM}], got {shape!r:.80}"
            )
        params, fields = entry["params"], entry["tensors"]
        if not isinstance(params, dict):
            raise FormatError(f"{where}: params must be an object")
        if not isinstance(fields, dict) or not all(isinstance(t, str) for t in fields.values()):
            raise FormatError(f"{where}: tensors must map field names to tensor names")
        arrays = {}
        for field_name, tensor in fields.items():
            if tensor not in container.tensors:
                raise FormatError(f"{where}: its {field_name} tensor {tensor!r} is not in the file")
            if tensor in used:
                raise FormatError(f"{where}: tensor {tensor!r} is used by two weights")
            used.add(tensor)
            arrays[field_name] = container.tensors[tensor]
        try:
            weights[name] = row.weight_type.from_arrays(shape, arrays, params)
        except Exception as exc:  # any complaint of the encoding's own validation
            raise FormatError(f"{where} ({row.name}): {exc}") from None
    return weights, used


def load(path: str | os.PathLike, verify: bool = False) -> Model:
    """Load a ``.pinf`` file: memory-mapped, zero-copy, everything validated.

    Parameters
    ----------
    path : str or PathLike
    verify : bool
        Also recompute the SHA-256 of the data section (reads the whole file).

    Returns
    -------
    Model

    Raises
    ------
    FormatError
        If the file is malformed or hostile, naming what is wrong.
    """
    container = read_container(path)
    if verify:
        container.verify()
    meta = container.metadata
    for key in ("graph", "weights"):
        if key not in meta:
            raise FormatError(f"{container.path}: __metadata__ has no {key!r}")
    graph = parse_json(meta["graph"], "__metadata__.graph")
    weights, used = _weights_from_file(
        container, parse_json(meta["weights"], "__metadata__.weights")
    )
    constants = {n: a for n, a in container.tensors.items() if n not in used}
    return Model(graph, weights, constants, source=container)


def save(model: Any, path: str | os.PathLike) -> str:
    """Write a model (or a ``pyinfer.Graph``) to ``path`` atomically.

    Returns
    -------
    str
        SHA-256 (hex) of the data section, also stored in the file.
    """
    if hasattr(model, "build") and not isinstance(model, Model):
        model = model.build()
    if not isinstance(model, Model):
        raise TypeError(f"save() takes a Model or Graph, got {type(model).__name__}")
    tensors: dict[str, np.ndarray] = {}
    table = {}
    for name, w in model.weights.items():
        fields = {}
        for field_name, array in w.arrays().items():
            tensor = f"{name}.{field_name}"
            if tensor in model.constants or tensor in tensors:
                raise ValueError(f"tensor name {tensor!r} of weight {name!r} is already used")
            tensors[tensor] = array
            fields[field_name] = tensor
        table[name] = {
            "encoding": w.encoding,
            "shape": [int(d) for d in w.shape],
            "params": w.params(),
            "tensors": fields,
        }
    tensors.update(model.constants)
    try:
        metadata = {
            "graph": json.dumps(model.graph, separators=(",", ":"), allow_nan=False),
            "weights": json.dumps(table, separators=(",", ":"), allow_nan=False),
        }
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the graph or a weight's params are not JSON-serialisable: {exc}"
        ) from None
    from kernels import __version__

    metadata["producer"] = f"pyinfer {__version__}"
    return write_container(path, tensors, metadata)
