"""The advisor against every single-encoding recipe, on a trained model and real data.

For each batch asked for, the advised model (``pyinfer.compress(model, "auto", ...)``
at that batch, calibrated on one part of the data), the dense model and the model of
each single-encoding recipe (``pyinfer.compress(model, recipe, ...)`` at that batch, the
path ``pyinfer convert`` takes) are scored on held-out data and timed interleaved in one
run, so they share the machine's load. A recipe *meets* the budget when its held-out
accuracy is within ``max_drop`` of the dense model's. The advisor should meet it and be
faster than the dense model and than every recipe that meets it.

This is not a ``pyinfer bench`` suite (those time random weights): it needs a trained
model and labelled data, which the caller brings (``tests/test_bench_advised.py`` runs
it on the converter's Fashion-MNIST models, the pretrained MNIST CNN and digits).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from kernels import registry
from pyinfer.convert import advise as advise_module
from pyinfer.convert.compress import compress
from pyinfer.convert.measure import time_calls
from pyinfer.model import Model

#: Batches the comparison runs at.
BATCHES = (1, 64)


def uniform_recipes() -> dict[str, Any]:
    """Every single-encoding recipe a user could type, by name: each candidate kind of
    the advisor applied to every layer that can take it."""
    recipes: dict[str, Any] = {}
    for name in registry.names():
        if name == "dense":
            continue
        if name == "csr":
            for s in advise_module.SPARSITIES:
                recipes[f"csr {s:.0%}"] = {"default": {"encoding": "csr", "sparsity": s}}
        elif name == "int8":
            recipes["int8 dynamic"] = "int8"
            recipes["int8 static"] = {"default": {"encoding": "int8", "calibration": "percentile"}}
        elif name == "int4":
            for g in (32, 128):
                recipes[f"int4 g{g}"] = {"default": {"encoding": "int4", "group_size": g}}
        elif name == "lowrank":
            recipes["lowrank (90 % energy)"] = "lowrank"
        else:
            for label, options in advise_module.option_grid(name):
                recipes[label] = {"default": {"encoding": name, **options}}
    for f in advise_module.STRUCTURED:
        recipes[f"structured {f:.0%}"] = {"default": {"encoding": "dense", "structured": f}}
    return recipes


def accuracy(model: Model, x: np.ndarray, labels: np.ndarray, chunk: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``x``."""
    preds = [model(x[i : i + chunk]).reshape(len(x[i : i + chunk]), -1).argmax(1)
             for i in range(0, len(x), chunk)]  # fmt: skip
    return float(np.mean(np.concatenate(preds) == labels))


def run(
    model: Model,
    calibration: tuple[np.ndarray, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray],
    *,
    max_drop: float = 0.01,
    batches: tuple[int, ...] = BATCHES,
    rounds: int = 20,
    passes: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Advise at each batch and compare on held-out data; see the module docstring.

    Returns
    -------
    dict
        ``dense_accuracy``, ``advise_seconds`` ({batch: s}, the first including the
        sensitivities), ``advice`` ({batch: Advice}), ``rows`` (one per model and batch:
        ``name, batch, accuracy, drop, meets, latency_s``) and ``verdict`` ({batch:
        {"meets", "faster_than_dense", "faster_than_meeting", "slower_than"}}).
    """
    x_cal, y_cal = calibration
    x, y = held_out
    advisor = advise_module.Advisor(model, (x_cal, y_cal), seed=seed, progress=progress)
    dense_acc = accuracy(model, x, y)
    out: dict[str, Any] = {
        "dense_accuracy": dense_acc,
        "advise_seconds": {},
        "advice": {},
        "rows": [],
        "verdict": {},
    }
    recipes = uniform_recipes()
    for batch in batches:
        start = time.perf_counter()
        advice = advisor.advise(max_drop, batch=batch)
        out["advise_seconds"][batch] = time.perf_counter() - start
        out["advice"][batch] = advice
        models = {"dense": model, "advised": advice.model}
        for name, recipe in recipes.items():
            models[name] = compress(model, recipe, x_cal, batch=batch, progress=False)
        scores = {name: accuracy(m, x, y) for name, m in models.items()}
        rows = np.ascontiguousarray(x[:batch])
        names = list(models)
        times = [np.inf] * len(names)
        for shift in range(passes):  # rotated orders: no model always runs first
            order = names[shift:] + names[:shift]
            got = time_calls([lambda m=models[n], r=rows: m(r) for n in order], rounds=rounds)
            for n, t in zip(order, got):
                i = names.index(n)
                times[i] = min(times[i], t)
        for name, t in zip(names, times):
            drop = dense_acc - scores[name]
            out["rows"].append(
                {
                    "name": name,
                    "batch": batch,
                    "accuracy": scores[name],
                    "drop": drop,
                    "meets": drop <= max_drop + 1e-12,
                    "latency_s": t,
                }
            )
        mine = {r["name"]: r for r in out["rows"] if r["batch"] == batch}
        advised = mine["advised"]
        meeting = [r for r in mine.values() if r["meets"] and r["name"] not in ("advised", "dense")]
        slower_than = [r["name"] for r in meeting if r["latency_s"] <= advised["latency_s"]]
        out["verdict"][batch] = {
            "meets": advised["meets"],
            "faster_than_dense": advised["latency_s"] < mine["dense"]["latency_s"],
            "faster_than_meeting": not slower_than,
            "slower_than": slower_than,
        }
    return out


def table(result: dict[str, Any], title: str = "") -> str:
    """The comparison as text: one line per model, latency at each batch."""
    batches = sorted(result["verdict"])
    names = list(dict.fromkeys(r["name"] for r in result["rows"]))
    by = {(r["name"], r["batch"]): r for r in result["rows"]}
    lines = [title] if title else []
    lines.append(
        f"dense held-out accuracy {100 * result['dense_accuracy']:.2f}%; advise time "
        + ", ".join(f"batch {b}: {s:.1f} s" for b, s in result["advise_seconds"].items())
    )
    head = f"{'model':24s}" + "".join(
        f"  {'acc b' + str(b):>10s} {'drop':>6s} {'meets':>5s} {'latency':>10s} {'vs dense':>8s}"
        for b in batches
    )
    lines.append(head)
    for n in names:
        cells = []
        for b in batches:
            r = by.get((n, b))
            if r is None:
                cells.append(" " * 44)
                continue
            dense = by[("dense", b)]["latency_s"]
            meets = "yes" if r["meets"] else "no"
            cells.append(
                f"  {100 * r['accuracy']:9.2f}% {100 * r['drop']:+5.2f} {meets:>5s}"
                f" {1e6 * r['latency_s']:8.1f}us {dense / r['latency_s']:7.2f}x"
            )
        lines.append(f"{n:24s}" + "".join(cells))
    for b in batches:
        v = result["verdict"][b]
        lines.append(
            f"batch {b}: advised meets the budget: {v['meets']}; faster than dense: "
            f"{v['faster_than_dense']}; faster than every recipe meeting it: "
            f"{v['faster_than_meeting']}"
            + (f" (not: {', '.join(v['slower_than'])})" if v["slower_than"] else "")
        )
        lines += [f"  {line}" for line in result["advice"][b].summary()]
    return "\n".join(lines)
