"""Spelled-out layers in ONNX graphs, fused back into one node before import.

Exporters write GELU as ``x * 0.5 * (1 + erf(x / sqrt 2))``, LayerNorm as
``ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div (-> Mul -> Add)`` and
hard-swish as ``x * HardSigmoid(x)``; the runtime has one op for each (``Gelu``,
``LayerNorm``, ``HardSwish``). Matching is on the ONNX nodes:
every intermediate value must feed only the next node of the pattern, so a match never
changes what the graph computes. What does not match runs op by op.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class _Graph:
    """Producers, consumers and constant values of a list of ONNX nodes."""

    def __init__(self, nodes: list, constants: dict[str, np.ndarray], outputs: set[str]):
        self.nodes = nodes
        self.constants = constants
        self.outputs = outputs
        self.producer = {o: n for n in nodes for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def scalar(self, name: str) -> float | None:
        c = self.const(name)
        if c is None or c.size != 1 or c.dtype.kind != "f":
            return None
        return float(c.reshape(-1)[0])

    def only_user(self, value: str, op: str):
        """The single node reading ``value`` if it is an ``op`` (and ``value`` is not a
        graph output), else None."""
        users = self.consumers.get(value, [])
        if len(users) != 1 or value in self.outputs or users[0].op_type != op:
            return None
        return users[0]

    def other_input(self, node, value: str) -> str | None:
        """The input of a binary ``node`` that is not ``value``."""
        a, b = node.input[0], node.input[1]
        if a == value:
            return b
        return a if b == value else None

    def made_by(self, value: str, op: str):
        n = self.producer.get(value)
        return n if n is not None and n.op_type == op else None


def _close(v: float | None, want: float, tol: float = 1e-4) -> bool:
    return v is not None and abs(v - want) <= tol * abs(want)


def fuse_patterns(nodes: list, constants: dict[str, np.ndarray], outputs: set[str]) -> list:
    """``nodes`` with GELU and LayerNorm patterns replaced by single nodes."""
    from onnx import helper

    g = _Graph(nodes, constants, outputs)
    removed: set[int] = set()
    replaced: dict[int, Any] = {}  # id(last node of a pattern) -> fused node
    for n in nodes:
        if id(n) in removed:
            continue
        match = _match_gelu(g, n) if n.op_type == "Erf" else None
        if match is None and n.op_type == "ReduceMean":
            match = _match_layernorm(g, n)
        if match is None and n.op_type == "HardSigmoid":
            match = _match_hardswish(g, n)
        if match is None:
            continue
        parts, op, x, out, attrs = match
        if any(id(p) in removed for p in parts):
            continue
        removed.update(id(p) for p in parts)
        last = next(p for p in parts if out in p.output)
        replaced[id(last)] = helper.make_node(
            op, x, [out], name=last.name or out, domain="", **attrs
        )
    result = []
    for n in nodes:
        if id(n) in replaced:
            result.append(replaced[id(n)])
        elif id(n) not in removed:
            result.append(n)
    return result


def _match_gelu(g: _Graph, erf):
    """x * 0.5 * (1 + erf(x / sqrt 2)) in its usual orders."""
    z = erf.input[0]
    scaled = g.made_by(z, "Div") or g.made_by(z, "Mul")
    if scaled is None or len(g.consumers.get(z, [])) != 1:
        return None
    x, c = scaled.input[0], g.scalar(scaled.input[1])
    if scaled.op_type == "Mul" and c is None:  # the constant may come first
        x, c = scaled.input[1], g.scalar(scaled.input[0])
    if not (
        (scaled.op_type == "Div" and _close(c, math.sqrt(2)))
        or (scaled.op_type == "Mul" and _close(c, 1 / math.sqrt(2)))
    ):
        return None
    add = g.only_user(erf.output[0], "Add")
    if add is None or not _close(g.scalar(g.other_input(add, erf.output[0]) or ""), 1.0):
        return None
    m1 = g.only_user(add.output[0], "Mul")
    if m1 is None:
        return None
    parts = [scaled, erf, add, m1]
    other = g.other_input(m1, add.output[0])
    if other == x:  # (x * (1 + erf)) * 0.5
        m2 = g.only_user(m1.output[0], "Mul")
        if m2 is None or not _close(g.scalar(g.other_input(m2, m1.output[0]) or ""), 0.5):
            return None
        parts.append(m2)
    elif _close(g.scalar(other or ""), 0.5):  # x * ((1 + erf) * 0.5)
        m2 = g.only_user(m1.output[0], "Mul")
        if m2 is None or g.other_input(m2, m1.output[0]) != x:
            return None
        parts.append(m2)
    else:  # (x * 0.5) * (1 + erf)
        half = g.made_by(other or "", "Mul")
        if (
            half is None
            or g.other_input(half, x) is None
            or not _close(g.scalar(g.other_input(half, x)), 0.5)
            or len(g.consumers.get(half.output[0], [])) != 1
        ):
            return None
        parts.append(half)
        m2 = m1
    return parts, "Gelu", [x], m2.output[0], {}


def _match_hardswish(g: _Graph, hs):
    """x * HardSigmoid(x; alpha=1/6, beta=0.5)."""
    attrs = {a.name: a.f for a in hs.attribute}
    if not (_close(attrs.get("alpha", 0.2), 1 / 6) and _close(attrs.get("beta", 0.5), 0.5)):
        return None
    x = hs.input[0]
    mul = g.only_user(hs.output[0], "Mul")
    if mul is None or g.other_input(mul, hs.output[0]) != x:
        return None
    return [hs, mul], "HardSwish", [x], mul.output[0], {}


def _reduce_axes(g: _Graph, node) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        c = g.const(node.input[1])
        return None if c is None else [int(a) for a in c.reshape(-1)]
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    return None


def _match_layernorm(g: _Graph, mean):
    """(x - mean) / sqrt(mean((x - mean)^2) + eps) [* gamma] [+ beta] over the last axes."""
    axes = _reduce_axes(g, mean)
    if not axes or sorted(axes) != list(range(-len(axes), 0)):
        return None  # only trailing axes written negative: the rank is not needed
    if any(a.name == "keepdims" and a.i == 0 for a in mean.attribute):
        return None
    x = mean.input[0]
    users = g.consumers.get(mean.output[0], [])
    if len(users) != 1 or users[0].op_type != "Sub" or users[0].input != [x, mean.output[0]]:
        return None
    sub = users[0]
    d = sub.output[0]
    d_users = g.consumers.get(d, [])
    if len(d_users) != 2 or d in g.outputs:
        return None
    square = next((u for u in d_users if u.op_type in ("Pow", "Mul") and u is not None), None)
    div = next((u for u in d_users if u.op_type == "Div" and u.input[0] == d), None)
    if square is None or div is None:
        return None
    if square.op_type == "Pow" and not _close(g.scalar(square.input[1]), 2.0):
        return None
    if square.op_type == "Mul" and list(square.input) != [d, d]:
        return None
    var = g.only_user(square.output[0], "ReduceMean")
    if var is None or _reduce_axes(g, var) != axes:
        return None
    add = g.only_user(var.output[0], "Add")
    eps = g.scalar(g.other_input(add, var.output[0]) or "") if add is not None else None
    if eps is None or eps < 0:
        return None
    sqrt = g.only_user(add.output[0], "Sqrt")
    if sqrt is None or div.input[1] != sqrt.output[0]:
        return None
    if len(g.consumers.get(sqrt.output[0], [])) != 1:
        return None
    parts = [mean, sub, square, var, add, sqrt, div]
    inputs = [x]
    out = div.output[0]
    scale = g.only_user(out, "Mul")
    if scale is not None and g.const(g.other_input(scale, out) or "") is not None:
        parts.append(scale)
        inputs.append(g.other_input(scale, out))
        out = scale.output[0]
        shift = g.only_user(out, "Add")
        if shift is not None and g.const(g.other_input(shift, out) or "") is not None:
            parts.append(shift)
            inputs.append(g.other_input(shift, out))
            out = shift.output[0]
    if len(inputs) == 1:
        return None  # LayerNormalization needs a scale; op by op is as exact
    attrs = {"axis": -len(axes), "epsilon": eps}
    return parts, "LayerNormalization", inputs, out, attrs
