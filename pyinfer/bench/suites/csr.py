"""Sparse linear (every registry row storing only nonzeros: csr) vs dense fp32 (NumPy,
ONNX Runtime, torch) and vs sparse peers (scipy.sparse CSR, torch CSR), across sparsity
levels."""

from __future__ import annotations

import numpy as np

from pyinfer.bench.baselines import _installed, dense_baselines, ours, sparse_rows
from pyinfer.bench.harness import Case, Impl, Prepared, cycle_calls


def sparse_weight(out_features: int, in_features: int, sparsity: float):
    """A maker of float32 Gaussian weights with a fraction ``sparsity`` of exact zeros."""

    def make(rng: np.random.Generator) -> np.ndarray:
        w = rng.standard_normal((out_features, in_features), dtype=np.float32)
        w[rng.random((out_features, in_features), dtype=np.float32) < sparsity] = 0
        return w

    return make


def scipy_csr() -> Impl:
    def prepare(pool, x, cold_bytes):
        import scipy.sparse as sp

        weights = pool.cycled(
            "scipy-csr",
            lambda d: sp.csr_matrix(d),
            lambda w: w.data.nbytes + w.indices.nbytes + w.indptr.nbytes,
            cold_bytes,
        )
        xt = np.ascontiguousarray(x.T)
        w0 = weights[0]
        return Prepared(
            cycle_calls(lambda w: w @ xt, weights),
            len(weights),
            w0.data.nbytes + w0.indices.nbytes + w0.indptr.nbytes,
        )

    return Impl("scipy csr", "peer", prepare)


def torch_csr() -> Impl:
    def prepare(pool, x, cold_bytes):
        import torch

        def build(d):
            return torch.from_numpy(d).to_sparse_csr()

        def nbytes(w):
            return sum(
                t.numel() * t.element_size()
                for t in (w.values(), w.col_indices(), w.crow_indices())
            )

        weights = pool.cycled("torch-csr", build, nbytes, cold_bytes)
        xt = torch.from_numpy(np.ascontiguousarray(x.T))

        def call(w):
            with torch.inference_mode():
                torch.mm(w, xt)

        return Prepared(cycle_calls(call, weights), len(weights), nbytes(weights[0]))

    return Impl("torch csr", "peer", prepare)


def cases(quick: bool = False) -> list[Case]:
    shapes = [(1024, 1024)] if quick else [(4096, 4096), (4096, 1024)]
    sparsities = [0.9] if quick else [0.7, 0.9, 0.95]
    batches = [1, 8] if quick else [1, 8, 64]
    peers = [scipy_csr()] + ([torch_csr()] if _installed("torch") else [])
    mine = [ours(name) for name in sparse_rows()]
    out = []
    for o, k in shapes:
        for s in sparsities:
            for b in batches:
                out.append(
                    Case(
                        suite="csr",
                        label=f"{o}x{k} sparsity {s:.0%}",
                        batch=b,
                        make_weight=sparse_weight(o, k, s),
                        make_input=lambda rng, b=b, k=k: rng.standard_normal((b, k), np.float32),
                        impls=[*mine, *dense_baselines(), *peers],
                        flops=2.0 * o * k * b,
                        meta={"sparsity": s, "shape": [o, k]},
                    )
                )
    return out


def plot(results, path) -> None:
    """Speedup of our csr over the fastest dense baseline against sparsity, per batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ours_rows = [r for r in results if r.kind == "ours" and r.speedup_vs_dense]
    keys = sorted({(tuple(r.meta["shape"]), r.batch, r.threads, r.cold) for r in ours_rows})
    for shape, batch, threads, cold in keys:
        rows = sorted(
            (
                r
                for r in ours_rows
                if (tuple(r.meta["shape"]), r.batch, r.threads, r.cold)
                == (shape, batch, threads, cold)
            ),
            key=lambda r: r.meta["sparsity"],
        )
        ax.plot(
            [100 * r.meta["sparsity"] for r in rows],
            [r.speedup_vs_dense for r in rows],
            marker="o",
            label=f"{shape[0]}x{shape[1]} b{batch} {threads}thr {'cold' if cold else 'cached'}",
        )
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("speedup vs fastest dense fp32")
    ax.set_title("pyinfer csr linear")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
