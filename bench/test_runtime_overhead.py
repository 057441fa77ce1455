"""Runtime overhead and load time, measured (never asserted).

Overhead: a model of 50 tiny layers (Linear 16->16 + Relu) at batch 1, ``model(x)``
beside the sum of its raw kernel calls (the registry kernel on preallocated buffers, the
cheapest way to run the same layers). Conv against linear: three int8 3x3 convs 8->8
channels on 8x8 (padding 1) beside three int8 Linear 192->192, the same multiply-adds,
at batch 1. Load: ``pyinfer.load`` of a ~500 MB file, time and resident memory before
the first call, in a fresh process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 -m pytest bench/test_runtime_overhead.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/test_runtime_overhead.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kernels  # noqa: E402
import pyinfer  # noqa: E402
from kernels import backends  # noqa: E402

LAYERS, WIDTH = 50, 16


def tiny_mlp(encoding: str, layers: int = LAYERS, width: int = WIDTH) -> pyinfer.Model:
    """``layers`` x (Linear width->width + Relu); the planner fuses each Relu."""
    rng = np.random.default_rng(0)
    g = pyinfer.Graph()
    h = g.input("x", (None, width))
    for _ in range(layers):
        w = rng.standard_normal((width, width)).astype(np.float32) / 4
        w[rng.random(w.shape) < 0.5] = 0
        h = g.node("Relu", g.linear(h, w, rng.standard_normal(width) / 4, encoding=encoding))
    g.output(h)
    return g.build()


def raw_calls(model: pyinfer.Model):
    """The same layers as bare kernel calls on preallocated buffers: the floor."""
    layers = []
    for node in model.planned_nodes:
        w, b = node.static[1], node.static[2]
        _, kernel = backends.resolve("linear", w.encoding)
        layers.append((kernel, w, b, node.attrs["activation"], np.empty((1, WIDTH), np.float32)))

    def run(x):
        for kernel, w, b, act, out in layers:
            kernel(x, w, b, act, out)
            x = out
        return x

    return run


def measure_overhead(encoding: str, rounds: int = 300, trials: int = 15) -> dict:
    """Microseconds per call of model(x) and of the raw kernels, measured interleaved.

    Kernels run on one thread (the question is the Python cost around them). Both wall
    time and the calling thread's CPU time are reported (medians over ``trials``); the
    CPU time is less disturbed when other processes share the machine.
    """
    kernels.set_num_threads(1)
    model = tiny_mlp(encoding)
    raw = raw_calls(model)
    x = np.random.default_rng(1).standard_normal((1, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(model(x), raw(x), rtol=1e-5, atol=1e-6)
    result = {"encoding": encoding}
    for clock in ("wall", "cpu"):
        now = time.perf_counter if clock == "wall" else time.thread_time
        times = {"model": [], "raw": []}
        for _ in range(trials):
            for name, fn in (("model", model), ("raw", raw)):
                t0 = now()
                for _ in range(rounds):
                    fn(x)
                times[name].append((now() - t0) / rounds * 1e6)
        model_us, raw_us = float(np.median(times["model"])), float(np.median(times["raw"]))
        result[clock] = {
            "model_us": model_us,
            "raw_us": raw_us,
            "overhead_per_layer_us": (model_us - raw_us) / LAYERS,
        }
    return result


def conv_and_linear_models(encoding: str = "int8") -> tuple[pyinfer.Model, pyinfer.Model]:
    """Three 3x3 convs 8->8 on 8x8 (padding 1) and three Linear 192->192, each + Relu:
    36,864 multiply-adds per layer in both."""
    rng = np.random.default_rng(0)
    conv = pyinfer.Graph()
    h = conv.input("x", (None, 8, 8, 8))
    for _ in range(3):
        w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 8
        h = conv.conv2d(h, w, rng.standard_normal(8), padding=1, encoding=encoding)
        h = conv.node("Relu", h)
    conv.output(h)
    linear = pyinfer.Graph()
    h = linear.input("x", (None, 192))
    for _ in range(3):
        w = rng.standard_normal((192, 192)).astype(np.float32) / 14
        h = linear.node("Relu", linear.linear(h, w, rng.standard_normal(192), encoding=encoding))
    linear.output(h)
    return conv.build(), linear.build()


def measure_conv_vs_linear(
    encoding: str = "int8", rounds: int = 50, trials: int = 101, clock: str = "cpu"
) -> dict:
    """Microseconds per call (medians, one kernel thread) of the three-conv and the
    three-linear model at batch 1, measured alternately; ``clock`` "cpu" (the calling
    thread's CPU time) or "wall"."""
    now = time.perf_counter if clock == "wall" else time.thread_time
    kernels.set_num_threads(1)
    conv, linear = conv_and_linear_models(encoding)
    rng = np.random.default_rng(1)
    inputs = {
        "conv": (conv, rng.standard_normal((1, 8, 8, 8)).astype(np.float32)),
        "linear": (linear, rng.standard_normal((1, 192)).astype(np.float32)),
    }
    times = {name: [] for name in inputs}
    for _ in range(trials):
        for name, (model, x) in inputs.items():
            t0 = now()
            for _ in range(rounds):
                model(x)
            times[name].append((now() - t0) / rounds * 1e6)
    conv_us, linear_us = float(np.median(times["conv"])), float(np.median(times["linear"]))
    return {"conv_us": conv_us, "linear_us": linear_us, "ratio": conv_us / linear_us}


def write_big_model(path: str, megabytes: int = 500) -> int:
    """A dense MLP of about ``megabytes`` MB; returns the file size."""
    rows, cols = 4096, 3200  # 52.4 MB per layer
    n = max(1, round(megabytes * 1e6 / (rows * cols * 4)))
    rng = np.random.default_rng(0)
    down = rng.standard_normal((rows, cols)).astype(np.float32)
    up = np.ascontiguousarray(down.T)
    g = pyinfer.Graph()
    h = g.input("x", (None, cols))
    for i in range(n):
        h = g.linear(h, down if i % 2 == 0 else up, name=f"fc{i}")
    g.output(h)
    pyinfer.save(g, path)
    return os.path.getsize(path)


_CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
import numpy as np, pyinfer, kernels
kernels.backends.resolve("linear", "dense")  # imports done before measuring

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

before = rss_mb()
t0 = time.perf_counter()
model = pyinfer.load({path!r})
ms = (time.perf_counter() - t0) * 1e3
print(ms, rss_mb() - before, rss_mb())
"""


def measure_load(path: str, runs: int = 7) -> dict:
    """Median load time (ms) and resident-memory growth (MB) over fresh processes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = textwrap.dedent(_CHILD.format(root=root, path=path))
    ms, mb, total = [], [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, check=True
        ).stdout.split()
        ms.append(float(out[0]))
        mb.append(float(out[1]))
        total.append(float(out[2]))
    return {
        "file_mb": os.path.getsize(path) / 1e6,
        "load_ms": float(np.median(ms)),
        "rss_mb": float(np.median(mb)),
        "process_rss_mb": float(np.median(total)),
    }


# ---------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module", params=["dense", "csr"])
def mlp(request):
    kernels.set_num_threads(1)
    model = tiny_mlp(request.param)
    return model, raw_calls(model), np.ones((1, WIDTH), np.float32)


def test_model_call(benchmark, mlp):
    model, _, x = mlp
    benchmark.group = "runtime overhead: 50 x Linear 16->16 + Relu, batch 1"
    benchmark(model, x)


def test_raw_kernel_calls(benchmark, mlp):
    _, raw, x = mlp
    benchmark.group = "runtime overhead: 50 x Linear 16->16 + Relu, batch 1"
    benchmark(raw, x)


@pytest.fixture(scope="module")
def conv_and_linear():
    kernels.set_num_threads(1)
    return conv_and_linear_models()


def test_three_int8_convs(benchmark, conv_and_linear):
    benchmark.group = "3 x int8 layers of 36,864 multiply-adds, batch 1"
    benchmark(conv_and_linear[0], np.ones((1, 8, 8, 8), np.float32))


def test_three_int8_linears(benchmark, conv_and_linear):
    benchmark.group = "3 x int8 layers of 36,864 multiply-adds, batch 1"
    benchmark(conv_and_linear[1], np.ones((1, 192), np.float32))


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("load") / "big.pinf")
    write_big_model(path)
    return path


