"""``kernels.set_isa`` while other threads run C kernels: every call sees a whole dispatch
table, so int8 results stay bit-exact, CSR results within float tolerance, and nothing
crashes (the GIL is released during C calls, so the threads really overlap)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import kernels
from kernels import backends

pytestmark = pytest.mark.skipif(
    "c" not in kernels.available_backends(), reason="the C kernel library is not built"
)

SECONDS = 2.0


def test_set_isa_while_kernels_run():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    dense = rng.standard_normal((64, 256)).astype(np.float32)
    sparse = np.where(rng.random(dense.shape) < 0.2, dense, 0.0).astype(np.float32)
    int8, csr = kernels.encode(dense, "int8"), kernels.encode(sparse, "csr")
    levels = kernels.supported_isas()
    with backends.using(backend="c", isa=levels[0]):
        int8_want = [kernels.linear(x, int8), kernels.linear(x[:1], int8)]
    exact = x.astype(np.float64) @ sparse.astype(np.float64).T
    bound = np.abs(x).astype(np.float64) @ np.abs(sparse).astype(np.float64).T
    csr_want = [(exact, bound), (exact[:1], bound[:1])]
    stop = threading.Event()
    errors: list[str] = []
    counts = {"flips": 0, "calls": 0}

    def flip() -> None:
        while not stop.is_set():
            for level in levels:
                kernels.set_isa(level)
                counts["flips"] += 1

    def run() -> None:
        while not stop.is_set():
            for rows, want in zip((x, x[:1]), int8_want):
                got = kernels.linear(rows, int8)
                if not np.array_equal(got, want):
                    errors.append(f"int8 batch {len(rows)}: {np.sum(got != want)} outputs differ")
            for rows, (want, scale) in zip((x, x[:1]), csr_want):
                got = kernels.linear(rows, csr)
                if not np.all(np.abs(got - want) <= 1e-5 * (scale + 1.0)):
                    errors.append(f"csr batch {len(rows)}: outside tolerance")
            counts["calls"] += 4

    with backends.using(backend="c", isa=levels[-1]):
        threads = [threading.Thread(target=flip)] + [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert counts["flips"] > 0 and counts["calls"] > 0
