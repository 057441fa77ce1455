"""`pyinfer bench` end to end on its quick shapes: every impl measured, JSON written."""

from __future__ import annotations

import json

import numpy as np
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


@pytest.mark.parametrize("args", [["--threads", "0"], ["--weights", "warm"], ["--passes", "0"]])
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


def test_measure_takes_turns_in_passes_and_pools_their_samples(monkeypatch):
    """With passes=3 each round runs in three blocks that alternate with the other
    round's, each after its pause, and its timing counts the samples of all three."""
    from pyinfer.bench import harness

    events = []
    monkeypatch.setattr(harness.time, "sleep", lambda s: events.append("sleep"))
    rounds = {"a": lambda: events.append("a"), "b": lambda: events.append("b")}
    timings = harness.measure(rounds, min_time=0.0, min_rounds=6, warmup=1, settle=0.1, passes=3)
    blocks = "".join(e if e != "sleep" else "|" for e in events).strip("|").split("|")
    # warm-up call + 2 timed calls per block (6 over 3 passes), a and b taking turns
    assert blocks == ["aaa", "bbb"] * 3
    assert timings["a"].rounds == timings["b"].rounds == 6


def test_a_peer_that_fails_while_timed_becomes_an_error_row():
    from pyinfer.bench import harness

    def broken(pool, x, cold_bytes):
        def run():
            raise RuntimeError("peer crashed")

        return harness.Prepared(run, 1, 0)

    def fine(pool, x, cold_bytes):
        return harness.Prepared(lambda: x.sum(), 1, x.nbytes)

    case = harness.Case(
        suite="t",
        label="tiny",
        batch=1,
        make_weight=lambda rng: np.zeros((2, 2), np.float32),
        make_input=lambda rng: np.ones((1, 2), np.float32),
        impls=[harness.Impl("ok", "dense", fine), harness.Impl("bad", "peer", broken)],
        flops=8.0,
    )
    rows = harness.run_cases([case], threads=1, cold_bytes=0, min_time=0.0, settle=0.0)
    by_name = {r.impl: r for r in rows}
    assert by_name["bad"].error == "RuntimeError: peer crashed"
    assert by_name["ok"].error is None and by_name["ok"].median_ms > 0
