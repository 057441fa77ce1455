"""`pyinfer bench` end to end on its quick shapes: every impl measured, JSON written."""

from __future__ import annotations

import json

import pytest

from pyinfer.cli import main


def test_bench_quick_csr_writes_results(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "--quick",
            "--suite",
            "csr",
            "--no-hardware",
            "--min-time",
            "0.01",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    ours = [r for r in data["results"] if r["kind"] == "ours"]
    dense = [r for r in data["results"] if r["kind"] == "dense"]
    assert ours and dense
    assert all(r["error"] is None and r["median_ms"] > 0 for r in ours + dense)
    assert all(r["speedup_vs_dense"] > 0 for r in ours)
    assert "| pyinfer csr |" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--threads", "0"], ["--weights", "warm"]])
def test_bench_rejects_bad_options_in_one_line(args, capsys):
    assert main(["bench", "--quick", "--no-hardware", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyinfer bench:")
