"""Dense fp32 linear: pyinfer's C kernels on packed weights (GEMV at batch 1, blocked
GEMM above) vs NumPy's BLAS and ONNX Runtime's MatMul; the batch-1 table column
``roofline`` is the share of the memory bandwidth the weights stream at."""

from __future__ import annotations

import numpy as np

from pyinfer.bench.baselines import _installed, numpy_dense, onnxruntime_dense, ours
from pyinfer.bench.harness import Case
from pyinfer.bench.suites.quant import gaussian_weight


def cases(quick: bool = False) -> list[Case]:
    shapes = [(1024, 1024)] if quick else [(4096, 4096)]
    batches = [1, 8] if quick else [1, 8, 64, 256]
    baselines = [numpy_dense()]
    if _installed("onnxruntime") and _installed("onnx"):
        baselines.append(onnxruntime_dense())
    out = []
    for o, k in shapes:
        for b in batches:
            out.append(
                Case(
                    suite="dense",
                    label=f"{o}x{k}",
                    batch=b,
                    make_weight=gaussian_weight(o, k),
                    make_input=lambda rng, b=b, k=k: rng.standard_normal((b, k), np.float32),
                    impls=[ours("dense", label="pyinfer dense fp32"), *baselines],
                    flops=2.0 * o * k * b,
                    meta={"shape": [o, k]},
                )
            )
    return out
