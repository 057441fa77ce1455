"""The advisor against every single-encoding recipe (``pyinfer.bench.suites.advised``):
on digits in the quick set; on the converter's Fashion-MNIST MLP and CNN and the
pretrained MNIST CNN in the slow set, which prints the comparison at batch 1 and 64
(minutes: it runs when PYINFER_BENCH_ADVISED=1, e.g. ``PYINFER_BENCH_ADVISED=1 python -m
pytest -s -m slow tests/test_bench_advised.py``). Held-out accuracy is asserted (the
budget); speed is printed, never asserted."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pyinfer.bench.suites import advised
from tests.digits import digits_mlp

MAX_DROP = 0.01

#: The slow comparisons, each a minute or two on two cores: asked for, not run by default.
comparison = pytest.mark.skipif(
    os.environ.get("PYINFER_BENCH_ADVISED") != "1",
    reason="the advisor's comparisons take minutes: set PYINFER_BENCH_ADVISED=1",
)


def split(x: np.ndarray, y: np.ndarray, n: int, seed: int = 0):
    """A seeded random split: ``n`` calibration samples, the rest held out (some data
    sets are sorted by class)."""
    order = np.random.default_rng(seed).permutation(len(x))
    return (x[order[:n]], y[order[:n]]), (x[order[n:]], y[order[n:]])


def check(result: dict, title: str) -> None:
    print("\n" + advised.table(result, title))
    for batch, verdict in result["verdict"].items():
        assert verdict["meets"], f"batch {batch}: the advised model is outside the budget"
    names = {r["name"] for r in result["rows"]}
    assert {"dense", "advised", "int8 dynamic", "csr 90%"} <= names


def test_uniform_recipes_cover_the_registry():
    recipes = advised.uniform_recipes()
    from kernels import registry

    for name in registry.names():
        if name != "dense":
            assert any(k.startswith(name) for k in recipes), name
    assert "structured 25%" in recipes


def test_digits_comparison_runs_and_reports():
    model, _, x, y = digits_mlp()
    calibration, held_out = split(x, y, 225)
    result = advised.run(
        model, calibration, held_out, max_drop=0.02, batches=(1, 4), rounds=2, passes=1
    )
    text = advised.table(result, "digits")
    assert "advised" in text and "batch 4:" in text
    assert set(result["verdict"]) == {1, 4}
    for r in result["rows"]:
        assert r["meets"] == (r["drop"] <= 0.02 + 1e-12)
        assert r["latency_s"] > 0


@pytest.mark.slow
@comparison
def test_fashion_mlp():
    from tests.fashion import fashion_train, wide_fashion_mlp

    model, x, y = wide_fashion_mlp()
    x_train, y_train = fashion_train()  # the MLP trained on the first 30000
    calibration = (x_train[30000:32000].reshape(-1, 784), y_train[30000:32000])
    check(advised.run(model, calibration, (x, y), max_drop=MAX_DROP), "Fashion-MNIST MLP")


@pytest.mark.slow
@comparison
def test_fashion_cnn():
    from tests.fashion import fashion_cnn

    model, x, y = fashion_cnn()
    calibration, held_out = split(x, y, 2000)
    check(advised.run(model, calibration, held_out, max_drop=MAX_DROP), "Fashion-MNIST CNN")


@pytest.mark.slow
@comparison
def test_pretrained_mnist_cnn():
    torch = pytest.importorskip("torch")
    import pyinfer
    from tests.pretrained_mnist import load_cnn, mnist_5k

    x, y = mnist_5k()
    model = pyinfer.from_torch(load_cnn(), torch.from_numpy(x[:2]), dynamic=True)
    calibration, held_out = split(x, y, 2000)
    check(advised.run(model, calibration, held_out, max_drop=MAX_DROP), "pretrained MNIST CNN")


@pytest.mark.slow
@comparison
def test_digits_full():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    model, x_train, x_test, y_test = digits_mlp()
    x, y = load_digits(return_X_y=True)
    y_train = train_test_split(x, y, test_size=0.25, random_state=0)[2]
    result = advised.run(model, (x_train, y_train), (x_test, y_test), max_drop=MAX_DROP)
    check(result, "scikit-learn digits")
