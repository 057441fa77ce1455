"""Fine-tuning in ``pyinfer.compress``: the straight-through round trip equals the codecs,
masks stay fixed, the cubic schedule, determinism, clear errors, Ctrl-C; and the accuracy
it recovers on Fashion-MNIST and the pretrained MNIST CNN (slow set)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import kernels
import pyinfer
from pyinfer.cli import main
from pyinfer.convert import finetune as ft
from pyinfer.convert.compress import compress
from pyinfer.convert.measure import DataError
from pyinfer.convert.recipe import plan_layers

torch = pytest.importorskip(
    "torch", reason="fine-tuning needs torch (pip install 'pyinfer[torch]')"
)
pytest.importorskip("sklearn", reason="the digits data comes from scikit-learn")
from tests.digits import accuracy, digits_mlp  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
SPARSE = {"default": {"encoding": "csr", "sparsity": 0.9}}


@pytest.fixture(scope="module")
def digits():
    """(model, x_train, y_train, x_test, y_test) on scikit-learn's digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    model, x_train, x_test, y_test = digits_mlp()
    x, y = load_digits(return_X_y=True)
    _, _, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0)
    return model, x_train, y_train.astype(np.int64), x_test, y_test


def _tune(model, recipe, x, y, **options):
    options.setdefault("batch_size", 64)
    return compress(
        model, recipe, (x, y), force=True, progress=False, finetune=pyinfer.FineTune(**options)
    )


def _dense(model, layer: str) -> np.ndarray:
    return model.weights[f"{layer}.weight"].decode()


# ---------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    "encoding, options",
    [("int8", {}), ("int4", {}), ("int4", {"group_size": 64}), ("pow2", {}), ("binary", {})],
)
def test_straight_through_round_trip_is_the_codec(encoding, options):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((24, 70)).astype(np.float32)
    w[rng.random(w.shape) < 0.3] = 0
    plan = plan_layers(
        {"default": {"encoding": encoding, **options}}, {"l": kernels.encode(w, "dense")}
    )[0]
    assert ft.lossy(plan, w.shape)
    transform = ft._transform(torch, {}, "l", plan, quantize=True)
    param = torch.tensor(w, requires_grad=True)
    out = transform(param)
    np.testing.assert_array_equal(
        out.detach().numpy(), kernels.encode(w, encoding, **options).decode()
    )
    upstream = torch.from_numpy(rng.standard_normal(w.shape).astype(np.float32))
    (out * upstream).sum().backward()
    np.testing.assert_array_equal(param.grad.numpy(), upstream.numpy())  # straight through


def test_lossless_encodings_train_unquantized():
    w = kernels.encode(np.ones((4, 8), np.float32), "dense")
    for encoding in ("csr", "dense"):
        assert not ft.lossy(plan_layers(encoding, {"l": w})[0], (4, 8))


def test_cubic_schedule_values():
    assert ft.sparsity_at(0, 100, 0.9) == 0.0
    assert ft.sparsity_at(50, 100, 0.9) == pytest.approx(0.9 * (1 - 0.5**3))
    assert ft.sparsity_at(25, 100, 0.8, 0.2) == pytest.approx(0.8 - 0.6 * 0.75**3)
    assert ft.sparsity_at(100, 100, 0.9) == ft.sparsity_at(180, 100, 0.9) == pytest.approx(0.9)
    levels = [ft.sparsity_at(t, 40, 0.95) for t in range(41)]
    assert all(a < b for a, b in zip(levels, levels[1:]))


