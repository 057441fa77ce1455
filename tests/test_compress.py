"""pyinfer.convert: recipes, pruning, calibration, the honest dense fallback, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kernels
import pyinfer
from pyinfer.convert import compress as compress_module
from pyinfer.convert.compare import compare
from pyinfer.convert.compress import (
    ActivationRange,
    compress,
    prune_blocks,
    prune_global,
    prune_magnitude,
    prune_n_m,
)
from pyinfer.convert.measure import DataError
from pyinfer.convert.recipe import RecipeError, plan_layers, read_recipe

pytest.importorskip("sklearn", reason="the digits data comes from scikit-learn")
from tests.digits import accuracy, digits_mlp  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return digits_mlp()


def _compress(model, recipe, data=None, **kw):
    kw.setdefault("force", True)
    return compress(model, recipe, data, progress=False, **kw)


def _encodings(model) -> dict:
    return {d.layer: d.encoding for d in model.compression.layers}


# ---------------------------------------------------------------------- end to end


def test_int8_within_half_a_point_of_fp32_on_digits(digits):
    model, _, x_test, y_test = digits
    base = accuracy(model, x_test, y_test)
    int8 = _compress(model, "int8")
    assert _encodings(int8) == {"fc1": "int8", "fc2": "int8", "head": "int8"}
    assert base > 0.9
    assert abs(accuracy(int8, x_test, y_test) - base) <= 0.005


@pytest.mark.parametrize("encoding", ["int4", "pow2", "binary", "csr"])
def test_every_encoding_runs_end_to_end(digits, encoding):
    model, _, x_test, y_test = digits
    compressed = _compress(model, encoding)
    assert set(_encodings(compressed).values()) == {encoding}
    acc = accuracy(compressed, x_test, y_test)
    assert 0.1 < acc <= 1.0  # better than chance; the report says how much is lost
    if encoding != "binary":
        assert acc > accuracy(model, x_test, y_test) - 0.05


def test_compressed_model_saves_and_loads(digits, tmp_path):
    model, _, x_test, _ = digits
    compressed = _compress(model, {"default": "int4", "layers": {"head": "dense"}})
    pyinfer.save(compressed, tmp_path / "m.pinf")
    loaded = pyinfer.load(tmp_path / "m.pinf")
    np.testing.assert_array_equal(loaded(x_test), compressed(x_test))


# ---------------------------------------------------------------------- recipes


def test_recipe_forms_agree(digits, tmp_path):
    model, _, x_test, _ = digits
    recipe = {"default": "int8", "layers": {"fc*": "int4", "head": "dense"}}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    yaml = pytest.importorskip("yaml")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    outs = []
    for form in (recipe, str(tmp_path / "r.json"), tmp_path / "r.yaml"):
        m = _compress(model, form)
        assert _encodings(m) == {"fc1": "int4", "fc2": "int4", "head": "dense"}
        outs.append(m(x_test))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_exact_names_win_over_patterns_and_options_pass_through(digits):
    model = digits[0]
    recipe = {
        "default": "dense",
        "layers": {
            "*": {"encoding": "int4", "group_size": 64},
            "fc2": {"encoding": "csr", "sparsity": 0.5},
        },
    }
    m = _compress(model, recipe)
    assert _encodings(m) == {"fc1": "int4", "fc2": "csr", "head": "int4"}
    assert m.weights["fc1.weight"].group_size == 64
    assert m.compression.layer("fc2").sparsity == pytest.approx(0.5, abs=1e-3)
    assert m.compression.layer("fc2").source == "fc2"


def test_layer_options_without_encoding_take_the_default(digits):
    model = digits[0]
    plans = plan_layers(
        {"default": {"encoding": "int8"}, "layers": {"fc1": {"sparsity": 0.25}}},
        {n: None for n in ("fc1", "fc2", "head")},
    )
    assert [(p.layer, p.encoding, p.sparsity) for p in plans] == [
        ("fc1", "int8", 0.25),
        ("fc2", "int8", 0.0),
        ("head", "int8", 0.0),
    ]
    m = _compress(model, {"default": "int8", "layers": {"fc1": {"sparsity": 0.25}}})
    assert m.compression.layer("fc1").sparsity >= 0.25


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if compress starts pruning (the checks must come first)."""

    def fail(*args, **kwargs):
        raise AssertionError("work started before the checks")

    monkeypatch.setattr(compress_module, "prune", fail)


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"layers": {"fc9": "int8"}}, "names no weighted layer; the layers are: fc1, fc2, head"),
        ({"layers": {"conv*": "int8"}}, "pattern matches no weighted layer"),
        ("int9", "neither an encoding"),
        ({"default": "int5"}, "unknown encoding 'int5'"),
        ({"default": {"encoding": "int8", "group_size": 32}}, "has no option 'group_size'"),
        ({"default": {"encoding": "csr", "sparsity": 1.5}}, "sparsity must be"),
        ({"default": {"encoding": "csr", "pruning": "4:2"}}, "needs 0 < N < M"),
        ({"default": {"encoding": "csr", "pruning": "2:4", "sparsity": 0.7}}, "means sparsity"),
        ({"default": {"encoding": "csr", "pruning": "best"}}, "pruning must be"),
        ({"default": {"encoding": "csr", "calibration": "minmax"}}, "calibration applies to"),
        ({"default": {"encoding": "int8", "calibration": "minmax"}}, "it needs data"),
        ({"layers": {"fc1": {"encoding": "binary", "sparsity": 0.5}}}, "cannot store zero"),
        ({"default": "int8", "oops": 1}, "unknown recipe key"),
        (
            {
                "layers": {
                    "fc1": {"encoding": "csr", "pruning": "global", "sparsity": 0.5},
                    "fc2": {"encoding": "csr", "pruning": "global", "sparsity": 0.7},
                }
            },
            "share one magnitude threshold",
        ),
    ],
)
def test_bad_recipes_fail_before_any_work(digits, no_work, recipe, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("*", r"\*")):
        _compress(digits[0], recipe)


