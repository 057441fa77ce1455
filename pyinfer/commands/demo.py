"""``pyinfer demo``: compress the shipped Fashion-MNIST models every way and measure each.

Runs with the base install (NumPy), offline: the dense models and a slice of the real
test set ship in ``pyinfer/demo/`` (made by ``scripts/make_demo_model.py``).
"""

from __future__ import annotations

import argparse
import os
import time

HELP = (
    "compress small Fashion-MNIST models (MLP, CNN) to every encoding and a mixed recipe; "
    "print accuracy, size, latency and speed-up against the dense original"
)

#: Variant name -> recipe. Pure encodings are forced onto every layer (to show what each
#: costs in accuracy); the mixed recipe lets the converter keep slower layers dense.
#: Pruning is global (one magnitude threshold over the model): on these models it loses
#: far less accuracy than the same sparsity in every layer, whose smallest layers suffer.
VARIANTS = {
    "int8": "int8",
    "int8 static": {"default": {"encoding": "int8", "calibration": "percentile"}},
    "int4": "int4",
    "pow2": "pow2",
    "binary": "binary",
    "csr 50%": {"default": {"encoding": "csr", "sparsity": 0.5, "pruning": "global"}},
    "csr 70%": {"default": {"encoding": "csr", "sparsity": 0.7, "pruning": "global"}},
    "csr 90%": {"default": {"encoding": "csr", "sparsity": 0.9, "pruning": "global"}},
    "mixed": {"default": "int8", "layers": {"fc1": "int4", "head": "dense"}},
}
#: Variants compressed without force: the converter's own choice per layer.
HONEST = ("mixed",)
MODELS = ("mlp", "cnn")
#: Samples used to calibrate static activation scales.
CALIBRATION_SAMPLES = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pyinfer demo``."""
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="which shipped models to compress (default: both)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        metavar="VARIANT",
        help="which variants to run (default: all of "
        + ", ".join(VARIANTS).replace("%", "%%")  # argparse formats help with %
        + ")",
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="test images to score (default: all 2000)"
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="rows per call when timing (default 1)"
    )
    parser.add_argument("--plot", metavar="PATH", help="write a PNG (needs matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write every report as JSON")
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples and timing rounds (a smoke test)"
    )


def demo_path(name: str) -> str:
    """Path of a file shipped in ``pyinfer/demo``."""
    import pyinfer.demo

    return os.path.join(os.path.dirname(pyinfer.demo.__file__), name)


def load_test_images(samples: int | None = None):
    """(images float32 [N, 28, 28] in [0, 1], labels int64 [N]) of the shipped slice."""
    import numpy as np

    with np.load(demo_path("fashion_test.npz"), allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    if samples is not None:
        images, labels = images[:samples], labels[:samples]
    return images.astype(np.float32) / 255, labels.astype(np.int64)


def run(args: argparse.Namespace) -> int:
    """Compress each model by each variant; print one table per model."""
    import json

    import numpy as np

    import pyinfer
    from pyinfer.cli import UserError
    from pyinfer.convert import measure
    from pyinfer.convert.compare import compare, plot_variants, require_matplotlib
    from pyinfer.convert.compress import compress

    if args.plot:
        try:
            require_matplotlib()
        except ImportError as exc:
            raise UserError(str(exc)) from None
    if args.batch < 1 or (args.samples is not None and args.samples < 1):
        raise UserError("--batch and --samples must be at least 1")
    started = time.perf_counter()
    samples = args.samples or (300 if args.quick else None)
    rounds = 3 if args.quick else 10
    variants = args.variants or list(VARIANTS)
    images, labels = load_test_images(samples)
    quiet = {"timing": False, "per_layer": False, "progress": False}  # timed below, whole
    groups: dict[str, dict] = {}
    for model_name in args.models:
        model = pyinfer.load(demo_path(f"fashion_{model_name}.pinf"))
        x = images.reshape(len(images), 784) if model_name == "mlp" else images[:, None]
        print(
            f"\n{model_name}: {_describe(model)}; {len(x)} Fashion-MNIST test images; "
            f"latency at batch {args.batch}, {pyinfer_threads()} threads"
        )
        x_time = np.ascontiguousarray(x[: args.batch])
        reports = {"dense": compare(model, model, x, labels, **quiet)}
        models = {"dense": model}
        for name in variants:
            recipe = VARIANTS[name]
            data = x[:CALIBRATION_SAMPLES] if "static" in name else None
            models[name] = compress(
                model, recipe, data, force=name not in HONEST, batch=args.batch, progress=False
            )
            reports[name] = compare(model, models[name], x, labels, **quiet)
        names = list(models)
        times = measure.time_calls([lambda m=m, x=x_time: m(x) for m in models.values()], rounds)
        for name, t in zip(names, times):
            total = reports[name].total
            total["latency_before_s"], total["latency_after_s"] = times[0], t
            total["speedup"] = times[0] / t
            reports[name].batch = args.batch
        print(_table(reports, models))
        groups[model_name] = reports
    elapsed = time.perf_counter() - started
    print(
        f"\nforced: every layer takes the variant's encoding; "
        f"{', '.join(HONEST)}: the converter kept layers dense where the compressed form "
        f"measured slower. {elapsed:.1f} s in all."
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {m: {v: r.to_dict() for v, r in rs.items()} for m, rs in groups.items()},
                f,
                indent=2,
                default=str,
            )
        print(f"wrote {args.json}")
    if args.plot:
        plot_variants(groups, args.plot, "pyinfer demo: Fashion-MNIST")
        print(f"wrote {args.plot}")
    return 0


def pyinfer_threads() -> int:
    """Threads the kernels use."""
    import kernels

    return kernels.get_num_threads()


def _describe(model) -> str:
    layers = [f"{r['name']} {list(r['weight_shape'])}" for r in model.layers() if r["encoding"]]
    return ", ".join(layers)


def _table(reports: dict, models: dict) -> str:
    header = (
        "variant",
        "accuracy",
        "change",
        "agreement",
        "size",
        "smaller",
        "latency",
        "speed-up",
        "layers",
    )
    rows = [header]
    base = reports["dense"].total
    for name, rep in reports.items():
        t = rep.total
        record = getattr(models[name], "compression", None)
        if record is None:
            layers = "fp32"
        else:
            kept = [d.layer for d in record.layers if d.status == "kept dense: slower"]
            mix = sorted({d.encoding for d in record.layers})
            layers = "/".join(mix) + (f" (kept dense: {', '.join(kept)})" if kept else "")
        rows.append(
            (
                name,
                f"{t['accuracy_after']:.2%}",
                f"{100 * (t['accuracy_after'] - base['accuracy_after']):+.2f}",
                f"{t['agreement']:.2%}",
                f"{t['bytes_after'] / 1024:.0f} KiB",
                f"{t['compression']:.1f}x",
                f"{t['latency_after_s'] * 1e6:.0f} us",
                f"{t['speedup']:.2f}x",
                layers,
            )
        )
    from pyinfer.convert.compare import text_table

    return "\n".join(text_table(rows))
