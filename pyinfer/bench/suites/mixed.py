"""Whole models through the runtime: dense, mixed and compressed versions of one model,
beside ONNX Runtime running its dense version, in one run.

- An MLP 1024-1024-1024-1024-10 (relu between layers) all dense; *mixed* as a converter
  keeps it (first and last layers dense: dense / int8 / csr / dense, the csr layer
  magnitude-pruned to 90 %); all *compressed* (int8 / int8 / csr / int8). The mixed
  model's layers are also timed alone, each its own kernel call: the report shows how
  a model run compares with the sum of its layers.
- A MiniLM-sized encoder block (hidden 384, 12 heads, FFN 1536, sequence 128) with dense
  and with int8 linear layers; attention's matmuls stay MatMul ops.

Every model is a :class:`pyinfer.Graph` run as ``model(x)``, the path ``pyinfer run``
takes. Weights are random with a fixed seed; the builders take sizes, so tests run them
small. ONNX Runtime's session is checked against pyinfer's dense model before it is
timed. Run it where torch was imported first with ``pyinfer bench --torch-first``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

import kernels
from pyinfer.bench.baselines import _installed, ort_session
from pyinfer.bench.harness import Case, Impl, Prepared, WeightPool, cycle_calls
from pyinfer.graph import Graph
from pyinfer.model import Model

#: Layer sizes of the MLP, input first.
MLP_SIZES = (1024, 1024, 1024, 1024, 10)

#: The MLP's versions: one encoding per layer.
MLP_VERSIONS = {
    "dense": ("dense", "dense", "dense", "dense"),
    "mixed": ("dense", "int8", "csr", "dense"),
    "compressed": ("int8", "int8", "csr", "int8"),
}

#: Fraction of a csr layer's weights pruned (the smallest in magnitude).
SPARSITY = 0.9

#: The encoder block's sizes (MiniLM-L12: hidden 384, 12 heads, FFN 1536), sequence 128.
BLOCK_SIZES = {"hidden": 384, "heads": 12, "ffn": 1536, "seq": 128}

#: The encoder block's versions: the encoding of its linear layers.
BLOCK_VERSIONS = ("dense", "int8")

LAYER_NORM_EPS = 1e-12  # BERT's

#: ONNX Runtime's output must match pyinfer's dense model within this (relative to the
#: output's largest magnitude) before it is timed.
ORT_TOLERANCE = 1e-3

ORT_IMPL = "onnxruntime dense fp32"

# ---------------------------------------------------------------------------- MLP


def magnitude_prune(w: np.ndarray, sparsity: float) -> np.ndarray:
    """A copy of ``w`` with the fraction ``sparsity`` of its entries, the smallest in
    magnitude, set to zero."""
    pruned = np.array(w, np.float32)
    count = int(round(sparsity * pruned.size))
    if count:
        flat = pruned.reshape(-1)
        flat[np.argpartition(np.abs(flat), count - 1)[:count]] = 0
    return pruned


def mlp_weights(rng: np.random.Generator, sizes: Sequence[int] = MLP_SIZES) -> list:
    """``[(W [out, in], b [out]), ...]``: He-scaled Gaussian weights, so that activations
    stay of order one through the relus."""
    layers = []
    for k, n in zip(sizes[:-1], sizes[1:]):
        w = rng.standard_normal((n, k), dtype=np.float32) * np.float32(math.sqrt(2 / k))
        b = rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)
        layers.append((w, b))
    return layers


def mlp_graph(layers: list, encodings: Sequence[str], sparsity: float = SPARSITY) -> Graph:
    """The MLP ``layers`` with one encoding per layer (csr layers magnitude-pruned to
    ``sparsity`` first); relu after every layer but the last. Layer i is node ``fc{i}``."""
    if len(encodings) != len(layers):
        raise ValueError(f"{len(layers)} layers but {len(encodings)} encodings")
    g = Graph()
    h = g.input("x", (None, layers[0][0].shape[1]))
    for i, ((w, b), encoding) in enumerate(zip(layers, encodings)):
        if encoding == "csr":
            w = magnitude_prune(w, sparsity)
        last = i == len(layers) - 1
        h = g.linear(h, w, b, None if last else "relu", encoding=encoding, name=f"fc{i}")
    g.output(h)
    return g


def mlp_onnx(layers: list):
    """The dense MLP as an ONNX model (Gemm + Relu), input ``X``, output ``Y``."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    h = "X"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        out = "Y" if i == len(layers) - 1 else f"G{i}"
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"B{i}"], [out], transB=1))
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"H{i}"]))
            out = f"H{i}"
        h = out
    return onnx_model(nodes, inits, [None, layers[0][0].shape[1]])