def test_missing_recipe_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_recipe(str(tmp_path / "none.yaml"))


def test_wrong_shape_data_fails_before_any_work(digits, no_work):
    model = digits[0]
    with pytest.raises(DataError, match=r"must have shape \[\?, 64\]"):
        _compress(model, "int8", np.zeros((10, 8, 8), np.float32))
    with pytest.raises(DataError, match="must have shape"):
        _compress(model, "int8", np.zeros((10, 63), np.float32))
    with pytest.raises(DataError, match="no array for input"):
        _compress(model, "int8", {"y": np.zeros((10, 64), np.float32)})


def _wide_model():
    """A model whose first layer is wider than int8 supports (in > 133144)."""
    rng = np.random.default_rng(0)
    g = pyinfer.Graph()
    x = g.input("x", (None, 140_000))
    h = g.linear(x, rng.standard_normal((2, 140_000), dtype=np.float32), name="wide")
    g.output(g.linear(h, rng.standard_normal((3, 2), dtype=np.float32), name="head"))
    return g.build()


def test_inapplicable_encoding_is_an_error_when_asked_for_by_name(no_work):
    with pytest.raises(
        RecipeError,
        match=r"layer 'wide' \(Linear, weight \[2, 140000\]\): "
        r"encoding 'int8' cannot apply",
    ):
        _compress(_wide_model(), {"layers": {"wide": "int8"}})


def test_inapplicable_default_is_skipped_and_recorded():
    m = _compress(_wide_model(), "int8")
    wide, head = m.compression.layers
    assert (wide.status, wide.encoding) == ("skipped", "dense")
    assert "int8 cannot apply" in wide.reason and "in <=" in wide.reason
    assert (head.status, head.encoding) == ("compressed", "int8")


# ---------------------------------------------------------------------- pruning


def test_magnitude_pruning_zeroes_exactly_the_smallest():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((37, 53)).astype(np.float32)
    pruned = m.copy()
    prune_magnitude(pruned, 0.7)
    k = round(0.7 * m.size)
    assert np.count_nonzero(pruned == 0) == k
    threshold = np.sort(np.abs(m).ravel())[k - 1]
    assert np.all(np.abs(m[pruned == 0]) <= threshold)
    np.testing.assert_array_equal(pruned[pruned != 0], m[pruned != 0])


