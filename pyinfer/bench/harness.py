"""Benchmark machinery shared by every suite: timing, cold weights, machine context.

A *case* is one operation at one shape and batch; its *impls* (ours and the baselines)
are measured in the same run, one after the other. Each impl prepares a *round*: one
call on each of N distinct weights. With cold weights N is chosen so that the weights
of a round total at least ``cold_bytes`` (default: 4x the last-level cache, at least
128 MB) -- as in a real multi-layer model, weights come from memory, not cache. Time
per call is the median round time divided by N.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A prepared round: calling it runs one call per distinct weight.
Round = Callable[[], Any]

#: Seconds to sleep before timing each impl. After a call, idle worker threads of a
#: library keep spinning for a while (OpenBLAS: 2^28 cycles) and take cores from
#: whatever runs next, slowing it several-fold on a small machine. Sleeping lets them
#: block first.
SETTLE_S = 0.3

#: Passes over a case's impls: each impl's samples come from this many blocks spread over
#: the case's run, so that a burst of load from elsewhere on a shared machine (lasting a
#: second or two) skews a few samples of each impl, not all samples of one.
PASSES = 3


@dataclass
class Prepared:
    """What an impl's ``prepare`` returns."""

    run_round: Round
    calls: int  # calls per round (distinct weights cycled)
    weight_bytes: int  # bytes of one weight as this impl stores it
    note: str = ""  # what the report should say about this row (e.g. layers kept dense)


@dataclass
class Impl:
    """One implementation measured on a case.

    ``prepare(pool, x, cold_bytes)`` builds the weights it needs (from ``pool``) and
    returns a :class:`Prepared`. ``kind`` is "ours", "dense" (a dense fp32 baseline:
    the fastest of these is the reference of every ratio) or "peer" (another library's
    compressed path).
    """

    name: str
    kind: str
    prepare: Callable[[WeightPool, np.ndarray, int], Prepared]


@dataclass
class Case:
    """One operation at one shape: the impls to compare and how to make weights."""

    suite: str
    label: str
    batch: int
    make_weight: Callable[[np.random.Generator], np.ndarray]
    make_input: Callable[[np.random.Generator], np.ndarray]
    impls: list[Impl]
    flops: float = 0.0  # dense-equivalent flops of one call
    meta: dict = field(default_factory=dict)


@dataclass
class Result:
    """The measurement of one impl on one case."""

    suite: str
    case: str
    batch: int
    threads: int
    cold: bool
    impl: str
    kind: str
    median_ms: float
    p90_ms: float
    calls_per_round: int
    weight_bytes: int
    meta: dict = field(default_factory=dict)
    speedup_vs_dense: float | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class WeightPool:
    """Distinct dense source weights for one case, made on demand and shared by its impls.

    Encoded forms are cached per (impl key, index) so batches of one shape reuse them.
    """

    def __init__(self, make_weight: Callable[[np.random.Generator], np.ndarray], seed: int = 0):
        self._make = make_weight
        self._seed = seed
        self._dense: list[np.ndarray] = []
        self._cache: dict = {}

    def dense(self, i: int) -> np.ndarray:
        while len(self._dense) <= i:
            rng = np.random.default_rng(self._seed + len(self._dense))
            self._dense.append(self._make(rng))
        return self._dense[i]

    def cached(self, key, i: int, build: Callable[[np.ndarray], Any]):
        """``build(dense(i))``, computed once per key and index."""
        k = (key, i)
        if k not in self._cache:
            self._cache[k] = build(self.dense(i))
        return self._cache[k]

    def cycled(
        self, key, build: Callable[[np.ndarray], Any], nbytes: Callable[[Any], int], cold_bytes: int
    ) -> list:
        """As many built weights as it takes to total ``cold_bytes`` (at least one)."""
        first = self.cached(key, 0, build)
        count = max(1, math.ceil(cold_bytes / max(nbytes(first), 1))) if cold_bytes else 1
        return [self.cached(key, i, build) for i in range(count)]


def cycle_calls(fn: Callable[[Any], Any], weights: list) -> Round:
    """A round calling ``fn(w)`` once for each weight."""

    def run_round():
        for w in weights:
            fn(w)

    return run_round


@dataclass
class Timing:
    median_s: float
    p90_s: float
    rounds: int


