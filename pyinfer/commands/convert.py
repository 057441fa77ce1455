"""``pyinfer convert``: an ONNX, .pt2 or .pinf model in, a compressed .pinf out, and a
report."""

from __future__ import annotations

import argparse
import os

HELP = "compress a model (.onnx, .pt2 or .pinf) by a recipe into a .pinf file, and report the gains"

#: Keys of a --data .npz file that hold labels rather than inputs.
LABEL_KEYS = ("labels", "label", "y")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pyinfer convert``."""
    parser.add_argument(
        "model",
        help="the model: .onnx (needs pyinfer[convert]), .pt2 from torch.export.save (needs "
        "pyinfer[convert,torch]; torch unpickles parts of it: only files you trust) or .pinf",
    )
    parser.add_argument("-o", "--output", required=True, help="the .pinf file to write")
    from kernels import registry

    parser.add_argument(
        "--recipe",
        required=True,
        help=f"an encoding for every layer ({', '.join(registry.names())}) or a .json/.yaml "
        "recipe: {default: int8, layers: {fc1: {encoding: csr, sparsity: 0.9}, 'conv*': int4, "
        "fc2: {encoding: dense, structured: 0.5}, fc3: {encoding: lowrank, rank: 64}, "
        "head: dense}}; or auto: chosen per layer by measured latency and sensitivity "
        "within --max-drop on --data (see pyinfer advise)",
    )
    parser.add_argument(
        "--data",
        help=".npz of sample inputs (by input name; one array for a one-input model) and "
        "optionally labels (key 'labels' or 'y'): calibration, errors and accuracy",
    )
    parser.add_argument(
        "--max-drop",
        help="with --recipe auto: the largest accuracy drop allowed, a percentage (0.5%%) "
        "or a fraction (0.005); default 1%%",
    )
    parser.add_argument("--report", help="write the report as JSON here")
    parser.add_argument("--plot", help="write the report as a PNG here (needs matplotlib)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="keep every asked encoding even where it measures slower than dense",
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="rows per call when timing layers (default 1)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (tqdm) on stderr"
    )
    parser.add_argument(
        "--finetune",
        type=int,
        metavar="EPOCHS",
        help="fine-tune for EPOCHS passes over --data before encoding (needs torch): masks "
        "for pruned layers, fake quantization with the encodings' codecs; --data must hold "
        "the inputs and 'labels' (int classes, one per sample)",
    )
    parser.add_argument(
        "--distill",
        metavar="T,ALPHA",
        help="with --finetune: distil from the original model at temperature T with weight "
        "ALPHA (e.g. 2,0.5); --compare-distill also trains without it for the report",
    )
    parser.add_argument(
        "--compare-distill",
        action="store_true",
        help="with --distill: also fine-tune without distillation and report both runs",
    )


def load_model(path: str):
    """A dense ``pyinfer.Model`` from a .pinf, .onnx or .pt2 file."""
    import pyinfer
    from pyinfer.cli import UserError

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".pinf":
        try:
            return pyinfer.load(path, mmap=False)
        except PermissionError as exc:
            raise UserError(str(exc)) from None
    if ext == ".onnx":
        try:
            from pyinfer.convert.onnx_import import from_onnx
        except ImportError as exc:
            raise UserError(
                f"reading ONNX needs the converter extra: pip install 'pyinfer[convert]' ({exc})"
            ) from None
        return from_onnx(path)
    if ext == ".pt2":
        return _from_pt2(path)
    raise UserError(f"{path}: expected a .onnx, .pt2 or .pinf model")


def _from_pt2(path: str):
    """A dense ``pyinfer.Model`` from a ``torch.export.save`` file, every failure of
    reading or exporting it as one line."""
    from pyinfer.cli import UserError
    from pyinfer.convert.torch_import import from_torch, load_pt2

    try:
        program = load_pt2(path)  # torch missing, or not a program: one line each
    except (ImportError, ValueError) as exc:
        raise UserError(str(exc)) from None
    import torch

    try:
        return from_torch(program)
    except ImportError as exc:  # onnx or onnxscript
        raise UserError(str(exc)) from None
    except torch.onnx.errors.OnnxExporterError as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: torch.onnx.export failed: {first_line}") from None


def read_data(path: str, input_names: list[str]):
    """(inputs, labels or None) from a .npz (or a .npy for a one-input model)."""
    import numpy as np

    from pyinfer.cli import UserError

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.splitext(path)[1].lower() not in (".npz", ".npy"):
        raise UserError(f"data {path}: expected a .npz (or .npy) file")
    try:
        loaded = np.load(path, allow_pickle=False)  # a data file can never execute code
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read data {path!r} as .npz/.npy: {exc}") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    if len(input_names) == 1 and input_names[0] not in arrays and len(arrays) == 1:
        arrays = {input_names[0]: next(iter(arrays.values()))}
    return arrays, labels


def check_outputs(paths: list, plot: str | None) -> None:
    """Before any work: every output path's directory exists, and matplotlib is there
    when a plot is asked for (an error after minutes of work would lose them)."""
    from pyinfer.cli import UserError

    for path in paths:
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UserError(f"cannot write {path}: its directory does not exist")
    if plot:
        from pyinfer.convert.compare import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as exc:
            raise UserError(str(exc)) from None


def finetune_options(args: argparse.Namespace):
    """The ``FineTune`` that --finetune, --distill and --compare-distill ask for (None:
    no fine-tuning), checked before any work."""
    from pyinfer.cli import UserError
    from pyinfer.convert.finetune import Distill, FineTune

    if args.finetune is None:
        if args.distill or args.compare_distill:
            raise UserError("--distill and --compare-distill need --finetune EPOCHS")
        return None
    if args.finetune < 1:
        raise UserError(f"--finetune must be at least 1 epoch, got {args.finetune}")
    if not args.data:
        raise UserError("--finetune needs --data: a .npz of inputs and 'labels'")
    distill = None
    if args.distill:
        try:
            temperature, alpha = (float(v) for v in args.distill.split(","))
            distill = Distill(temperature, alpha)
        except ValueError as exc:
            raise UserError(f"--distill expects T,ALPHA such as 2,0.5 ({exc})") from None
    if args.compare_distill and distill is None:
        raise UserError("--compare-distill needs --distill T,ALPHA")
    return FineTune(epochs=args.finetune, distill=distill, compare_distill=args.compare_distill)


def run(args: argparse.Namespace) -> int:
    """Check everything, compress, save atomically, print (and write) the report."""
    import pyinfer
    from pyinfer.cli import UserError
    from pyinfer.convert.compare import compare
    from pyinfer.convert.compress import compress
    from pyinfer.convert.finetune import FineTuneError
    from pyinfer.convert.measure import DataError, check_data
    from pyinfer.convert.recipe import RecipeError, read_recipe

    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    auto = args.recipe == "auto"
    max_drop = None
    if auto:
        from pyinfer.convert.advise import AdviseError, parse_drop

        if not args.data:
            raise UserError("--recipe auto needs --data: a .npz of inputs (and 'labels')")
        try:
            max_drop = parse_drop(args.max_drop if args.max_drop is not None else "1%")
        except AdviseError as exc:
            raise UserError(f"--max-drop: {exc}") from None
    elif args.max_drop is not None:
        raise UserError("--max-drop applies to --recipe auto")
    finetune = finetune_options(args)
    check_outputs([args.output, args.plot, args.report], args.plot)
    try:
        if not auto:
            read_recipe(args.recipe)  # a bad recipe fails before the model is read
        model = load_model(args.model)
        data = labels = None
        if args.data:
            data, labels = read_data(args.data, [s.name for s in model.inputs])
            data = check_data(model, data)
        progress = not args.no_progress
        train = (data, labels) if finetune is not None or (auto and labels is not None) else data
        compressed = compress(
            model,
            args.recipe,
            train,
            force=args.force,
            batch=args.batch,
            progress=progress,
            finetune=finetune,
            max_drop=max_drop,
        )
    except (RecipeError, DataError, FineTuneError, ImportError) as exc:
        raise UserError(str(exc)) from None
    pyinfer.save(compressed, args.output)  # atomic: Ctrl-C leaves no partial file
    report = compare(model, compressed, data, labels, batch=args.batch, progress=progress)
    print(report.table())
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1024:.1f} KiB)")
    if args.report:
        report.to_json(args.report)
        print(f"wrote {args.report}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0
