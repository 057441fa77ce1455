"""Every registry encoding's linear kernel beside the dense fp32 baseline, same shapes.

Weights are cached here (one matrix); ``pyinfer bench`` adds cold-weight runs and the
ONNX Runtime / torch baselines.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels import registry

SHAPES = ["4096x4096", "4096x1024", "1024x1024"]
BATCHES = [1, 8, 64]
SPARSITY = 0.9  # zeros in the source weight: what csr skips; other encodings ignore it


def _cases():
    for name in registry.names():
        for opts in registry.get(name).test_options:
            label = name + "".join(f"-{k}={v}" for k, v in opts.items())
            yield pytest.param(name, opts, id=label)


@pytest.fixture(scope="module")
def weights():
    cache = {}

    def get(shape: str) -> np.ndarray:
        if shape not in cache:
            o, k = map(int, shape.split("x"))
            rng = np.random.default_rng(0)
            w = rng.standard_normal((o, k), dtype=np.float32)
            w[rng.random((o, k)) < SPARSITY] = 0
            cache[shape] = w
        return cache[shape]

    return get


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name, opts", list(_cases()))
def test_linear(benchmark, weights, shape, batch, name, opts):
    w = kernels.encode(weights(shape), name, **opts)
    x = np.random.default_rng(1).standard_normal((batch, w.in_features), dtype=np.float32)
    out = np.empty((batch, w.out_features), np.float32)
    benchmark.extra_info.update(encoding=name, nbytes=w.nbytes, **opts)
    benchmark(kernels.linear, x, w, out=out)
