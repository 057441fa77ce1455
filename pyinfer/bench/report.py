"""Benchmark JSON (what ``pyinfer bench`` writes) -> a curated Markdown report.

One section per machine (CPU model, ISA, cores, measured bandwidth and peak, BLAS, and
the date and command of each run), then one compact table per suite, weight mode and
thread count: for each of our impls, its median, the fastest dense fp32 baseline's, and
the ratios against that baseline, against each peer and against any baseline the suite
names in its cases' ``meta["compare_with"]``. ``bench/RESULTS.md`` is this output for
the runs it reports: ``pyinfer bench --markdown results.json ... > bench/RESULTS.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

LEGEND = (
    "Medians in ms per call. *vs dense*: the fastest dense fp32 baseline's time (NumPy, "
    "ONNX Runtime, torch, as installed) divided by ours; *vs X*: X's time divided by ours "
    "(above 1: ours is faster). Cold weights: distinct weights cycled, totalling several "
    "times the last-level cache, as in a multi-layer model; cached: one weight. Compare "
    "ratios within one table: timings on a shared machine vary from run to run."
)

#: Added to the legend when a run holds whole-model tables.
MODELS_LEGEND = (
    "Whole models (suite mixed): medians in ms per model run, through the runtime; "
    "*vs pyinfer dense*, *vs onnxruntime dense*: that model's time divided by this one's; "
    "*run / layers alone*: the model's time divided by the sum of its layers' times, each "
    "layer's kernel timed alone (1.0: the runtime adds nothing)."
)


def load(paths: Iterable[Path]) -> list[dict]:
    """The runs in these JSON files, each ``{"context": ..., "results": [...]}``."""
    runs = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or "results" not in data or "context" not in data:
            raise ValueError(f"{path}: not a results file written by pyinfer bench")
        runs.append(data)
    return runs


def markdown(runs: list[dict]) -> str:
    """The report of ``runs`` (as :func:`load` returns them), machine by machine."""
    machines: dict[tuple, list[dict]] = {}
    for run in runs:
        machines.setdefault(_machine_key(run["context"]), []).append(run)
    parts = ["# Benchmark results", LEGEND]
    if any(_is_models(run["results"]) for run in runs):
        parts.append(MODELS_LEGEND)
    for machine_runs in machines.values():
        parts += _machine_section(machine_runs)
    return "\n\n".join(parts) + "\n"


def _machine_key(ctx: dict) -> tuple:
    return (ctx.get("processor"), ctx.get("machine"), ctx.get("cores"), ctx.get("isa"))


def _machine_section(runs: list[dict]) -> list[str]:
    ctx = runs[0]["context"]
    facts = [f"- ISA: {ctx.get('isa')}; last-level cache {ctx.get('llc_bytes', 0) // 1024**2} MB"]
    measured = next((r["context"] for r in runs if "bandwidth_gbs" in r["context"]), None)
    if measured:
        facts.append(
            f"- measured: memory read bandwidth {measured['bandwidth_gbs']:.1f} GB/s, "
            f"sgemm {measured['sgemm_gflops']:.0f} GFLOP/s"
        )
    for info in ctx.get("blas") or []:
        facts.append(
            f"- BLAS: {info.get('internal_api')} {info.get('version')} "
            f"({info.get('architecture')}, {info.get('num_threads')} threads)"
        )
    for number, run in enumerate(runs, 1):
        facts.append(f"- {_run_name(runs, number)}: {_run_line(run['context'])}")
    out = [
        f"## {ctx.get('processor')} ({ctx.get('machine')}, {ctx.get('cores')} cores, "
        f"{ctx.get('isa')})"
    ]
    out.append("\n".join(facts))
    for number, run in enumerate(runs, 1):
        for (suite, cold, threads), rows in _sections(run["results"]):
            what = "cold weights" if cold else "one cached weight"
            if _is_models(rows):
                what = "distinct models cycled" if cold else "one model"
            title = f"### {suite}: {what}, "
            title += f"{threads} thread{'s' if threads != 1 else ''}"
            if len(runs) > 1:
                title += f" ({_run_name(runs, number)})"
            out += [title, _table(rows)]
    return out


def _run_name(runs: list[dict], number: int) -> str:
    return "run" if len(runs) == 1 else f"run {number}"


def _run_line(ctx: dict) -> str:
    when = ctx.get("date", "date not recorded")
    version = " ".join(str(v) for v in (ctx.get("version"), ctx.get("commit")) if v)
    command = ctx.get("command")
    line = f"{when}" + (f", pyinfer {version}" if version else "")
    line += f": `{command}`" if command else ""
    if ctx.get("openblas_env"):
        line += f" (with {', '.join(ctx['openblas_env'])} set)"
    if ctx.get("torch_first"):
        line += " (torch imported first)"
    return line


def _sections(results: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """Results grouped by (suite, cold, threads): suites in run order, cold weights
    first, most threads first."""
    groups: dict[tuple, list[dict]] = {}
    suites: list[str] = []
    for r in results:
        if r["suite"] not in suites:
            suites.append(r["suite"])
        groups.setdefault((r["suite"], r["cold"], r["threads"]), []).append(r)
    return sorted(groups.items(), key=lambda kv: (suites.index(kv[0][0]), not kv[0][1], -kv[0][2]))


def _table(rows: list[dict]) -> str:
    """One line per (case, batch, our impl)."""
    if _is_models(rows):
        return models_table(rows)
    # peers, and any baseline a suite asks to see beside them (meta "compare_with")
    named = [name for r in rows for name in r.get("meta", {}).get("compare_with", ())]
    peers = list(dict.fromkeys(named + [r["impl"] for r in rows if r["kind"] == "peer"]))
    head = ["case", "batch", "ours", "ms", "fastest dense fp32", "ms", "vs dense"]
    head += [f"vs {p}" for p in peers]
    lines = [
        "| " + " | ".join(head) + " |",
        "|---|---:|---|---:|---|---:|---:|" + "---:|" * len(peers),
    ]
    for (case, batch), group in _by_case(rows).items():
        ok = _medians(group)
        dense = [r for r in group if r["kind"] == "dense" and r["impl"] in ok]
        fastest = min(dense, key=lambda r: r["median_ms"], default=None)
        for r in group:
            if r["kind"] != "ours":
                continue
            mine = ok.get(r["impl"])
            cells = [case, str(batch), _short(r["impl"]), _ms(mine)]
            if fastest is None:
                cells += ["n/a", "n/a", "n/a"]
            else:
                cells += [_short(fastest["impl"]), _ms(fastest["median_ms"])]
                cells.append(_ratio(fastest["median_ms"], mine))
            cells += [_ratio(ok.get(p), mine) for p in peers]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _row_notes(rows) + _error_notes(rows, "failed"))


def _by_case(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by (case, batch), in run order."""
    cases: dict[tuple, list[dict]] = {}
    for r in rows:
        cases.setdefault((r["case"], r["batch"]), []).append(r)
    return cases