def test_graph_module_computes_what_the_runtime_does():
    rng = np.random.default_rng(0)
    g = pyinfer.Graph()
    x = g.input("x", (None, 3, 12, 12))
    a = g.conv2d(
        x,
        rng.standard_normal((8, 3, 3, 3)) * 0.3,
        np.ones(8),
        padding=1,
        name="c1",
        activation="relu",
    )
    b = g.conv2d(a, rng.standard_normal((8, 1, 3, 3)) * 0.3, None, padding=1, groups=8, name="dw")
    h = g.node("Relu6", g.node("Add", a, b))
    h = g.node("MaxPool2d", h, kernel_size=2)
    h = g.node(
        "AvgPool2d", g.conv2d(h, rng.standard_normal((6, 8, 1, 1)), name="pw"), kernel_size=2
    )
    pooled = g.node("GlobalAvgPool", h, keepdims=False)
    flat = g.node("Flatten", g.node("Clip", h, min=0.0, max=1.0))
    h = g.node(
        "Concat",
        pooled,
        g.node("ReduceMean", g.node("Reshape", flat, shape=[0, 6, 9]), axes=[2], keepdims=False),
        axis=1,
    )
    g.output(g.node("Softmax", g.linear(h, rng.standard_normal((5, 12)), np.zeros(5), name="fc")))
    model = g.build()
    xs = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    net = ft.graph_module(model)
    logits = net(torch.from_numpy(xs)).detach().numpy()
    np.testing.assert_allclose(
        torch.softmax(torch.from_numpy(logits), 1).numpy(), model(xs), rtol=1e-4, atol=1e-6
    )


# ---------------------------------------------------------------------- training


def test_fine_tuning_recovers_pruned_accuracy_and_keeps_the_sparsity(digits):
    model, x, y, x_test, y_test = digits
    oneshot = compress(model, SPARSE, force=True, progress=False)
    tuned = _tune(model, SPARSE, x, y, epochs=10)
    assert accuracy(tuned, x_test, y_test) > accuracy(oneshot, x_test, y_test) + 0.2
    for layer in ("fc1", "fc2", "head"):
        w = tuned.weights[f"{layer}.weight"]
        assert w.encoding == "csr"
        assert np.count_nonzero(w.decode()) == round(0.1 * np.prod(w.shape))
    record = tuned.compression.finetune
    assert record.epochs == 10 and len(record.loss) == len(record.accuracy) == 10
    assert record.sparsity == pytest.approx(0.9, abs=1e-3)


def test_low_rank_layers_train_their_factors_and_keep_their_rank(digits, monkeypatch):
    model, x, y, x_test, y_test = digits
    recipe = {"default": "dense", "layers": {"fc*": {"encoding": "lowrank", "rank": 3}}}
    oneshot = compress(model, recipe, force=True, progress=False)
    svds = []
    real = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: svds.append(1) or real(*a, **k))
    tuned = _tune(model, recipe, x, y, epochs=8, lr=3e-3)
    assert len(svds) < 10  # a few per layer (factors, final encoding), none per step (~170)
    for layer in ("fc1", "fc2"):
        w = tuned.weights[f"{layer}.weight"]
        assert w.encoding == "lowrank" and w.rank == 3
    assert accuracy(tuned, x_test, y_test) > accuracy(oneshot, x_test, y_test) + 0.05


def test_structured_pruning_then_fine_tuning_recovers_accuracy(digits):
    model, x, y, x_test, y_test = digits
    recipe = {"default": "dense", "layers": {"fc1": {"encoding": "dense", "structured": 0.75}}}
    oneshot = compress(model, recipe, force=True, progress=False)
    tuned = _tune(model, recipe, x, y, epochs=8, lr=3e-3)
    assert tuned.weights["fc1.weight"].shape == (32, 64)  # 128 neurons -> 32
    assert tuned.weights["fc2.weight"].shape == (64, 32)  # its consumer shrank to match
    assert accuracy(tuned, x_test, y_test) > accuracy(oneshot, x_test, y_test)
    assert accuracy(tuned, x_test, y_test) > accuracy(model, x_test, y_test) - 0.02


def test_masks_fixed_from_the_start_stay_zero(digits):
    model, x, y, *_ = digits
    recipe = {"default": {"encoding": "csr", "sparsity": 0.7}}
    oneshot = compress(model, recipe, force=True, progress=False)
    tuned = _tune(model, recipe, x, y, epochs=2, schedule="oneshot")
    for layer in ("fc1", "fc2", "head"):
        before, after = _dense(oneshot, layer), _dense(tuned, layer)
        np.testing.assert_array_equal(after == 0, before == 0)  # the same weights pruned
        assert not np.array_equal(after, before)  # and the others trained


