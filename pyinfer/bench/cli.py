"""``pyinfer bench``: run benchmark suites, print Markdown tables, write JSON and plots;
or (``--markdown``) turn such JSON files into the curated report of ``bench/RESULTS.md``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HELP = "measure kernels against dense and peer baselines in one run (tables, JSON, PNG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pyinfer.bench.suites import SUITES

    parser.add_argument(
        "--suite",
        nargs="+",
        choices=sorted(SUITES),
        default=None,
        help="suites to run (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small shapes and short timings: a smoke run of every suite",
    )
    parser.add_argument(
        "--threads",
        default=None,
        help="comma-separated thread counts (default: 1 and all cores; --quick: all cores)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="'cold' (distinct weights cycled, total >= --cold-mb), 'cached' "
        "(one weight), or 'cold,cached' (default; --quick: cached)",
    )
    parser.add_argument(
        "--cold-mb",
        type=int,
        default=None,
        help="total weight bytes cycled for cold runs (default: 4x the "
        "last-level cache, at least 128)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds of timing per case (default 1.0; --quick 0.1)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder for results.json and plots (default: ./bench-results)",
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help="blocks per impl, taking turns with the case's other impls, so that a burst of "
        "load elsewhere on the machine does not hit one impl only (default 3; --quick: 1)",
    )
    parser.add_argument(
        "--no-hardware", action="store_true", help="skip measuring memory bandwidth and sgemm peak"
    )
    parser.add_argument(
        "--torch-first",
        action="store_true",
        help="run in a fresh process that imports torch before pyinfer, as in a process "
        "that trains, converts or pre-processes with torch (needs torch)",
    )
    parser.add_argument(
        "--markdown",
        nargs="+",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: print these results.json files as a Markdown report (one section "
        "per machine, one table per suite; what bench/RESULTS.md holds)",
    )


def _parse_list(text: str, what: str, convert=str) -> list:
    try:
        return [convert(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--{what} expects a comma-separated list, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from pyinfer.bench import harness
    from pyinfer.bench.suites import SUITES

    if args.markdown:
        from pyinfer.bench import report

        print(report.markdown(report.load(args.markdown)), end="")
        return 0
    if args.torch_first and os.environ.get(TORCH_FIRST_ENV) != "1":
        return _run_torch_first(args)
    cores = os.cpu_count() or 1
    threads = (
        _parse_list(args.threads, "threads", int)
        if args.threads
        else ([cores] if args.quick else sorted({1, cores}))
    )
    if any(t < 1 for t in threads):
        raise ValueError(f"--threads must be positive, got {threads}")
    weights = _parse_list(args.weights or ("cached" if args.quick else "cold,cached"), "weights")
    if set(weights) - {"cold", "cached"}:
        raise ValueError(f"--weights expects 'cold', 'cached' or both, got {args.weights!r}")
    cold_bytes = args.cold_mb * 1024**2 if args.cold_mb else harness.default_cold_bytes()
    min_time = args.min_time if args.min_time is not None else (0.1 if args.quick else 1.0)
    settle = 0.0 if args.quick else harness.SETTLE_S  # a smoke run needs no quiet start
    passes = args.passes if args.passes is not None else (1 if args.quick else harness.PASSES)
    if passes < 1:
        raise ValueError(f"--passes must be positive, got {passes}")

    ctx = harness.machine_context(measure_hardware=not args.no_hardware)
    ctx.update(_run_facts(args))
    print(_context_text(ctx))
    suites = args.suite or list(SUITES)
    all_results = []
    for name in suites:
        module = importlib.import_module(SUITES[name])
        cases = module.cases(quick=args.quick)
        results = []
        total = len(cases) * len(threads) * len(weights)
        counter = {"done": 0, "start": time.perf_counter()}
        for mode in weights:
            for n in threads:
                results += harness.run_cases(
                    cases,
                    threads=n,
                    cold_bytes=cold_bytes if mode == "cold" else 0,
                    min_time=min_time,
                    progress=_progress(counter, total, mode),
                    settle=settle,
                    passes=passes,
                )
        print(f"\n### {name}\n")
        print(harness.format_table(results, ctx.get("bandwidth_gbs")))
        if hasattr(module, "table"):  # the suite's own summary of its results
            print("\n" + module.table(results))
        all_results += results
        if hasattr(module, "plot"):
            try:
                args.out.mkdir(parents=True, exist_ok=True)
                module.plot(results, args.out / f"{name}.png")
                print(f"\nplot: {args.out / f'{name}.png'}")
            except ImportError as exc:
                print(f"\n(no plot: {exc})")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(
            {"context": ctx, "results": [r.as_dict() for r in all_results]}, indent=1, default=str
        )
    )
    os.replace(tmp, path)
    print(f"results: {path}")
    return 0


#: Set in the process ``--torch-first`` starts, which then runs the benchmark itself.
TORCH_FIRST_ENV = "PYINFER_BENCH_TORCH_FIRST"

#: What that process runs: torch first, then the ``pyinfer`` command.
_TORCH_FIRST_MAIN = (
    "import sys\nimport torch\nfrom pyinfer.cli import main\nsys.exit(main(sys.argv[1:]))"
)


def _run_torch_first(args: argparse.Namespace) -> int:
    """Run this benchmark in a fresh Python process that imports torch before pyinfer
    (this process has imported pyinfer already); the same pyinfer package, options and
    output folder. Returns its exit status."""
    import importlib.util

    import pyinfer

    if importlib.util.find_spec("torch") is None:
        raise ValueError("--torch-first needs torch, which is not installed")
    root = str(Path(pyinfer.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, TORCH_FIRST_ENV: "1", "PYTHONPATH": path}
    argv = ["bench", *_option_words(args), "--out", str(args.out)]
    return subprocess.run([sys.executable, "-c", _TORCH_FIRST_MAIN, *argv], env=env).returncode


def _imported_before(first: str, second: str) -> bool:
    """Whether module ``first`` was imported before ``second`` (``sys.modules`` keeps
    the order modules started importing)."""
    names = list(sys.modules)
    return first in sys.modules and names.index(first) < names.index(second)


def _run_facts(args: argparse.Namespace) -> dict:
    """When, what and which code: the date (UTC), the command, the version and commit,
    and whether torch was imported before pyinfer."""
    import kernels

    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": _command_line(args),
        "version": kernels.__version__,
        "torch_first": _imported_before("torch", "kernels"),
    }
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode == 0:
            facts["commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout, or no git: the version says enough
    return facts


def _command_line(args: argparse.Namespace) -> str:
    """The ``pyinfer bench`` command that gives these options."""
    return " ".join(["pyinfer", "bench", *_option_words(args)])


def _option_words(args: argparse.Namespace) -> list[str]:
    """The command-line words of these options (all but --out and --markdown)."""
    words = []
    if args.suite:
        words += ["--suite", *args.suite]
    if args.quick:
        words.append("--quick")
    for flag, value in (
        ("--threads", args.threads),
        ("--weights", args.weights),
        ("--cold-mb", args.cold_mb),
        ("--min-time", args.min_time),
        ("--passes", args.passes),
    ):
        if value is not None:
            words += [flag, str(value)]
    if args.no_hardware:
        words.append("--no-hardware")
    if args.torch_first:
        words.append("--torch-first")
    return words


def _progress(counter: dict, total: int, mode: str):
    def report(text: str) -> None:
        counter["done"] += 1
        elapsed = time.perf_counter() - counter["start"]
        print(
            f"  [{counter['done']}/{total}] {text} {mode} ({elapsed:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    return report


def _context_text(ctx: dict) -> str:
    lines = [
        f"machine: {ctx['processor']} ({ctx['machine']}, {ctx['cores']} cores), "
        f"ISA {ctx['isa']}, last-level cache {ctx['llc_bytes'] // 1024**2} MB"
    ]
    if "bandwidth_gbs" in ctx:
        lines.append(
            f"measured: memory read bandwidth {ctx['bandwidth_gbs']:.1f} GB/s, "
            f"sgemm {ctx['sgemm_gflops']:.0f} GFLOP/s"
        )
    for info in ctx.get("blas", []):
        lines.append(
            f"BLAS: {info.get('internal_api')} {info.get('version')} "
            f"({info.get('architecture')}, {info.get('num_threads')} threads)"
        )
    if ctx.get("openblas_env"):
        lines.append(
            f"warning: {ctx['openblas_env']} set: NumPy's BLAS may run slower "
            "(unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for benchmarks)"
        )
    return "\n".join(lines)
