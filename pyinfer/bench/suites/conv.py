"""conv2d on every registry row and each of its test option sets vs dense fp32 conv
(torch, ONNX Runtime) and ONNX Runtime's static int8 ``QLinearConv`` (QuantizeLinear ->
QLinearConv -> DequantizeLinear, uint8 activations, per-channel int8 weights), at
ResNet-like 3×3 and 1×1 shapes; rows storing only nonzeros on 90 %-sparse weights.

Rows with int8 activations quantize each input image once: ``static`` with the
per-tensor scale ``STATIC_SCALE`` (what QLinearConv does, its quantize and dequantize
included in its time; it replaces the scale of the row's test options), ``dynamic`` with
max |x| / 127 over each image, computed inside the call."""

from __future__ import annotations

import numpy as np

import kernels
from kernels import registry
from pyinfer.bench.baselines import _installed, onnx_session, sparse_rows
from pyinfer.bench.harness import Case, Impl, Prepared, cycle_calls

#: Static activation scale for ``int8 static``: inputs are standard normal (|x| < ~5).
STATIC_SCALE = 5.0 / 127


def conv_weight(out_c: int, in_c: int, k: int, sparsity: float = 0.0):
    """A maker of float32 Gaussian weights [out, in, k, k] with a fraction of zeros."""

    def make(rng: np.random.Generator) -> np.ndarray:
        w = rng.standard_normal((out_c, in_c, k, k), dtype=np.float32) / np.sqrt(in_c * k * k)
        if sparsity:
            w[rng.random(w.shape, dtype=np.float32) < sparsity] = 0
        return w.astype(np.float32)

    return make


def ours(encoding: str, padding: int, label: str | None = None, **options) -> Impl:
    """Our ``kernels.conv2d`` on weights encoded as ``encoding``."""
    key = ("ours-conv", encoding, tuple(sorted(options.items())))

    def prepare(pool, x, cold_bytes):
        weights = pool.cycled(
            key, lambda d: kernels.encode(d, encoding, **options), lambda w: w.nbytes, cold_bytes
        )
        run = cycle_calls(lambda w: kernels.conv2d(x, w, padding=padding), weights)
        return Prepared(run, len(weights), weights[0].nbytes)

    name = label or "pyinfer " + encoding + "".join(f" {k}={v}" for k, v in options.items())
    return Impl(name, "ours", prepare)


def label(encoding: str, options: dict) -> str:
    """``pyinfer int8 static``, ``pyinfer binary (float act)``, ``pyinfer int4 dynamic
    group_size=64``: the activation treatment first, then any other option."""
    words = ["pyinfer", encoding]
    if "activation_scale" in registry.get(encoding).options:
        words.append("dynamic" if options.get("activation_scale") is None else "static")
    if "activations" in options:
        words.append(f"({options['activations']} act)")
    words += [
        f"{k}={v}" for k, v in options.items() if k not in ("activation_scale", "activations")
    ]
    return " ".join(words)


def ours_every_option_set(encodings: list[str], padding: int) -> list[Impl]:
    """Our conv2d on each encoding with each of its test option sets (a static activation
    scale becomes ``STATIC_SCALE``)."""
    impls = []
    for name in encodings:
        for opts in registry.get(name).test_options:
            opts = dict(opts)
            if opts.get("activation_scale") is not None:
                opts["activation_scale"] = STATIC_SCALE
            impls.append(ours(name, padding, label=label(name, opts), **opts))
    return impls


def torch_conv(padding: int) -> Impl:
    def prepare(pool, x, cold_bytes):
        import torch

        weights = pool.cycled(
            "torch-f32",
            lambda d: torch.from_numpy(np.array(d)),
            lambda w: w.numel() * 4,
            cold_bytes,
        )
        xt = torch.from_numpy(x)

        def call(w):
            with torch.inference_mode():
                torch.nn.functional.conv2d(xt, w, padding=padding)

        return Prepared(cycle_calls(call, weights), len(weights), weights[0].numel() * 4)

    return Impl("torch conv fp32", "dense", prepare)


def onnxruntime_conv(padding: int) -> Impl:
    """float32 Conv in ONNX Runtime, one session holding a Conv per cycled weight."""

    def prepare(pool, x, cold_bytes):
        from onnx import helper, numpy_helper

        weights = pool.cycled("f32", lambda d: np.array(d), lambda w: w.nbytes, cold_bytes)

        def nodes_for(i, w):
            init = numpy_helper.from_array(w, f"W{i}")
            node = helper.make_node("Conv", ["X", f"W{i}"], [f"Y{i}"], pads=[padding] * 4)
            return [node], [init], f"Y{i}"

        sess = onnx_session(nodes_for, weights, x, kernels.get_num_threads())
        return Prepared(lambda: sess.run(None, {"X": x}), len(weights), weights[0].nbytes)

    return Impl("onnxruntime conv fp32", "dense", prepare)