@pytest.mark.parametrize("n, group, k", [(2, 4, 64), (2, 4, 70), (1, 4, 9), (3, 8, 33)])
def test_n_m_pattern_holds_in_every_group(n, group, k):
    rng = np.random.default_rng(2)
    m = rng.standard_normal((11, k)).astype(np.float32)
    pruned = m.copy()
    prune_n_m(pruned, n, group)
    for start in range(0, k, group):
        block = pruned[:, start : start + group]
        kept = np.count_nonzero(block, axis=1)
        assert np.all(kept == min(n, block.shape[1]))
        # the kept ones are the largest of their group
        orig = np.abs(m[:, start : start + group])
        for r in range(m.shape[0]):
            smallest_kept = orig[r][block[r] != 0].min()
            assert np.all(orig[r][block[r] == 0] <= smallest_kept)


def test_global_pruning_has_one_threshold_and_exact_total_sparsity():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((64, 64)).astype(np.float32)  # larger weights
    small = (0.3 * rng.standard_normal((32, 16))).astype(np.float32)
    a, b = big.copy(), small.copy()
    prune_global([a, b], 0.5)
    zeros = np.count_nonzero(a == 0) + np.count_nonzero(b == 0)
    assert zeros == round(0.5 * (a.size + b.size))
    assert np.count_nonzero(b == 0) / b.size > np.count_nonzero(a == 0) / a.size + 0.2
    kept_min = np.abs(np.concatenate([a[a != 0], b[b != 0]])).min()
    assert max(np.abs(big[a == 0]).max(), np.abs(small[b == 0]).max()) <= kept_min


def test_global_vs_per_layer_pruning_in_a_model(digits):
    model = digits[0]
    per_layer = _compress(model, {"default": {"encoding": "csr", "sparsity": 0.6}})
    glob = _compress(model, {"default": {"encoding": "csr", "sparsity": 0.6, "pruning": "global"}})
    per = {d.layer: d.sparsity for d in per_layer.compression.layers}
    assert all(s == pytest.approx(0.6, abs=1e-3) for s in per.values())
    sizes = {n: int(np.prod(w.shape)) for n, w in model.weights.items()}
    g = {d.layer: d.sparsity for d in glob.compression.layers}
    total = sum(g[n] * sizes[f"{n}.weight"] for n in g) / sum(sizes.values())
    assert total == pytest.approx(0.6, abs=1e-3)
    assert max(g.values()) - min(g.values()) > 0.01  # one threshold, uneven sparsity


def test_block_pruning_zeroes_whole_output_channel_blocks():
    rng = np.random.default_rng(4)
    m = rng.standard_normal((20, 30)).astype(np.float32)  # 3 blocks of 8 rows (last: 4)
    prune_blocks(m, 0.5, 8)
    padded = np.zeros((24, 30), np.float32)
    padded[:20] = m
    blocks = padded.reshape(3, 8, 30)
    zero_blocks = np.all(blocks[:2] == 0, axis=1)
    assert np.all(np.all(blocks[:2] != 0, axis=1) | zero_blocks)  # all or nothing
    assert np.count_nonzero(np.all(blocks == 0, axis=1)) == round(0.5 * 90)


def test_sparse_then_quantized_keeps_the_zeros(digits):
    m = _compress(digits[0], {"default": {"encoding": "int8", "pruning": "2:4"}})
    w = m.weights["fc1.weight"].decode()
    assert np.all(np.count_nonzero(w.reshape(w.shape[0], -1, 4), axis=2) <= 2)
    assert m.compression.layer("fc1").pruning == "2:4"


# ---------------------------------------------------------------------- calibration


def test_minmax_calibration_uses_the_largest_input_magnitude(digits):
    model, x_train, x_test, y_test = digits
    m = _compress(model, {"default": {"encoding": "int8", "calibration": "minmax"}}, x_train)
    # fc1's input is the data itself
    assert m.weights["fc1.weight"].activation_scale == pytest.approx(
        float(np.abs(x_train).max()) / 127, rel=1e-6
    )
    hidden = np.maximum(
        x_train @ model.weights["fc1.weight"].decode().T + model.constants["fc1.bias"], 0
    )
    assert m.weights["fc2.weight"].activation_scale == pytest.approx(
        float(hidden.max()) / 127, rel=1e-4
    )
    assert m.compression.calibration_samples == len(x_train)
    assert abs(accuracy(m, x_test, y_test) - accuracy(model, x_test, y_test)) <= 0.01


