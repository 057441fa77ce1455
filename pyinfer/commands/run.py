"""``pyinfer run``: run a .pinf model on .npy/.npz inputs and report latency."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

HELP = "run a .pinf model on .npy inputs; print latency (median, p90)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pyinfer run``."""
    parser.add_argument("model", help="the .pinf file")
    parser.add_argument(
        "--input",
        "-i",
        action="append",
        required=True,
        metavar="[NAME=]FILE",
        help="an input array (.npy); NAME= picks the graph input (needed when there are "
        "several); a .npz file supplies inputs by their names",
    )
    parser.add_argument(
        "--output", "-o", help="write the output (.npy), or all outputs by name (.npz)"
    )
    parser.add_argument(
        "--repeat", "-n", type=int, default=1, help="timed runs (after one warm-up if > 1)"
    )
    parser.add_argument("--verify", action="store_true", help="check the file's SHA-256 first")
    parser.add_argument(
        "--no-mmap",
        action="store_true",
        help="read the weights into private memory instead of mapping the file (for a file "
        "that may be truncated or rewritten while the model runs)",
    )


def _read_array(path: str):
    from pyinfer.cli import UserError

    try:
        # allow_pickle=False: an input file can never execute code
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read input {path!r} as .npy/.npz: {exc}") from None


def read_inputs(specs: list[str], names: list[str]) -> dict[str, np.ndarray]:
    """Map ``--input`` arguments onto the model's input names."""
    from pyinfer.cli import UserError

    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or os.path.exists(spec):
            name, path = "", spec
        data = _read_array(path)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                for key in data.files:
                    inputs[key] = data[key]
            continue
        if not name:
            if len(names) != 1:
                raise UserError(f"the model has inputs {names}: name each one as --input NAME=FILE")
            name = names[0]
        inputs[name] = data
    missing = [n for n in names if n not in inputs]
    unknown = [n for n in inputs if n not in names]
    if missing or unknown:
        raise UserError(f"the model takes inputs {names}; missing {missing}, unknown {unknown}")
    return inputs


def run(args: argparse.Namespace) -> int:
    """Load, run ``--repeat`` times, print latency and output shapes, save outputs."""
    import pyinfer
    from pyinfer.cli import UserError

    if args.repeat < 1:
        raise UserError(f"--repeat must be at least 1, got {args.repeat}")
    try:
        model = pyinfer.load(args.model, verify=args.verify, mmap=not args.no_mmap)
    except PermissionError as exc:
        raise UserError(str(exc)) from None
    inputs = read_inputs(args.input, [s.name for s in model.inputs])
    if args.repeat > 1:
        model.run(inputs)  # warm-up: first-touch of the mapped weights, kernel caches
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        outputs = model.run(inputs)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    for name, value in outputs.items():
        print(f"output {name}: shape {list(value.shape)} dtype {value.dtype}")
    print(
        f"latency over {args.repeat} run(s): median {np.median(ms):.3f} ms, "
        f"p90 {np.percentile(ms, 90):.3f} ms"
    )
    if args.output:
        if args.output.endswith(".npz"):
            np.savez(args.output, **outputs)
        elif len(outputs) == 1:
            np.save(args.output, next(iter(outputs.values())), allow_pickle=False)
        else:
            raise UserError(f"the model has {len(outputs)} outputs: write them to a .npz file")
        print(f"wrote {args.output}")
    return 0
