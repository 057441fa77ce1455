"""``pyinfer demo`` and the data it ships; Fashion-MNIST end to end (slow set)."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

import pyinfer
from pyinfer.cli import main
from pyinfer.commands.demo import demo_path, load_test_images
from pyinfer.convert.compress import compress

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def test_shipped_files_are_small_and_real():
    names = ["fashion_mlp.pinf", "fashion_cnn.pinf", "fashion_test.npz"]
    total = sum(os.path.getsize(demo_path(n)) for n in names)
    assert total <= 5 * 2**20
    images, labels = load_test_images()
    assert images.shape == (2000, 28, 28) and labels.shape == (2000,)
    assert 0 <= images.min() and images.max() <= 1 and set(np.unique(labels)) == set(range(10))
    mlp = pyinfer.load(demo_path("fashion_mlp.pinf"))
    cnn = pyinfer.load(demo_path("fashion_cnn.pinf"))
    assert np.mean(mlp(images.reshape(-1, 784)).argmax(1) == labels) > 0.85
    assert np.mean(cnn(images[:500, None]).argmax(1) == labels[:500]) > 0.85


def test_pyproject_ships_the_demo_files():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    assert 'pyinfer = ["demo/*.pinf", "demo/*.npz"]' in text


def test_demo_quick_prints_the_table(capsys):
    rc = main(["demo", "--quick", "--models", "mlp", "--variants", "int8", "csr 50%", "mixed"])
    assert rc == 0
    out = capsys.readouterr().out
    for word in ("mlp:", "variant", "accuracy", "speed-up", "dense", "int8", "csr 50%", "mixed"):
        assert word in out
    assert "cnn:" not in out


def test_demo_plot_and_json(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, js = tmp_path / "d.png", tmp_path / "d.json"
    args = ["demo", "--quick", "--samples", "50", "--variants", "int4", "--plot", str(png)]
    assert main([*args, "--json", str(js)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    import json

    saved = json.loads(js.read_text())
    assert set(saved) == {"mlp", "cnn"} and set(saved["cnn"]) == {"dense", "int4"}
    assert saved["mlp"]["int4"]["total"]["samples"] == 50


def test_demo_help_names_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--models", "--variants", "--plot", "--quick", "--samples", "--batch"):
        assert option in out


@pytest.mark.slow
def test_demo_full_run(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "mlp:" in out and "cnn:" in out and "csr 90%" in out


def _fashion_test_set():
    if not os.path.exists(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST} (dataset-fashion-mnist)")

    def read(name):
        with gzip.open(os.path.join(FASHION_MNIST, name)) as f:
            data = f.read()
        ndim = data[3]
        dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)

    images = read("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255
    return images, read("t10k-labels-idx1-ubyte.gz").astype(np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_fashion_mnist_int8_and_int4_within_half_a_point(model_name):
    images, labels = _fashion_test_set()
    x = images.reshape(-1, 784) if model_name == "mlp" else images[:, None]
    model = pyinfer.load(demo_path(f"fashion_{model_name}.pinf"))

    def acc(m):
        return float(np.mean(m(x).argmax(1) == labels))

    base = acc(model)
    assert base > 0.88
    for encoding in ("int8", "int4"):
        compressed = compress(model, encoding, force=True, progress=False)
        assert abs(acc(compressed) - base) <= 0.005, encoding


@pytest.mark.slow
def test_fashion_mnist_wide_mlp_trained_here_int8_and_int4_within_half_a_point():
    """The MLP 784-1024-1024-10 the converter's targets name, trained here with PyTorch."""
    torch = pytest.importorskip("torch", reason="training the wide MLP needs PyTorch")
    from scripts.make_demo_model import load_fashion_mnist, train

    _fashion_test_set()  # skips when the dataset is absent
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )
    x = torch.from_numpy(x_train.reshape(-1, 784).astype(np.float32) / 255)
    xt = torch.from_numpy(x_test.reshape(-1, 784).astype(np.float32) / 255)
    y, yt = torch.from_numpy(y_train.astype(np.int64)), torch.from_numpy(y_test.astype(np.int64))
    train(net, x, y, xt, yt, epochs=2, lr=1e-3, name="wide mlp")
    g = pyinfer.Graph()
    h = g.input("x", (None, 784))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        w, b = (t.detach().numpy().astype(np.float32) for t in (lin.weight, lin.bias))
        h = g.linear(h, w, b, "relu" if i < len(linears) - 1 else None, name=f"fc{i + 1}")
    g.output(h)
    model = g.build()
    x_np, labels = xt.numpy(), y_test.astype(np.int64)
    base = float(np.mean(model(x_np).argmax(1) == labels))
    assert base > 0.85
    for encoding in ("int8", "int4"):
        compressed = compress(model, encoding, force=True, progress=False)
        acc = float(np.mean(compressed(x_np).argmax(1) == labels))
        assert abs(acc - base) <= 0.005, (encoding, acc, base)
