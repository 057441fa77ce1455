"""Linear on the registry rows offering a choice of ``activations`` (binary: 1-bit, pow2:
sign·2^-e), each of their test option sets, vs dense fp32 (NumPy, ONNX Runtime, torch)
and vs our rows with int8 activations (int8, int4). Each of our impls is labelled with
the relative L2 error of its matmul against fp32 on Gaussian data (``relL2``).

Cold runs cycle distinct copies of one encoded weight (the bytes are distinct memory,
so they come from DRAM; encoding one 4096x4096 pow2 weight takes seconds, so the copies
are not re-encoded)."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np

import kernels
from kernels import registry
from pyinfer.bench.baselines import dense_baselines, ours, rows_with_option
from pyinfer.bench.harness import Case, Impl, Prepared, WeightPool, cycle_calls

#: Largest batch at which float activations are measured, by encoding (others: every
#: batch). These paths are kernels for small batches (binary float keeps one table per
#: row of x); larger batches would cost minutes of benchmark time and say little.
FLOAT_ACTIVATIONS_MAX_BATCH = {"binary": 1, "pow2": 64}


def option_sets() -> list[tuple[str, dict]]:
    """(encoding, options) of the impls this suite is about, in table order."""
    return [
        (name, dict(opts))
        for name in rows_with_option("activations")
        for opts in registry.get(name).test_options
    ]


def measured_at(encoding: str, options: dict, batch: int) -> bool:
    """Is this impl measured at ``batch`` (see ``FLOAT_ACTIVATIONS_MAX_BATCH``)?"""
    if options.get("activations") != "float":
        return True
    return batch <= FLOAT_ACTIVATIONS_MAX_BATCH.get(encoding, batch)


def gaussian_weight(out_features: int, in_features: int):
    """A maker of float32 Gaussian weights [out, in]."""

    def make(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((out_features, in_features), dtype=np.float32)

    return make


@cache
def matmul_error(encoding: str, options: tuple, size: int = 1024, batch: int = 64) -> float:
    """||x @ decode(W)ᵀ path − x @ Wᵀ|| / ||x @ Wᵀ|| on Gaussian W [size, size], x [batch, size],
    with the encoding's own activation treatment (through ``kernels.linear``)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((size, size), dtype=np.float32)
    x = rng.standard_normal((batch, size), dtype=np.float32)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    got = kernels.linear(x, kernels.encode(w, encoding, **dict(options)))
    return float(np.linalg.norm(got - exact) / np.linalg.norm(exact))


def ours_copies(encoding: str, **options) -> Impl:
    """Our ``kernels.linear``; cold rounds cycle distinct copies of one encoded weight."""
    key = ("copies", encoding, tuple(sorted(options.items())))

    def prepare(pool: WeightPool, x: np.ndarray, cold_bytes: int) -> Prepared:
        first = pool.cached(key, 0, lambda d: kernels.encode(d, encoding, **options))
        count = max(1, -(-cold_bytes // first.nbytes)) if cold_bytes else 1

        def copy(w):
            return dataclasses.replace(w, **{k: v.copy() for k, v in w.arrays().items()})

        weights = [first] + [copy(first) for _ in range(count - 1)]
        out = np.empty((x.shape[0], first.out_features), np.float32)
        run = cycle_calls(lambda w: kernels.linear(x, w, out=out), weights)
        return Prepared(run, len(weights), first.nbytes)

    err = matmul_error(encoding, tuple(sorted(options.items())))
    opts = "".join(f" {v}" for v in options.values())
    return Impl(f"pyinfer {encoding}{opts} (relL2 {err:.3f})", "ours", prepare)


def others() -> list[Impl]:
    """Our rows with int8 activations, default options (encoded per distinct weight, as
    in the quant suite)."""
    found = []
    for name in rows_with_option("activation_scale"):
        err = matmul_error(name, ())
        found.append(ours(name, label=f"pyinfer {name} (relL2 {err:.3f})"))
    return found


def cases(quick: bool = False) -> list[Case]:
    size = 1024 if quick else 4096
    batches = [1, 64] if quick else [1, 64, 256]
    out = []
    for b in batches:
        mine = [ours_copies(e, **o) for e, o in option_sets() if measured_at(e, o, b)]
        out.append(
            Case(
                suite="bitwise",
                label=f"{size}x{size}",
                batch=b,
                make_weight=gaussian_weight(size, size),
                make_input=lambda rng, b=b, k=size: rng.standard_normal((b, k), np.float32),
                impls=[*mine, *others(), *dense_baselines()],
                flops=2.0 * size * size * b,
                meta={"shape": [size, size]},
            )
        )
    return out


def plot(results, path) -> None:
    """Speedup over the fastest dense fp32 baseline per impl and batch (cold, most threads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.error is None and r.speedup_vs_dense]
    if not ok:
        return
    threads = max(r.threads for r in ok)
    cold = any(r.cold for r in ok)
    ok = [r for r in ok if r.threads == threads and r.cold == cold]
    batches = sorted({r.batch for r in ok})
    impls = list(dict.fromkeys(r.impl for r in ok))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(impls), 1)
    for i, impl in enumerate(impls):
        vals = [
            next((r.speedup_vs_dense for r in ok if r.impl == impl and r.batch == b), 0)
            for b in batches
        ]
        ax.bar(np.arange(len(batches)) + i * width, vals, width, label=impl)
    ax.set_xticks(np.arange(len(batches)) + 0.4 - width / 2)
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("speedup vs fastest dense fp32")
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_title(f"binary / pow2, {threads} thr, {'cold' if cold else 'cached'}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
