"""The advisor (``pyinfer.compress(model, "auto", ...)``, ``pyinfer advise``): its
sensitivities equal whole-model runs, its choice holds the budget on held-out data, its
recipe rebuilds the model, it is deterministic, and bad input fails before any work.
On scikit-learn's digits and a small CNN: seconds."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

import pyinfer
from pyinfer.cli import main
from pyinfer.convert import advise as adv
from pyinfer.convert.measure import DataError
from pyinfer.convert.recipe import RecipeError
from tests.digits import accuracy, digits_mlp


@pytest.fixture(scope="module")
def digits():
    """(model, (calibration inputs, labels), (held-out inputs, labels)): the digits MLP,
    calibrated on the first half of its test split and judged on the second."""
    model, _, x, y = digits_mlp()
    half = len(x) // 2
    return model, (x[:half], y[:half]), (x[half:], y[half:])


@pytest.fixture(scope="module")
def advisor(digits):
    model, calibration, _ = digits
    return adv.Advisor(model, calibration, progress=False)


@pytest.fixture(scope="module")
def advice(advisor):
    return advisor.advise(0.02, batch=1)


def small_cnn() -> pyinfer.Model:
    """conv 1->8 (relu) -> max-pool -> conv 8->8 (relu) -> flatten -> linear 128->10 on
    8x8 images, random weights."""
    rng = np.random.default_rng(3)
    g = pyinfer.Graph()
    h = g.input("x", (None, 1, 8, 8))
    w1 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    h = g.conv2d(h, w1, np.zeros(8, np.float32), padding=1, activation="relu", name="conv1")
    h = g.node("MaxPool2d", h, kernel_size=2, name="pool")
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 8
    h = g.conv2d(h, w2, np.zeros(8, np.float32), padding=1, activation="relu", name="conv2")
    h = g.node("Flatten", h, name="flatten")
    w3 = rng.standard_normal((10, 128)).astype(np.float32) / 11
    g.output(g.linear(h, w3, np.zeros(10, np.float32), None, name="head"))
    return g.build()


def whole_model_errors(model, x, want) -> int:
    return int(np.sum(model(x).argmax(axis=1) != want))


# ---------------------------------------------------------------------- sensitivities


def test_every_layer_has_dense_and_registry_candidates(advisor):
    cands = advisor.candidates()
    assert list(cands) == ["fc1", "fc2", "head"]
    for rows in cands.values():
        labels = [c.label for c in rows]
        assert labels[0] == "dense"
        assert {"csr 50%", "csr 95%", "int8 dynamic", "int8 static", "int4 g32"} <= set(labels)
        assert any(lab.startswith("lowrank") for lab in labels)
    # the head's neurons are the model's output: structured pruning cannot apply there
    assert not any("structured" in c.settings for c in cands["head"])
    assert any("structured" in c.settings for c in cands["fc1"])
    # static int8 carries the scale calibrated on the data, so the recipe needs no data
    static = next(c for c in cands["fc2"] if c.label == "int8 static")
    assert static.settings["activation_scale"] > 0


def test_sensitivity_equals_the_whole_model_with_one_layer_compressed(digits, advisor):
    """The cached-activation shortcut gives exactly what running the whole model gives."""
    model, (x, y), _ = digits
    errors = advisor.errors()
    for layer, label in [("fc1", "csr 90%"), ("fc2", "int4 g32"), ("fc1", "structured 50%"),
                         ("head", "binary (float)"), ("fc2", "int8 static"),
                         ("fc1", "structured 25% + int8 static")]:  # fmt: skip
        c = next(c for c in advisor.candidates()[layer] if c.label == label)
        one = pyinfer.compress(model, {"layers": {layer: c.settings}}, force=True, progress=False)
        assert errors[(layer, label)] == whole_model_errors(one, x, y), (layer, label)


def test_sensitivity_on_a_cnn_without_labels():
    """Without labels the budget is on agreement; convolutions and pooling in between."""
    model = small_cnn()
    x = np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32)
    advisor = adv.Advisor(model, x, progress=False)
    errors = advisor.errors()
    assert errors[("conv1", "dense")] == 0  # agreement with itself
    want = model(x).argmax(axis=1)
    for layer, label in [
        ("conv2", "csr 80%"),
        ("conv1", "structured 50%"),
        ("head", "int8 dynamic"),
    ]:
        c = next(c for c in advisor.candidates()[layer] if c.label == label)
        one = pyinfer.compress(model, {"layers": {layer: c.settings}}, force=True, progress=False)
        assert errors[(layer, label)] == whole_model_errors(one, x, want), (layer, label)
    advice = advisor.advise(0.05)
    assert advice.metric == "agreement"
    assert np.mean(advice.model(x).argmax(axis=1) == want) >= 0.95


# ---------------------------------------------------------------------- the choice


def test_the_advised_model_keeps_the_budget_on_held_out_data(digits, advice):
    model, _, (x, y) = digits
    assert advice.chosen.holds and advice.chosen.bound <= 0.02
    assert accuracy(model, x, y) - accuracy(advice.model, x, y) <= 0.02
    assert advice.model.compression is not None  # built by compress: it has its record
    assert advice.model.advice is advice


def test_the_chosen_drop_is_what_the_model_does_on_the_calibration_data(digits, advice):
    model, (x, y), _ = digits
    drop = (whole_model_errors(advice.model, x, y) - whole_model_errors(model, x, y)) / len(x)
    assert drop == pytest.approx(advice.chosen.drop)


def test_every_layer_is_explained_in_one_line(advice):
    lines = advice.explain()
    assert [line.split(":")[0] for line in lines] == ["fc1", "fc2", "head"]
    for layer, line in zip(("fc1", "fc2", "head"), lines):
        label = advice.chosen.choice[layer]
        assert line.startswith(f"{layer}: {label}")
        if label != "dense":
            assert ("saved" in line or "slower" in line) and " pt alone" in line
    table = advice.table()
    assert table.count("<- chosen") == 3
    assert len(table.splitlines()) == len(advice.rows) + 2


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(30):
        per_layer = {
            f"l{i}": [(0, 10.0, "dense")]
            + [(int(rng.integers(0, 6)), float(rng.uniform(1, 10)), f"c{j}") for j in range(3)]
            for i in range(3)
        }
        budget = int(rng.integers(0, 8))
        cost, units, choice = adv._knapsack(per_layer, budget)
        best = min(
            sum(o[1] for o in combo)
            for combo in itertools.product(*per_layer.values())
            if sum(o[0] for o in combo) <= budget
        )
        assert cost == pytest.approx(best)
        assert units <= budget
        assert sum(next(o[1] for o in per_layer[n] if o[2] == c) for n, c in choice.items()) == (
            pytest.approx(cost)
        )


def test_bytes_objective_is_deterministic_and_smaller(digits):
    model, calibration, _ = digits
    a = adv.advise(model, calibration, max_drop=0.02, objective="bytes", progress=False)
    b = adv.advise(model, calibration, max_drop=0.02, objective="bytes", progress=False)
    assert a.recipe == b.recipe
    assert [r["errors"] for r in a.rows] == [r["errors"] for r in b.rows]
    size = sum(w.nbytes for w in a.model.weights.values())
    assert size < sum(w.nbytes for w in model.weights.values())
    assert all("KiB saved" in line or "dense" in line for line in a.explain())


def test_bytes_pareto_plot(digits, tmp_path):
    pytest.importorskip("matplotlib")
    model, calibration, _ = digits
    a = adv.advise(model, calibration, max_drop=0.02, objective="bytes", progress=False)
    a.plot(str(tmp_path / "bytes.png"))
    assert (tmp_path / "bytes.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_and_timings_give_the_same_choice(digits, advice):
    model, calibration, _ = digits
    again = adv.advise(model, calibration, max_drop=0.02, timings=advice.timings[1], progress=False)
    assert again.recipe == advice.recipe
    assert again.chosen.choice == advice.chosen.choice
    assert [r["errors"] for r in again.rows] == [r["errors"] for r in advice.rows]
    assert [r["latency_s"] for r in again.rows] == [r["latency_s"] for r in advice.rows]


def test_the_seed_picks_the_calibration_subset(digits):
    model, calibration, _ = digits
    one = adv.Advisor(model, calibration, samples=50, seed=1, progress=False)
    same = adv.Advisor(model, calibration, samples=50, seed=1, progress=False)
    other = adv.Advisor(model, calibration, samples=50, seed=2, progress=False)
    np.testing.assert_array_equal(one.arrays["x"], same.arrays["x"])
    assert not np.array_equal(one.arrays["x"], other.arrays["x"])
    assert one.samples == 50


# ---------------------------------------------------------------------- outputs


@pytest.mark.parametrize("ext", [".yaml", ".json"])
def test_the_recipe_file_rebuilds_the_same_model(digits, advice, tmp_path, ext):
    if ext == ".yaml":
        pytest.importorskip("yaml")
    model, _, (x, _) = digits
    path = str(tmp_path / f"recipe{ext}")
    advice.write_recipe(path)
    rebuilt = pyinfer.compress(model, path, force=True, progress=False)
    np.testing.assert_array_equal(rebuilt(x), advice.model(x))


def test_compress_auto_and_the_report(digits):
    model, calibration, (x, y) = digits
    auto = pyinfer.compress(model, "auto", calibration, max_drop=0.02, progress=False)
    assert auto.advice.max_drop == 0.02
    report = pyinfer.compare(model, auto, x, y, progress=False)
    text = report.table()
    for line in auto.advice.explain():
        assert line in text
    assert report.to_dict()["advice"]["recipe"] == auto.advice.recipe
    json.loads(report.to_json())


def test_pareto_plot(advice, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "pareto.png"
    advice.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    front = advice.front()
    assert front[0][1] == 0.0  # all within the budget's cheapest: no drop at all
    assert all(a[0] > b[0] and a[1] <= b[1] for a, b in zip(front, front[1:]))


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.01", True])
def test_max_drop_must_be_a_fraction(digits, bad):
    model, calibration, _ = digits
    with pytest.raises(adv.AdviseError, match="max_drop"):
        adv.advise(model, calibration, max_drop=bad, progress=False)


def test_bad_inputs_fail_before_any_work(digits):
    model, (x, y), _ = digits
    with pytest.raises(adv.AdviseError, match="needs data"):
        pyinfer.compress(model, "auto", progress=False)
    with pytest.raises(DataError, match="labels must be one class per sample"):
        adv.advise(model, (x, y[:-3]), progress=False)
    with pytest.raises(DataError, match="input"):
        adv.advise(model, x[:, :10], progress=False)
    with pytest.raises(adv.AdviseError, match="objective"):
        adv.advise(model, (x, y), objective="speed", progress=False)
    with pytest.raises(adv.AdviseError, match="batch"):
        adv.advise(model, (x, y), batch=0, progress=False)
    with pytest.raises(RecipeError, match="max_drop applies to recipe 'auto'"):
        pyinfer.compress(model, "int8", max_drop=0.01, progress=False)


@pytest.mark.parametrize(
    "text, want", [("0.5%", 0.005), ("1%", 0.01), ("0.005", 0.005), (" 2.5 % ", 0.025)]
)
def test_parse_drop(text, want):
    assert adv.parse_drop(text.replace(" ", "")) == pytest.approx(want)


@pytest.mark.parametrize("text", ["0%", "100%", "1", "abc", "%", "-1%"])
def test_parse_drop_refuses(text):
    with pytest.raises(adv.AdviseError, match="max drop"):
        adv.parse_drop(text)


# ---------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    model, (x, y), _ = digits
    root = tmp_path_factory.mktemp("advise")
    pyinfer.save(model, str(root / "digits.pinf"))
    np.savez(root / "data.npz", x=x, labels=y)
    return root


def test_cli_writes_recipe_plot_report_and_model(files, digits, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("yaml")
    model, _, (x, _) = digits
    r = files
    code = main(
        ["advise", str(r / "digits.pinf"), "--data", str(r / "data.npz"), "--max-drop", "2%",
         "-o", str(r / "recipe.yaml"), "--plot", str(r / "pareto.png"),
         "--report", str(r / "advice.json"), "--save", str(r / "advised.pinf"), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "<- chosen" in out and "fc1:" in out
    assert (r / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((r / "advice.json").read_text())
    assert report["max_drop"] == pytest.approx(0.02)
    saved = pyinfer.load(str(r / "advised.pinf"))
    rebuilt = pyinfer.compress(model, str(r / "recipe.yaml"), force=True, progress=False)
    np.testing.assert_array_equal(saved(x), rebuilt(x))


def test_convert_recipe_auto(files, capsys):
    r = files
    code = main(
        ["convert", str(r / "digits.pinf"), "--recipe", "auto", "--data", str(r / "data.npz"),
         "--max-drop", "0.02", "-o", str(r / "auto.pinf"), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "advised (latency, batch 1, max drop 2.00 pt" in capsys.readouterr().out
    assert os.path.getsize(r / "auto.pinf") > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["advise", "{m}", "--data", "{d}", "--max-drop", "5x", "-o", "{r}/r.yaml"], "--max-drop"),
        (["advise", "{m}", "--data", "{d}", "--max-drop", "150%", "-o", "{r}/r.yaml"], "(0, 1)"),
        (["advise", "{m}", "--data", "{d}", "-o", "{r}/r.txt"], ".yaml, .yml or .json"),
        (["advise", "{m}", "--data", "{d}", "--batch", "0", "-o", "{r}/r.json"], "--batch"),
        (["convert", "{m}", "--recipe", "auto", "-o", "{r}/a.pinf"], "needs --data"),
        (["convert", "{m}", "--recipe", "int8", "--max-drop", "1%", "-o", "{r}/a.pinf"], "auto"),
    ],
)
def test_cli_errors(files, capsys, argv, message):
    r = files
    fill = {"m": str(r / "digits.pinf"), "d": str(r / "data.npz"), "r": str(r)}
    assert main([a.format(**fill) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_fine_tuning_the_choice_is_verified_again(digits):
    pytest.importorskip("torch")
    model, calibration, _ = digits
    advice = adv.advise(
        model, calibration, max_drop=0.05, finetune=pyinfer.FineTune(epochs=1), progress=False
    )
    ft = advice.finetune
    assert ft is not None and ft["record"]["epochs"] == 1
    x, y = calibration
    errors = whole_model_errors(advice.model, x, y)
    # the fine-tuned model is kept only when it does not lose more than the untuned one
    assert errors <= advice.chosen.errors
    assert any(line.startswith("fine-tuned:") for line in advice.summary())
