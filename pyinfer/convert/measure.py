"""What compress and compare share: the weighted layers of a model, data in batches,
models that expose inner values, one-layer models, and latency measured with the
kernels that will run them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from kernels.encodings.base import EncodedWeight
from pyinfer import ops
from pyinfer.model import Model

#: Rows per batch when streaming data through a model (memory is bounded by one batch).
BATCH_SIZE = 256


class DataError(ValueError):
    """Data that does not fit the model (missing input, wrong shape or dtype, lengths)."""


def weighted_layers(model: Model) -> dict[str, ops.Node]:
    """The layers compression works on, by node name, in model order: nodes that take
    an activation tensor at input 0 and an encoded weight at input 1 (Linear, Gemm,
    Conv2d: what ``kernels.linear`` and ``kernels.conv2d`` run)."""
    layers = {}
    for node in model.nodes:
        spec = ops.OPS[node.op]
        if (
            len(node.static) > 1
            and spec.role(0) == "tensor"
            and spec.role(1) == "weight"
            and isinstance(node.static[1], EncodedWeight)
        ):
            layers[node.name] = node
    return layers


def layer_weight(node: ops.Node) -> tuple[str, EncodedWeight]:
    """(weight name, weight) of a layer from :func:`weighted_layers`."""
    return node.inputs[1], node.static[1]


def with_outputs(model: Model, extra: list[str]) -> Model:
    """The same graph and weights, with ``extra`` values added to the graph outputs
    (after the model's own), so one run returns them too."""
    outputs = list(model.output_names)
    outputs += [v for v in dict.fromkeys(extra) if v not in outputs]
    graph = {**model.graph, "outputs": outputs}
    return Model(graph, model.weights, model.constants)


# ---------------------------------------------------------------------- data


def check_data(model: Model, data: Any) -> dict[str, Any]:
    """``data`` as ``{input name: array}`` after checking it fits the model.

    ``data`` is an array (a model with one input) or a mapping of input name -> array
    (a ``.npz`` file opened with ``numpy.load`` works; extra keys are ignored). Arrays
    share their first axis (the samples). Checked on the first sample, before any work.

    Raises
    ------
    DataError
        Naming the input and what was expected.
    """
    names = [s.name for s in model.inputs]
    if isinstance(data, np.ndarray) or not hasattr(data, "keys"):
        if len(names) != 1:
            raise DataError(f"the model has inputs {names}: give data as a dict of arrays")
        data = {names[0]: data}
    missing = [n for n in names if n not in data.keys()]
    if missing:
        raise DataError(f"data has no array for input(s) {missing}; it holds {sorted(data.keys())}")
    arrays = {n: data[n] for n in names}
    lengths = set()
    for spec in model.inputs:
        a = arrays[spec.name]
        if not hasattr(a, "shape") or not hasattr(a, "__getitem__"):
            a = arrays[spec.name] = np.asarray(a)
        if len(a.shape) != len(spec.shape) or len(a.shape) == 0:
            raise DataError(
                f"data for input {spec.name!r} must have shape {ops.fmt_shape(spec.shape)} "
                f"(samples first), got {list(a.shape)}"
            )
        try:
            spec.check(np.asarray(a[:1]))
        except (TypeError, ValueError) as exc:
            raise DataError(f"data: {exc}") from None
        lengths.add(a.shape[0])
    if len(lengths) != 1:
        raise DataError(f"data arrays must have the same number of samples, got {sorted(lengths)}")
    if not lengths.pop():
        raise DataError("data holds no samples")
    return arrays


def n_samples(arrays: Mapping[str, Any]) -> int:
    """Samples in data checked by :func:`check_data`."""
    return int(next(iter(arrays.values())).shape[0])


def batches(arrays: Mapping[str, Any], batch_size: int = BATCH_SIZE) -> Iterator[dict]:
    """Consecutive batches ``{input: float32 array}`` of checked data."""
    n = n_samples(arrays)
    for lo in range(0, n, batch_size):
        yield {k: _as_input(a[lo : lo + batch_size]) for k, a in arrays.items()}


def _as_input(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(a, np.float32) if a.dtype.kind == "f" else a


def progress(iterable, desc: str, total: int | None = None, enabled: bool = True):
    """``iterable`` under a tqdm progress bar when tqdm is installed and stderr is a
    terminal; the iterable itself otherwise."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False)


# ---------------------------------------------------------------------- latency


def layer_model(node: ops.Node, weight: EncodedWeight, in_shape: tuple) -> Model:
    """A model of the single layer ``node`` with ``weight`` (same bias and attributes), on
    inputs of ``in_shape`` (None for the batch): what the runtime runs for that layer."""
    from pyinfer.graph import Graph

    g = Graph()
    x = g.input("x", (None, *in_shape[1:]))
    bias = node.static[2] if len(node.static) > 2 else None
    attrs = dict(node.attrs)
    w = g.weight(weight, name="w")
    inputs = [x, w] + ([g.constant(bias, "b")] if bias is not None else [])
    g.output(g.node(node.op, *inputs, name="layer", **attrs))
    return g.build()


def layer_input_shape(node: ops.Node, batch: int, seen: tuple | None = None) -> tuple | None:
    """The layer's input shape at ``batch`` rows: from the planned shapes, else from an
    input ``seen`` on data; None when unknown."""
    shape = node.in_shapes[0]
    if shape is not None and None not in shape[1:]:
        return (batch, *shape[1:])
    if seen is not None:
        return (batch, *seen[1:])
    return None


def time_calls(
    fns: list[Callable[[], Any]], rounds: int = 20, min_round_s: float = 0.0005
) -> list[float]:
    """Seconds per call of each function: many short interleaved rounds, the fastest
    round of each.

    Interleaving puts every function under the same load, and the fastest of many short
    rounds is the estimate least disturbed by other processes on the machine.
    """
    for fn in fns:
        fn()  # warm-up: page-in, caches, kernel plans
    reps = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        reps.append(max(1, min(1000, math.ceil(min_round_s / max(dt, 1e-7)))))
    best = [math.inf] * len(fns)
    for _ in range(rounds):
        for i, (fn, n) in enumerate(zip(fns, reps)):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / n)
    return best


def sample_input(shape: tuple, seed: int = 0) -> np.ndarray:
    """A float32 input of ``shape`` for timing (positive, like post-ReLU activations)."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)