def _medians(group: list[dict]) -> dict[str, float]:
    """impl -> median ms of the rows measured without error."""
    return {r["impl"]: r["median_ms"] for r in group if not r.get("error")}


def _error_notes(rows: list[dict], verb: str) -> list[str]:
    """Lines for the report under a table: each impl and case that raised, and why."""
    notes = dict.fromkeys(
        f"{r['impl']} on {r['case']}: {r['error']}" for r in rows if r.get("error")
    )
    return [""] + [f"- {verb}: {note}" for note in notes] if notes else []


def _row_notes(rows: list[dict]) -> list[str]:
    """Lines for the report under a table: what a row's impl noted about itself."""
    notes = [
        f"- {r['impl']} on {r['case']} batch {r['batch']}: {r['meta']['note']}"
        for r in rows
        if r.get("meta", {}).get("note")
    ]
    return [""] + notes if notes else []


def _is_models(rows: list[dict]) -> bool:
    """Whether these are whole-model rows (a suite's cases say ``meta["layout"]``)."""
    return any(r.get("meta", {}).get("layout") == "models" for r in rows)


def models_table(rows: list[dict]) -> str:
    """Whole models: one line per (model, batch, our version) with its median, the ratios
    against the case's ``meta["reference"]`` (pyinfer's dense model) and
    ``meta["baseline"]`` (ONNX Runtime on the dense model), and, for a model whose layers
    were also timed alone (``meta["parts"]``), their summed medians and run / that sum."""
    meta = rows[0].get("meta", {}) if rows else {}
    reference, baseline = meta.get("reference"), meta.get("baseline")
    head = ["model", "batch", "pyinfer", "ms", f"vs {reference or 'reference'}"]
    head += [f"vs {_short(baseline or 'baseline')}", "layers alone ms", "run / layers alone"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for (case, batch), group in _by_case(rows).items():
        ok = _medians(group)
        parts = group[0].get("meta", {}).get("parts", {})
        for r in group:
            if r["kind"] != "ours":
                continue
            mine = ok.get(r["impl"])
            cells = [case, str(batch), _short(r["impl"]), _ms(mine)]
            cells += [_ratio(ok.get(reference), mine), _ratio(ok.get(baseline), mine)]
            alone = [ok.get(name) for name in parts.get(r["impl"], ())]
            if alone and None not in alone and mine:
                cells += [_ms(sum(alone)), f"{mine / sum(alone):.2f}"]
            else:
                cells += ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _error_notes(rows, "not measured"))


def _short(impl: str) -> str:
    """``pyinfer int8`` -> ``int8``; ``numpy dense fp32`` -> ``numpy dense``."""
    return impl.removeprefix("pyinfer ").removesuffix(" fp32")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _ratio(theirs: float | None, mine: float | None) -> str:
    return "n/a" if theirs is None or not mine else f"{theirs / mine:.2f}x"