# ---------------------------------------------------------------------------- encoder block


def block_weights(rng: np.random.Generator, hidden: int, ffn: int) -> dict:
    """The encoder block's parameters: ``q k v o ff1 ff2`` as ``(W, b)``, ``ln1 ln2`` as
    ``(scale, shift)``."""

    def linear(n, k):
        w = rng.standard_normal((n, k), dtype=np.float32) * np.float32(1 / math.sqrt(k))
        return w, rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)

    def norm():
        return (
            1 + rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1),
            rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.1),
        )

    p = {name: linear(hidden, hidden) for name in ("q", "k", "v", "o")}
    p["ff1"], p["ff2"] = linear(ffn, hidden), linear(hidden, ffn)
    p["ln1"], p["ln2"] = norm(), norm()
    return p


def block_graph(p: dict, encoding: str, heads: int, seq: int) -> Graph:
    """A post-LayerNorm (BERT) encoder block on input ``x`` [batch, seq, hidden]: multi-head
    self-attention and a GELU FFN, each added to its input and normalised. Its linear
    layers use ``encoding``; attention's two products are MatMul ops."""
    hidden = p["q"][0].shape[1]
    dh = hidden // heads
    g = Graph()
    x = g.input("x", (None, seq, hidden))
    rows = g.node("Reshape", x, shape=[-1, hidden])  # [batch * seq, hidden]

    def linear(h, name, activation=None):
        w, b = p[name]
        return g.linear(h, w, b, activation, encoding=encoding, name=name)

    def split_heads(h, perm):
        return g.node("Transpose", g.node("Reshape", h, shape=[-1, seq, heads, dh]), perm=perm)

    q = split_heads(linear(rows, "q"), [0, 2, 1, 3])  # [batch, heads, seq, dh]
    k = split_heads(linear(rows, "k"), [0, 2, 3, 1])  # [batch, heads, dh, seq]
    v = split_heads(linear(rows, "v"), [0, 2, 1, 3])
    scores = g.node("Mul", g.node("MatMul", q, k), np.float32(1 / math.sqrt(dh)))
    context = g.node("MatMul", g.node("Softmax", scores, axis=-1), v)
    context = g.node("Reshape", g.node("Transpose", context, perm=[0, 2, 1, 3]), shape=[-1, hidden])
    a = g.node("Add", linear(context, "o"), rows)
    a = g.node("LayerNorm", a, *p["ln1"], eps=LAYER_NORM_EPS)
    f = linear(g.node("Gelu", linear(a, "ff1")), "ff2")
    y = g.node("LayerNorm", g.node("Add", f, a), *p["ln2"], eps=LAYER_NORM_EPS)
    g.output(g.node("Reshape", y, shape=[-1, seq, hidden]))
    return g