def test_static_and_dynamic_int8_differ_only_in_the_activation_scale(digits):
    model, x_train, x_test, y_test = digits
    dynamic = _compress(model, "int8")
    static = _compress(
        model, {"default": {"encoding": "int8", "calibration": "percentile"}}, x_train
    )
    for name in ("fc1.weight", "fc2.weight", "head.weight"):
        assert dynamic.weights[name].activation_scale is None
        assert static.weights[name].activation_scale > 0
        np.testing.assert_array_equal(dynamic.weights[name].packed, static.weights[name].packed)
    assert static.compression.layer("fc1").calibration == "percentile"
    assert abs(accuracy(static, x_test, y_test) - accuracy(dynamic, x_test, y_test)) <= 0.01


def test_calibration_streams_in_batches_with_the_same_result(digits):
    model, x_train, _, _ = digits
    recipe = {"default": {"encoding": "int8", "calibration": "minmax"}}
    a = compress(model, recipe, x_train, batch_size=64, force=True, progress=False)
    b = compress(model, recipe, x_train, batch_size=1000, force=True, progress=False)
    # fc1 sees the data itself; later layers see BLAS results, which may differ in the
    # last bits with the batch shape
    assert a.weights["fc1.weight"].activation_scale == b.weights["fc1.weight"].activation_scale
    for name in a.weights:
        assert a.weights[name].activation_scale == pytest.approx(
            b.weights[name].activation_scale, rel=1e-5
        )


def test_streaming_percentile_matches_numpy_within_one_bin():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(200_000) * np.linspace(0.1, 3, 200_000)).astype(np.float32)
    stat = ActivationRange("percentile", 99.9)
    for chunk in np.array_split(x, 37):  # growing range: bins merge as it doubles
        stat.update(chunk)
    exact = np.percentile(np.abs(x), 99.9)
    bin_width = stat.hi / stat.hist.size
    assert abs(stat.bound() - exact) <= 2 * bin_width
    assert stat.bound() <= np.abs(x).max()
    minmax = ActivationRange("minmax")
    for chunk in np.array_split(x, 5):
        minmax.update(chunk)
    assert minmax.bound() == np.abs(x).max()


# ---------------------------------------------------------------------- honest choice


def test_slower_layers_stay_dense_unless_forced(digits, monkeypatch):
    model, _, x_test, _ = digits
    calls = []

    def timing(node, weights, shape):
        calls.append((node.name, shape))
        return (1e-5, 2e-5) if node.name == "fc2" else (2e-5, 1e-5)

    monkeypatch.setattr(compress_module, "time_layer", timing)
    m = compress(model, "int8", progress=False, batch=4)
    assert _encodings(m) == {"fc1": "int8", "fc2": "dense", "head": "int8"}
    fc2 = m.compression.layer("fc2")
    assert fc2.status == "kept dense: slower" and "force=True" in fc2.reason
    assert m.weights["fc2.weight"] is model.weights["fc2.weight"]
    assert fc2.latency_compressed_s == 2e-5
    assert ("fc1", (4, 64)) in calls
    calls.clear()
    forced = compress(model, "int8", progress=False, force=True)
    assert calls == [] and set(_encodings(forced).values()) == {"int8"}


def test_real_timing_runs_and_records_both_latencies(digits):
    model = digits[0]
    m = compress(model, {"layers": {"fc1": "int8"}}, progress=False)
    fc1 = m.compression.layer("fc1")
    assert fc1.latency_dense_s > 0 and fc1.latency_compressed_s > 0
    assert fc1.status in ("compressed", "kept dense: slower")


# ---------------------------------------------------------------------- the report


