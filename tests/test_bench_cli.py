"""`pyinfer bench` end to end on its quick shapes: every impl measured, JSON written,
and the JSON rendered as the Markdown report."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from pyinfer.cli import main

#: A quick csr run, its options in the order the results' "command" lists them.
QUICK_CSR = "bench --suite csr --quick --threads 1 --min-time 0.01 --no-hardware".split()


@pytest.fixture(scope="module")
def quick_csr_run(tmp_path_factory):
    """One quick csr run: (path of its results.json, what it printed)."""
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main([*QUICK_CSR, "--out", str(out)])
    assert rc == 0
    return out / "results.json", printed.getvalue()


def test_bench_quick_csr_writes_results(quick_csr_run):
    path, printed = quick_csr_run
    data = json.loads(path.read_text())
    ours = [r for r in data["results"] if r["kind"] == "ours"]
    dense = [r for r in data["results"] if r["kind"] == "dense"]
    assert ours and dense
    assert all(r["error"] is None and r["median_ms"] > 0 for r in ours + dense)
    assert all(r["speedup_vs_dense"] > 0 for r in ours)
    assert "| pyinfer csr |" in printed
    ctx = data["context"]
    assert ctx["command"] == "pyinfer bench " + " ".join(QUICK_CSR[1:])
    assert ctx["date"].endswith("UTC") and ctx["version"]


def test_markdown_report_of_a_quick_run(quick_csr_run, capsys):
    """One table row per (case, batch, our impl), with the fastest dense baseline and a
    ratio column per peer, all taken from the JSON."""
    path, _ = quick_csr_run
    data = json.loads(path.read_text())
    assert main(["bench", "--markdown", str(path)]) == 0
    text = capsys.readouterr().out
    ctx = data["context"]
    machine = f"## {ctx['processor']} ({ctx['machine']}, {ctx['cores']} cores, {ctx['isa']})"
    assert machine in text
    assert f"`{ctx['command']}`" in text and ctx["date"] in text
    assert "### csr: one cached weight, 1 thread" in text
    results = data["results"]
    peers = list(dict.fromkeys(r["impl"] for r in results if r["kind"] == "peer"))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| case |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == [
        "case",
        "batch",
        "ours",
        "ms",
        "fastest dense fp32",
        "ms",
        "vs dense",
        *(f"vs {p}" for p in peers),
    ]
    body = [line for line in lines[lines.index(header) + 2 :] if line.startswith("| ")]
    table = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    ours = [r for r in results if r["kind"] == "ours"]
    assert len(table) == len(ours)
    for cells, mine in zip(table, ours):
        assert len(cells) == len(columns)
        case, batch, impl, ms, dense_impl, dense_ms, vs_dense, *vs_peers = cells
        assert (case, int(batch), "pyinfer " + impl) == (mine["case"], mine["batch"], mine["impl"])
        assert float(ms) == pytest.approx(mine["median_ms"], rel=5e-3)
        same = [r for r in results if (r["case"], r["batch"]) == (case, int(batch))]
        fastest = min((r for r in same if r["kind"] == "dense"), key=lambda r: r["median_ms"])
        assert dense_impl + " fp32" == fastest["impl"]
        assert float(dense_ms) == pytest.approx(fastest["median_ms"], rel=5e-3)
        assert vs_dense == f"{mine['speedup_vs_dense']:.2f}x"
        for peer, cell in zip(peers, vs_peers):
            theirs = next(r for r in same if r["impl"] == peer)
            ratio = theirs["median_ms"] / mine["median_ms"]
            assert cell == ("n/a" if theirs["error"] else f"{ratio:.2f}x")


def test_markdown_refuses_a_file_that_is_not_a_results_file(tmp_path, capsys):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"results": []}))
    assert main(["bench", "--markdown", str(bad)]) == 2
    assert "not a results file" in capsys.readouterr().err


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
