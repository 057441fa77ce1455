"""Structured pruning: remove whole output neurons (Linear, Gemm) and channels (Conv2d),
and the inputs of the layers that read them, giving smaller dense layers.

A neuron's output is act(w·x + b); removing it is exact when the model computes the same
with that output zeroed, so its values must reach the next weighted layers only through
ops that keep a zero channel zero and keep channels apart:

- Relu, Relu6, Clip (with 0 in its range), MaxPool2d, AvgPool2d, GlobalAvgPool: per
  channel;
- Flatten, and a Reshape that flattens: channel c becomes a contiguous block of the
  flattened features (c·H·W .. (c+1)·H·W - 1 for NCHW);
- Concat along the channel axis: each input's channels keep their block;
- Add (residual connections): both operands must drop the same channels, so layers whose
  outputs are added are pruned together (they must ask for the same fraction and
  criterion) and ranked by their summed norms; an operand whose channels are not pruned
  with them (the block's input, a constant) refuses them.

Then the consumers -- Linear/Gemm reading the last axis, Conv2d with groups=1 -- lose
the matching input columns. BatchNorm needs nothing: the importer folds it into the
layer before it. Anything else a pruned channel reaches (the model's output, Softmax,
LayerNorm, a grouped or depthwise convolution, MatMul, ...) refuses the layer, with the
reason. Weights are decoded, pruned, and stored as ``dense``: the recipe's encodings
apply afterwards.

Neurons are ranked by the L2 (default) or L1 norm of their weights; a layer keeps
``total - round(fraction · total)`` of them, at least one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

import kernels
from pyinfer import ops
from pyinfer.convert import measure
from pyinfer.convert.recipe import LayerPlan, RecipeError
from pyinfer.model import Model

#: Ops that act on each channel alone and keep a zero channel zero.
PER_CHANNEL = ("Relu", "Relu6", "Clip")
#: Pooling ops: per channel along axis 1 of NCHW.
POOLS = ("MaxPool2d", "AvgPool2d", "GlobalAvgPool")
#: Layers whose output neurons can be removed (and whose inputs can shrink).
LAYERS = ("Linear", "Gemm", "Conv2d")


@dataclasses.dataclass(frozen=True)
class StructuredFact:
    """What structured pruning did to one layer that asked for it.

    Attributes
    ----------
    kept, total : int
        Output neurons (channels) kept, and the layer had.
    fraction : float
        The fraction asked for.
    criterion : str
        ``"l2"`` or ``"l1"``.
    coupled : tuple of str
        Other layers dropping the same channels (their outputs meet at an Add).
    refused : str or None
        Why the layer was left whole (then ``kept == total``).
    """

    kept: int
    total: int
    fraction: float
    criterion: str
    coupled: tuple[str, ...] = ()
    refused: str | None = None


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclasses.dataclass
class _Track:
    """The pruned channels a value carries: ``owners[i]`` is the channel id at position
    ``i`` of ``axis`` (-1: a channel no pruned layer owns)."""

    axis: int
    owners: np.ndarray


class _Tracer:
    """One pass over the graph in order, following each pruned layer's channels."""

    def __init__(self, model: Model, asked: dict[str, LayerPlan]):
        self.model = model
        self.shapes = model.shapes
        self.ids: dict[str, np.ndarray] = {}  # layer -> its channel ids
        self.owner_layer: list[str] = []  # channel id -> layer
        self.refused: dict[str, str] = {}
        self.channels = _UnionFind()  # channel ids that must be dropped together
        self.coupled = _UnionFind()  # layers pruned together
        self.columns: dict[str, np.ndarray] = {}  # consumer layer -> owners of its input
        self.reshapes: dict[str, tuple[int, np.ndarray]] = {}  # node -> (axis, owners)
        self.tracks: dict[str, _Track] = {}
        uses: dict[str, int] = {}
        for node in model.nodes:
            for v in node.inputs:
                uses[v] = uses.get(v, 0) + 1
        self.uses = uses
        for node in model.nodes:
            if node.name not in asked:
                continue
            reason = self._cannot_prune(node)
            if reason is not None:
                self.refused[node.name] = reason
                continue
            n = node.static[1].out_features
            self.ids[node.name] = np.arange(len(self.owner_layer), len(self.owner_layer) + n)
            self.owner_layer += [node.name] * n
            self.coupled.find(node.name)

    def _cannot_prune(self, node: ops.Node) -> str | None:
        if node.op not in LAYERS:
            return f"{node.op} layers have no output neurons to remove"
        if node.op == "Conv2d" and node.attrs["groups"] != 1:
            return "a grouped convolution: its groups would no longer split the channels"
        if self.uses[node.inputs[1]] > 1:
            return f"its weight {node.inputs[1]!r} is shared with another layer"
        if len(node.inputs) > 2 and self.uses[node.inputs[2]] > 1:
            return f"its bias {node.inputs[2]!r} is shared with another layer"
        return None

    def refuse(self, owners: np.ndarray, reason: str) -> None:
        """Refuse every layer owning one of ``owners``."""
        for layer in sorted({self.owner_layer[i] for i in owners[owners >= 0]}):
            self.refused.setdefault(layer, reason)

    def run(self) -> None:
        for node in self.model.nodes:
            spec = ops.OPS[node.op]
            tensor_inputs = [v for i, v in enumerate(node.inputs) if spec.role(i) == "tensor"]
            tracked = {v: self.tracks[v] for v in tensor_inputs if v in self.tracks}
            out = self._through(node, tensor_inputs, tracked) if tracked else None
            if node.name in self.ids:
                axis = 1 if node.op == "Conv2d" else len(node.out_shape) - 1
                out = _Track(axis, self.ids[node.name])
            if out is not None:
                self.tracks[node.outputs[0]] = out
        for name in self.model.output_names:
            if name in self.tracks:
                reason = f"its outputs reach the model output {name!r}"
                self.refuse(self.tracks[name].owners, reason)

    def _through(self, node: ops.Node, inputs: list[str], tracked: dict) -> _Track | None:
        """The track of ``node``'s output given its tracked inputs (None: nothing to
        follow), refusing the owners when the node cannot pass them."""
        op, where = node.op, f"{node.op} node {node.name!r}"
        first = tracked.get(inputs[0])
        rank = len(node.in_shapes[0]) if node.in_shapes and node.in_shapes[0] else 0
        if op in LAYERS and first is not None and len(tracked) == 1:
            if op == "Conv2d" and node.attrs["groups"] != 1:
                self.refuse(first.owners, f"it feeds the grouped convolution {node.name!r}")
            elif first.axis != (1 if op == "Conv2d" else rank - 1):
                self.refuse(first.owners, f"it feeds {where} along an axis it does not sum")
            elif self.uses[node.inputs[1]] > 1:
                self.refuse(first.owners, f"it feeds {where}, whose weight is shared")
            else:
                self.columns[node.name] = first.owners
            return None
        if op in PER_CHANNEL and _keeps_zero(node):
            return first
        if op in POOLS and first.axis == 1:
            return first
        if op == "Flatten":
            return self._flatten(node, first)
        if op == "Reshape":
            return self._reshape(node, first)
        if op == "Add":
            return self._add(node, inputs, tracked)
        if op == "Concat":
            return self._concat(node, inputs, tracked)
        for t in tracked.values():
            self.refuse(t.owners, f"it feeds {where}, which structured pruning cannot see through")
        return None

    def _flatten(self, node: ops.Node, t: _Track) -> _Track | None:
        shape = node.in_shapes[0]
        rank = len(shape)
        start, end = (a % rank for a in (node.attrs["start_dim"], node.attrs["end_dim"]))
        if t.axis < start:
            return t
        if t.axis > end:
            return _Track(t.axis - (end - start), t.owners)
        inner, outer = shape[t.axis + 1 : end + 1], shape[start : t.axis]
        if None in inner or None in outer:
            self.refuse(t.owners, f"Flatten node {node.name!r} has input sizes unknown")
            return None
        owners = np.tile(np.repeat(t.owners, math.prod(inner)), math.prod(outer))
        return _Track(start, owners)

    def _reshape(self, node: ops.Node, t: _Track) -> _Track | None:
        shape, out = node.in_shapes[0], node.out_shape
        rest = shape[t.axis :]
        flattens = (
            None not in rest
            and out is not None
            and len(out) == t.axis + 1
            and tuple(out[: t.axis]) == tuple(shape[: t.axis])
            and out[t.axis] in (None, math.prod(rest))
        )
        if not flattens:
            self.refuse(t.owners, f"Reshape node {node.name!r} does more than flatten its channels")
            return None
        owners = np.repeat(t.owners, math.prod(rest[1:]))
        self.reshapes[node.name] = (t.axis, owners)
        return _Track(t.axis, owners)

    def _operand(self, v: str, tracked: dict, axis: int) -> np.ndarray | None:
        """Owners of input ``v`` along ``axis`` (-1 for an input no pruned layer owns)."""
        if v in tracked:
            return tracked[v].owners if tracked[v].axis == axis else None
        shape = self.shapes.get(v)
        if shape is None or len(shape) <= axis or shape[axis] is None:
            return None
        return np.full(shape[axis], -1)

    def _add(self, node: ops.Node, inputs: list[str], tracked: dict) -> _Track | None:
        axis = next(iter(tracked.values())).axis
        a, b = (self._operand(v, tracked, axis) for v in inputs)
        same = self.shapes.get(inputs[0]) == self.shapes.get(inputs[1])
        if a is None or b is None or not same:
            for t in tracked.values():
                self.refuse(t.owners, f"its channels meet another layout at Add {node.name!r}")
            return None
        lone = (a >= 0) != (b >= 0)
        if lone.any():
            self.refuse(
                np.where(a >= 0, a, b)[lone],
                f"its output is added at {node.name!r} to channels not removed with it "
                "(every layer feeding that Add must ask for the same structured pruning)",
            )
        for i, j in zip(a[(a >= 0) & (b >= 0)], b[(a >= 0) & (b >= 0)]):
            self.channels.union(int(i), int(j))
            self.coupled.union(self.owner_layer[i], self.owner_layer[j])
        return _Track(axis, np.where(a >= 0, a, b))

    def _concat(self, node: ops.Node, inputs: list[str], tracked: dict) -> _Track | None:
        rank = len(node.out_shape)
        axis = node.attrs["axis"] % rank
        parts = [self._operand(v, tracked, axis) for v in inputs]
        if any(p is None for p in parts) or any(t.axis != axis for t in tracked.values()):
            for t in tracked.values():
                self.refuse(t.owners, f"Concat node {node.name!r} joins along another axis")
            return None
        return _Track(axis, np.concatenate(parts))


