"""Fashion-MNIST models for the slow set: the MLP 784-1024-1024-10 trained here (once per
test session) and the shipped demo CNN, with the test set; the training set (for
fine-tuning); accuracy, and a report of accuracy and latency against the dense model
(printed, never asserted)."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import pyinfer
from pyinfer.convert.measure import time_calls

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _needs_fashion_mnist():
    if not os.path.exists(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST} (dataset-fashion-mnist)")


@functools.cache
def wide_fashion_mlp():
    """(model, test images [N, 784], labels): the MLP 784-1024-1024-10 trained here with
    PyTorch (one epoch on half the training set: the slow set stays short), as a dense
    pyinfer model."""
    torch = pytest.importorskip("torch", reason="training the wide MLP needs PyTorch")
    from scripts.make_demo_model import load_fashion_mnist, mlp_graph, train

    _needs_fashion_mnist()
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )
    x = torch.from_numpy(x_train[:30000].reshape(-1, 784).astype(np.float32) / 255)
    y = torch.from_numpy(y_train[:30000].astype(np.int64))
    xt = torch.from_numpy(x_test.reshape(-1, 784).astype(np.float32) / 255)
    train(net, x, y, xt, torch.from_numpy(y_test.astype(np.int64)), 1, 1e-3, "wide mlp")
    return mlp_graph(net).build(), xt.numpy(), y_test.astype(np.int64)  # fc1, fc2, head


@functools.cache
def fashion_train() -> tuple[np.ndarray, np.ndarray]:
    """(training images float32 [60000, 28, 28] in [0, 1], labels int64): loaded once per
    test session. The wide MLP was trained on the first 30000; the demo CNN on all."""
    from scripts.make_demo_model import load_fashion_mnist

    _needs_fashion_mnist()
    x_train, y_train, *_ = load_fashion_mnist()
    return x_train.astype(np.float32) / 255, y_train.astype(np.int64)


def fashion_cnn():
    """(the demo CNN, test images [N, 1, 28, 28], labels)."""
    from pyinfer.commands.demo import demo_path

    _needs_fashion_mnist()
    from scripts.make_demo_model import load_fashion_mnist

    *_, x_test, y_test = load_fashion_mnist()
    model = pyinfer.load(demo_path("fashion_cnn.pinf"))
    return model, x_test[:, None].astype(np.float32) / 255, y_test.astype(np.int64)


def accuracy(model, x, labels) -> float:
    return float(
        np.mean(
            np.concatenate([model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
            == labels
        )
    )


def report(base, variants: dict, x, labels) -> list[str]:
    """Print accuracy and latency at batch 1 and 64 of ``base`` and each variant (name ->
    model), timed interleaved with the base so both run under the same load. Reported,
    never asserted."""
    base_acc = accuracy(base, x, labels)
    times = {}
    for batch in (1, 64):
        rows = np.ascontiguousarray(x[:batch])
        models = [base, *variants.values()]
        times[batch] = time_calls([lambda m=m, r=rows: m(r) for m in models], rounds=10)
    lines = [
        f"dense: accuracy {base_acc:.2%}; "
        + ", ".join(f"batch {b}: {1e6 * t[0]:.0f} us" for b, t in times.items())
    ]
    for i, (name, model) in enumerate(variants.items(), 1):
        acc = accuracy(model, x, labels)
        speed = ", ".join(
            f"batch {b}: {1e6 * t[i]:.0f} us ({t[0] / t[i]:.2f}x dense)" for b, t in times.items()
        )
        lines.append(f"{name}: accuracy {acc:.2%} ({100 * (acc - base_acc):+.2f} points); {speed}")
    print("\n".join(lines))
    return lines