def test_report_per_layer_and_total(digits, tmp_path):
    model, _, x_test, y_test = digits
    compressed = _compress(model, {"default": "int8", "layers": {"head": "dense"}})
    report = compare(model, compressed, x_test, y_test, progress=False)
    rows = {r["layer"]: r for r in report.layers}
    assert list(rows) == ["fc1", "fc2", "head"]
    fc1 = rows["fc1"]
    assert (fc1["encoding_before"], fc1["encoding"]) == ("dense", "int8")
    assert fc1["bytes_before"] == 4 * 128 * 64
    assert fc1["bytes_after"] == compressed.weights["fc1.weight"].nbytes < fc1["bytes_before"]
    assert 0 < fc1["rel_l2"] < 0.05 and 0.99 < fc1["cosine"] <= 1.0 + 1e-6
    assert fc1["latency_before_s"] > 0 and fc1["latency_after_s"] > 0
    assert rows["head"]["status"] == "dense" and rows["head"]["bytes_after"] == 4 * 10 * 64
    t = report.total
    assert t["accuracy_before"] == pytest.approx(accuracy(model, x_test, y_test))
    assert t["accuracy_after"] == pytest.approx(accuracy(compressed, x_test, y_test))
    assert t["samples"] == len(x_test) and 0.95 < t["agreement"] <= 1
    assert t["bytes_after"] < t["bytes_before"] and t["compression"] > 2
    assert report.record["layers"][0]["layer"] == "fc1"
    text = report.table()
    for word in ("fc1", "dense -> int8", "total", "accuracy on", "smaller"):
        assert word in text
    loaded = json.loads(report.to_json(str(tmp_path / "r.json")))
    assert loaded == json.loads((tmp_path / "r.json").read_text())
    assert loaded["total"]["samples"] == len(x_test)


def test_report_without_labels_gives_agreement_and_without_data_sizes(digits):
    model, _, x_test, _ = digits
    compressed = _compress(model, "int4")
    report = compare(model, compressed, x_test, timing=False, progress=False)
    assert report.total["accuracy_before"] is None and report.total["agreement"] > 0.9
    bare = compare(model, compressed, timing=False, progress=False)
    assert bare.total["agreement"] is None and bare.layers[0]["rel_l2"] is None
    assert bare.layers[0]["bytes_after"] < bare.layers[0]["bytes_before"]
    assert "accuracy on" not in bare.table()


def test_report_checks_its_inputs(digits):
    model, _, x_test, y_test = digits
    with pytest.raises(DataError, match="labels has 3 entries"):
        compare(model, model, x_test, y_test[:3], timing=False, progress=False)
    with pytest.raises(ValueError, match="different weighted layers"):
        compare(model, _wide_model(), timing=False, progress=False)


def test_report_plot_writes_a_png(digits, tmp_path):
    pytest.importorskip("matplotlib")
    model, _, x_test, y_test = digits
    report = compare(model, _compress(model, "int8"), x_test, y_test, progress=False)
    report.plot(str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_plot_without_matplotlib_says_how_to_get_it(digits, monkeypatch, tmp_path):
    model = digits[0]
    report = compare(model, model, timing=False, progress=False)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        report.plot(str(tmp_path / "r.png"))


def test_conv_model_compresses_and_reports():
    rng = np.random.default_rng(6)
    g = pyinfer.Graph()
    x = g.input("x", (None, 3, 12, 12))
    h = g.conv2d(
        x,
        rng.standard_normal((8, 3, 3, 3), dtype=np.float32),
        padding=1,
        activation="relu",
        name="conv1",
    )
    h = g.node("Flatten", g.node("GlobalAvgPool", h))
    g.output(g.linear(h, rng.standard_normal((4, 8), dtype=np.float32), name="head"))
    model = g.build()
    data = rng.random((20, 3, 12, 12), dtype=np.float32)
    m = _compress(model, {"default": "int8", "layers": {"conv*": {"calibration": "minmax"}}}, data)
    assert m.weights["conv1.weight"].activation_scale == pytest.approx(data.max() / 127)
    report = compare(model, m, data, progress=False)
    assert report.layers[0]["op"] == "Conv2d" and report.layers[0]["cosine"] > 0.99
    assert report.layers[0]["latency_after_s"] > 0
    ref = kernels.conv2d(data, m.weights["conv1.weight"], padding=1, activation="relu")
    assert ref.shape == (20, 8, 12, 12)
