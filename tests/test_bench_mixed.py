"""``pyinfer bench --suite mixed``: its models (small sizes) against float64 references,
ONNX Runtime's versions against pyinfer's, and the suite run end to end."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from scipy.special import erf

from pyinfer.bench import harness, report
from pyinfer.bench.suites import mixed
from pyinfer.cli import main
from tests import oracle

MLP = (48, 40, 40, 32, 10)
BLOCK = {"hidden": 32, "heads": 4, "ffn": 64, "seq": 8}

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnxruntime and onnx are not installed",
)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def mlp_reference(model, x: np.ndarray) -> np.ndarray:
    """The model's MLP layer by layer with the oracle (float64 sums on decoded weights)."""
    h = x
    for i in range(len(MLP) - 1):
        w = model.weights[f"fc{i}.weight"]
        last = i == len(MLP) - 2
        h = oracle.linear(h, w, model.constants[f"fc{i}.bias"], None if last else "relu")
    return h


def block_reference(p: dict, x: np.ndarray, heads: int, linear) -> np.ndarray:
    """The post-LayerNorm encoder block in float64; ``linear(h, name)`` runs layer name."""
    batch, seq, hidden = x.shape
    dh = hidden // heads

    def norm(h, name):
        scale, shift = p[name]
        d = h - h.mean(-1, keepdims=True)
        return d / np.sqrt((d * d).mean(-1, keepdims=True) + mixed.LAYER_NORM_EPS) * scale + shift

    rows = x.reshape(-1, hidden).astype(np.float64)
    q, k, v = (linear(rows, n).reshape(batch, seq, heads, dh) for n in "qkv")
    scores = q.transpose(0, 2, 1, 3) @ k.transpose(0, 2, 3, 1) / math.sqrt(dh)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3).reshape(-1, hidden)
    a = norm(linear(context, "o") + rows, "ln1")
    f = linear(a, "ff1")
    f = linear(0.5 * f * (1 + erf(f / math.sqrt(2))), "ff2")
    return norm(f + a, "ln2").reshape(batch, seq, hidden)


def test_magnitude_prune_zeroes_the_smallest():
    w = np.random.default_rng(0).standard_normal((20, 30)).astype(np.float32)
    pruned = mixed.magnitude_prune(w, 0.9)
    kept = pruned != 0
    assert kept.sum() == 60
    assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max()
    np.testing.assert_array_equal(pruned[kept], w[kept])


@pytest.mark.parametrize("version", list(mixed.MLP_VERSIONS))
def test_mlp_versions_match_the_oracle(version):
    layers = mixed.mlp_weights(np.random.default_rng(1), MLP)
    model = mixed.mlp_graph(layers, mixed.MLP_VERSIONS[version]).build()
    rows = model.layers()
    assert [r["encoding"] for r in rows] == list(mixed.MLP_VERSIONS[version])
    for r, encoding in zip(rows, mixed.MLP_VERSIONS[version]):
        assert r["sparsity"] >= (0.9 - 1e-9 if encoding == "csr" else 0)
    x = np.random.default_rng(2).standard_normal((5, MLP[0])).astype(np.float32)
    oracle.assert_close(model(x), mlp_reference(model, x), rtol=1e-4)


@pytest.mark.parametrize("encoding", mixed.BLOCK_VERSIONS)
def test_encoder_block_matches_a_float64_reference(encoding):
    p = mixed.block_weights(np.random.default_rng(3), BLOCK["hidden"], BLOCK["ffn"])
    model = mixed.block_graph(p, encoding, BLOCK["heads"], BLOCK["seq"]).build()
    x = np.random.default_rng(4).standard_normal((2, BLOCK["seq"], BLOCK["hidden"]))
    x = x.astype(np.float32)
    got = model(x)
    assert got.shape == x.shape

    def exact(h, name):
        w, b = p[name]
        return h @ w.T.astype(np.float64) + b

    def as_encoded(h, name):  # the layer as the model stores it, activations included
        return oracle.linear(h, model.weights[f"{name}.weight"], p[name][1]).astype(np.float64)

    assert relative_error(got, block_reference(p, x, BLOCK["heads"], as_encoded)) < 1e-4
    # int8 weights and activations stay close to the float block
    limit = 1e-4 if encoding == "dense" else 0.05
    assert relative_error(got, block_reference(p, x, BLOCK["heads"], exact)) < limit