def test_load_500mb(benchmark, big_file):
    benchmark.group = "load"
    benchmark.extra_info.update(measure_load(big_file, runs=3))
    benchmark(pyinfer.load, big_file)


if __name__ == "__main__":
    print(f"backend: {backends.get_backend()}, available: {backends.available_backends()}")
    print(f"load average: {os.getloadavg()}")
    for enc in ("dense", "csr"):
        r = measure_overhead(enc)
        for clock in ("wall", "cpu"):
            c = r[clock]
            print(
                f"{enc:6s} 50 x Linear16+Relu batch 1 ({clock:4s} time): model(x) "
                f"{c['model_us']:.1f} us, raw kernels {c['raw_us']:.1f} us -> overhead "
                f"{c['overhead_per_layer_us']:.2f} us/layer"
            )
    for clock in ("wall", "cpu"):
        r = measure_conv_vs_linear(clock=clock)
        print(
            f"int8 batch 1 ({clock:4s} time): 3 x conv 3x3 8->8 on 8x8 {r['conv_us']:.1f} us, "
            f"3 x Linear 192->192 {r['linear_us']:.1f} us -> conv / linear {r['ratio']:.2f}"
        )
    with tempfile.TemporaryDirectory(dir=os.environ.get("PINF_BENCH_DIR")) as d:
        path = os.path.join(d, "big.pinf")
        t0 = time.perf_counter()
        size = write_big_model(path)
        print(f"wrote {size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
        r = measure_load(path)
        print(
            f"load {r['file_mb']:.0f} MB: median {r['load_ms']:.1f} ms, resident memory "
            f"+{r['rss_mb']:.1f} MB before the first call (process total "
            f"{r['process_rss_mb']:.0f} MB with Python, NumPy and kernels imported; "
            "fresh process, page cache warm)"
        )