def onnxruntime_qlinearconv(padding: int) -> Impl:
    """Static int8: uint8 activations (zero point 128, scale from the input), per-channel
    symmetric int8 weights; quantize and dequantize are part of each call."""

    def prepare(pool, x, cold_bytes):
        from onnx import helper, numpy_helper

        weights = pool.cycled("f32", lambda d: np.array(d), lambda w: w.nbytes, cold_bytes)
        x_scale = np.float32(np.abs(x).max() / 127)
        # output scale from the float result of the first weight on this input
        y0 = kernels.conv2d(x, weights[0], padding=padding)
        y_scale = np.float32(max(float(np.abs(y0).max()), 1e-6) / 127)

        def nodes_for(i, w):
            w_scale = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127).astype(np.float32)
            w_scale[w_scale == 0] = 1
            wq = np.clip(np.rint(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
            inits = [
                numpy_helper.from_array(wq, f"Wq{i}"),
                numpy_helper.from_array(w_scale, f"Ws{i}"),
                numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"Wz{i}"),
            ]
            if i == 0:
                inits += [
                    numpy_helper.from_array(np.array(x_scale, np.float32), "Xs"),
                    numpy_helper.from_array(np.array(128, np.uint8), "Xz"),
                    numpy_helper.from_array(np.array(y_scale, np.float32), "Ys"),
                    numpy_helper.from_array(np.array(128, np.uint8), "Yz"),
                ]
            nodes = [
                helper.make_node(
                    "QLinearConv",
                    ["Xq", "Xs", "Xz", f"Wq{i}", f"Ws{i}", f"Wz{i}", "Ys", "Yz"],
                    [f"Yq{i}"],
                    pads=[padding] * 4,
                ),
                helper.make_node("DequantizeLinear", [f"Yq{i}", "Ys", "Yz"], [f"Y{i}"]),
            ]
            if i == 0:
                nodes.insert(0, helper.make_node("QuantizeLinear", ["X", "Xs", "Xz"], ["Xq"]))
            return nodes, inits, f"Y{i}"

        sess = onnx_session(nodes_for, weights, x, kernels.get_num_threads())
        return Prepared(lambda: sess.run(None, {"X": x}), len(weights), weights[0].size)

    return Impl("onnxruntime QLinearConv int8 static", "peer", prepare)


def _baselines(padding: int) -> list[Impl]:
    impls = []
    if _installed("torch"):
        impls.append(torch_conv(padding))
    if _installed("onnxruntime") and _installed("onnx"):
        impls.append(onnxruntime_conv(padding))
    return impls


def cases(quick: bool = False) -> list[Case]:
    shapes = [(3, 16, 16, 14), (1, 32, 32, 7)] if quick else [(3, 64, 64, 56), (1, 256, 256, 28)]
    batches = [1] if quick else [1, 8]
    have_ort = _installed("onnxruntime") and _installed("onnx")
    sparse = sparse_rows()
    compact = [name for name in registry.names() if name not in sparse]
    out = []
    for k, cin, cout, size in shapes:
        pad = k // 2
        label = f"{k}x{k} {cin}->{cout} {size}x{size}"
        dense_impls = [
            *ours_every_option_set(compact, pad),
            *_baselines(pad),
            *([onnxruntime_qlinearconv(pad)] if have_ort else []),
        ]
        sparse_impls = [*ours_every_option_set(sparse, pad), *_baselines(pad)]
        for sparsity, impls in ((0.0, dense_impls), (0.9, sparse_impls)):
            for b in batches:
                out.append(
                    Case(
                        suite="conv",
                        label=label + (f" sparsity {sparsity:.0%}" if sparsity else ""),
                        batch=b,
                        make_weight=conv_weight(cout, cin, k, sparsity),
                        make_input=lambda rng, b=b, c=cin, s=size: rng.standard_normal(
                            (b, c, s, s), np.float32
                        ),
                        impls=impls,
                        flops=2.0 * cout * cin * k * k * size * size * b,
                        meta={
                            "kernel": k,
                            "in": cin,
                            "out": cout,
                            "size": size,
                            "sparsity": sparsity,
                            "roofline": False,  # activations, not weights, dominate traffic
                            "compare_with": ["torch conv fp32"],  # a column in the report
                        },  # fmt: skip
                    )
                )
    return out
