"""Models as the converter produces them, beside ONNX Runtime running the same models,
dense and quantized by its own tool (``onnxruntime.quantization``), in one run.

- The Fashion-MNIST MLP 784-1024-1024-10 at batch 1 and 64: pyinfer dense, ``int8``
  (dynamic activations) and ``csr`` (every layer magnitude-pruned to 90 %); ONNX Runtime
  fp32 and int8 dynamic (``quantize_dynamic``, int8 weights).
- The Fashion-MNIST CNN (3x3 conv 1->16 and 16->32, each relu + 2x2 max-pool, then linear
  1568->64->10) on 28x28 images at batch 1 and 64: pyinfer dense, ``int8`` static
  (activation scales calibrated on ``CALIBRATION_SAMPLES`` inputs) and int8 dynamic;
  ONNX Runtime fp32 and int8 static (``quantize_static``: QOperator, per-channel int8
  weights, uint8 activations, calibrated on the same inputs).

pyinfer's versions come from ``pyinfer.compress`` on the dense model at the case's batch,
the path ``pyinfer convert`` takes: a layer whose compressed form measures slower than
its dense form on this machine stays dense (the report lists those layers under its
table).
Weights are random with a fixed seed: speed does not depend on their values. Each ONNX
Runtime session is checked against pyinfer's dense model before it is timed.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

import kernels
from pyinfer.bench.baselines import _installed, ort_session
from pyinfer.bench.harness import Case, Impl, Prepared, WeightPool, cycle_calls
from pyinfer.bench.suites.mixed import mlp_onnx, mlp_shape, model_bytes, onnx_model
from pyinfer.graph import Graph
from pyinfer.model import Model

#: The MLP's layer sizes, input first.
MLP_SIZES = (784, 1024, 1024, 10)

#: The CNN: (in, out) channels of its two 3x3 convs, its hidden linear width, classes;
#: input images 1 x IMAGE x IMAGE.
CNN_CHANNELS = ((1, 16), (16, 32))
CNN_HIDDEN, CLASSES, IMAGE = 64, 10, 28

#: Fraction of every csr layer's weights pruned (the smallest in magnitude).
SPARSITY = 0.9

#: Inputs that calibrate static activation scales (pyinfer's and ONNX Runtime's).
CALIBRATION_SAMPLES = 64

#: ONNX Runtime's output must match pyinfer's dense model within this, relative to the
#: output's largest magnitude, before it is timed: fp32 tightly, int8 loosely (it is
#: quantized, but must be the same model).
ORT_TOLERANCE = {"fp32": 1e-3, "int8": 0.1}

DENSE = "pyinfer dense"
ORT_FP32 = "onnxruntime dense fp32"

# ---------------------------------------------------------------------------- models


def mlp_model(layers: list) -> Model:
    """The dense MLP: relu after every layer but the last; layer i is node ``fc{i}``."""
    g = Graph()
    h = g.input("x", (None, layers[0][0].shape[1]))
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        h = g.linear(h, w, b, None if last else "relu", name=f"fc{i}")
    g.output(h)
    return g.build()


def cnn_weights(rng: np.random.Generator) -> dict:
    """He-scaled random parameters of the CNN: ``conv{i}``/``fc``/``head`` -> (W, b)."""

    def he(shape, fan_in):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2 / fan_in))

    p = {}
    for i, (cin, cout) in enumerate(CNN_CHANNELS):
        p[f"conv{i}"] = (he((cout, cin, 3, 3), cin * 9), np.zeros(cout, np.float32))
    flat = CNN_CHANNELS[-1][1] * (IMAGE // 2 ** len(CNN_CHANNELS)) ** 2
    p["fc"] = (he((CNN_HIDDEN, flat), flat), np.zeros(CNN_HIDDEN, np.float32))
    p["head"] = (he((CLASSES, CNN_HIDDEN), CNN_HIDDEN), np.zeros(CLASSES, np.float32))
    return p


def cnn_model(p: dict) -> Model:
    """The dense CNN on input ``x`` [batch, 1, IMAGE, IMAGE]."""
    g = Graph()
    h = g.input("x", (None, CNN_CHANNELS[0][0], IMAGE, IMAGE))
    for i in range(len(CNN_CHANNELS)):
        h = g.conv2d(h, *p[f"conv{i}"], padding=1, activation="relu", name=f"conv{i}")
        h = g.node("MaxPool2d", h, kernel_size=2, name=f"pool{i}")
    h = g.node("Flatten", h, name="flatten")
    h = g.linear(h, *p["fc"], "relu", name="fc")
    g.output(g.linear(h, *p["head"], None, name="head"))
    return g.build()


def cnn_onnx(p: dict):
    """The dense CNN as an ONNX model (Conv, Relu, MaxPool, Flatten, Gemm), ``X`` -> ``Y``."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []

    def init(name, value):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    h = "X"
    for i in range(len(CNN_CHANNELS)):
        w, b = p[f"conv{i}"]
        conv = [h, init(f"conv{i}.W", w), init(f"conv{i}.B", b)]
        nodes.append(helper.make_node("Conv", conv, [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        nodes.append(
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])
        )
        h = f"p{i}"
    nodes.append(helper.make_node("Flatten", [h], ["flat"]))
    fc = ["flat", init("fc.W", p["fc"][0]), init("fc.B", p["fc"][1])]
    nodes.append(helper.make_node("Gemm", fc, ["fc"], transB=1))
    nodes.append(helper.make_node("Relu", ["fc"], ["fcr"]))
    head = ["fcr", init("head.W", p["head"][0]), init("head.B", p["head"][1])]
    nodes.append(helper.make_node("Gemm", head, ["Y"], transB=1))
    return onnx_model(nodes, inits, [None, CNN_CHANNELS[0][0], IMAGE, IMAGE])


def calibration_inputs(shape: Sequence[int]) -> np.ndarray:
    """``CALIBRATION_SAMPLES`` random inputs of one sample's ``shape`` (fixed seed)."""
    rng = np.random.default_rng(1)
    return rng.standard_normal((CALIBRATION_SAMPLES, *shape), dtype=np.float32)


# ---------------------------------------------------------------------------- impls


def pyinfer_impl(version: str, dense: Callable[[object], Model], recipe, data=None) -> Impl:
    """``pyinfer <version>``: ``model(x)`` on ``pyinfer.compress(dense(weights), recipe,
    data, batch=len(x))``; ``recipe`` None: the dense model as it is, a dense baseline."""

    def prepare(pool: WeightPool, x: np.ndarray, cold_bytes: int) -> Prepared:
        from pyinfer.convert.compress import compress

        def build(d) -> Model:
            model = dense(d)
            if recipe is None:
                return model
            return compress(model, recipe, data, batch=len(x), progress=False)

        models = pool.cycled(version, build, model_bytes, cold_bytes)
        record = getattr(models[0], "compression", None)
        kept = [d.layer for d in record.layers if d.status != "compressed"] if record else []
        prepared = Prepared(
            cycle_calls(lambda m: m(x), models), len(models), model_bytes(models[0])
        )
        if kept:
            prepared.note = "kept dense: " + ", ".join(kept)
        return prepared

    return Impl(f"pyinfer {version}", "dense" if recipe is None else "ours", prepare)


def onnxruntime_impl(
    name: str, dense: Callable[[object], Model], to_onnx: Callable, quantize=None
) -> Impl:
    """ONNX Runtime on ``to_onnx(weights)``, quantized first by ``quantize(src, dst)``
    (file paths) when given; checked against pyinfer's dense model before it is timed."""
    precision = "int8" if quantize else "fp32"

    def session(d):
        if quantize is None:
            return ort_session(to_onnx(d), kernels.get_num_threads())
        import onnx

        with tempfile.TemporaryDirectory(prefix="pyinfer-ort-") as tmp:
            src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
            onnx.save(to_onnx(d), src)
            quantize(src, dst)
            return ort_session(onnx.load(dst), kernels.get_num_threads())

    def prepare(pool: WeightPool, x: np.ndarray, cold_bytes: int) -> Prepared:
        if not (_installed("onnxruntime") and _installed("onnx")):
            raise ImportError("skipped: onnxruntime (and onnx) are not installed")
        reference = pool.cycled("dense", dense, model_bytes, 0)[0]
        if cold_bytes and cold_bytes > model_bytes(reference):
            # cycling models means one session each, and each keeps its own pool of
            # spinning threads: a dozen of them on 2 cores measure the machine, not ORT
            raise ValueError(
                "not measured with cold weights: each cycled ONNX Runtime session keeps "
                "its own spinning threads (run --weights cached)"
            )
        sessions = pool.cycled(name, session, lambda s: model_bytes(reference), cold_bytes)
        feed = {"X": x}
        got, want = sessions[0].run(None, feed)[0], reference(x)
        error = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
        if not error <= ORT_TOLERANCE[precision]:
            raise ValueError(f"output differs from pyinfer dense by {error:.2g} (relative)")
        run = cycle_calls(lambda s: s.run(None, feed), sessions)
        return Prepared(run, len(sessions), model_bytes(reference))

    return Impl(name, "dense" if quantize is None else "peer", prepare)


def ort_dynamic(src: str, dst: str) -> None:
    """``quantize_dynamic`` with int8 weights: ONNX Runtime's int8 for MLPs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)


def ort_static(calibration: np.ndarray) -> Callable[[str, str], None]:
    """``quantize_static`` as ONNX Runtime documents it for CNNs on x86: QOperator
    format, per-channel int8 weights, uint8 activations, min-max calibration on
    ``calibration``."""

    def quantize(src: str, dst: str) -> None:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.rows = iter(calibration[i : i + 1] for i in range(len(calibration)))

            def get_next(self):
                row = next(self.rows, None)
                return None if row is None else {"X": row}

        quantize_static(
            src,
            dst,
            Reader(),
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )

    return quantize


# ---------------------------------------------------------------------------- cases


def mlp_case(batch: int, sizes: Sequence[int] = MLP_SIZES, sparsity: float = SPARSITY) -> Case:
    """The MLP at one batch: pyinfer dense, int8 and csr; ONNX Runtime fp32 and int8."""
    csr = {"default": {"encoding": "csr", "sparsity": sparsity}}
    impls = [
        pyinfer_impl("dense", mlp_model, None),
        pyinfer_impl("int8", mlp_model, "int8"),
        pyinfer_impl(f"csr {round(sparsity * 100)}%", mlp_model, csr),
        onnxruntime_impl(ORT_FP32, mlp_model, mlp_onnx),
        onnxruntime_impl("onnxruntime int8 dynamic", mlp_model, mlp_onnx, ort_dynamic),
    ]
    return Case(
        suite="converted",
        impls=impls,
        meta={"compare_with": [DENSE, ORT_FP32]},
        **mlp_shape(batch, sizes),
    )


def cnn_case(batch: int) -> Case:
    """The CNN at one batch: pyinfer dense, int8 static and dynamic; ONNX Runtime fp32
    and int8 static."""
    sample = (CNN_CHANNELS[0][0], IMAGE, IMAGE)
    calibration = calibration_inputs(sample)
    static = {"default": {"encoding": "int8", "calibration": "minmax"}}
    impls = [
        pyinfer_impl("dense", cnn_model, None),
        pyinfer_impl("int8 static", cnn_model, static, calibration),
        pyinfer_impl("int8 dynamic", cnn_model, "int8"),
        onnxruntime_impl(ORT_FP32, cnn_model, cnn_onnx),
        onnxruntime_impl("onnxruntime int8 static", cnn_model, cnn_onnx, ort_static(calibration)),
    ]
    side = IMAGE
    flops = 0.0
    for cin, cout in CNN_CHANNELS:
        flops += 2.0 * cout * cin * 9 * side * side
        side //= 2
    flops += 2.0 * (CNN_CHANNELS[-1][1] * side * side * CNN_HIDDEN + CNN_HIDDEN * CLASSES)
    return Case(
        suite="converted",
        label="CNN conv16-conv32-fc64-10 28x28",
        batch=batch,
        make_weight=cnn_weights,
        make_input=lambda rng: rng.standard_normal((batch, *sample), np.float32),
        impls=impls,
        flops=batch * flops,
        meta={"compare_with": [DENSE, ORT_FP32]},
    )


def cases(quick: bool = False) -> list[Case]:
    """The MLP and the CNN at batch 1 and 64 (--quick: batch 1)."""
    if quick:
        return [mlp_case(1), cnn_case(1)]
    return [mlp_case(1), mlp_case(64), cnn_case(1), cnn_case(64)]
