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


def test_measure_lets_each_impl_start_on_a_quiet_machine(monkeypatch):
    """Each impl's block starts with a pause (idle library threads stop spinning), before
    any of its calls."""
    from pyinfer.bench import harness

    events = []
    monkeypatch.setattr(harness.time, "sleep", lambda s: events.append(("sleep", s)))
    rounds = {"a": lambda: events.append("a"), "b": lambda: events.append("b")}
    timings = harness.measure(rounds, min_time=0.0, min_rounds=1, warmup=1, settle=0.25)
    assert set(timings) == {"a", "b"}
    assert events[0] == ("sleep", 0.25)
    second = events.index("b")
    assert events[second - 1] == ("sleep", 0.25) and "a" not in events[second:]