def _keeps_zero(node: ops.Node) -> bool:
    if node.op != "Clip":
        return True
    low, high = node.attrs["min"], node.attrs["max"]
    return (low is None or low <= 0) and (high is None or high >= 0)


def _norms(weight, criterion: str) -> np.ndarray:
    """Per output neuron: Σ w² (l2, squared: sums of them rank as the norm of the joined
    rows) or Σ |w| (l1), in float64."""
    m = weight.decode().reshape(weight.out_features, -1).astype(np.float64)
    return (m * m).sum(axis=1) if criterion == "l2" else np.abs(m).sum(axis=1)


def prune_structured(model: Model, plans: Iterable[LayerPlan]) -> tuple[Model, dict]:
    """Remove the output neurons (channels) the plans ask for, and the inputs reading them.

    Parameters
    ----------
    model : Model
    plans : iterable of LayerPlan
        From :func:`pyinfer.convert.recipe.plan_layers`; those with ``structured > 0``
        are pruned.

    Returns
    -------
    model : Model
        The pruned model (``model`` itself when no plan asks for structured pruning);
        layers it touched hold ``dense`` weights.
    facts : dict of str -> StructuredFact
        One per layer that asked, whether pruned or refused.

    Raises
    ------
    RecipeError
        A layer named in the recipe (not one taking the default) that cannot be pruned,
        with the reason.
    """
    asked = {p.layer: p for p in plans if p.structured}
    if not asked:
        return model, {}
    layers = measure.weighted_layers(model)
    tracer = _Tracer(model, asked)
    tracer.run()

    groups: dict[str, list[str]] = {}
    for layer in tracer.ids:
        groups.setdefault(tracer.coupled.find(layer), []).append(layer)
    dropped = np.zeros(len(tracer.owner_layer), bool)
    facts: dict[str, StructuredFact] = {}
    for members in groups.values():
        kinds = {(asked[m].structured, asked[m].criterion) for m in members}
        refusal = next((tracer.refused[m] for m in members if m in tracer.refused), None)
        if refusal is None and len(kinds) > 1:
            refusal = (
                f"layers {members} drop the same channels (their outputs are added), so they "
                f"must ask for the same structured fraction and criterion, got {sorted(kinds)}"
            )
        if refusal is not None:
            for m in members:
                tracer.refused[m] = tracer.refused.get(m, refusal)
            continue
        fraction, criterion = kinds.pop()
        ids = np.concatenate([tracer.ids[m] for m in members])
        scores = np.concatenate([_norms(layers[m].static[1], criterion) for m in members])
        classes = np.array([tracer.channels.find(int(i)) for i in ids])
        roots, index = np.unique(classes, return_inverse=True)
        class_score = np.bincount(index, weights=scores, minlength=roots.size)
        n_keep = max(1, roots.size - round(fraction * roots.size))
        order = np.argsort(-class_score, kind="stable")
        drop_class = np.ones(roots.size, bool)
        drop_class[order[:n_keep]] = False
        dropped[ids] = drop_class[index]

    for layer, p in asked.items():
        w = layers[layer].static[1]
        reason = tracer.refused.get(layer)
        if reason is not None and not p.from_default:
            raise RecipeError(f"layer {layer!r}: structured pruning cannot apply: {reason}")
        members = groups.get(tracer.coupled.find(layer), []) if layer in tracer.ids else []
        kept = w.out_features if reason else int((~dropped[tracer.ids[layer]]).sum())
        facts[layer] = StructuredFact(
            kept=kept,
            total=w.out_features,
            fraction=p.structured,
            criterion=p.criterion,
            coupled=tuple(m for m in members if m != layer),
            refused=reason,
        )
    for layer in tracer.refused:  # a refused layer keeps all its channels
        if layer in tracer.ids:
            dropped[tracer.ids[layer]] = False
    if not dropped.any():
        return model, facts
    return _rebuild(model, layers, tracer, dropped), facts


