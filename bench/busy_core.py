"""How much each kernel slows down when another process busy-loops on one core, beside
ONNX Runtime on the same job: pyinfer int8, csr (90 % zeros) and dense against ONNX
Runtime's fp32 MatMul and its int8 (``quantize_dynamic``), a size x size linear layer at
each batch, on all cores. Each run measures every implementation alone, then with the
busy process, taking turns in blocks of calls; it prints the medians (ms) and the
slowdown (busy / alone), run after run, so that a stall in one run shows.

    python bench/busy_core.py --runs 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time


def spin() -> None:
    """The other process: a busy loop until it is terminated."""
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="alone/busy rounds")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--size", type=int, default=1024, help="weights are size x size")
    parser.add_argument("--seconds", type=float, default=0.5, help="timing per impl and state")
    args = parser.parse_args(argv)

    import numpy as np

    import kernels

    rng = np.random.default_rng(0)
    n = args.size
    w = rng.standard_normal((n, n)).astype(np.float32)
    sparse = w.copy()
    sparse[rng.random(w.shape) < 0.9] = 0.0
    threads = kernels.get_num_threads()
    print(f"# {n}x{n} linear, {threads} threads, medians in ms; slowdown = busy / alone")
    print("| batch | run | impl | alone | busy | slowdown |")
    print("|---:|---:|---|---:|---:|---:|")
    for batch in args.batches:
        impls = _impls(rng.standard_normal((batch, n)).astype(np.float32), w, sparse, threads)
        for run in range(1, args.runs + 1):
            alone = _medians(impls, args.seconds)
            busy = multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
            busy.start()
            try:
                time.sleep(0.2)  # the busy process is running before timing starts
                loaded = _medians(impls, args.seconds)
            finally:
                busy.terminate()
                busy.join()
            for name in impls:
                a, b = alone[name], loaded[name]
                print(f"| {batch} | {run} | {name} | {a:.4f} | {b:.4f} | {b / a:.2f} |")
            sys.stdout.flush()
    return 0


def _impls(x, w, sparse, threads: int) -> dict:
    """name -> a call of x through w (pyinfer int8, dense; csr on ``sparse``; ONNX Runtime
    fp32 and int8 dynamic)."""
    import numpy as np

    import kernels
    from pyinfer.bench.baselines import onnx_session
    from pyinfer.bench.suites.quant import onnxruntime_int8_session

    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    impls = {}
    for name, weight in (("int8", w), ("csr", sparse), ("dense", w)):
        enc = kernels.encode(weight, name)
        impls[f"pyinfer {name}"] = lambda enc=enc: kernels.linear(x, enc, out=out)
    fp32 = onnx_session(_matmul_nodes, [w], x, threads)
    int8 = onnxruntime_int8_session([w], x, threads)
    impls["onnxruntime fp32"] = lambda: fp32.run(None, {"X": x})
    impls["onnxruntime int8"] = lambda: int8.run(None, {"X": x})
    return impls


def _matmul_nodes(i, w):
    import numpy as np
    from onnx import helper, numpy_helper

    init = numpy_helper.from_array(np.ascontiguousarray(w.T), f"W{i}")
    return [helper.make_node("MatMul", ["X", f"W{i}"], [f"Y{i}"])], [init], f"Y{i}"


def _medians(impls: dict, seconds: float, block: float = 0.05) -> dict:
    """Median ms per call of each impl, taking turns in blocks of ``block`` seconds (the
    first calls of a block not counted: another library's threads may still be spinning
    after its own block)."""
    times = {name: [] for name in impls}
    end = time.perf_counter() + seconds * len(impls)
    while time.perf_counter() < end:
        for name, call in impls.items():
            for _ in range(3):
                call()
            stop = time.perf_counter() + block
            while (t0 := time.perf_counter()) < stop:
                call()
                times[name].append(time.perf_counter() - t0)
    return {name: 1000.0 * sorted(t)[len(t) // 2] for name, t in times.items()}


if __name__ == "__main__":
    sys.exit(main())