def test_quantized_fine_tuning_writes_what_was_trained(digits, monkeypatch):
    model, x, y, *_ = digits
    trained = {}
    original = ft.fine_tune

    def keep(*args, **kwargs):
        result = original(*args, **kwargs)
        trained["model"] = result[0]
        return result

    monkeypatch.setattr("pyinfer.convert.compress.fine_tune", keep)
    recipe = {"default": "pow2", "layers": {"fc2": {"encoding": "int4", "sparsity": 0.5}}}
    tuned = _tune(model, recipe, x, y, epochs=2)
    for layer in ("fc1", "fc2", "head"):
        w = tuned.weights[f"{layer}.weight"]
        weights = _dense(trained["model"], layer)
        np.testing.assert_array_equal(w.decode(), kernels.encode(weights, w.encoding).decode())
    assert np.count_nonzero(_dense(tuned, "fc2") == 0) >= 0.5 * 128 * 64


def test_same_seed_same_weights(digits):
    model, x, y, *_ = digits
    recipe = {"default": {"encoding": "int8", "sparsity": 0.8}}
    a, b = (_tune(model, recipe, x, y, epochs=2, seed=3) for _ in range(2))
    c = _tune(model, recipe, x, y, epochs=2, seed=4)
    for layer in ("fc1", "fc2", "head"):
        np.testing.assert_array_equal(_dense(a, layer), _dense(b, layer))
    assert not np.array_equal(_dense(a, "fc1"), _dense(c, "fc1"))


def test_torch_threads_restored(digits):
    model, x, y, *_ = digits
    before = torch.get_num_threads()
    _tune(model, "int8", x[:200], y[:200], threads=2)
    assert torch.get_num_threads() == before


def test_distillation_compared_side_by_side(digits):
    model, x, y, x_test, y_test = digits
    tuned = _tune(
        model,
        SPARSE,
        x,
        y,
        epochs=2,
        distill=pyinfer.Distill(2.0, 0.5),
        compare_distill=True,
        validation=(x_test, y_test),
    )
    record = tuned.compression.finetune
    assert record.distill == {"temperature": 2.0, "alpha": 0.5}
    assert record.without_distill["distill"] is None
    assert record.accuracy_on == "validation" and len(record.without_distill["accuracy"]) == 2
    report = pyinfer.compare(model, tuned, x_test, y_test, timing=False, progress=False)
    assert report.finetune["without_distill"]["loss"] == record.without_distill["loss"]
    table = report.table()
    assert "without distillation" in table and "with distillation (T=2, alpha=0.5)" in table
    json.loads(report.to_json())


def test_users_own_module_is_trained_and_left_unchanged():
    nn = torch.nn
    pytest.importorskip("onnxscript", reason="from_torch needs onnx and onnxscript")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    kept = [p.detach().clone() for p in net.parameters()]
    model = pyinfer.from_torch(net, torch.randn(2, 16))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 16)).astype(np.float32)
    y = (x[:, :4].argmax(1)).astype(np.int64)
    recipe = {"default": {"encoding": "int8", "sparsity": 0.5}}
    tuned = _tune(model, recipe, x, y, epochs=10, lr=0.01, module=net)
    assert accuracy(tuned, x, y) > accuracy(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(kept, net.parameters()))
    other = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(ft.FineTuneError, match="holds other weights"):
        _tune(model, recipe, x, y, module=other)


# ---------------------------------------------------------------------- errors


def test_fine_tuning_without_labels_says_what_it_needs(digits):
    model, x, *_ = digits
    for data in (x, {"x": x}, None):
        with pytest.raises(DataError, match="needs labels.*'labels'"):
            compress(model, "int8", data, finetune=pyinfer.FineTune(), progress=False)
    with pytest.raises(DataError, match="classes in"):
        compress(model, "int8", (x, np.full(len(x), 10)), finetune=pyinfer.FineTune())