def block_onnx(p: dict, heads: int, seq: int):
    """The dense encoder block as an ONNX model (opset 17), input ``X``, output ``Y``;
    GELU written with Erf, which ONNX Runtime fuses."""
    from onnx import helper, numpy_helper

    hidden = p["q"][0].shape[1]
    dh = hidden // heads
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(h, name):
        w, b = p[name]
        mm = node("MatMul", [h, const(f"{name}.W", np.ascontiguousarray(w.T))], f"{name}.mm")
        return node("Add", [mm, const(f"{name}.b", b)], name)

    def split_heads(h, perm):
        r = node("Reshape", [h, const(f"{h}.shape", np.array([-1, seq, heads, dh]))], f"{h}.r")
        return node("Transpose", [r], f"{h}.t", perm=perm)

    rows = node("Reshape", ["X", const("rows.shape", np.array([-1, hidden]))], "rows")
    q = split_heads(linear(rows, "q"), [0, 2, 1, 3])
    k = split_heads(linear(rows, "k"), [0, 2, 3, 1])
    v = split_heads(linear(rows, "v"), [0, 2, 1, 3])
    scores = node("MatMul", [q, k], "scores")
    scores = node("Mul", [scores, const("scale", np.float32(1 / math.sqrt(dh)))], "scaled")
    probs = node("Softmax", [scores], "probs", axis=-1)
    context = node("Transpose", [node("MatMul", [probs, v], "ctx")], "ctx.t", perm=[0, 2, 1, 3])
    context = node("Reshape", [context, const("ctx.shape", np.array([-1, hidden]))], "ctx.r")
    a = node("Add", [linear(context, "o"), rows], "res1")
    ln1 = [const("ln1.g", p["ln1"][0]), const("ln1.b", p["ln1"][1])]
    a = node("LayerNormalization", [a, *ln1], "ln1", axis=-1, epsilon=LAYER_NORM_EPS)
    f = linear(a, "ff1")
    half = node("Div", [f, const("sqrt2", np.float32(math.sqrt(2)))], "gelu.d")
    half = node("Add", [node("Erf", [half], "gelu.e"), const("one", np.float32(1))], "gelu.a")
    f = node("Mul", [node("Mul", [f, half], "gelu.m"), const("half", np.float32(0.5))], "gelu")
    y = node("Add", [linear(f, "ff2"), a], "res2")
    ln2 = [const("ln2.g", p["ln2"][0]), const("ln2.b", p["ln2"][1])]
    y = node("LayerNormalization", [y, *ln2], "ln2", axis=-1, epsilon=LAYER_NORM_EPS)
    node("Reshape", [y, const("out.shape", np.array([-1, seq, hidden]))], "Y")
    return onnx_model(nodes, inits, [None, seq, hidden])


def onnx_model(nodes: list, inits: list, input_shape: list):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# ---------------------------------------------------------------------------- impls


def model_impl(version: str, build: Callable[[object], Graph]) -> Impl:
    """``pyinfer <version>``: ``model(x)`` on the model ``build(weights)`` plans, one
    distinct model per cycled set of weights."""

    def prepare(pool: WeightPool, x: np.ndarray, cold_bytes: int) -> Prepared:
        models = pool.cycled(version, lambda d: build(d).build(), model_bytes, cold_bytes)
        return Prepared(cycle_calls(lambda m: m(x), models), len(models), model_bytes(models[0]))

    return Impl(f"pyinfer {version}", "ours", prepare)


def layer_alone_impl(
    version: str, build: Callable[[object], Graph], layer: int, encoding: str
) -> Impl:
    """Layer ``layer`` (node ``fc{layer}``, weights encoded as ``encoding``) of the MLP
    ``pyinfer <version>``, its kernel called on its own (``kernels.linear``) on the
    activations it gets in a model run."""

    def prepare(pool: WeightPool, x: np.ndarray, cold_bytes: int) -> Prepared:
        models = pool.cycled(version, lambda d: build(d).build(), model_bytes, cold_bytes)
        h = x
        for i in range(layer):  # this layer's input in a run of the first model
            h = kernels.linear(h, *_layer_args(models[0], i))
        args = [_layer_args(m, layer) for m in models]
        out = np.empty((h.shape[0], args[0][0].out_features), np.float32)
        run = cycle_calls(lambda a: kernels.linear(h, *a, out=out), args)
        return Prepared(run, len(args), args[0][0].nbytes)

    return Impl(f"pyinfer {version} layer {layer + 1} ({encoding}) alone", "layer", prepare)


def _layer_args(model: Model, i: int) -> tuple:
    """``(weight, bias, activation)`` of node ``fc{i}`` as the graph declares it."""
    node = next(n for n in model.graph["nodes"] if n["name"] == f"fc{i}")
    bias = model.constants.get(f"fc{i}.bias")
    return model.weights[f"fc{i}.weight"], bias, node["attrs"]["activation"]


def onnxruntime_impl(dense_build: Callable[[object], Graph], to_onnx: Callable) -> Impl:
    """ONNX Runtime on the dense model, checked against ``pyinfer dense`` on the same
    weights and input before it is timed."""

    def prepare(pool: WeightPool, x: np.ndarray, cold_bytes: int) -> Prepared:
        if not (_installed("onnxruntime") and _installed("onnx")):
            raise ImportError("skipped: onnxruntime (and onnx) are not installed")
        reference = pool.cycled("dense", lambda d: dense_build(d).build(), model_bytes, 0)[0]
        sessions = pool.cycled(
            "onnxruntime",
            lambda d: ort_session(to_onnx(d), kernels.get_num_threads()),
            lambda s: model_bytes(reference),
            cold_bytes,
        )
        feed = {"X": x}
        got, want = sessions[0].run(None, feed)[0], reference(x)
        error = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
        if not error <= ORT_TOLERANCE:
            raise ValueError(f"output differs from pyinfer dense by {error:.2g} (relative)")
        run = cycle_calls(lambda s: s.run(None, feed), sessions)
        return Prepared(run, len(sessions), model_bytes(reference))

    return Impl(ORT_IMPL, "dense", prepare)


