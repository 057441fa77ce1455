"""Implementations every suite compares with: our kernels through the public API, and
the dense fp32 baselines (NumPy BLAS, ONNX Runtime, PyTorch) where installed; and which
registry rows a suite measures, chosen by what the rows say of themselves."""

from __future__ import annotations

import numpy as np

import kernels
from kernels import registry
from pyinfer.bench.harness import Impl, Prepared, WeightPool, cycle_calls


def rows_with_option(option: str) -> list[str]:
    """Encodings offering the encode option ``option`` (e.g. ``activation_scale``: int8
    activations; ``activations``: a choice of activation treatment), in registry order."""
    return [name for name in registry.names() if option in registry.get(name).options]


def sparse_rows() -> list[str]:
    """Encodings that store only the nonzeros (their weights have a ``density``)."""
    return [name for name in registry.names() if hasattr(registry.get(name).weight_type, "density")]


def ours(encoding: str, label: str | None = None, **options) -> Impl:
    """Our ``kernels.linear`` on weights encoded as ``encoding`` (with ``options``)."""
    key = ("ours", encoding, tuple(sorted(options.items())))

    def prepare(pool: WeightPool, x: np.ndarray, cold_bytes: int) -> Prepared:
        weights = pool.cycled(
            key, lambda d: kernels.encode(d, encoding, **options), lambda w: w.nbytes, cold_bytes
        )
        out = np.empty((x.shape[0], weights[0].out_features), np.float32)
        run = cycle_calls(lambda w: kernels.linear(x, w, out=out), weights)
        return Prepared(run, len(weights), weights[0].nbytes)

    name = label or "pyinfer " + encoding + "".join(f" {k}={v}" for k, v in options.items())
    return Impl(name, "ours", prepare)


def numpy_dense() -> Impl:
    """float32 ``x @ W.T`` through NumPy's BLAS."""

    def prepare(pool, x, cold_bytes):
        weights = pool.cycled(
            "f32", lambda d: np.ascontiguousarray(d, np.float32), lambda w: w.nbytes, cold_bytes
        )
        out = np.empty((x.shape[0], weights[0].shape[0]), np.float32)
        run = cycle_calls(lambda w: np.matmul(x, w.T, out=out), weights)
        return Prepared(run, len(weights), weights[0].nbytes)

    return Impl("numpy dense fp32", "dense", prepare)


def torch_dense() -> Impl:
    """float32 ``torch.nn.functional.linear``."""

    def prepare(pool, x, cold_bytes):
        import torch

        weights = pool.cycled(
            "torch-f32",
            lambda d: torch.from_numpy(np.array(d, np.float32)),
            lambda w: w.numel() * 4,
            cold_bytes,
        )
        xt = torch.from_numpy(x)

        def call(w):
            with torch.inference_mode():
                torch.nn.functional.linear(xt, w)

        return Prepared(cycle_calls(call, weights), len(weights), weights[0].numel() * 4)

    return Impl("torch dense fp32", "dense", prepare)


def onnx_session(nodes_for, weights: list, x: np.ndarray, threads: int):
    """An ONNX Runtime session holding one subgraph per weight, all fed by one input X.

    ``nodes_for(i, w)`` returns ``(nodes, initializers, output_name)`` for weight i.
    Running the session once runs every subgraph: a round of len(weights) calls.
    """
    from onnx import TensorProto, helper

    nodes, inits, outputs = [], [], []
    for i, w in enumerate(weights):
        n, init, out = nodes_for(i, w)
        nodes += n
        inits += init
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        outputs,
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    return ort_session(model, threads)


def ort_session(model, threads: int):
    """An ONNX Runtime CPU session on the ONNX ``model`` (a ModelProto): ``threads``
    intra-op threads, sequential, every graph optimisation on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def onnxruntime_dense() -> Impl:
    """float32 MatMul in ONNX Runtime: one session holding all the cycled MatMuls."""

    def prepare(pool, x, cold_bytes):
        from onnx import numpy_helper

        weights = pool.cycled(
            "f32", lambda d: np.ascontiguousarray(d, np.float32), lambda w: w.nbytes, cold_bytes
        )

        def nodes_for(i, w):
            from onnx import helper

            init = numpy_helper.from_array(np.ascontiguousarray(w.T), f"W{i}")
            return [helper.make_node("MatMul", ["X", f"W{i}"], [f"Y{i}"])], [init], f"Y{i}"

        sess = onnx_session(nodes_for, weights, x, kernels.get_num_threads())
        feed = {"X": x}
        return Prepared(lambda: sess.run(None, feed), len(weights), weights[0].nbytes)

    return Impl("onnxruntime dense fp32", "dense", prepare)


def dense_baselines() -> list[Impl]:
    """Every dense fp32 baseline whose library is installed."""
    impls = [numpy_dense()]
    if _installed("onnxruntime") and _installed("onnx"):
        impls.append(onnxruntime_dense())
    if _installed("torch"):
        impls.append(torch_dense())
    return impls


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
