"""The ``lowrank`` encoding: the truncated SVD and its rank rules, factors given directly,
the two-product fast path against the reference, grouped conv, files and compress.
Slow set: the Fashion-MNIST MLP 784-1024-1024-10 at a few ranks (accuracy and speed
reported)."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
import pyinfer
from kernels import registry
from kernels.encodings.lowrank import LowRankWeight, choose_rank, from_factors
from pyinfer.convert.compress import compress
from tests.oracle import assert_close

RNG = np.random.default_rng(0)
RTOL = registry.get("lowrank").rtol


def with_singular_values(values, rows=7, cols=5) -> np.ndarray:
    """A float64 matrix [rows, cols] with the given singular values."""
    q1, _ = np.linalg.qr(RNG.standard_normal((rows, len(values))))
    q2, _ = np.linalg.qr(RNG.standard_normal((cols, len(values))))
    return (q1 * np.asarray(values, np.float64)) @ q2.T


@pytest.mark.parametrize("energy, rank", [(0.5, 1), (0.53, 1), (0.54, 2), (0.9, 3), (1.0, 4)])
def test_rank_by_kept_energy(energy, rank):
    # squares 16, 9, 4, 1 of 30: the first r keep 0.533, 0.833, 0.967, 1
    w = with_singular_values([4, 3, 2, 1]).astype(np.float32)
    assert choose_rank(np.array([4.0, 3, 2, 1]), energy) == rank
    assert kernels.encode(w, "lowrank", energy=energy).rank == rank


def test_default_energy_is_ninety_percent():
    w = with_singular_values([4, 3, 2, 1]).astype(np.float32)
    assert kernels.encode(w, "lowrank").rank == 3


def test_given_rank_is_the_best_approximation_of_that_rank():
    s = np.array([5.0, 3.0, 2.0, 0.5, 0.25])
    w = with_singular_values(s, 9, 6).astype(np.float32)
    for r in (1, 2, 4):
        enc = kernels.encode(w, "lowrank", rank=r)
        assert enc.u.shape == (9, r) and enc.v.shape == (6, r) and enc.rank == r
        err = np.linalg.norm(enc.decode().astype(np.float64) - w)
        assert err == pytest.approx(np.sqrt((s[r:] ** 2).sum()), rel=1e-4)  # Eckart-Young
        # the singular values split evenly: both factors have the same column norms
        np.testing.assert_allclose(
            np.linalg.norm(enc.u, axis=0), np.linalg.norm(enc.v, axis=0), rtol=1e-4
        )
    full = kernels.encode(w, "lowrank", rank=100)  # capped at min(out, in)
    assert full.rank == 6
    np.testing.assert_allclose(full.decode(), w, atol=1e-5)


def test_all_zero_weights_keep_one_zero_rank():
    enc = kernels.encode(np.zeros((4, 3), np.float32), "lowrank")
    assert enc.rank == 1 and not enc.u.any() and not enc.v.any()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"rank": 0}, "rank must be a positive integer"),
        ({"rank": 2.0}, "rank must be a positive integer"),
        ({"rank": True}, "rank must be a positive integer"),
        ({"energy": 0.0}, r"energy must be a number in \(0, 1\]"),
        ({"energy": 1.5}, "energy"),
        ({"energy": "most"}, "energy"),
    ],
)
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        kernels.encode(np.ones((3, 3), np.float32), "lowrank", **options)


def test_non_finite_weights_raise():
    w = np.ones((3, 3), np.float32)
    w[1, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        kernels.encode(w, "lowrank")


def test_from_factors_builds_the_weight_they_multiply_to():
    u = RNG.standard_normal((10, 3)).astype(np.float32)
    v = RNG.standard_normal((12, 3)).astype(np.float32)
    w = from_factors(u, v)
    assert isinstance(w, LowRankWeight) and w.shape == (10, 12) and w.rank == 3
    np.testing.assert_array_equal(w.u, u)
    x = RNG.standard_normal((4, 12)).astype(np.float32)
    assert_close(kernels.linear(x, w), (x.astype(np.float64) @ v @ u.T.astype(np.float64)), RTOL)
    conv = from_factors(u, v, shape=(10, 3, 2, 2))
    assert conv.decode().shape == (10, 3, 2, 2)
    with pytest.raises(ValueError, match="same rank"):
        from_factors(u, v[:, :2])
    with pytest.raises(ValueError, match="do not fit the weight shape"):
        from_factors(u, v, shape=(10, 13))
    with pytest.raises(ValueError, match="2-D"):
        from_factors(u[0], v)


@pytest.mark.parametrize("backend", ["c", "numba", "numpy"])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_each_backend_matches_the_reference(backend, batch):
    if backend not in kernels.available_backends():
        pytest.skip(f"backend {backend} is not available here")
    w = kernels.encode(RNG.standard_normal((70, 130)).astype(np.float32), "lowrank", rank=9)
    x = RNG.standard_normal((batch, 130)).astype(np.float32)
    bias = RNG.standard_normal(70).astype(np.float32)
    want = registry.get("lowrank").reference_linear(x, w, bias, "relu6")
    with kernels.using(backend=backend):
        got = kernels.linear(x, w, bias, "relu6")
    assert_close(got, want, RTOL)


def test_c_path_runs_on_the_dense_kernels():
    if "c" not in kernels.available_backends():
        pytest.skip("C kernel library not built")
    info = kernels.cpu_info()
    serving = info["serving_detail"]["lowrank"]["linear"]
    assert serving["batch 1"] == f"c:{info['c_kernels']['dense_dot']}"
    assert serving["batch > 1"] == f"c:{info['c_kernels']['dense_gemm']}"
    assert info["serving"]["lowrank"]["conv2d"] == serving["batch > 1"]  # patch rows


def test_grouped_conv_slices_u_and_shares_v():
    # out == in·kh·kw / groups: every array has out rows, yet only u is per output row
    weight = RNG.standard_normal((8, 2, 2, 2)).astype(np.float32)
    enc = kernels.encode(weight, "lowrank", rank=3)
    assert enc.v.shape[0] == enc.out_features
    x = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
    bias = RNG.standard_normal(8).astype(np.float32)
    for backend in kernels.available_backends():
        with kernels.using(backend=backend):
            got = kernels.conv2d(x, enc, bias, groups=2, activation="relu")
        with kernels.using(backend="numpy"):
            want = kernels.conv2d(
                x, kernels.encode(enc.decode(), "dense"), bias, groups=2, activation="relu"
            )
        assert_close(got, want, 1e-5)


def test_file_round_trip(tmp_path):
    g = pyinfer.Graph()
    h = g.linear(
        g.input("x", (None, 20)),
        RNG.standard_normal((16, 20)),
        encoding="lowrank",
        rank=4,
        activation="relu",
        name="fc",
    )
    g.output(g.linear(h, RNG.standard_normal((3, 16)), name="head"))
    model = g.build()
    path = tmp_path / "lowrank.pinf"
    pyinfer.save(model, path)
    again = pyinfer.load(path)
    w = again.weights["fc.weight"]
    assert isinstance(w, LowRankWeight) and w.rank == 4
    np.testing.assert_array_equal(w.v, model.weights["fc.weight"].v)
    x = RNG.standard_normal((5, 20)).astype(np.float32)
    np.testing.assert_array_equal(again(x), model(x))


def test_compress_with_a_lowrank_recipe():
    g = pyinfer.Graph()
    h = g.linear(
        g.input("x", (None, 40)), RNG.standard_normal((30, 40)), activation="relu", name="fc1"
    )
    g.output(g.linear(h, RNG.standard_normal((3, 30)), name="head"))
    model = g.build()
    out = compress(
        model, {"default": {"encoding": "lowrank", "rank": 8}}, force=True, progress=False
    )
    assert [
        (d.encoding, out.weights[f"{d.layer}.weight"].rank) for d in out.compression.layers
    ] == [
        ("lowrank", 8),
        ("lowrank", 3),
    ]
    x = RNG.standard_normal((4, 40)).astype(np.float32)
    assert out(x).shape == (4, 3)


# ---------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.slow
def test_fashion_mnist_wide_mlp_at_a_few_ranks():
    """One-shot accuracy and speed (reported, never asserted) of fc1 and fc2 at rank r."""
    from tests.fashion import accuracy, report, wide_fashion_mlp

    model, x, labels = wide_fashion_mlp()
    base = accuracy(model, x, labels)
    recipe = {"layers": {"fc[12]": {"encoding": "lowrank", "rank": 256}}}
    full = compress(model, recipe, force=True, progress=False)
    variants = {}
    for rank in (32, 64, 128, 256):  # the first r columns of the factors: the rank-r encoding
        weights = dict(full.weights)
        for name in ("fc1.weight", "fc2.weight"):
            weights[name] = from_factors(weights[name].u[:, :rank], weights[name].v[:, :rank])
        variants[f"lowrank rank {rank}"] = pyinfer.Model(full.graph, weights, full.constants)
    report(model, variants, x, labels)
    assert accuracy(variants["lowrank rank 256"], x, labels) > base - 0.02
