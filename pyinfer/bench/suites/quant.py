"""Linear with int8 activations (every registry row offering ``activation_scale``: int8,
int4; default options) vs dense fp32 (NumPy, ONNX Runtime, torch) and vs quantized
peers: torch dynamic int8 (``quantize_dynamic`` on ``nn.Linear``), ONNX Runtime dynamic
int8 (``onnxruntime.quantization.quantize_dynamic``) and ONNX Runtime int4
(``MatMulNBits``, block 32, accuracy_level 4), each ONNX Runtime peer as one session
holding all the cycled MatMuls."""

from __future__ import annotations

import os
import tempfile

import numpy as np

import kernels
from pyinfer.bench.baselines import (
    _installed,
    dense_baselines,
    onnx_session,
    ours,
    rows_with_option,
)
from pyinfer.bench.harness import Case, Impl, Prepared, cycle_calls


def gaussian_weight(out_features: int, in_features: int):
    """A maker of float32 Gaussian weights [out, in]."""

    def make(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((out_features, in_features), dtype=np.float32)

    return make


def torch_int8_module(dense: np.ndarray):
    """``torch.ao.quantization.quantize_dynamic`` (qint8) of an ``nn.Linear`` holding dense."""
    import torch

    lin = torch.nn.Linear(dense.shape[1], dense.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(dense))
    return torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8
    )


def torch_int8() -> Impl:
    def prepare(pool, x, cold_bytes):
        import torch

        nbytes = pool.dense(0).size  # int8 weights (+ a scale)
        weights = pool.cycled("torch-int8", torch_int8_module, lambda m: nbytes, cold_bytes)
        xt = torch.from_numpy(x)

        def call(m):
            with torch.inference_mode():
                m(xt)

        return Prepared(cycle_calls(call, weights), len(weights), nbytes)

    return Impl("torch int8 dynamic", "peer", prepare)


def onnxruntime_int8_session(denses: list[np.ndarray], x: np.ndarray, threads: int):
    """A session of ``quantize_dynamic`` (QInt8 weights) over one MatMul per weight."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes, inits, outputs = [], [], []
    for i, d in enumerate(denses):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(d.T), f"W{i}"))
        nodes.append(helper.make_node("MatMul", ["X", f"W{i}"], [f"Y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory(prefix="pyinfer-ort-") as tmp:
        src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src, save_as_external_data=True)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, use_external_data_format=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(dst, opts, providers=["CPUExecutionProvider"])


def onnxruntime_int8() -> Impl:
    def prepare(pool, x, cold_bytes):
        nbytes = pool.dense(0).size
        count = max(1, -(-cold_bytes // nbytes)) if cold_bytes else 1
        denses = [pool.dense(i) for i in range(count)]
        sess = onnxruntime_int8_session(denses, x, kernels.get_num_threads())
        feed = {"X": x}
        return Prepared(lambda: sess.run(None, feed), count, nbytes)

    return Impl("onnxruntime int8 dynamic", "peer", prepare)


def matmulnbits_arrays(dense: np.ndarray, block: int = 32):
    """ONNX Runtime's MatMulNBits (4 bits, symmetric: zero point 8) inputs for W [N, K]:
    B uint8 [N, K/block, block/2] (element k in the low nibble when k is even) and
    scales float32 [N * K/block]."""
    n, k = dense.shape
    blocks = -(-k // block)
    w = np.zeros((n, blocks * block), np.float32)
    w[:, :k] = dense
    g = w.reshape(n, blocks, block)
    amax = np.abs(g).max(axis=2)
    scale = (amax / 7).astype(np.float32)
    ratio = np.divide(g, scale[..., None], out=np.zeros_like(g), where=scale[..., None] > 0)
    q = np.clip(np.rint(ratio), -8, 7)
    u = (q + 8).astype(np.uint8)
    packed = u[..., 0::2] | (u[..., 1::2] << 4)
    return np.ascontiguousarray(packed), scale.reshape(-1)


def onnxruntime_int4() -> Impl:
    def prepare(pool, x, cold_bytes):
        from onnx import helper, numpy_helper

        def build(d):
            return matmulnbits_arrays(d)

        def size(arrs):
            return arrs[0].nbytes + arrs[1].nbytes

        weights = pool.cycled("ort-int4", build, size, cold_bytes)
        n, k = pool.dense(0).shape

        def nodes_for(i, arrs):
            b, s = arrs
            node = helper.make_node(
                "MatMulNBits",
                ["X", f"B{i}", f"S{i}"],
                [f"Y{i}"],
                domain="com.microsoft",
                K=k,
                N=n,
                bits=4,
                block_size=32,
                accuracy_level=4,
            )
            inits = [numpy_helper.from_array(b, f"B{i}"), numpy_helper.from_array(s, f"S{i}")]
            return [node], inits, f"Y{i}"

        sess = onnx_session(nodes_for, weights, x, kernels.get_num_threads())
        feed = {"X": x}
        return Prepared(lambda: sess.run(None, feed), len(weights), size(weights[0]))

    return Impl("onnxruntime int4 MatMulNBits", "peer", prepare)


def peers() -> list[Impl]:
    """Every quantized peer whose library is installed."""
    found = []
    if _installed("torch"):
        found.append(torch_int8())
    if _installed("onnxruntime") and _installed("onnx"):
        found += [onnxruntime_int8(), onnxruntime_int4()]
    return found


def cases(quick: bool = False) -> list[Case]:
    shapes = [(1024, 1024)] if quick else [(4096, 4096), (4096, 1024), (1024, 1024)]
    batches = [1, 8] if quick else [1, 8, 64, 256]
    mine = [ours(name) for name in rows_with_option("activation_scale")]
    out = []
    for o, k in shapes:
        for b in batches:
            out.append(
                Case(
                    suite="quant",
                    label=f"{o}x{k}",
                    batch=b,
                    make_weight=gaussian_weight(o, k),
                    make_input=lambda rng, b=b, k=k: rng.standard_normal((b, k), np.float32),
                    impls=[*mine, *dense_baselines(), *peers()],
                    flops=2.0 * o * k * b,
                    meta={"shape": [o, k]},
                )
            )
    return out


def plot(results, path) -> None:
    """Time per call of each impl against batch, one panel per shape (cold, most threads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.error is None]
    if not ok:
        return
    threads = max(r.threads for r in ok)
    cold = any(r.cold for r in ok)
    ok = [r for r in ok if r.threads == threads and r.cold == cold]
    shapes = sorted({tuple(r.meta["shape"]) for r in ok}, reverse=True)
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4.2), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        rows = [r for r in ok if tuple(r.meta["shape"]) == shape]
        for impl in dict.fromkeys(r.impl for r in rows):
            pts = sorted((r.batch, r.median_ms) for r in rows if r.impl == impl)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("ms per call")
        ax.set_title(f"{shape[0]}x{shape[1]}, {threads} thr, {'cold' if cold else 'cached'}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