def model_bytes(model: Model) -> int:
    """Bytes of a model's weights and constants as stored."""
    return sum(w.nbytes for w in model.weights.values()) + sum(
        c.nbytes for c in model.constants.values()
    )


# ---------------------------------------------------------------------------- cases


def mlp_case(batch: int, sizes: Sequence[int] = MLP_SIZES, sparsity: float = SPARSITY) -> Case:
    """One batch of the MLP in every version, the mixed one's layers alone, and ONNX
    Runtime on the dense one; ``sizes``: 5 layer sizes, input first (4 layers, as the
    versions' encodings)."""

    def builder(encodings):
        return lambda layers: mlp_graph(layers, encodings, sparsity)

    builders = {version: builder(e) for version, e in MLP_VERSIONS.items()}
    impls = [model_impl(version, b) for version, b in builders.items()]
    layers = [
        layer_alone_impl("mixed", builders["mixed"], i, e)
        for i, e in enumerate(MLP_VERSIONS["mixed"])
    ]
    impls += [*layers, onnxruntime_impl(builders["dense"], mlp_onnx)]
    return Case(
        suite="mixed",
        impls=impls,
        meta=_meta("pyinfer dense", {"pyinfer mixed": [i.name for i in layers]}),
        **mlp_shape(batch, sizes),
    )


def mlp_shape(batch: int, sizes: Sequence[int]) -> dict:
    """The Case fields of an MLP of ``sizes`` at ``batch``: label, weights, input, flops."""
    return {
        "label": "MLP " + "-".join(map(str, sizes)),
        "batch": batch,
        "make_weight": lambda rng: mlp_weights(rng, sizes),
        "make_input": lambda rng: rng.standard_normal((batch, sizes[0]), np.float32),
        "flops": 2.0 * batch * sum(k * n for k, n in zip(sizes[:-1], sizes[1:])),
    }


def block_case(
    batch: int,
    hidden: int = BLOCK_SIZES["hidden"],
    heads: int = BLOCK_SIZES["heads"],
    ffn: int = BLOCK_SIZES["ffn"],
    seq: int = BLOCK_SIZES["seq"],
) -> Case:
    """One batch (of sequences) of the encoder block with each linear encoding, and ONNX
    Runtime on the dense block."""

    def builder(encoding):
        return lambda p: block_graph(p, encoding, heads, seq)

    impls = [model_impl(e, builder(e)) for e in BLOCK_VERSIONS]
    impls.append(onnxruntime_impl(builder("dense"), lambda p: block_onnx(p, heads, seq)))
    linear_flops = 2.0 * batch * seq * (4 * hidden * hidden + 2 * hidden * ffn)
    return Case(
        suite="mixed",
        label=f"encoder block {hidden}/{heads} heads/FFN {ffn}/seq {seq}",
        batch=batch,
        make_weight=lambda rng: block_weights(rng, hidden, ffn),
        make_input=lambda rng: rng.standard_normal((batch, seq, hidden), np.float32),
        impls=impls,
        flops=linear_flops + 4.0 * batch * seq * seq * hidden,
        meta=_meta("pyinfer dense", {}),
    )


def _meta(reference: str, parts: dict) -> dict:
    """What the report reads: a table of models; ratios against ``reference`` and ONNX
    Runtime; ``parts``: model impl -> its layer-alone impls."""
    return {"layout": "models", "reference": reference, "baseline": ORT_IMPL, "parts": parts}


def cases(quick: bool = False) -> list[Case]:
    """The MLP at batch 1 and 64, the encoder block at batch 1 and 8 (--quick: batch 1)."""
    if quick:
        return [mlp_case(1), block_case(1)]
    return [mlp_case(1), mlp_case(64), block_case(1), block_case(8)]


def table(results) -> str:
    """The models table of ``results`` (the harness's Result rows)."""
    from pyinfer.bench.report import models_table

    return models_table([r.as_dict() for r in results])