def _rebuild(model: Model, layers: dict, tracer: _Tracer, dropped: np.ndarray) -> Model:
    """The model with the dropped channels' rows, columns and reshape sizes removed."""

    def keep(owners: np.ndarray) -> np.ndarray:
        return ~((owners >= 0) & dropped[np.maximum(owners, 0)])

    weights, constants = dict(model.weights), dict(model.constants)
    for name, node in layers.items():
        rows = keep(tracer.ids[name]) if name in tracer.ids else None
        cols = keep(tracer.columns[name]) if name in tracer.columns else None
        if (rows is None or rows.all()) and (cols is None or cols.all()):
            continue
        w = node.static[1].decode()
        if rows is not None:
            w = w[rows]
            if len(node.inputs) > 2:
                constants[node.inputs[2]] = np.ascontiguousarray(constants[node.inputs[2]][rows])
        if cols is not None:
            w = w[:, cols]
        weights[node.inputs[1]] = kernels.encode(np.ascontiguousarray(w), "dense")
    graph = dict(model.graph)
    graph["nodes"] = [dict(n) for n in model.graph["nodes"]]
    for n in graph["nodes"]:
        if n["name"] in tracer.reshapes:  # a flattened size given in full shrinks
            axis, owners = tracer.reshapes[n["name"]]
            target = list(n["attrs"]["shape"])
            if target[axis] == owners.size:
                target[axis] = int(keep(owners).sum())
            n["attrs"] = {**n["attrs"], "shape": target}
    return Model(graph, weights, constants)
