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