@needs_ort
def test_onnx_models_match_pyinfer_dense():
    rng = np.random.default_rng(5)
    layers = mixed.mlp_weights(rng, MLP)
    x = rng.standard_normal((3, MLP[0])).astype(np.float32)
    session = mixed.ort_session(mixed.mlp_onnx(layers), 1)
    want = mixed.mlp_graph(layers, mixed.MLP_VERSIONS["dense"]).build()(x)
    assert relative_error(session.run(None, {"X": x})[0], want) < 1e-5

    p = mixed.block_weights(rng, BLOCK["hidden"], BLOCK["ffn"])
    x = rng.standard_normal((2, BLOCK["seq"], BLOCK["hidden"])).astype(np.float32)
    session = mixed.ort_session(mixed.block_onnx(p, BLOCK["heads"], BLOCK["seq"]), 1)
    want = mixed.block_graph(p, "dense", BLOCK["heads"], BLOCK["seq"]).build()(x)
    assert relative_error(session.run(None, {"X": x})[0], want) < 1e-4


def small_cases(batch: int = 2) -> list:
    return [mixed.mlp_case(batch, MLP), mixed.block_case(batch, **BLOCK)]


def run_small(cold_bytes: int = 0) -> list:
    return harness.run_cases(
        small_cases(), threads=1, cold_bytes=cold_bytes, min_time=0.001, settle=0, passes=1
    )


def test_suite_runs_every_impl_and_reports_models():
    results = run_small()
    rows = json.loads(json.dumps([r.as_dict() for r in results]))  # as the JSON holds them
    ort_present = importlib.util.find_spec("onnxruntime") is not None
    for r in rows:
        if r["impl"] == mixed.ORT_IMPL and not ort_present:
            assert "not installed" in r["error"]
            continue
        assert r["error"] is None and r["median_ms"] > 0 and r["calls_per_round"] == 1
    mlp = [r["impl"] for r in rows if r["case"].startswith("MLP")]
    assert mlp[:3] == ["pyinfer dense", "pyinfer mixed", "pyinfer compressed"]
    assert sum(r["kind"] == "layer" for r in rows) == 4
    table = report.models_table(rows)
    lines = [line for line in table.splitlines() if line.startswith("| MLP")]
    assert [line.split("|")[3].strip() for line in lines] == ["dense", "mixed", "compressed"]
    mixed_cells = [c.strip() for c in lines[1].strip("|").split("|")]
    assert float(mixed_cells[-1]) > 0  # run / layers alone
    assert sum(line.startswith("| encoder block") for line in table.splitlines()) == 2


def test_cold_weights_cycle_distinct_models():
    mlp_bytes = sum(4 * (k + 1) * n for k, n in zip(MLP[:-1], MLP[1:]))
    results = run_small(cold_bytes=2 * mlp_bytes)
    calls = {r.impl: r.calls_per_round for r in results if r.case.startswith("MLP")}
    assert calls["pyinfer dense"] == 2
    assert calls["pyinfer mixed"] > 2  # its weights take fewer bytes
    assert calls["pyinfer mixed layer 2 (int8) alone"] == calls["pyinfer mixed"]


def test_onnxruntime_missing_is_a_row_saying_so(monkeypatch):
    monkeypatch.setattr(mixed, "_installed", lambda name: False)
    results = harness.run_cases(
        [mixed.mlp_case(1, MLP)], threads=1, cold_bytes=0, min_time=0.001, settle=0, passes=1
    )
    (row,) = [r for r in results if r.impl == mixed.ORT_IMPL]
    assert "onnxruntime" in row.error and "not installed" in row.error
    assert all(r.error is None for r in results if r is not row)
    assert f"not measured: {mixed.ORT_IMPL}" in report.models_table([r.as_dict() for r in results])


QUICK_MIXED = "bench --suite mixed --quick --threads 1 --min-time 0.001 --passes 1 --no-hardware"


def test_bench_suite_mixed_end_to_end(tmp_path, capsys):
    assert main([*QUICK_MIXED.split(), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| model | batch | pyinfer | ms | vs pyinfer dense |" in printed
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["context"]["torch_first"] is False
    assert {r["suite"] for r in data["results"]} == {"mixed"}
    assert main(["bench", "--markdown", str(tmp_path / "results.json")]) == 0
    text = capsys.readouterr().out
    assert "### mixed: one model, 1 thread" in text and report.MODELS_LEGEND in text
    assert "| MLP 1024-1024-1024-1024-10 | 1 | mixed |" in text


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_first_runs_in_a_process_that_imported_torch_first(tmp_path):
    assert main([*QUICK_MIXED.split(), "--torch-first", "--out", str(tmp_path)]) == 0
    ctx = json.loads((tmp_path / "results.json").read_text())["context"]
    assert ctx["torch_first"] is True
    assert ctx["command"] == "pyinfer " + QUICK_MIXED + " --torch-first"