def test_labels_in_a_mapping(digits):
    model, x, y, *_ = digits
    tuned = compress(
        model,
        "int8",
        {"x": x[:300], "labels": y[:300]},
        force=True,
        progress=False,
        finetune=pyinfer.FineTune(),
    )
    assert tuned.compression.finetune.steps == 3


def test_an_op_torch_cannot_run_fails_before_any_work(monkeypatch):
    g = pyinfer.Graph()
    x = g.input("x", (None, 8))
    h = g.linear(x, np.eye(8, dtype=np.float32), name="fc")
    g.output(g.node("LayerNorm", g.node("Gather", h, np.array([0, 1]), axis=1)))
    model = g.build()
    monkeypatch.setattr(ft, "_train", None)  # training would fail differently
    with pytest.raises(ft.FineTuneError, match=r"Gather \(nodes gather0\); LayerNorm") as info:
        compress(
            model,
            "int8",
            (np.ones((4, 8), np.float32), np.zeros(4)),
            finetune=pyinfer.FineTune(),
            progress=False,
        )
    assert "Conv2d" in str(info.value)  # lists what it covers


def test_without_torch_the_error_says_how_to_install(digits, monkeypatch):
    model, x, y, *_ = digits
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'pyinfer\[torch\]'"):
        compress(model, "int8", (x, y), finetune=pyinfer.FineTune(), progress=False)
    assert compress(model, "int8", x, force=True, progress=False)  # the rest needs no torch


def test_bad_settings():
    with pytest.raises(ValueError, match="epochs"):
        pyinfer.FineTune(epochs=0)
    with pytest.raises(ValueError, match="schedule"):
        pyinfer.FineTune(schedule="linear")
    with pytest.raises(ValueError, match="compare_distill needs distill"):
        pyinfer.FineTune(compare_distill=True)
    with pytest.raises(ValueError, match="alpha"):
        pyinfer.Distill(alpha=1.5)


# ---------------------------------------------------------------------- CLI


@pytest.fixture
def files(digits, tmp_path):
    model, x, y, *_ = digits
    src = tmp_path / "dense.pinf"
    pyinfer.save(model, src)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, labels=y)
    return src, data


def _convert(*args) -> int:
    return main(["convert", *map(str, args), "--no-progress"])


def test_cli_fine_tunes_with_distillation(files, tmp_path, capsys):
    src, data = files
    out, report = tmp_path / "o.pinf", tmp_path / "r.json"
    args = ["--recipe", "int4", "--data", data, "--finetune", 1, "--distill", "2,0.5"]
    args += ["--force"]  # every layer int4, whatever it measures: the file check is exact
    assert _convert(src, "-o", out, *args, "--compare-distill", "--report", report) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned 1 epoch(s) with distillation (T=2, alpha=0.5)" in printed
    assert "fine-tuned 1 epoch(s) without distillation" in printed
    saved = json.loads(report.read_text())["record"]["finetune"]
    assert saved["epochs"] == 1 and saved["without_distill"]["distill"] is None
    assert {w.encoding for w in pyinfer.load(out).weights.values()} == {"int4"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--distill", "2,0.5"], "need --finetune"),
        (["--finetune", "1", "--distill", "2"], "T,ALPHA"),
        (["--finetune", "0"], "at least 1 epoch"),
    ],
)
def test_cli_errors(files, tmp_path, capsys, args, message):
    src, data = files
    assert _convert(src, "-o", tmp_path / "o.pinf", "--recipe", "int8", "--data", data, *args) == 2
    assert message in capsys.readouterr().err


def test_cli_fine_tuning_needs_labels(digits, files, tmp_path, capsys):
    src, _ = files
    data = tmp_path / "inputs.npz"
    np.savez(data, x=digits[1])
    assert (
        _convert(
            src, "-o", tmp_path / "o.pinf", "--recipe", "int8", "--data", data, "--finetune", "1"
        )
        == 2
    )
    assert "needs labels" in capsys.readouterr().err


