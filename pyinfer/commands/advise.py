"""``pyinfer advise``: choose each layer's compression by measuring, within an accuracy
budget; write the chosen recipe (and optionally the model, a report and the Pareto plot)."""

from __future__ import annotations

import argparse
import os

HELP = (
    "choose each layer's compression by measured latency and sensitivity within an "
    "accuracy budget, and write the recipe"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pyinfer advise``."""
    parser.add_argument("model", help="the dense model: .onnx, .pt2 or .pinf")
    parser.add_argument(
        "--data",
        required=True,
        help=".npz of calibration inputs (by input name; one array for a one-input model) "
        "and labels (key 'labels' or 'y'); without labels the budget is on top-1 agreement "
        "with the original",
    )
    add_budget_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="the recipe to write (.yaml needs PyYAML, or .json); pyinfer convert --recipe "
        "reads it",
    )
    parser.add_argument("--plot", help="write the candidates' Pareto front as a PNG here")
    parser.add_argument("--report", help="write every measurement and the choice as JSON here")
    parser.add_argument("--save", metavar="PINF", help="also write the compressed model here")
    parser.add_argument(
        "--objective",
        choices=("latency", "bytes"),
        default="latency",
        help="what to minimize (default latency)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="chooses the calibration subset of large data"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (tqdm) on stderr"
    )


def add_budget_arguments(parser: argparse.ArgumentParser, batch: bool = True) -> None:
    """--max-drop (and --batch), shared with ``pyinfer convert --recipe auto``."""
    parser.add_argument(
        "--max-drop",
        default="1%",
        help="the largest accuracy drop allowed: a percentage (0.5%%) or a fraction (0.005); "
        "default 1%%",
    )
    if batch:
        parser.add_argument(
            "--batch",
            type=int,
            default=1,
            help="rows per call the model will serve: layers are timed at it (default 1)",
        )


def run(args: argparse.Namespace) -> int:
    """Check everything, advise, write the recipe and what else was asked."""
    import pyinfer
    from pyinfer.cli import UserError
    from pyinfer.commands.convert import check_outputs, load_model, read_data
    from pyinfer.convert.advise import AdviseError, advise, parse_drop
    from pyinfer.convert.measure import DataError

    try:
        max_drop = parse_drop(args.max_drop)
    except AdviseError as exc:
        raise UserError(f"--max-drop: {exc}") from None
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in (".yaml", ".yml", ".json"):
        raise UserError(f"-o {args.output}: the recipe must end in .yaml, .yml or .json")
    if ext != ".json":
        try:
            import yaml  # noqa: F401
        except ImportError:
            raise UserError("writing a YAML recipe needs PyYAML: pip install pyyaml") from None
    check_outputs([args.output, args.plot, args.report, args.save], args.plot)
    try:
        model = load_model(args.model)
        data, labels = read_data(args.data, [s.name for s in model.inputs])
        advice = advise(
            model,
            (data, labels) if labels is not None else data,
            max_drop=max_drop,
            batch=args.batch,
            objective=args.objective,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except (AdviseError, DataError, ImportError) as exc:
        raise UserError(str(exc)) from None
    print(advice.table())
    print()
    print("\n".join(advice.summary()))
    advice.write_recipe(args.output)
    print(f"wrote {args.output}")
    if args.save:
        pyinfer.save(advice.model, args.save)
        print(f"wrote {args.save}")
    if args.report:
        import json

        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(advice.to_dict(), f, indent=2)
            f.write("\n")
        print(f"wrote {args.report}")
    if args.plot:
        advice.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0
