"""``pyinfer.from_onnx``: an ONNX model as a dense :class:`pyinfer.Model`.

The import walks the graph once, in order. Every value is one of

- a constant: a NumPy array (initializers, ``Constant`` nodes, and every node whose inputs
  are all constants, evaluated now with ``onnx.reference``), or an object array of sizes
  (:mod:`pyinfer.convert.symbolic`) for the shape arithmetic of dynamic-shape graphs;
- a run-time tensor (:class:`Tensor`), produced by a runtime op, with the dtype (float32,
  int64, int32 or bool) that op's own rule gives: masks made from integer inputs (Equal,
  Where, Cast) run as they are written, and a dtype an op does not take fails at import.

Nodes with run-time inputs go to their op's handler (:mod:`pyinfer.convert.onnx_ops`):
MatMul or Gemm by a constant becomes ``Linear`` (bias, BatchNorm and per-channel scales
folded in), Conv becomes ``Conv2d``, and shape chains become static ``Reshape`` targets or,
when sizes differ from run to run, ``DynamicReshape`` reading them from the tensors that
carry them. Spelled-out GELU, LayerNorm and hard-swish are fused first
(:mod:`pyinfer.convert.onnx_patterns`). Before any of this, every op type is checked: a
model using ops the runtime lacks fails with one error listing them all, with the nodes
using each.

``onnx`` is an optional dependency (``pip install ".[convert]"``), imported only here.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import kernels
from pyinfer.convert.symbolic import Dim, NotStatic, Size, is_symbolic, prod, simplify

#: The oldest default-domain opset read (older models: ``onnx.version_converter``).
MIN_OPSET = 11
#: Graph input element types the runtime takes (ONNX TensorProto codes).
_INPUT_TYPES = {1: "float32", 7: "int64", 6: "int32", 9: "bool"}
#: Float element types a Cast may target and stay a float32 tensor here.
_FLOAT_TYPES = {1, 10, 11, 16}  # float, float16, double, bfloat16
#: Element types a run-time Cast may target -> the runtime dtype it gives.
_CAST_TYPES = {**_INPUT_TYPES, **dict.fromkeys(_FLOAT_TYPES, "float32")}
_TYPE_CODES = {v: k for k, v in _INPUT_TYPES.items()}
_BIG = 2**62  # a slice end meaning "to the end"


class OnnxImportError(ValueError):
    """An ONNX model the importer cannot turn into a runtime model, and why."""


@dataclass
class Tensor:
    """A value computed at run time: its runtime name, shape (ints and Dims) and dtype."""

    name: str
    shape: tuple
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class Arange:
    """Integer positions known only at run time: ``range(start, stop, step)`` with
    ``stop`` a size (a sequence length), under ``lead`` leading axes of size 1. Gathering
    rows of a table at them (position embeddings) is a slice of the table."""

    start: int
    stop: Size
    step: int
    lead: int = 0

    @property
    def shape(self) -> tuple:
        length = self.stop - self.start if self.step == 1 else None
        return (1,) * self.lead + (length,)


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            'importing ONNX models needs the onnx package: pip install ".[convert]"'
        ) from None
    return onnx


# ---------------------------------------------------------------------- entry point


def from_onnx(model: Any) -> Any:
    """Import an ONNX model as a dense, planned :class:`pyinfer.Model`.

    Parameters
    ----------
    model : str, os.PathLike or onnx.ModelProto
        A ``.onnx`` file (external data next to it is read too) or a loaded model.

    Returns
    -------
    pyinfer.Model
        Dense float32 weights. Layers are named after their weights' module path
        (``fc1`` for ``fc1.weight``) or their ONNX node; values keep their ONNX names.

    Raises
    ------
    OnnxImportError
        If the model uses ops the runtime lacks (all listed, with their nodes), an opset or
        domain this importer does not read, or a construct it cannot map (named).
    ImportError
        If the ``onnx`` package is missing.
    """
    onnx = _require_onnx()
    label = "ONNX model"
    if isinstance(model, (str, os.PathLike)):
        label = os.fspath(model)
        if not os.path.isfile(label):
            raise FileNotFoundError(f"{label}: no such ONNX file")
        try:
            model = onnx.load(label)
        except Exception as exc:  # protobuf raises its own DecodeError
            raise OnnxImportError(f"{label}: not a readable ONNX file ({exc})") from None
    elif not isinstance(model, onnx.ModelProto):
        raise TypeError(f"from_onnx takes a path or an onnx.ModelProto, got {type(model).__name__}")
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    return _Importer(model, label).run()


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


# ---------------------------------------------------------------------- the importer


class _Importer:
    def __init__(self, model, label: str):
        from pyinfer.convert.onnx_ops import HANDLERS  # it imports this module's types

        self.handlers = HANDLERS
        self.onnx = _require_onnx()
        self.model = model
        self.label = label
        self.graph = model.graph
        self.opset = self._check_opsets()
        self.nodes: list[dict] = []  # runtime nodes, in order
        self.weights: dict[str, np.ndarray] = {}  # dense, encoded at the end
        self.constants: dict[str, np.ndarray] = {}
        self.values: dict[str, Any] = {}  # ONNX value name -> array or Tensor
        # symbol -> (runtime value, axis) where a run can read it
        self.symbols: dict[str, tuple[str, int]] = {}
        self.dtypes: dict[str, str] = {}  # runtime value -> its dtype
        self.initializer_names: dict[int, str] = {}  # id(array) -> its ONNX name
        self.producer: dict[str, dict] = {}  # runtime value -> runtime node
        self.node_list = list(self.graph.node)  # after _fuse_patterns: what is imported
        self.uses: Counter = Counter()
        self.graph_outputs = {o.name for o in self.graph.output}
        # ONNX names are reserved for the values they name; helpers take other names
        self.reserved = {i.name for i in self.graph.initializer}
        self.reserved |= {v for n in self.graph.node for v in (*n.input, *n.output)}
        self.reserved |= {i.name for i in self.graph.input}
        self.taken: set[str] = set()  # value, constant and weight names in use
        self.layer_names: set[str] = set()
        self.weight_users = Counter(
            n.input[1] for n in self.graph.node if n.op_type in ("Gemm", "Conv", "MatMul")
            and len(n.input) > 1
        )  # fmt: skip

    # ------------------------------------------------------------------ checks

    def _check_opsets(self) -> int:
        opset = None
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                opset = imp.version
        if opset is None:
            raise OnnxImportError(f"{self.label}: no default-domain (ai.onnx) opset imported")
        newest = self.onnx.defs.onnx_opset_version()
        if opset < MIN_OPSET or opset > newest:
            raise OnnxImportError(
                f"{self.label}: opset {opset} is outside the {MIN_OPSET}..{newest} this "
                "importer reads; convert it first with onnx.version_converter.convert_version"
            )
        return opset

    def _check_ops(self) -> None:
        """One error naming every op type (and its nodes) that cannot be imported.

        A node whose inputs are all constants or sizes is evaluated at import (any
        default-domain op); every other node must map to a runtime op.
        """
        static = {i.name for i in self.graph.initializer}
        bad: dict[str, list[str]] = {}
        for k, node in enumerate(self.graph.node):
            op = (
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            )
            ins = [i for i in node.input if i]
            if node.op_type == "CastLike":
                ins = ins[:1]  # the second input gives only a dtype
            is_static = all(i in static for i in ins) or node.op_type in ("Shape", "Size")
            if node.domain not in ("", "ai.onnx"):
                ok = False
            else:
                ok = is_static or node.op_type in self.handlers
            if not ok:
                bad.setdefault(op, []).append(node.name or f"#{k} ({node.output[0]})")
            if is_static:
                static.update(node.output)
        if bad:
            parts = []
            for op, names in sorted(bad.items()):
                shown = ", ".join(names[:10]) + (
                    f" and {len(names) - 10} more" if len(names) > 10 else ""
                )
                parts.append(f"{op} (nodes: {shown})")
            raise OnnxImportError(
                f"{self.label}: the runtime lacks {len(bad)} op type(s) this model uses: "
                + "; ".join(parts)
            )

    # ------------------------------------------------------------------ naming

    def fresh(self, hint: str, onnx_name: bool = False) -> str:
        """A new value/constant/weight name: ``hint`` itself when it is free (an ONNX
        value's own name, ``onnx_name``, or a name ONNX does not use), else numbered."""
        hint = re.sub(r"^_+", "", hint) or "v"
        name, i = hint, 1
        while name in self.taken or (name in self.reserved and not (onnx_name and i == 1)):
            name, i = f"{hint}_{i}", i + 1
        self.taken.add(name)
        return name

    def node_name(self, base: str) -> str:
        """A node name no other node has."""
        base = re.sub(r"^_+", "", base) or "node"
        name, i = base, 1
        while name in self.layer_names:
            name, i = f"{base}_{i}", i + 1
        self.layer_names.add(name)
        return name

    def layer_name(self, node, weight_name: str | None) -> str:
        """A weighted layer's name: its weight's module path (``fc1`` of ``fc1.weight``),
        else the module the exporter recorded (in metadata or the node's name), else the
        ONNX node's name."""
        candidates = []
        if weight_name and weight_name.endswith(".weight") and self.weight_users[weight_name] == 1:
            candidates.append(weight_name[: -len(".weight")])
        scopes = _metadata(node).get("pkg.torch.onnx.name_scopes")
        if scopes:
            parts = [p for p in re.findall(r"'([^']*)'", scopes) if p]
            if len(parts) >= 2:
                candidates.append(parts[-2])
        # the TorchScript exporter names nodes by module path: /layers.0/linear1/MatMul
        path = re.fullmatch(r"/(.+)/[A-Za-z]+(_\d+)?", node.name)
        if path:
            candidates.append(path.group(1).replace("/", "."))
        candidates.append(node.name or node.output[0])
        return self.node_name(next(c for c in candidates if c))

    # ------------------------------------------------------------------ emitting

    def emit(
        self,
        op: str,
        inputs: list,
        shape: tuple,
        out_hint: str,
        attrs: dict | None = None,
        name: str | None = None,
    ) -> Tensor:
        """Append a runtime node; returns its output tensor. ``out_hint`` is the ONNX
        name of the value computed (kept when free); ``name`` the node's, if chosen."""
        out = self.fresh(out_hint, onnx_name=True)
        node_name = name or self.node_name(out)
        node = {
            "name": node_name,
            "op": op,
            "inputs": [self.tensor_name(v) for v in inputs],
            "outputs": [out],
            "attrs": dict(attrs or {}),
        }
        dtype = self._out_dtype(node)
        self.dtypes[out] = dtype
        self.nodes.append(node)
        self.producer[out] = node
        for axis, d in enumerate(shape):
            mono = d.monomial() if isinstance(d, Dim) else None
            if mono is not None and mono[0] == 1 and len(mono[1]) == 1:
                self.symbols.setdefault(mono[1][0], (out, axis))
        return Tensor(out, tuple(shape), dtype)

    def _out_dtype(self, node: dict) -> str:
        """The dtype of ``node``'s output by the runtime op's own rule (the one the planner
        checks), so a dtype the op does not take fails here, naming the value."""
        from pyinfer import ops

        spec = ops.spec(node["op"])
        dtypes = []
        for pos, v in enumerate(node["inputs"]):
            if spec.role(pos) == "weight":
                dtypes.append(None)
            elif v in self.constants:
                dtypes.append(self.constants[v].dtype)
            else:
                dtypes.append(np.dtype(self.dtypes[v]))
        try:
            attrs = ops.check_attrs(node["op"], spec, node["attrs"])
            probe = ops.Node(node["name"], node["op"], node["inputs"], node["outputs"], attrs)
            return str(spec.out_dtype(probe, dtypes))
        except ValueError as exc:
            raise OnnxImportError(str(exc)) from None

    def tensor_name(self, v) -> str:
        if isinstance(v, Tensor):
            return v.name
        if isinstance(v, str):
            return v
        return self.constant(v)

    def constant(self, a: np.ndarray, hint: str = "const") -> str:
        a = np.asarray(a)
        if is_symbolic(a):
            raise NotStatic(f"sizes {a.tolist()} are known only at run time here")
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        if a.ndim == 0:
            # NOTE: stored as [1]: a .pinf file keeps no 0-d tensors; broadcasting against
            # the tensors it meets (rank >= 1) gives the same result
            a = a.reshape(1)
        name = self.fresh(hint, onnx_name=True)
        self.constants[name] = np.ascontiguousarray(a)
        return name

    def as_tensor(self, v, what: str) -> Tensor:
        """A run-time tensor for ``v`` (constants become graph constants)."""
        if isinstance(v, Tensor):
            return v
        if v is None:
            raise OnnxImportError(f"{what}: a required input is missing")
        a = np.asarray(v)
        if is_symbolic(a):
            raise NotStatic(f"{what}: sizes used as data are known only at run time")
        hint = self.initializer_names.get(id(v), "const")
        name = self.constant(a, hint)
        return Tensor(name, tuple(a.shape), str(self.constants[name].dtype))

    def symbol_for(self, t: Tensor, axis: int) -> Dim:
        """A fresh symbol for a size only a run settles, read from ``t``'s axis."""
        name = f"{t.name}[{axis}]"
        self.symbols[name] = (t.name, axis)
        return Dim.symbol(name)

    def rename_output(self, t: Tensor, new_hint: str) -> Tensor:
        """Give the value ``t`` (its producer fused a following node) the fused node's
        ONNX output name, so values keep the names ONNX gave them."""
        node = self.producer.pop(t.name)
        self.taken.discard(t.name)
        new = self.fresh(new_hint, onnx_name=True)
        node["outputs"] = [new]
        self.producer[new] = node
        self.dtypes[new] = self.dtypes.pop(t.name)
        for sym, (src, axis) in self.symbols.items():
            if src == t.name:
                self.symbols[sym] = (new, axis)
        return Tensor(new, t.shape, t.dtype)

    # ------------------------------------------------------------------ the walk

    def run(self):
        from pyinfer.model import Model

        self._check_ops()
        for init in self.graph.initializer:
            self.values[init.name] = self.onnx.numpy_helper.to_array(init)
            self.initializer_names[id(self.values[init.name])] = init.name
        self._fuse_patterns()
        self.uses = Counter(i for n in self.node_list for i in n.input if i)
        self.uses.update(o.name for o in self.graph.output)
        inputs = []
        for vi in self.graph.input:
            if vi.name in self.values:
                continue  # an initializer listed as an input (older exporters)
            inputs.append(self._graph_input(vi))
        for node in self.node_list:
            try:
                self._import_node(node)
            except (NotStatic, OnnxImportError) as exc:
                raise OnnxImportError(
                    f"{self.label}: node {node.name!r} ({node.op_type}): {exc}"
                ) from None
        outputs = []
        for o in self.graph.output:
            v = self.values[o.name]
            if not isinstance(v, Tensor):
                try:
                    v = self.as_tensor(v, f"graph output {o.name!r}")
                except NotStatic as exc:
                    raise OnnxImportError(f"{self.label}: {exc}") from None
            if v.name != o.name and v.name in self.producer and o.name not in self.taken:
                self._rename_value(v.name, o.name)  # e.g. the output of a trailing Identity
                v = Tensor(o.name, v.shape, v.dtype)
            outputs.append(v.name)
        graph = {"inputs": inputs, "outputs": outputs, "nodes": self.nodes}
        self._drop_unused_constants(graph)
        weights = {k: kernels.encode(w, "dense") for k, w in self.weights.items()}
        return Model(graph, weights, self.constants)

    def _rename_value(self, old: str, new: str) -> None:
        """Call the runtime value ``old`` ``new`` everywhere it appears."""
        node = self.producer.pop(old)
        node["outputs"] = [new]
        self.producer[new] = node
        self.dtypes[new] = self.dtypes.pop(old)
        self.taken.add(new)
        for n in self.nodes:
            n["inputs"] = [new if v == old else v for v in n["inputs"]]

    def _fuse_patterns(self) -> None:
        from pyinfer.convert.onnx_patterns import fuse_patterns

        constants = {k: v for k, v in self.values.items() if isinstance(v, np.ndarray)}
        for node in self.node_list:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                try:
                    (value,) = self._fold(node, [], _attrs(node))
                except Exception:  # noqa: BLE001 - left for the walk to report
                    continue
                constants[node.output[0]] = value
        self.node_list = fuse_patterns(self.node_list, constants, self.graph_outputs)

    def _drop_unused_constants(self, graph) -> None:
        used = {v for n in graph["nodes"] for v in n["inputs"]} | set(graph["outputs"])
        for k in [k for k in self.constants if k not in used]:
            del self.constants[k]
        for k in [k for k in self.weights if k not in used]:
            del self.weights[k]

    def _graph_input(self, vi) -> dict:
        tt = vi.type.tensor_type
        dtype = _INPUT_TYPES.get(tt.elem_type)
        if dtype is None:
            raise OnnxImportError(
                f"{self.label}: input {vi.name!r} has element type "
                f"{self.onnx.TensorProto.DataType.Name(tt.elem_type)}; the runtime takes "
                f"{sorted(_INPUT_TYPES.values())}"
            )
        if not tt.HasField("shape"):
            raise OnnxImportError(f"{self.label}: input {vi.name!r} has no shape (rank unknown)")
        shape: list[Size] = []
        stored: list[int | None] = []
        names: list[str | None] = []  # ONNX dim_params: equal names are equal sizes
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
                stored.append(int(d.dim_value))
                names.append(None)
                continue
            sym = d.dim_param or f"{vi.name}[{axis}]"
            self.symbols.setdefault(sym, (vi.name, axis))
            shape.append(Dim.symbol(sym))
            stored.append(None)
            names.append(d.dim_param if 0 < len(d.dim_param) <= 64 else None)
        self.taken.add(vi.name)
        self.dtypes[vi.name] = dtype
        self.values[vi.name] = Tensor(vi.name, tuple(shape), dtype)
        spec = {"name": vi.name, "shape": stored, "dtype": dtype}
        if any(names):
            spec["dim_names"] = names
        return spec

    def _import_node(self, node) -> None:
        ins = [self.values[i] if i else None for i in node.input]
        attrs = _attrs(node)
        op = node.op_type
        present = [v for v in ins if v is not None]
        if op in ("Shape", "Size") or all(not isinstance(v, (Tensor, Arange)) for v in present):
            try:
                outs = self._fold(node, ins, attrs)
            except NotStatic:
                # a constant sized only at run time (zeros_like of a mask, a buffer cut to
                # the sequence length) is a run-time tensor: the op's handler makes it
                if op not in _SIZED_AT_RUN_TIME or (
                    op != "ConstantOfShape" and is_symbolic(ins[0])
                ):
                    raise
                outs = self.handlers[op](self, node, ins, attrs)
        else:
            handler = self.handlers.get(op)
            if handler is None:  # _check_ops lets through only what has a handler
                raise OnnxImportError(f"{op} on run-time tensors is not supported")
            outs = handler(self, node, ins, attrs)
        for name, v in zip(node.output, outs):
            if name:
                self.values[name] = v

    # ------------------------------------------------------------------ folding

    def _fold(self, node, ins, attrs) -> list:
        op = node.op_type
        if op in _SIZE_FOLDS and (
            op in ("Shape", "Size") or any(is_symbolic(v) for v in ins if v is not None)
        ):
            outs = _SIZE_FOLDS[op](self, ins, attrs)
            return [r if isinstance(r, Arange) else simplify(np.asarray(r)) for r in outs]
        if any(is_symbolic(v) for v in ins if v is not None):
            raise NotStatic(f"{op} of sizes known only at run time is not supported")
        from onnx.reference import ReferenceEvaluator

        feeds = {n: v for n, v in zip(node.input, ins) if n}
        ref = ReferenceEvaluator(node, opsets={"": self.opset})
        return [np.asarray(r) for r in ref.run(None, feeds)]


def _metadata(node) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


# ---------------------------------------------------------------------- size folding


def _axes_input(ins, attrs, pos: int = 1):
    if len(ins) > pos and ins[pos] is not None:
        return [int(a) for a in np.asarray(ins[pos]).reshape(-1)]
    return list(attrs.get("axes", []))


def _fold_shape(imp, ins, attrs):
    v = ins[0]
    shape = list(v.shape) if isinstance(v, Tensor) else list(np.shape(v))
    r = len(shape)
    start = attrs.get("start", 0)
    end = attrs.get("end", r)
    start, end = max(0, start + r if start < 0 else start), min(r, end + r if end < 0 else end)
    return [np.array(shape[start:end] or [], dtype=object)]


def _fold_size(imp, ins, attrs):
    v = ins[0]
    shape = v.shape if isinstance(v, Tensor) else np.shape(v)
    return [np.array(prod(shape), dtype=object)]


def _fold_gather(imp, ins, attrs):
    return [np.take(ins[0], np.asarray(ins[1]).astype(np.int64), axis=attrs.get("axis", 0))]


def _fold_concat(imp, ins, attrs):
    parts = [np.asarray(v, dtype=object) for v in ins if v is not None]
    return [np.concatenate(parts, axis=attrs.get("axis", 0))]


def _fold_slice(imp, ins, attrs):
    data = np.asarray(ins[0], dtype=object)
    starts, ends = (np.asarray(v).reshape(-1) for v in ins[1:3])
    axes = _axes_input(ins, {}, 3) or list(range(len(starts)))
    steps = (
        np.asarray(ins[4]).reshape(-1) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    )
    index = [slice(None)] * data.ndim
    if any(isinstance(e, Dim) for e in ends):
        return [_slice_positions(data, starts, ends, axes, steps)]
    for s, e, a, st in zip(starts, ends, axes, steps):
        if isinstance(s, Dim) or isinstance(e, Dim):
            raise NotStatic("Slice of sizes with bounds known only at run time")
        index[a] = slice(int(s), int(min(max(int(e), -_BIG), _BIG)), int(st))
    return [data[tuple(index)]]


def _fold_range(imp, ins, attrs):
    start, limit, delta = (np.asarray(v).reshape(()).item() for v in ins)
    if isinstance(start, Dim) or isinstance(delta, Dim) or not isinstance(limit, Dim):
        raise NotStatic("Range with a start or step known only at run time")
    if delta != 1:
        raise NotStatic("Range with a step other than 1 up to a size known only at run time")
    return [Arange(int(start), limit, 1)]


def _slice_positions(data, starts, ends, axes, steps) -> Arange:
    """``position_ids[:, :seq]`` of a constant ``arange`` buffer: the first positions."""
    data = simplify(data)
    if (
        len(ends) != 1
        or is_symbolic(data)
        or int(starts[0]) != 0
        or int(steps[0]) != 1
        or axes[0] % max(data.ndim, 1) != data.ndim - 1
        or data.shape[:-1] != (1,) * (data.ndim - 1)
        or not np.array_equal(data.reshape(-1), np.arange(data.shape[-1]))
    ):
        raise NotStatic("Slice of sizes with bounds known only at run time")
    return Arange(0, ends[0], 1, data.ndim - 1)


def _fold_squeeze(imp, ins, attrs):
    axes = _axes_input(ins, attrs)
    a = np.asarray(ins[0], dtype=object)
    return [np.squeeze(a, axis=tuple(axes) if axes else None)]


def _fold_unsqueeze(imp, ins, attrs):
    a = np.asarray(ins[0], dtype=object)
    return [np.expand_dims(a, tuple(_axes_input(ins, attrs)))]


def _fold_reshape(imp, ins, attrs):
    a = np.asarray(ins[0], dtype=object)
    target = [int(t) for t in np.asarray(ins[1]).reshape(-1)]
    target = [
        a.shape[i] if t == 0 and not attrs.get("allowzero") else t for i, t in enumerate(target)
    ]
    return [a.reshape(target)]


def _elementwise(fn):
    def fold(imp, ins, attrs):
        a, b = (np.asarray(v, dtype=object) for v in ins[:2])
        return [np.frompyfunc(fn, 2, 1)(a, b)]

    return fold


def _size_max(a, b):
    if isinstance(a, Dim) and isinstance(b, Dim):
        if a == b:
            return a
        raise NotStatic(f"max({a}, {b}) is known only at run time")
    if isinstance(a, Dim) or isinstance(b, Dim):
        d, c = (a, b) if isinstance(a, Dim) else (b, a)
        if c <= 1:
            return d  # a run-time size is at least 1
        raise NotStatic(f"max({d}, {c}) is known only at run time")
    return max(a, b)


def _size_min(a, b):
    if isinstance(a, Dim) or isinstance(b, Dim):
        if a == b:
            return a
        d, c = (a, b) if isinstance(a, Dim) else (b, a)
        if not isinstance(c, Dim) and c >= _BIG:
            return d
        raise NotStatic(f"min({a}, {b}) is known only at run time")
    return min(a, b)


def _size_eq(a, b):
    # a size known only at run time is taken to differ from every constant: exporters
    # compare it with -1 or 0 (torch treats dynamic sizes as at least 2)
    return a == b


def _fold_neg(imp, ins, attrs):
    return [np.frompyfunc(lambda v: -v, 1, 1)(np.asarray(ins[0], dtype=object))]


def _fold_where(imp, ins, attrs):
    cond = np.asarray(ins[0], dtype=object).astype(bool)
    return [np.where(cond, np.asarray(ins[1], dtype=object), np.asarray(ins[2], dtype=object))]


def _fold_identity(imp, ins, attrs):
    return [ins[0]]


def _fold_cast(imp, ins, attrs):
    to = attrs["to"]
    if to == 9:  # bool
        return [np.asarray(ins[0], dtype=object).astype(bool)]
    if to in _FLOAT_TYPES:
        raise NotStatic("sizes known only at run time cast to float")
    return [ins[0]]


def _fold_expand(imp, ins, attrs):
    a = np.asarray(ins[0], dtype=object)
    if any(isinstance(s, Dim) for s in np.asarray(ins[1], dtype=object).reshape(-1)):
        raise NotStatic("Expand to sizes known only at run time")
    shape = [int(s) for s in np.asarray(ins[1]).reshape(-1)]
    return [np.broadcast_to(a, np.broadcast_shapes(a.shape, tuple(shape))).copy()]


def _fold_div(a, b):
    if isinstance(a, Dim) or isinstance(b, Dim):
        return a // b
    return int(a / b) if isinstance(a, (int, np.integer)) else a / b


#: Ops that make a run-time tensor from a constant and sizes known only at run time.
_SIZED_AT_RUN_TIME = ("Expand", "Slice", "ConstantOfShape")

_SIZE_FOLDS: dict[str, Callable] = {
    "Shape": _fold_shape,
    "Size": _fold_size,
    "Gather": _fold_gather,
    "Concat": _fold_concat,
    "Slice": _fold_slice,
    "Squeeze": _fold_squeeze,
    "Unsqueeze": _fold_unsqueeze,
    "Reshape": _fold_reshape,
    "Add": _elementwise(lambda a, b: a + b),
    "Sub": _elementwise(lambda a, b: a - b),
    "Mul": _elementwise(lambda a, b: a * b),
    "Div": _elementwise(_fold_div),
    "Max": _elementwise(_size_max),
    "Min": _elementwise(_size_min),
    "Equal": _elementwise(_size_eq),
    "Neg": _fold_neg,
    "Where": _fold_where,
    "Identity": _fold_identity,
    "Cast": _fold_cast,
    "Expand": _fold_expand,
    "Range": _fold_range,
}
