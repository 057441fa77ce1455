"""The advisor: choose each layer's compression by measuring, within an accuracy budget.

``pyinfer.compress(model, "auto", data, max_drop=0.01)`` and ``pyinfer advise`` call
:func:`advise`. For every weighted layer it tries every candidate, alone:

- ``dense``; ``csr`` after magnitude pruning to 50, 70, 80, 90 and 95 %; 25 and 50 % of
  the output neurons (channels) removed (structured), then dense or quantized as below
  (int8, int4); ``lowrank`` at 1/4,
  1/8 and 1/16 of the rank where it stops paying (in·out / (in + out)); ``int8`` with
  dynamic and with static (calibrated, percentile) activation scales; ``int4`` in
  groups of 32 and of 128; and each remaining registry encoding under each value of its
  enumerated options (``pow2`` and ``binary`` with float and with integer activations),
  wherever the encoding can serve the layer. Pruning then quantizing is not offered:
  no kernel runs pruned int8 weights faster than dense int8 ones.

Sensitivity: the change of the model's top-1 errors on the calibration samples (against
the labels when given, else against the original model's predictions) when only that
layer is compressed. The values entering each layer are computed once by one pass of
the original model and kept, so each candidate costs one forward pass from its layer on
(stopped early, and extrapolated, once it has lost more than ``HOPELESS`` of the samples:
no budget could take it).

Latency: each candidate's layer timed alone with the kernels that will run it, at the
model's shapes and the batch asked for, interleaved with the other candidates of the
layer (warm-up, then the fastest of many short rounds, as
:func:`pyinfer.convert.measure.time_calls`). Removing neurons also shrinks the layers
that read them: their saving is counted to the candidate. Bytes are the encoded sizes.

The search:

1. per layer, keep the candidates that are faster than dense by more than timing noise
   (``SLOWER_MARGIN``; objective ``"latency"``) or smaller (``"bytes"``);
2. take sensitivities as additive, in whole samples: the assignment minimizing the
   total latency (bytes) whose summed error increase fits the budget is a
   multiple-choice knapsack, solved exactly by dynamic programming over the budget;
3. verify: build the whole model with that assignment and count its errors on the
   calibration samples. The budget holds when the measured drop plus ``margin``
   standard errors (of the paired difference: the square root of the samples whose
   outcome changed) is within ``max_drop``. When it does not, the layers interact, and
   step 2 runs again with the budget lowered by the overshoot, until it holds (all
   dense always does);
4. uniform assignments (one candidate kind on every layer it applies to, as a
   one-encoding recipe would, and on only the layers where it was kept in step 1) whose
   summed sensitivities are within twice the budget are verified too (sensitivities are
   not always additive: together, layers can cost less than the sum);
5. of the verified assignments that hold, the fastest whole model at the batch (timed
   interleaved, in rotated orders: a sum of layer times misses what layers share) is
   kept, or the one of fewest bytes;
6. greedy moves from it: one layer at a time to a candidate predicted cheaper (most
   saving per error unit first), kept when the model still holds and is faster;
7. optionally fine-tune the chosen assignment (``finetune=``) and verify it again.

The result is deterministic for given data, ``seed`` (which samples calibrate) and
timings: timings vary from run to run on a loaded machine, so :class:`Advice` keeps
them (``advice.timings``) and ``advise(..., timings=advice.timings[batch])`` reuses
them. Cold weights are not simulated: layers are timed with their weights in cache.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

import kernels
from kernels import registry
from kernels.encodings.base import EncodedWeight
from kernels.encodings.lowrank import from_factors
from pyinfer.convert import measure
from pyinfer.convert.compare import text_table
from pyinfer.convert.compress import (
    SLOWER_MARGIN,
    ActivationRange,
    cannot_apply,
    compress,
    prune_magnitude,
)
from pyinfer.convert.finetune import check_labels, split_labels
from pyinfer.convert.recipe import RECIPE_OPTIONS, RecipeError, plan_layers
from pyinfer.convert.structured import prune_structured
from pyinfer.model import Model

#: Calibration samples used at most (a seeded random subset of larger data).
SAMPLES = 2000
#: csr candidates: fractions of each layer's weights pruned by magnitude.
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
#: Structured candidates: fractions of output neurons (channels) removed.
STRUCTURED = (0.25, 0.5)
#: Candidates (by label) also offered after structured pruning of the same layer.
QUANTIZED_AFTER_STRUCTURED = ("int8", "int4")
#: lowrank candidates: fractions of the break-even rank in·out / (in + out).
RANK_FRACTIONS = (1 / 4, 1 / 8, 1 / 16)
#: What the search minimizes.
OBJECTIVES = ("latency", "bytes")
#: A candidate losing more than this fraction of the samples (after this many) is not
#: run on the rest: its count is extrapolated.
HOPELESS, HOPELESS_AFTER = 0.1, 500
#: Key prefix of whole-model timings among the per-layer ones.
WHOLE = "whole model: "
#: Greedy single-layer moves tried from the best verified assignment.
IMPROVE_TRIES = 6
#: Rotated passes when timing whole models against each other.
FINAL_PASSES = 3
#: Uniform assignments verified at most (smallest summed sensitivity first).
UNIFORM_TRIES = 16


class AdviseError(RecipeError):
    """Inputs the advisor cannot work with, raised before any work."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One way to compress one layer.

    Attributes
    ----------
    layer : str
    label : str
        Short name for tables (``"csr 90%"``, ``"int8 static"``,
        ``"structured 25% + int4 g128"``).
    settings : dict
        The layer's recipe entry (``{"encoding": "csr", "sparsity": 0.9}``).
    """

    layer: str
    label: str
    settings: dict


@dataclasses.dataclass
class Trial:
    """A whole-model assignment verified on the calibration samples."""

    what: str  # how the search produced it
    choice: dict  # layer -> candidate label
    cost: float  # predicted: sum of the layers' latency (s) or bytes
    errors: int  # top-1 errors (or disagreements) of the whole model
    drop: float  # measured, as a fraction of the samples
    bound: float  # drop + margin standard errors
    holds: bool
    measured_s: float | None = None  # the whole model timed at the batch (finalists)


@dataclasses.dataclass
class Advice:
    """What :func:`advise` measured and chose.

    Attributes
    ----------
    model : Model
        The compressed model (its ``.compression`` record, and ``.advice``: this).
    recipe : dict
        The chosen recipe (``{"default": "dense", "layers": {...}}``): ``pyinfer.compress
        (model, recipe, force=True)`` rebuilds the model (:meth:`write_recipe`).
    rows : list of dict
        One per layer and candidate: ``layer, candidate, settings, errors, drop,
        latency_s, bytes, eligible, note, chosen``; ``drop`` is the fraction of samples
        lost with only this layer compressed (negative: gained).
    trials : list of Trial
        Every whole-model assignment verified, in order.
    chosen : Trial
        The one kept.
    metric : str
        ``"accuracy"`` (labels given) or ``"agreement"`` (with the original's top-1).
    base_errors : int
        The original model's errors (0 for agreement).
    samples : int
    max_drop, margin : float
    batch : int
    objective : str
    seed : int
    timings : dict
        ``{batch: {"layer/candidate": seconds, "whole model: ...": seconds}}``: every
        timing (layers alone, and whole assignments); pass ``timings[batch]`` back as
        ``timings=`` to reuse them (then the advice is deterministic).
    finetune : dict or None
        ``{"record": ..., "errors", "drop", "holds"}`` when the choice was fine-tuned.
    seconds : float
        Wall time of the advice.
    """

    model: Model
    recipe: dict
    rows: list[dict]
    trials: list[Trial]
    chosen: Trial
    metric: str
    base_errors: int
    samples: int
    max_drop: float
    margin: float
    batch: int
    objective: str
    seed: int
    timings: dict
    finetune: dict | None = None
    seconds: float = 0.0

    @property
    def base_score(self) -> float:
        """The original model's accuracy (or 1.0: agreement with itself)."""
        return 1 - self.base_errors / self.samples

    def cost_of(self, choice: dict) -> float:
        """Predicted total latency (s) or bytes of an assignment."""
        key = "latency_s" if self.objective == "latency" else "bytes"
        rows = {(r["layer"], r["candidate"]): r for r in self.rows}
        return sum(rows[(layer, label)][key] or 0.0 for layer, label in choice.items())

    def explain(self) -> list[str]:
        """One line per layer: what it got, what that saves and costs (alone)."""
        lines = []
        key = "latency_s" if self.objective == "latency" else "bytes"
        for layer, label in self.chosen.choice.items():
            rows = [r for r in self.rows if r["layer"] == layer]
            dense = next(r for r in rows if r["candidate"] == "dense")
            row = next(r for r in rows if r["candidate"] == label)
            if label == "dense":
                better = [r for r in rows if r["eligible"] and r["candidate"] != "dense"]
                if not better:
                    lines.append(f"{layer}: dense (no candidate is {_lighter(self.objective)})")
                    continue
                best = min(better, key=lambda r: r[key])
                lines.append(
                    f"{layer}: dense (best alternative {best['candidate']}: "
                    f"{self._saving(dense[key] - best[key])} saved, {_pt(best['drop'])}; "
                    "not within the budget)"
                )
                continue
            saved = (dense[key] or 0) - (row[key] or 0)
            if saved >= 0:
                gain = f"{self._saving(saved)} saved"
            else:  # chosen with the others: the whole model measured faster
                gain = f"{self._saving(-saved)} {'slower' if key == 'latency_s' else 'larger'}"
            lines.append(f"{layer}: {label} — {gain}, {_pt(row['drop'])} alone")
        return lines

    def _saving(self, amount: float) -> str:
        if self.objective == "bytes":
            return f"{amount / 1024:.1f} KiB"
        return f"{amount * 1e3:.3f} ms" if amount >= 1e-4 else f"{amount * 1e6:.2f} us"

    def summary(self) -> list[str]:
        """The verdict: budget, measured drop, predicted saving, then one line per layer."""
        what = "accuracy" if self.metric == "accuracy" else "top-1 agreement"
        dense = {layer: "dense" for layer in self.chosen.choice}
        before, after = self.cost_of(dense), self.chosen.cost
        base_trial = next((t for t in self.trials if t.choice == dense), None)
        if (
            self.objective == "latency"
            and base_trial
            and base_trial.measured_s
            and self.chosen.measured_s
        ):
            gain = (
                f"whole model {base_trial.measured_s * 1e6:.1f} -> "
                f"{self.chosen.measured_s * 1e6:.1f} us per call (measured)"
            )
        elif self.objective == "latency":
            gain = f"sum of layer latencies {before * 1e6:.1f} -> {after * 1e6:.1f} us"
        else:
            gain = f"weights {before / 1024:.1f} -> {after / 1024:.1f} KiB"
        lines = [
            f"advised ({self.objective}, batch {self.batch}, max drop "
            f"{100 * self.max_drop:.2f} pt, {self.samples} samples, {self.seconds:.1f} s): "
            f"{what} {100 * self.base_score:.2f}% -> "
            f"{100 * (self.base_score - self.chosen.drop):.2f}% "
            f"({self.chosen.what}); {gain}",
        ]
        if self.finetune is not None:
            ft = self.finetune
            lines.append(
                f"fine-tuned: drop {100 * ft['drop']:.2f} pt "
                f"({'within' if ft['holds'] else 'outside'} the budget"
                f"{'' if ft['kept'] else '; the model without fine-tuning was kept'})"
            )
        return lines + self.explain()

    def table(self) -> str:
        """Every layer's candidates: sensitivity (points) beside latency and bytes."""
        header = (
            "layer",
            "candidate",
            "drop (pt)",
            f"latency (batch {self.batch})",
            "bytes",
            "note",
        )
        out = [header]
        for r in self.rows:
            mark = "<- chosen" if r["chosen"] else r["note"]
            out.append(
                (
                    r["layer"],
                    r["candidate"],
                    "-" if r["drop"] is None else f"{100 * r['drop']:+.2f}",
                    "-" if r["latency_s"] is None else f"{r['latency_s'] * 1e6:.1f} us",
                    f"{r['bytes'] / 1024:.1f} KiB",
                    mark,
                )
            )
        return "\n".join(text_table(out))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (without the model)."""
        return {
            "recipe": self.recipe,
            "metric": self.metric,
            "base_errors": self.base_errors,
            "samples": self.samples,
            "max_drop": self.max_drop,
            "margin": self.margin,
            "batch": self.batch,
            "objective": self.objective,
            "seed": self.seed,
            "seconds": self.seconds,
            "chosen": dataclasses.asdict(self.chosen),
            "trials": [dataclasses.asdict(t) for t in self.trials],
            "rows": [dict(r) for r in self.rows],
            "explain": self.explain(),
            "summary": self.summary(),
            "table": self.table(),
            "finetune": self.finetune,
            "timings": self.timings,
        }

    def write_recipe(self, path: str) -> None:
        """Write the chosen recipe as YAML (``.yaml``/``.yml``, needs PyYAML) or JSON."""
        ext = os.path.splitext(path)[1].lower()
        if ext in (".yaml", ".yml"):
            import yaml

            text = "# chosen by pyinfer advise: pyinfer.compress(model, this file, force=True)\n"
            text += yaml.safe_dump(self.recipe, sort_keys=False)
        elif ext == ".json":
            text = json.dumps(self.recipe, indent=2) + "\n"
        else:
            raise ValueError(f"recipe file {path!r} must end in .yaml, .yml or .json")
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    def front(self) -> list[tuple[float, float]]:
        """The predicted Pareto front: (cost, drop) of the knapsack's cheapest assignment
        within each budget, up to four times the one asked for (at least 50 samples)."""
        per_layer = _options(self.rows, self.objective, self.base_errors)
        limit = max(4 * math.floor(self.max_drop * self.samples + 1e-9), 50)
        points: list[tuple[float, float]] = []
        for state in _knapsack_table(per_layer, limit):
            if state is not None and (not points or state[0] < points[-1][0]):
                points.append((state[0], state[1] / self.samples))
        return points

    def plot(self, path: str) -> None:
        """Write a PNG of the Pareto front (needs matplotlib). Left: each candidate alone
        (the other layers dense) and the knapsack's front over budgets, by the sum of
        layer latencies (bytes). Right: the whole-model assignments verified, by their
        measured latency (bytes), the chosen one marked."""
        from pyinfer.convert.compare import require_matplotlib

        figure_cls, canvas_cls = require_matplotlib()
        fig = figure_cls(figsize=(12, 4.8))
        left, right = fig.subplots(1, 2, sharey=True)
        lat = self.objective == "latency"
        scale = 1e6 if lat else 1 / 1024
        unit = f"us, batch {self.batch}" if lat else "KiB"
        base = 100 * self.base_score
        key = "latency_s" if lat else "bytes"
        dense = {r["layer"]: r[key] for r in self.rows if r["candidate"] == "dense"}
        total = sum(v or 0 for v in dense.values())
        alone = [r for r in self.rows if r[key] is not None and r["candidate"] != "dense"]
        left.scatter(
            [(total - dense[r["layer"]] + r[key]) * scale for r in alone],
            [base - 100 * r["drop"] for r in alone],
            s=12, c="lightgray", label="one layer compressed (each candidate)",
        )  # fmt: skip
        front = self.front()
        left.step(
            [c * scale for c, _ in front],
            [base - 100 * d for _, d in front],
            where="post",
            color="tab:green",
            marker=".",
            label="predicted front (sensitivities added)",
        )
        left.set_xlabel(f"sum of layer {'latencies' if lat else 'weights'} ({unit})")
        left.set_title("candidates")
        trials = list({tuple(sorted(t.choice.items())): t for t in self.trials}.values())

        def where(t: Trial) -> float | None:
            v = t.measured_s if lat else t.cost
            return None if v is None else v * scale

        shown = [t for t in trials if where(t) is not None]
        right.scatter(
            [where(t) for t in shown],
            [base - 100 * t.drop for t in shown],
            c=["tab:blue" if t.holds else "tab:red" for t in shown],
            label="verified (blue: within the budget, red: not)",
        )
        c = self.chosen
        if where(c) is not None:
            right.scatter(
                [where(c)], [base - 100 * c.drop], marker="*", s=250, c="gold",
                edgecolors="black", zorder=3, label=f"chosen ({c.what})",
            )  # fmt: skip
        right.set_xlabel(f"whole model {'latency, measured' if lat else 'weights'} ({unit})")
        right.set_title("assignments")
        left.set_ylabel("accuracy (%)" if self.metric == "accuracy" else "top-1 agreement (%)")
        for ax in (left, right):
            ax.axhline(base - 100 * self.max_drop, color="tab:red", linestyle=":", label="budget")
            ax.legend(fontsize=7)
        left.set_ylim(base - max(5.0, 800 * self.max_drop), base + 1)  # the region that matters
        fig.suptitle(f"per-layer choices within {100 * self.max_drop:.2f} pt")
        fig.tight_layout()
        canvas_cls(fig).print_png(path)


def _pt(drop: float) -> str:
    """A drop (fraction) as the change in points: 0.001 -> "-0.10 pt"."""
    change = -100 * drop
    return "±0.00 pt" if abs(change) < 0.005 else f"{change:+.2f} pt"


def _lighter(objective: str) -> str:
    return "faster than dense" if objective == "latency" else "smaller than dense"


# ---------------------------------------------------------------------- candidates


def candidates(model: Model) -> dict[str, list[Candidate]]:
    """Every layer's candidates (dense first) that can serve it, by layer name.

    The encodings come from the registry: those with a sweep of their own (csr, int8,
    int4, lowrank) take it, the others each value of their enumerated options. Static
    int8 is listed with ``calibration``; :class:`Advisor` replaces it by the scale.
    Structured pruning is listed where it applies (not where the neurons reach the
    output, or other ops it refuses).
    """
    layers = measure.weighted_layers(model)
    weights = {name: measure.layer_weight(node)[1] for name, node in layers.items()}
    found: dict[str, list[Candidate]] = {}
    for name, w in weights.items():
        rows = [Candidate(name, "dense", {"encoding": "dense"})]
        for label, settings in _sweep(w):
            plan = plan_layers({"layers": {name: settings}}, {name: w})[0]
            if cannot_apply(plan, w) is None:
                rows.append(Candidate(name, label, settings))
        for fraction in STRUCTURED:
            settings = {"encoding": "dense", "structured": fraction}
            plans = plan_layers({"layers": {name: settings}}, weights)
            try:
                fact = prune_structured(model, plans)[1][name]
            except RecipeError:  # its neurons reach the output, or an op that refuses
                continue
            if fact.refused is None and fact.kept < fact.total:
                label = f"structured {fraction:.0%}"
                rows.append(Candidate(name, label, settings))
                # then quantized: the smaller layer gets the quantizations' gain too
                for c in [c for c in rows if c.label.startswith(QUANTIZED_AFTER_STRUCTURED)]:
                    both = {**c.settings, "structured": fraction}
                    rows.append(Candidate(name, f"{label} + {c.label}", both))
        found[name] = rows
    return found


def _sweep(w: EncodedWeight) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    for name in registry.names():
        if name == "dense":
            continue
        if name == "csr":
            out += [(f"csr {s:.0%}", {"encoding": "csr", "sparsity": s}) for s in SPARSITIES]
        elif name == "int8":
            out.append(("int8 dynamic", {"encoding": "int8"}))
            out.append(("int8 static", {"encoding": "int8", "calibration": "percentile"}))
        elif name == "int4":
            out += [(f"int4 g{g}", {"encoding": "int4", "group_size": g}) for g in (32, 128)]
        elif name == "lowrank":
            k, o = w.in_features, w.out_features
            even = k * o / (k + o)
            ranks = sorted({max(1, round(even * f)) for f in RANK_FRACTIONS}, reverse=True)
            out += [(f"lowrank r{r}", {"encoding": "lowrank", "rank": r}) for r in ranks]
        else:
            out += [(label, {"encoding": name, **options}) for label, options in option_grid(name)]
    return out


def option_grid(name: str) -> list[tuple[str, dict]]:
    """(label, options) for every combination of the encoding's enumerated options
    (``pow2`` and ``binary``: float or integer activations); one plain row when it has
    none."""
    grid: list[dict] = [{}]
    for option, choices in registry.get(name).options.items():
        if choices is not None and len(choices) > 1:
            grid = [{**g, option: c} for g in grid for c in choices]
    rows = []
    for options in grid:
        what = ", ".join(str(v) for v in options.values())
        rows.append((f"{name} ({what})" if what else name, options))
    return rows


# ---------------------------------------------------------------------- the advisor


class Advisor:
    """Measures a model's candidates once, then advises for any budget, batch and
    objective (sensitivities are computed once; latencies once per batch).

    Parameters
    ----------
    model : Model
        The dense (original) model.
    data : ndarray, mapping, or tuple (inputs, labels)
        Calibration samples (first axis); with labels the budget is on accuracy, else on
        top-1 agreement with the original. At most ``samples`` of them are used (a
        random subset chosen by ``seed``).
    samples : int
    seed : int
    batch_size : int
        Rows per batch when running the samples.
    progress : bool
        Progress bars (tqdm, on a terminal).

    Raises
    ------
    AdviseError, DataError
        Before any work: no data, data that does not fit the model, labels of the wrong
        length or not classes of the model's output.
    """

    def __init__(
        self,
        model: Model,
        data: Any,
        *,
        samples: int = SAMPLES,
        seed: int = 0,
        batch_size: int = measure.BATCH_SIZE,
        progress: bool = True,
    ):
        if not isinstance(model, Model):
            raise TypeError(f"the advisor takes a pyinfer.Model, got {type(model).__name__}")
        if data is None:
            raise AdviseError(
                "choosing per layer needs data: data=(inputs, labels) to keep accuracy, or "
                "inputs alone to keep top-1 agreement with the original"
            )
        for name, v in (("samples", samples), ("seed", seed), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                what = "non-negative" if name == "seed" else "positive"
                raise AdviseError(f"{name} must be a {what} integer, got {v!r}")
        inputs, labels = split_labels(model, data)
        arrays = measure.check_data(model, inputs)
        n = measure.n_samples(arrays)
        if labels is not None:
            labels = check_labels(model, labels, n, "data")
        keep = np.arange(n)
        if n > samples:
            keep = np.sort(np.random.default_rng(seed).choice(n, samples, replace=False))
        self.model = model
        self.arrays = {k: np.asarray(a[keep]) for k, a in arrays.items()}
        self.labels = labels[keep] if labels is not None else None
        self.samples = len(keep)
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress
        self.layers = measure.weighted_layers(model)
        self._cache: dict | None = None  # values entering layers, predictions
        self._errors: dict[tuple[str, str], int] | None = None
        self._weights: dict[tuple[str, str], Any] = {}
        self._built: dict[tuple, Model] = {}  # assignment -> whole model
        self._counted: dict[tuple, tuple[int, int]] = {}  # assignment -> (errors, flips)
        self._candidates: dict[str, list[Candidate]] | None = None
        self.timings: dict[int, dict[str, float]] = {}

    # -- predictions

    def _errors_of(self, predictions: np.ndarray) -> np.ndarray:
        """Per sample: is the prediction wrong (labels) or different (agreement)?"""
        want = self.labels if self.labels is not None else self._cache["predictions"]
        return predictions != want

    def _predict(self, model: Model, arrays: dict[str, np.ndarray]) -> np.ndarray:
        out = []
        name = model.output_names[0]
        for batch in measure.batches(arrays, self.batch_size):
            out.append(model.run(batch)[name].reshape(len(next(iter(batch.values()))), -1))
        return np.concatenate(out).argmax(axis=1)

    def _run_original(self) -> None:
        """One pass of the original model, keeping every value a suffix model needs."""
        if self._cache is not None:
            return
        nodes = self.model.graph["nodes"]
        needed = {}
        for name in self.layers:
            i = next(j for j, n in enumerate(nodes) if n["name"] == name)
            needed[name] = (i, self._frontier(nodes, i))
        values = sorted({v for _, f in needed.values() for v in f})
        probe = measure.with_outputs(self.model, values)
        kept: dict[str, list] = {v: [] for v in values}
        logits = []
        first = self.model.output_names[0]
        total = math.ceil(self.samples / self.batch_size)
        stream = measure.batches(self.arrays, self.batch_size)
        for batch in measure.progress(stream, "advise: original", total, self.progress):
            out = probe.run(batch)
            for v in values:
                kept[v].append(out[v] if v in out else batch[v])
            logits.append(out[first].reshape(len(out[first]), -1))
        self._cache = {
            "frontier": needed,
            "values": {v: np.concatenate(parts) for v, parts in kept.items()},
            "predictions": np.concatenate(logits).argmax(axis=1),
        }
        self._cache["base"] = self._errors_of(self._cache["predictions"])

    def _frontier(self, nodes: list[dict], i: int) -> list[str]:
        """Values computed before node ``i`` (or inputs) that nodes ``i..`` read."""
        produced = {o for n in nodes[i:] for o in n["outputs"]}
        static = set(self.model.weights) | set(self.model.constants)
        return list(
            dict.fromkeys(
                v for n in nodes[i:] for v in n["inputs"]
                if v and v not in produced and v not in static
            )
        )  # fmt: skip

    def _suffix(self, model: Model, layer: str) -> tuple[Model, dict]:
        """``model`` from ``layer`` on, and its inputs: the kept values."""
        i, frontier = self._cache["frontier"][layer]
        graph = model.graph
        nodes = graph["nodes"][i:]
        assert nodes[0]["name"] == layer
        inputs = [
            {"name": v, "shape": list(model.shapes[v]), "dtype": str(np.dtype(model.dtypes[v]))}
            for v in frontier
        ]
        for spec in inputs:
            spec["shape"][0] = None
        sub = {**graph, "inputs": inputs, "nodes": nodes}
        used = {v for n in nodes for v in n["inputs"]}
        weights = {k: w for k, w in model.weights.items() if k in used}
        constants = {k: c for k, c in model.constants.items() if k in used}
        return Model(sub, weights, constants), {v: self._cache["values"][v] for v in frontier}

    # -- sensitivities

    def candidates(self) -> dict[str, list[Candidate]]:
        """Every layer's candidates, static int8 with its calibrated scale."""
        if self._candidates is None:
            self._run_original()
            found = candidates(self.model)
            for layer, rows in found.items():
                for k, c in enumerate(rows):
                    if c.settings.get("calibration"):
                        scale = self._static_scale(layer, c.settings["calibration"])
                        settings = {k2: v for k2, v in c.settings.items() if k2 != "calibration"}
                        rows[k] = Candidate(layer, c.label, {**settings, "activation_scale": scale})
            self._candidates = found
        return self._candidates

    def _static_scale(self, layer: str, method: str) -> float:
        stats = ActivationRange(method)
        x = self._cache["values"][self.layers[layer].inputs[0]]
        for lo in range(0, len(x), self.batch_size):
            stats.update(x[lo : lo + self.batch_size])
        return float(stats.scale())

    def weight(self, c: Candidate, exact: bool = False) -> EncodedWeight:
        """The encoded weight of a (non-structured) candidate, encoded once.

        ``lowrank`` factors come from one decomposition per layer, each rank taking its
        leading columns: for the sensitivities from the eigenvectors of the smaller Gram
        matrix (fast, equal to the SVD's up to rounding); ``exact=True`` from
        ``kernels.encode``'s own SVD, bit for bit what ``compress`` builds.
        """
        key = (c.layer, c.label, exact and c.settings["encoding"] == "lowrank")
        if key in self._weights:
            return self._weights[key]
        w = measure.layer_weight(self.layers[c.layer])[1]
        s = c.settings
        encoding = s["encoding"]
        options = {k: v for k, v in s.items() if k not in ("encoding", *RECIPE_OPTIONS)}
        if encoding == "dense" and w.encoding == "dense":
            return w
        m = np.array(w.decode().reshape(w.out_features, -1), np.float32)
        if s.get("sparsity"):
            prune_magnitude(m, s["sparsity"])
        if encoding == "lowrank":
            top = (c.layer, "lowrank", exact)
            if top not in self._weights:
                ranks = [x.settings["rank"] for x in self.candidates()[c.layer]
                         if x.settings["encoding"] == "lowrank"]  # fmt: skip
                if exact:
                    full = kernels.encode(m, "lowrank", rank=max(ranks))
                    self._weights[top] = (full.u, full.v)
                else:
                    self._weights[top] = _factors(m, max(ranks))
            u, v = self._weights[top]
            r = min(options["rank"], u.shape[1])
            enc = from_factors(u[:, :r], v[:, :r], shape=w.shape)
        else:
            enc = kernels.encode(m.reshape(w.shape), encoding, **options)
        self._weights[key] = enc
        return enc

    def _structured_model(self, c: Candidate) -> Model:
        """The model with the candidate's neurons removed (and the layers reading them
        narrowed), the layer then encoded as the candidate says; built once."""
        key = (c.layer, c.label)
        if key not in self._weights:
            plans = plan_layers({"layers": {c.layer: c.settings}}, {
                n: measure.layer_weight(node)[1] for n, node in self.layers.items()
            })  # fmt: skip
            pruned = prune_structured(self.model, plans)[0]
            if c.settings["encoding"] != "dense":
                node = measure.weighted_layers(pruned)[c.layer]
                wname, w = measure.layer_weight(node)
                options = {
                    k: v for k, v in c.settings.items() if k not in ("encoding", *RECIPE_OPTIONS)
                }
                enc = kernels.encode(w.decode(), c.settings["encoding"], **options)
                pruned = Model(pruned.graph, {**pruned.weights, wname: enc}, pruned.constants)
            self._weights[key] = pruned
        return self._weights[key]

    def errors(self) -> dict[tuple[str, str], int]:
        """Whole-model errors with only one layer compressed, by (layer, candidate)."""
        if self._errors is not None:
            return self._errors
        cands = self.candidates()
        errors: dict[tuple[str, str], int] = {}
        base = int(self._cache["base"].sum())
        work = [c for rows in cands.values() for c in rows]
        for c in measure.progress(work, "advise: sensitivity", len(work), self.progress):
            if c.label == "dense":
                errors[(c.layer, c.label)] = base
                continue
            if "structured" in c.settings:
                model = self._structured_model(c)
            else:
                wname = measure.layer_weight(self.layers[c.layer])[0]
                model = Model(
                    self.model.graph,
                    {**self.model.weights, wname: self.weight(c)},
                    self.model.constants,
                )
            sub, inputs = self._suffix(model, c.layer)
            errors[(c.layer, c.label)] = self._count(sub, inputs)
        self._errors = errors
        return errors

    def _count(self, sub: Model, inputs: dict[str, np.ndarray]) -> int:
        """Errors of ``sub`` on the kept inputs, batch by batch; a candidate that has lost
        more than ``HOPELESS`` of the samples seen after ``HOPELESS_AFTER`` of them stops
        there, its count extrapolated (no budget could take it)."""
        base = self._cache["base"]
        want = self.labels if self.labels is not None else self._cache["predictions"]
        name = sub.output_names[0]
        wrong = seen = 0
        for batch in measure.batches(inputs, self.batch_size):
            n = len(next(iter(batch.values())))
            pred = sub.run(batch)[name].reshape(n, -1).argmax(axis=1)
            wrong += int(np.sum(pred != want[seen : seen + n]))
            seen += n
            lost = wrong - int(base[:seen].sum())
            if seen < self.samples and seen >= HOPELESS_AFTER and lost > HOPELESS * seen:
                return int(base.sum()) + round(lost * self.samples / seen)
        return wrong

    # -- latency

    def latencies(self, batch: int, timings: dict | None = None) -> dict[tuple[str, str], float]:
        """Seconds per call of each candidate's layer at ``batch`` rows (structured ones
        with the change of the layers reading them), timed once per batch or taken from
        ``timings`` (``{"layer/candidate": seconds}``)."""
        if timings is not None:
            self.timings[batch] = dict(timings)
        if batch not in self.timings:
            self.timings[batch] = self._time(batch)
        return {
            tuple(k.rsplit("/", 1)): v
            for k, v in self.timings[batch].items()
            if not k.startswith(WHOLE)
        }

    def _time(self, batch: int) -> dict[str, float]:
        cands = self.candidates()
        out: dict[str, float] = {}
        values = self._cache["values"]
        for layer in measure.progress(list(cands), "advise: timing", len(cands), self.progress):
            node = self.layers[layer]
            seen = values[node.inputs[0]].shape
            shape = measure.layer_input_shape(node, batch, seen)
            fns, owners = [], []
            for c in cands[layer]:
                if "structured" in c.settings:
                    # the pruned layer, plus the change of each layer reading it
                    pruned = self._structured_model(c)
                    p_layers = measure.weighted_layers(pruned)
                    for name in _changed_layers(self.model, pruned):
                        p_node, o_node = p_layers[name], self.layers[name]
                        s_p = measure.layer_input_shape(p_node, batch)
                        if s_p is None:
                            break
                        fns.append(_timed(p_node, s_p))
                        owners.append((c.label, 1.0))
                        if name != layer:
                            s_o = (batch, *values[o_node.inputs[0]].shape[1:])
                            fns.append(_timed(o_node, s_o))
                            owners.append((c.label, -1.0))
                else:
                    fns.append(_timed(node, shape, self.weight(c)))
                    owners.append((c.label, 1.0))
            times = measure.time_calls(fns)
            for (label, factor), t in zip(owners, times):
                key = f"{layer}/{label}"
                out[key] = out.get(key, 0.0) + factor * t
        return out

    # -- the search

    def advise(
        self,
        max_drop: float = 0.01,
        *,
        batch: int = 1,
        objective: str = "latency",
        margin: float = 2.0,
        timings: dict | None = None,
        finetune: Any = None,
    ) -> Advice:
        """Choose per layer; see :func:`advise` for the parameters."""
        import time

        check_budget(max_drop, batch, objective, margin)
        start = time.perf_counter()
        errors = self.errors()
        lat = self.latencies(batch, timings)
        base = int(self._cache["base"].sum())
        rows = []
        for layer, cands in self.candidates().items():
            t_dense = lat.get((layer, "dense"))
            bytes_dense = measure.layer_weight(self.layers[layer])[1].nbytes
            for c in cands:
                nbytes = self._bytes(c)
                t = lat.get((layer, c.label))
                if objective == "latency":
                    eligible = t is not None and t_dense is not None and t * SLOWER_MARGIN < t_dense
                    note = "" if eligible else "not faster than dense"
                else:
                    eligible = nbytes < bytes_dense
                    note = "" if eligible else "not smaller than dense"
                if c.label == "dense":
                    eligible, note = True, ""
                rows.append(
                    {
                        "layer": layer,
                        "candidate": c.label,
                        "settings": dict(c.settings),
                        "errors": errors[(layer, c.label)],
                        "drop": (errors[(layer, c.label)] - base) / self.samples,
                        "latency_s": t,
                        "bytes": nbytes,
                        "eligible": eligible,
                        "note": note,
                        "chosen": False,
                    }
                )
        per_layer = _options(rows, objective, base)
        budget = math.floor(max_drop * self.samples + 1e-9)
        trials: list[Trial] = []
        chosen: Trial | None = None
        limit = budget
        dense = {n: "dense" for n in per_layer}
        while chosen is None:
            found = _knapsack(per_layer, limit)
            choice = found[2] if found is not None else dense
            what = f"knapsack {limit}" if found is not None else "all dense"
            trial = self._verify(choice, rows, objective, max_drop, margin, what)
            trials.append(trial)
            if trial.holds or choice == dense:  # all dense drops nothing: it holds
                chosen = trial
            else:  # the layers interact: below this choice's units by the overshoot
                limit = found[1] - max(1, math.ceil((trial.bound - max_drop) * self.samples))
        # uniform assignments (one kind on every layer it applies to, or only where it
        # measured faster) that may fit: together, layers can cost less than the sum
        tried = 0
        for units, label, choice in _uniform(rows, base):
            if units > 2 * budget + 2 or tried >= UNIFORM_TRIES:
                continue  # clearly outside the budget: not worth a pass
            tried += 1
            trials.append(self._verify(choice, rows, objective, max_drop, margin, label))
        chosen = self._fastest(trials, rows, batch, objective)
        chosen = self._improve(chosen, rows, per_layer, batch, objective, max_drop, margin, trials)
        for r in rows:
            r["chosen"] = chosen.choice.get(r["layer"]) == r["candidate"]
        recipe = self.recipe(chosen.choice)
        model = compress(self.model, recipe, force=True, batch=batch, progress=False)
        tuned = None
        if finetune is not None:
            model, tuned = self._finetune(model, recipe, finetune, batch, max_drop, margin)
        advice = Advice(
            model=model,
            recipe=recipe,
            rows=rows,
            trials=trials,
            chosen=chosen,
            metric="accuracy" if self.labels is not None else "agreement",
            base_errors=base,
            samples=self.samples,
            max_drop=float(max_drop),
            margin=float(margin),
            batch=batch,
            objective=objective,
            seed=self.seed,
            timings={batch: dict(self.timings[batch])},
            finetune=tuned,
        )
        advice.seconds = time.perf_counter() - start
        model.advice = advice
        return advice

    def _bytes(self, c: Candidate) -> int:
        """Encoded bytes; for structured pruning also the bytes the layers reading the
        removed neurons lose."""
        if "structured" not in c.settings:
            return self.weight(c).nbytes
        pruned = measure.weighted_layers(self._structured_model(c))
        total = measure.layer_weight(self.layers[c.layer])[1].nbytes
        for name, node in pruned.items():
            total += measure.layer_weight(node)[1].nbytes
            total -= measure.layer_weight(self.layers[name])[1].nbytes
        return total

    def recipe(self, choice: dict[str, str]) -> dict:
        """The recipe of an assignment (layer -> candidate label)."""
        by_label = {(c.layer, c.label): c for rows in self.candidates().values() for c in rows}
        layers = {}
        for layer, label in choice.items():
            settings = dict(by_label[(layer, label)].settings)
            if settings != {"encoding": "dense"}:
                layers[layer] = settings if len(settings) > 1 else settings["encoding"]
        return {"default": "dense", "layers": layers}

    def _build(self, choice: dict[str, str]) -> Model:
        """The whole model of an assignment (built once)."""
        key = tuple(sorted(choice.items()))
        if key in self._built:
            return self._built[key]
        by_label = {(c.layer, c.label): c for rows in self.candidates().values() for c in rows}
        picked = [by_label[(n, c)] for n, c in choice.items() if c != "dense"]
        if any("structured" in c.settings for c in picked):
            model = compress(self.model, self.recipe(choice), force=True, progress=False)
        else:  # the weights measured alone, as compress encodes them (no encoding again)
            weights = dict(self.model.weights)
            for c in picked:
                weights[measure.layer_weight(self.layers[c.layer])[0]] = self.weight(c, True)
            model = Model(self.model.graph, weights, self.model.constants)
        self._built[key] = model
        return model

    def _verify(self, choice, rows, objective, max_drop, margin, what) -> Trial:
        """Count the whole model's errors on the calibration samples (once per choice)."""
        key = "latency_s" if objective == "latency" else "bytes"
        by = {(r["layer"], r["candidate"]): r for r in rows}
        cost = sum(by[(n, c)][key] or 0.0 for n, c in choice.items())
        base = self._cache["base"]
        done = tuple(sorted(choice.items()))
        if done not in self._counted:
            if all(c == "dense" for c in choice.values()):
                self._counted[done] = (int(base.sum()), 0)
            else:
                wrong = self._errors_of(self._predict(self._build(choice), self.arrays))
                self._counted[done] = (int(wrong.sum()), int(np.sum(wrong != base)))
        errors, flips = self._counted[done]
        drop = (errors - int(base.sum())) / self.samples
        bound = drop + margin * math.sqrt(flips) / self.samples
        return Trial(what, dict(choice), cost, errors, drop, bound, bound <= max_drop + 1e-12)

    def _inputs(self, batch: int) -> dict[str, np.ndarray]:
        """``batch`` calibration rows (repeated when there are fewer) for timing."""
        x = {k: np.resize(a, (batch, *a.shape[1:])) for k, a in self.arrays.items()}
        return {
            k: np.ascontiguousarray(a, np.float32) if a.dtype.kind == "f" else a
            for k, a in x.items()
        }

    def _time_models(self, choices: list[dict], batch: int) -> list[float]:
        """Seconds per call of each assignment's whole model at ``batch``: rotated passes
        of interleaved rounds (no model always runs first), the fastest round of each.
        Kept in (and, when all are there, read from) ``self.timings[batch]``."""
        known = self.timings.setdefault(batch, {})
        names = [";".join(f"{n}={c}" for n, c in sorted(ch.items())) for ch in choices]
        # one key per model per timing run: a run compares its models under one load
        keys = [f"{WHOLE}{' | '.join(names)} -> {name}" for name in names]
        if all(k in known for k in keys):
            return [known[k] for k in keys]
        x = self._inputs(batch)
        models = [self._build(c) for c in choices]
        best = [math.inf] * len(models)
        for shift in range(min(FINAL_PASSES, len(models))):
            order = list(range(shift, len(models))) + list(range(shift))
            got = measure.time_calls([lambda m=models[i]: m.run(x) for i in order], rounds=20)
            for i, t in zip(order, got):
                best[i] = min(best[i], t)
        known.update(zip(keys, best))
        return best

    def _fastest(self, trials: list[Trial], rows: list[dict], batch: int, objective: str) -> Trial:
        """Of assignments within the budget: the fewest bytes, or the fastest whole model
        at ``batch`` (timed: a sum of layer times misses what layers share)."""
        unique = list({tuple(sorted(t.choice.items())): t for t in trials if t.holds}.values())
        if objective == "bytes":
            return min(unique, key=lambda t: t.cost)
        dense = {n: "dense" for n in self.layers}
        if not any(t.choice == dense for t in unique):  # the reference: it always holds
            unique.append(self._verify(dense, rows, objective, 0.5, 0.0, "all dense"))
            trials.append(unique[-1])
        times = self._time_models([t.choice for t in unique], batch)
        for t, s in zip(unique, times):
            t.measured_s = s
            for same in trials:
                if same.choice == t.choice:
                    same.measured_s = s
        return min(unique, key=lambda t: t.measured_s)

    def _improve(self, best, rows, per_layer, batch, objective, max_drop, margin, trials):
        budget = math.floor(max_drop * self.samples + 1e-9)
        """Greedy moves from ``best``: one layer at a time to a candidate predicted
        cheaper, most saving per error unit first; a move is kept when the whole model
        still holds the budget and is faster (fewer bytes)."""
        moves = []
        for layer, opts in per_layer.items():
            now = next((o for o in opts if o[2] == best.choice[layer]), None)
            if now is None:
                continue
            for units, cost, label in opts:
                if cost < now[1] and label != now[2] and units - now[0] <= budget:
                    moves.append(((now[1] - cost) / (1 + max(0, units - now[0])), layer, label))
        moves.sort(key=lambda m: (-m[0], m[1], m[2]))
        for _, layer, label in moves[:IMPROVE_TRIES]:
            if best.choice[layer] == label:
                continue
            choice = {**best.choice, layer: label}
            trial = self._verify(choice, rows, objective, max_drop, margin, f"move {layer}")
            trials.append(trial)
            if not trial.holds:
                continue
            if objective == "bytes":
                better = trial.cost < best.cost
            else:
                t_new, t_best = self._time_models([choice, best.choice], batch)
                trial.measured_s, best.measured_s = t_new, t_best
                better = t_new < t_best
            if better:
                best = trial
        return best

    def _finetune(self, model, recipe, finetune, batch, max_drop, margin):
        if self.labels is None:
            check_labels(self.model, None, 0)  # says what fine-tuning needs
        tuned = compress(
            self.model,
            recipe,
            (self.arrays, self.labels),
            force=True,
            batch=batch,
            progress=self.progress,
            finetune=finetune,
        )
        wrong = self._errors_of(self._predict(tuned, self.arrays))
        base = int(self._cache["base"].sum())
        flips = int(np.sum(wrong != self._cache["base"]))
        drop = (int(wrong.sum()) - base) / self.samples
        holds = drop + margin * math.sqrt(flips) / self.samples <= max_drop + 1e-12
        before = self._errors_of(self._predict(model, self.arrays)).sum()
        kept = bool(wrong.sum() <= before)
        record = tuned.compression.finetune
        info = {
            "record": record.to_dict() if record is not None else None,
            "errors": int(wrong.sum()),
            "drop": drop,
            "holds": holds,
            "kept": kept,
        }
        return (tuned if kept else model), info


def _factors(m: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Leading ``rank`` factors (u [out, r], v [in, r], u·vᵀ ≈ m, singular values split
    evenly) from the eigenvectors of the smaller Gram matrix, in float64: the truncated
    SVD's, several times faster to compute."""
    a = m.astype(np.float64)
    wide = a.shape[0] <= a.shape[1]
    gram = a @ a.T if wide else a.T @ a
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][: min(rank, len(values))]
    sv = np.sqrt(np.maximum(values[order], 0.0))
    left = vectors[:, order]  # singular vectors of the short side
    safe = np.where(sv > 0, sv, 1.0)
    other = ((a.T if wide else a) @ left) / safe  # the long side's: a·v/s or aᵀ·u/s
    root = np.sqrt(sv)
    u, v = (left * root, other * root) if wide else (other * root, left * root)
    return np.ascontiguousarray(u, np.float32), np.ascontiguousarray(v, np.float32)


def _timed(node, shape: tuple, weight: EncodedWeight | None = None):
    """A call running the one-layer model of ``node`` (with ``weight``, else its own) on
    an input of ``shape``."""
    x = measure.sample_input(shape)
    m = measure.layer_model(node, weight or measure.layer_weight(node)[1], shape)
    return lambda: m(x)


def _changed_layers(original: Model, pruned: Model) -> list[str]:
    """Layers whose weight shape structured pruning changed, the pruned one first."""
    a, b = measure.weighted_layers(original), measure.weighted_layers(pruned)
    changed = [
        n for n in a if measure.layer_weight(a[n])[1].shape != measure.layer_weight(b[n])[1].shape
    ]
    return changed


def _options(rows: list[dict], objective: str, base: int) -> dict[str, list[tuple]]:
    """Per layer, the eligible candidates as (error units, cost, label): units are the
    samples lost with that layer alone (gains count as 0: they do not reliably add)."""
    key = "latency_s" if objective == "latency" else "bytes"
    per_layer: dict[str, list[tuple]] = {}
    for r in rows:
        if r["eligible"] and r[key] is not None:
            units = max(0, r["errors"] - base)
            per_layer.setdefault(r["layer"], []).append((units, float(r[key]), r["candidate"]))
    return per_layer


def _knapsack_table(per_layer: dict[str, list[tuple]], limit: int) -> list:
    """For every b in 0..limit: (cost, b, choice) of the cheapest assignment (one option
    per layer) whose units sum to exactly b, or None (dynamic programming, layer by
    layer; ties keep the earlier candidate)."""
    best: list = [(0.0, 0, {})] + [None] * limit
    for layer, opts in per_layer.items():
        new: list = [None] * (limit + 1)
        for b, state in enumerate(best):
            if state is None:
                continue
            for units, cost, label in opts:
                nb = b + units
                if nb <= limit and (new[nb] is None or state[0] + cost < new[nb][0] - 1e-15):
                    new[nb] = (state[0] + cost, nb, {**state[2], layer: label})
        best = new
    return best


def _knapsack(per_layer: dict[str, list[tuple]], budget: int):
    """(cost, units, choice) of the cheapest assignment whose units sum to at most
    ``budget`` (fewer units on a tie); None when none fits."""
    if budget < 0:
        return None
    found = [s for s in _knapsack_table(per_layer, budget) if s is not None]
    return min(found, key=lambda s: (s[0], s[1])) if found else None


def _uniform(rows: list[dict], base: int) -> list[tuple[int, str, dict]]:
    """(summed error units, name, choice) of each single-kind assignment: the kind on
    every layer it applies to (as a one-encoding recipe would), and on only the layers
    where it is eligible when that differs; fewest units first."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    kinds = dict.fromkeys(r["candidate"] for r in rows if r["candidate"] != "dense")
    out, seen = [], set()
    for kind in kinds:
        for where in ("all", "where faster"):
            choice, units = {n: "dense" for n in layers}, 0
            for r in rows:
                if r["candidate"] == kind and (where == "all" or r["eligible"]):
                    choice[r["layer"]] = kind
                    units += max(0, r["errors"] - base)
            key = tuple(choice.values())
            if key in seen or all(c == "dense" for c in key):
                continue
            seen.add(key)
            out.append((units, f"{where} {kind}" if where == "all" else f"{kind} {where}", choice))
    return sorted(out, key=lambda x: x[0])


# ---------------------------------------------------------------------- entry points


def parse_drop(value: Any) -> float:
    """A budget as a fraction: ``"0.5%"`` -> 0.005, ``"0.005"`` or 0.005 -> 0.005.

    Raises
    ------
    AdviseError
        Not a number, or not in (0, 1).
    """
    text = str(value).strip()
    try:
        drop = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise AdviseError(
            f"max drop must be a fraction such as 0.005 or a percentage such as 0.5%, got {value!r}"
        ) from None
    if not 0 < drop < 1:
        raise AdviseError(
            f"max drop must be in (0, 1) as a fraction (0.005 = 0.5 %), got {value!r}"
        )
    return drop


def check_budget(max_drop: Any, batch: Any, objective: Any, margin: Any = 2.0) -> None:
    """Check the advisor's settings (AdviseError naming the bad one)."""
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 < max_drop < 1:
        raise AdviseError(
            f"max_drop must be a fraction in (0, 1) (0.005 is half a point), got {max_drop!r}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise AdviseError(f"batch must be a positive integer, got {batch!r}")
    if objective not in OBJECTIVES:
        raise AdviseError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise AdviseError(f"margin must be a number >= 0 (standard errors), got {margin!r}")


def advise(
    model: Model,
    data: Any,
    *,
    max_drop: float = 0.01,
    batch: int = 1,
    objective: str = "latency",
    seed: int = 0,
    samples: int = SAMPLES,
    margin: float = 2.0,
    timings: dict | None = None,
    finetune: Any = None,
    batch_size: int = measure.BATCH_SIZE,
    progress: bool = True,
) -> Advice:
    """Choose each layer's compression by measured sensitivity and latency.

    See the module docstring for the candidates and the search.

    Parameters
    ----------
    model : Model
        The dense model.
    data : ndarray, mapping, or tuple (inputs, labels)
        Calibration samples; with labels the budget is on accuracy, else on top-1
        agreement with the original model.
    max_drop : float
        The largest drop allowed, as a fraction in (0, 1): 0.005 is half a point.
    batch : int
        Rows per call the layers are timed at (the batch the model will serve).
    objective : {"latency", "bytes"}
        What to minimize.
    seed : int
        Chooses the calibration subset when ``data`` holds more than ``samples``.
    samples : int
        Calibration samples used at most.
    margin : float
        Standard errors of the measured drop kept below ``max_drop`` (0: the measured
        drop alone must fit): a margin for data the advice did not see.
    timings : dict, optional
        Every timing at ``batch`` from an earlier advice on the same model and data
        (``advice.timings[batch]``): reused instead of timing again, which makes the
        choice deterministic.
    finetune : pyinfer.FineTune, optional
        Fine-tune the chosen assignment (needs torch and labels) and verify it again;
        kept when it does not make the calibration errors worse.
    batch_size : int
        Rows per batch when running the samples.
    progress : bool
        Progress bars.

    Returns
    -------
    Advice
        ``advice.model`` is the compressed model; ``advice.recipe`` the chosen recipe.

    Raises
    ------
    AdviseError, DataError
        Before any work, naming the bad input.
    """
    check_budget(max_drop, batch, objective, margin)
    advisor = Advisor(
        model, data, samples=samples, seed=seed, batch_size=batch_size, progress=progress
    )
    if finetune is not None and advisor.labels is None:
        check_labels(model, None, 0)
    return advisor.advise(
        max_drop, batch=batch, objective=objective, margin=margin, timings=timings,
        finetune=finetune,
    )  # fmt: skip


__all__ = ["Advice", "AdviseError", "Advisor", "Candidate", "RecipeError", "advise", "parse_drop"]
