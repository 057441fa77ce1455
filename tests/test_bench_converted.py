"""``pyinfer bench --suite converted``: the converter's models beside ONNX Runtime's own
quantization, run end to end (each ONNX Runtime session is checked against pyinfer's
dense model inside the suite before it is timed)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from pyinfer.bench import harness, report
from pyinfer.bench.suites import converted

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnxruntime and onnx are not installed",
)


def test_cnn_model_matches_a_numpy_statement_of_it():
    rng = np.random.default_rng(3)
    p = converted.cnn_weights(rng)
    x = rng.standard_normal((2, 1, 28, 28), dtype=np.float32)
    h = x.astype(np.float64)
    for i in range(len(converted.CNN_CHANNELS)):
        w, b = p[f"conv{i}"]
        padded = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        n, c, hh, ww = h.shape
        cols = np.stack(
            [padded[:, :, ky : ky + hh, kx : kx + ww] for ky in range(3) for kx in range(3)], 2
        )  # [n, c, 9, h, w]
        h = np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], c, 9)) + b[:, None, None]
        h = np.maximum(h, 0).reshape(n, -1, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
    h = np.maximum(h.reshape(len(x), -1) @ p["fc"][0].T + p["fc"][1], 0)
    want = h @ p["head"][0].T + p["head"][1]
    got = converted.cnn_model(p)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@needs_ort
def test_suite_runs_every_impl_and_compares_with_onnxruntime_int8():
    results = harness.run_cases(
        converted.cases(quick=True), threads=1, cold_bytes=0, min_time=0.001, settle=0, passes=1
    )
    rows = json.loads(json.dumps([r.as_dict() for r in results]))
    assert all(r["error"] is None and r["median_ms"] > 0 for r in rows), [
        (r["impl"], r["error"]) for r in rows if r["error"]
    ]
    impls = {r["impl"] for r in rows}
    assert {"pyinfer int8", "pyinfer csr 90%", "onnxruntime int8 dynamic"} <= impls
    assert {"pyinfer int8 static", "onnxruntime int8 static"} <= impls
    table = report.markdown(
        [{"context": {}, "results": rows}]
    )  # the generic table, with a column per peer
    assert "vs onnxruntime int8 dynamic" in table and "vs onnxruntime int8 static" in table
