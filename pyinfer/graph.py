"""``pyinfer.Graph``: build a model from arrays, without the converter.

>>> g = Graph()
>>> x = g.input("x", (None, 16))
>>> h = g.linear(x, w1, b1, encoding="csr")
>>> h = g.node("Relu", h)
>>> y = g.node("Softmax", g.linear(h, w2), axis=-1)
>>> g.output(y)
>>> model = g.build()          # a planned pyinfer.Model
>>> pyinfer.save(g, "m.pinf")  # or save the model

Each method returns the name of the value it creates; arrays passed where a value name is
expected become constants (floats stored as float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import kernels
from kernels import registry
from kernels.encodings.base import EncodedWeight


class Graph:
    """A graph under construction: inputs, constants, encoded weights and nodes."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[str] = []
        self.nodes: list[dict[str, Any]] = []
        self.weights: dict[str, EncodedWeight] = {}
        self.constants: dict[str, np.ndarray] = {}
        self._names: set[str] = set()
        self._counters: dict[str, int] = {}

    def _fresh(self, name: str | None, stem: str) -> str:
        if name is None:
            i = self._counters.get(stem, 0)
            while f"{stem}{i}" in self._names:
                i += 1
            self._counters[stem] = i + 1
            name = f"{stem}{i}"
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise ValueError(f"name {name!r} must be a non-empty string not starting with '__'")
        if name in self._names:
            raise ValueError(f"name {name!r} is already used in this graph")
        self._names.add(name)
        return name

    def input(self, name: str, shape: tuple, dtype: str = "float32") -> str:
        """Declare a graph input; ``None`` in ``shape`` is a free dim (e.g. the batch)."""
        name = self._fresh(name, "input")
        dims = [None if d is None else int(d) for d in shape]
        self.inputs.append({"name": name, "shape": dims, "dtype": str(np.dtype(dtype))})
        return name

    def constant(self, value: Any, name: str | None = None) -> str:
        """Add a constant array (float arrays become float32)."""
        a = np.asarray(value)
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        elif a.dtype.kind not in "iub":
            raise TypeError(f"constant {name!r} must be numeric, got dtype {a.dtype}")
        name = self._fresh(name, "const")
        self.constants[name] = np.ascontiguousarray(a)
        return name

    def weight(
        self, w: Any, encoding: str | None = None, name: str | None = None, **options: Any
    ) -> str:
        """Add an encoded weight: an EncodedWeight as is, or a dense array encoded with
        ``kernels.encode(w, encoding or "dense", **options)``."""
        if not isinstance(w, EncodedWeight):
            w = kernels.encode(w, encoding or "dense", **options)
        elif encoding is not None and registry.get(encoding) is not registry.get(w.encoding):
            w = kernels.encode(w, encoding, **options)  # re-encoded only into another row
        name = self._fresh(name, "weight")
        self.weights[name] = w
        return name

    def _value(self, v: Any) -> str:
        if isinstance(v, str):
            return v
        return self.constant(v)

    def node(self, op: str, *inputs: Any, name: str | None = None, **attrs: Any) -> str:
        """Append a node running ``op`` on ``inputs`` (value names or arrays); returns the
        name of its output (the node's name)."""
        name = self._fresh(name, op.lower())
        self.nodes.append(
            {
                "name": name,
                "op": op,
                "inputs": [self._value(v) for v in inputs],
                "outputs": [name],
                "attrs": {k: _jsonable(v) for k, v in attrs.items()},
            }
        )
        return name

    def linear(
        self,
        x: str,
        weight: Any,
        bias: Any = None,
        activation: str | None = None,
        encoding: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """``act(x @ W.T + b)``; W [out, in] dense (encoded with ``encoding``) or encoded."""
        name = self._fresh(name, "linear")
        self._names.discard(name)  # the node takes the name; its weight gets name.weight
        w = self.weight(weight, encoding, f"{name}.weight", **options)
        inputs = [x, w] + ([self.constant(bias, f"{name}.bias")] if bias is not None else [])
        return self.node("Linear", *inputs, name=name, activation=activation)

    def conv2d(
        self,
        x: str,
        weight: Any,
        bias: Any = None,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        activation: str | None = None,
        encoding: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """2-D convolution of NCHW ``x``; weight [out, in/groups, kh, kw]."""
        name = self._fresh(name, "conv")
        self._names.discard(name)
        w = self.weight(weight, encoding, f"{name}.weight", **options)
        inputs = [x, w] + ([self.constant(bias, f"{name}.bias")] if bias is not None else [])
        return self.node(
            "Conv2d",
            *inputs,
            name=name,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            activation=activation,
        )

    def output(self, *names: str) -> None:
        """Mark values as graph outputs (in order)."""
        self.outputs.extend(names)

    def to_json(self) -> dict[str, Any]:
        """The graph as stored in a file's ``__metadata__``."""
        return {"inputs": self.inputs, "outputs": self.outputs, "nodes": self.nodes}

    def build(self):
        """Plan the graph: a :class:`pyinfer.Model` (FormatError if it is malformed)."""
        from pyinfer.model import Model

        return Model(self.to_json(), self.weights, self.constants)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(i) for i in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v