def test_ctrl_c_while_training_writes_nothing(files, tmp_path, monkeypatch, capsys):
    src, data = files
    calls = []
    loss = ft._loss

    def interrupt_on_the_third_step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return loss(*args)

    monkeypatch.setattr(ft, "_loss", interrupt_on_the_third_step)
    before = torch.get_num_threads()
    out = tmp_path / "o.pinf"
    assert _convert(src, "-o", out, "--recipe", "int8", "--data", data, "--finetune", 2) == 130
    assert len(calls) == 3 and "interrupted" in capsys.readouterr().err
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"dense.pinf", "data.npz"}
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------- real data (slow)


def _fashion():
    if not os.path.isdir(FASHION_MNIST):
        pytest.skip(
            f"Fashion-MNIST is not installed ({FASHION_MNIST}: apt install dataset-fashion-mnist)"
        )
    from scripts.make_demo_model import load_fashion_mnist

    xtr, ytr, xte, yte = load_fashion_mnist(FASHION_MNIST)
    return (
        xtr.astype(np.float32) / 255,
        ytr.astype(np.int64),
        xte.astype(np.float32) / 255,
        yte.astype(np.int64),
    )


@pytest.mark.slow
def test_fashion_mlp_90_percent_sparse_within_a_point():
    """MLP 784-1024-1024-10, trained one epoch (fp32), pruned to 90 % in every layer and
    fine-tuned two epochs: within 1 point of fp32 (one-shot pruning loses about 34; one
    epoch of fine-tuning measured 0.6 point below fp32, two 0.6 above)."""
    x, y, x_test, y_test = _fashion()
    x, x_test = x.reshape(-1, 784), x_test.reshape(-1, 784)
    dense = _fit_fp32(x, y)
    fp32 = accuracy(dense, x_test, y_test)
    tuned = compress(
        dense, SPARSE, (x, y), force=True, progress=False, finetune=pyinfer.FineTune(epochs=2)
    )
    assert accuracy(tuned, x_test, y_test) >= fp32 - 0.01
    assert all(w.encoding == "csr" for w in tuned.weights.values())


def _mlp_graph(rng):
    """MLP 784-1024-1024-10 with torch's default initialisation, U(±1/sqrt(fan_in))."""
    g = pyinfer.Graph()
    h = g.input("x", (None, 784))
    sizes = (784, 1024, 1024, 10)
    for i, name in enumerate(("fc1", "fc2", "head")):
        w = rng.uniform(-1, 1, (sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])
        h = g.linear(h, w, np.zeros(sizes[i + 1]), "relu" if i < 2 else None, name=name)
    g.output(h)
    return g.build()


def _fit_fp32(x, y):
    """The MLP 784-1024-1024-10 fitted for one epoch with Adam (fine-tuning a dense
    recipe is plain training)."""
    return compress(
        _mlp_graph(np.random.default_rng(0)),
        "dense",
        (x, y),
        progress=False,
        finetune=pyinfer.FineTune(epochs=1, threads=2),
    )


@pytest.mark.slow
def test_pretrained_mnist_cnn_90_percent_pruned_within_a_point():
    """90 % of the weights pruned by one global magnitude threshold (per layer, the first
    conv would keep 29 of its 288 weights), fine-tuned two epochs on 4000 images, tested
    on the other 1000 (a shuffled split: the subset is sorted by class)."""
    pytest.importorskip("onnxscript", reason="from_torch needs onnx and onnxscript")
    from tests.pretrained_mnist import load_cnn, mnist_5k

    x, y = mnist_5k()
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:4000], order[4000:]
    model = pyinfer.from_torch(load_cnn(), torch.zeros(2, 1, 28, 28))
    fp32 = accuracy(model, x[test], y[test])
    recipe = {"default": {"encoding": "csr", "sparsity": 0.9, "pruning": "global"}}
    tuned = compress(
        model,
        recipe,
        (x[train], y[train]),
        force=True,
        progress=False,
        finetune=pyinfer.FineTune(epochs=2, batch_size=64),
    )
    assert accuracy(tuned, x[test], y[test]) >= fp32 - 0.01
    kept = sum(np.count_nonzero(w.decode()) for w in tuned.weights.values())
    assert kept == pytest.approx(0.1 * sum(np.prod(w.shape) for w in tuned.weights.values()), abs=1)
