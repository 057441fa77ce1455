"""The kernels' thread pool seen from Python: forked, spawned and pool-executor children
run kernels after the parent did, concurrent callers, thread counts, and the thread
budget read per call. Every child has a timeout, so a hang fails instead of hanging."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import kernels
from kernels import backends

#: Encodings every child runs, and the shapes: large enough that the calls run in
#: parallel (above the kernels' serial cutoff).
ENCODINGS = (("int8", {}), ("csr", {"sparsity": 0.9}), ("dense", {}))
OUT, IN, BATCH = 512, 512, 16
CHILD_TIMEOUT = 300  # seconds; a Numba child compiles its kernels


def _weights(name: str, options: dict):
    rng = np.random.default_rng(sum(map(ord, name)))
    w = rng.standard_normal((OUT, IN)).astype(np.float32)
    sparsity = options.get("sparsity")
    if sparsity:
        w[rng.random(w.shape) < sparsity] = 0.0
    return kernels.encode(w, name)


def _inputs() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((BATCH, IN)).astype(np.float32)


def run_kernels(backend: str) -> list[np.ndarray]:
    """Every encoding's linear on the same inputs, on ``backend`` (child entry point)."""
    x = _inputs()
    with kernels.using(backend=backend):
        return [kernels.linear(x, _weights(name, options)) for name, options in ENCODINGS]


def _child_main(backend: str, queue) -> None:
    queue.put(run_kernels(backend))


def _backends() -> list:
    usable = kernels.available_backends()
    return [
        pytest.param(b, marks=pytest.mark.skipif(b not in usable, reason=f"no {b} backend"))
        for b in ("c", "numba")
    ]


def _assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """Our kernels bit for bit; dense within float tolerance: until the runtime's dense
    kernel is ours it may be NumPy's BLAS, whose sums depend on its own thread settings
    (a spawned child starts with the defaults)."""
    for (name, _), g, w in zip(ENCODINGS, got, want):
        if name == "dense":
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4, err_msg=name)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)


def _in_process(method: str, backend: str) -> list[np.ndarray]:
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    child = ctx.Process(target=_child_main, args=(backend, queue))
    child.start()
    try:
        return queue.get(timeout=CHILD_TIMEOUT)
    finally:
        child.join(timeout=10)
        if child.is_alive():  # hung: fail, and leave nothing running
            child.kill()
            child.join()


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_process_runs_kernels_after_the_parent_did(backend, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    want = run_kernels(backend)  # the parent's pool (or Numba's threads) now exist
    _assert_same(_in_process(method, backend), want)


@pytest.mark.parametrize("backend", _backends())
def test_a_process_pool_executor_runs_kernels_after_the_parent_did(backend):
    want = run_kernels(backend)
    with ProcessPoolExecutor(max_workers=2) as executor:
        futures = [executor.submit(run_kernels, backend) for _ in range(2)]
        for future in futures:
            _assert_same(future.result(timeout=CHILD_TIMEOUT), want)


@pytest.mark.skipif("c" not in kernels.available_backends(), reason="C kernel library not built")
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_fork_while_another_thread_runs_kernels_gives_a_working_child():
    want = run_kernels("c")
    x = _inputs()
    # our kernels only: OpenBLAS (NumPy's dense matmul) deadlocks when a fork happens
    # during one of its calls in another thread
    ours = [_weights(name, options) for name, options in ENCODINGS if name != "dense"]
    stop = threading.Event()

    def busy() -> None:
        with kernels.using(backend="c"):
            while not stop.is_set():
                for w in ours:
                    kernels.linear(x, w)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        for _ in range(3):
            _assert_same(_in_process("fork", "c"), want)
    finally:
        stop.set()
        thread.join()


@pytest.mark.skipif("c" not in kernels.available_backends(), reason="C kernel library not built")
def test_concurrent_calls_from_python_threads_equal_serial_results():
    want = run_kernels("c")
    x = _inputs()
    weights = [_weights(name, options) for name, options in ENCODINGS]
    failures: list[str] = []

    def call_many() -> None:
        with kernels.using(backend="c"):
            for _ in range(20):
                for (name, _), w, expected in zip(ENCODINGS, weights, want):
                    if not np.array_equal(kernels.linear(x, w), expected):
                        failures.append(name)

    threads = [threading.Thread(target=call_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@pytest.mark.parametrize("backend", _backends())
def test_results_do_not_depend_on_the_thread_count(backend):
    want = None
    for n in (1, 2, 3, 8):
        with kernels.using(threads=n):
            got = run_kernels(backend)
        if want is None:
            want = got
        else:
            _assert_same(got, want)


def test_the_thread_budget_follows_omp_num_threads_changed_at_runtime(monkeypatch):
    saved = backends._state["threads"]
    try:
        kernels.set_num_threads(0)
        for n in (3, 1, 2):
            monkeypatch.setenv("OMP_NUM_THREADS", str(n))
            assert kernels.get_num_threads() == n
            if "numba" in kernels.available_backends():
                import numba

                backends.apply_numba_threads()
                assert numba.get_num_threads() == min(n, numba.config.NUMBA_NUM_THREADS)
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert kernels.get_num_threads() == len(os.sched_getaffinity(0))
        kernels.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert kernels.get_num_threads() == 2  # an explicit count wins
    finally:
        kernels.set_num_threads(saved)


def test_a_model_run_keeps_workers_ready_and_works_without_the_c_library(monkeypatch):
    x = _inputs()
    w = _weights("int8", {})
    want = kernels.linear(x, w)
    with backends.model_run(), backends.model_run():  # nestable
        np.testing.assert_array_equal(kernels.linear(x, w), want)
    monkeypatch.setattr(backends, "_c", lambda: None)
    with backends.model_run():
        assert backends.get_num_threads() >= 1