def measure(
    rounds: dict[str, Round],
    *,
    min_time: float = 0.5,
    min_rounds: int = 5,
    max_rounds: int = 1000,
    warmup: int = 2,
    settle: float = SETTLE_S,
    passes: int = 1,
) -> dict[str, Timing]:
    """Time each round in blocks: sleep ``settle`` seconds, warm up, then repeat until it
    has run ``min_rounds`` times and for ``min_time`` seconds, both split over ``passes``
    blocks that take turns with the other rounds' (a, b, a, b, ...). A round's median and
    p90 are over the samples of all its blocks.

    NOTE: blocks, not call-by-call interleaving, and a pause before each: libraries keep
    their worker threads spinning for a while after a call (see ``SETTLE_S``), and on a
    small machine interleaved libraries would fight.
    """
    # each block's share of the bounds (rounded up)
    block_min, block_max = -(-min_rounds // passes), -(-max_rounds // passes)
    block_time = min_time / passes
    samples: dict[str, list[float]] = {name: [] for name in rounds}
    for p in range(passes):
        for name, run in rounds.items():
            time.sleep(settle)
            for _ in range(warmup if p == 0 else min(warmup, 1)):
                run()
            block: list[float] = []
            start = time.perf_counter()
            while len(block) < block_max and (
                len(block) < block_min or time.perf_counter() - start < block_time
            ):
                t0 = time.perf_counter()
                run()
                block.append(time.perf_counter() - t0)
            samples[name] += block
    return {
        name: Timing(statistics.median(s), float(np.percentile(s, 90)), len(s))
        for name, s in samples.items()
    }


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (0 when unknown)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            path = os.path.join(base, entry, "size")
            if os.path.exists(path):
                text = open(path).read().strip().upper()
                mult = {"K": 1024, "M": 1024**2}.get(text[-1], 1)
                best = max(best, int(text.rstrip("KM")) * mult)
    except OSError:
        pass
    return best


def default_cold_bytes() -> int:
    """4x the last-level cache, and never less than 128 MB."""
    return max(4 * last_level_cache_bytes(), 128 * 1024**2)


def memory_bandwidth_gbs(size_mb: int = 512, threads: int | None = None) -> float:
    """Read bandwidth in GB/s, measured with the C library's threaded streaming sum
    (NumPy's single-threaded sum when the library is not available)."""
    from kernels.backend_c import ffi as cffi_module

    a = np.ones(size_mb * 1024**2 // 4, np.float32)
    handle = cffi_module.library()
    if handle is not None:
        ffi, lib = handle
        ptr = ffi.cast("float *", a.ctypes.data)
        run = lambda: lib.pk_stream_sum_f32(ptr, a.size)  # noqa: E731
    else:
        run = lambda: np.add.reduce(a)  # noqa: E731
    t = measure({"read": run}, min_time=0.5, min_rounds=5)["read"]
    return a.nbytes / t.median_s / 1e9


def sgemm_peak_gflops() -> float:
    """Achieved float32 GFLOP/s of NumPy's BLAS on a cached 1024^3 product."""
    a = np.ones((1024, 1024), np.float32)
    out = np.empty_like(a)
    t = measure({"sgemm": lambda: np.matmul(a, a, out=out)}, min_time=0.5)["sgemm"]
    return 2 * 1024**3 / t.median_s / 1e9


def blas_info() -> list[dict]:
    """Which BLAS NumPy runs (threadpoolctl), for the report."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {
            k: v
            for k, v in info.items()
            if k in ("internal_api", "version", "num_threads", "architecture", "threading_layer")
        }
        for info in threadpool_info()
    ]


def set_threads(n: int) -> None:
    """Thread count for our kernels and every baseline that honours a global setting.

    torch only once imported: a suite that never uses torch runs in a process without it
    (``run_cases`` calls this again once a case's impls are prepared).
    """
    import kernels

    kernels.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def machine_context(measure_hardware: bool = True) -> dict:
    """Facts printed above every table and saved with the JSON."""
    import kernels

    info = kernels.cpu_info()
    ctx = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cores": os.cpu_count(),
        "isa": info.get("isa"),
        "cpu_features": info.get("cpu_features"),
        "kernels": info.get("serving"),
        "llc_bytes": last_level_cache_bytes(),
        "blas": blas_info(),
        "openblas_env": {
            k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
        },
    }
    if measure_hardware:
        ctx["bandwidth_gbs"] = memory_bandwidth_gbs()
        ctx["sgemm_gflops"] = sgemm_peak_gflops()
    return ctx


def _cpu_model() -> str:
    """The CPU's model name, with its family and model numbers where /proc/cpuinfo has
    them: a virtual machine's name ("AMD EPYC") alone does not tell generations apart."""
    fields: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first processor is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor()
    if "cpu family" in fields and "model" in fields:
        name += f", family {fields['cpu family']} model {fields['model']}"
    return name


def run_cases(
    cases: list[Case],
    *,
    threads: int,
    cold_bytes: int,
    min_time: float,
    progress: Callable[[str], None] | None = None,
    settle: float = SETTLE_S,
    passes: int = PASSES,
) -> list[Result]:
    """Measure every impl of every case; ratios against the fastest dense baseline.

    A case's impls take turns in ``passes`` blocks each, ``settle`` seconds of sleep before
    every block (see ``measure``).
    """
    results: list[Result] = []
    set_threads(threads)
    pool_key, pool = None, None
    for case in cases:
        if progress:
            progress(f"{case.suite}: {case.label} batch {case.batch} ({threads} thr)")
        if (case.suite, case.label) != pool_key:  # one shape's weights in memory at a time
            pool_key, pool = (case.suite, case.label), WeightPool(case.make_weight)
        x = case.make_input(np.random.default_rng(12345))
        rows, prepared = [], {}
        for impl in case.impls:
            row = _empty_row(case, impl, threads, cold_bytes)
            try:
                prepared[impl.name] = impl.prepare(pool, x, cold_bytes)
            except Exception as exc:  # noqa: BLE001 - one peer must not stop the run
                row.error = f"{type(exc).__name__}: {exc}"
            rows.append(row)
        set_threads(threads)  # again: an impl may have imported a library (torch) just now
        errors: dict[str, Exception] = {}
        rounds = {name: _guarded(name, p.run_round, errors) for name, p in prepared.items()}
        timings = measure(rounds, min_time=min_time, settle=settle, passes=passes)
        for row in rows:
            if row.error is not None:
                continue
            if row.impl in errors:
                exc = errors[row.impl]
                row.error = f"{type(exc).__name__}: {exc}"
                continue
            p, t = prepared[row.impl], timings[row.impl]
            row.median_ms, row.p90_ms = 1e3 * t.median_s / p.calls, 1e3 * t.p90_s / p.calls
            row.calls_per_round, row.weight_bytes = p.calls, p.weight_bytes
            if p.note:
                row.meta = {**row.meta, "note": p.note}
        dense = [r.median_ms for r in rows if r.kind == "dense" and r.error is None]
        if dense:
            for r in rows:
                if r.error is None:
                    r.speedup_vs_dense = min(dense) / r.median_ms
        results.extend(rows)
    return results


def _guarded(name: str, run: Round, errors: dict[str, Exception]) -> Round:
    """``run``, but its first exception is kept in ``errors`` (and later calls do nothing):
    a missing or broken peer becomes an error row and does not stop the run."""

    def call():
        if name in errors:
            return
        try:
            run()
        except Exception as exc:  # noqa: BLE001
            errors[name] = exc

    return call


def _empty_row(case: Case, impl: Impl, threads: int, cold_bytes: int) -> Result:
    return Result(
        case.suite,
        case.label,
        case.batch,
        threads,
        cold_bytes > 0,
        impl.name,
        impl.kind,
        math.nan,
        math.nan,
        0,
        0,
        dict(case.meta),
    )


def format_table(results: list[Result], bandwidth_gbs: float | None = None) -> str:
    """A Markdown table: one row per (case, batch, threads, impl)."""
    head = "| case | batch | thr | weights | impl | median ms | p90 ms | vs fastest dense |"
    sep = "|---|---:|---:|---|---|---:|---:|---:|"
    if bandwidth_gbs:
        head += " roofline |"
        sep += "---:|"
    lines = [head, sep]
    for r in results:
        if r.error:
            line = (
                f"| {r.case} | {r.batch} | {r.threads} | {'cold' if r.cold else 'cached'} | "
                f"{r.impl} | n/a | n/a | {r.error[:60]} |"
            )
            if bandwidth_gbs:
                line += " |"
            lines.append(line)
            continue
        speed = f"{r.speedup_vs_dense:.2f}x" if r.speedup_vs_dense else ""
        line = (
            f"| {r.case} | {r.batch} | {r.threads} | {'cold' if r.cold else 'cached'} | "
            f"{r.impl} | {r.median_ms:.4g} | {r.p90_ms:.4g} | {speed} |"
        )
        if bandwidth_gbs:
            roof = ""
            if r.batch == 1 and r.weight_bytes and r.meta.get("roofline", True):
                achieved = r.weight_bytes / (r.median_ms * 1e-3) / 1e9
                roof = f"{100 * achieved / bandwidth_gbs:.0f}%"
            line += f" {roof} |"
        lines.append(line)
    return "\n".join(lines)
