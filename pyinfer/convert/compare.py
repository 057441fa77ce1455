"""``pyinfer.compare``: what compression gained and lost, per layer and in total.

Per weighted layer: encoding, sparsity, bytes before and after, the layer's output error
when the compressed model runs on ``data`` (relative L2 and cosine against the
original's output of the same layer: the error accumulated up to that layer), and its
latency before and after, measured with the kernels that will run it (one-layer models
through the runtime). In total: model bytes, the whole model's latency, accuracy before
and after when labels are given, else top-1 agreement with the original.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from pyinfer.convert import measure
from pyinfer.model import Model, sparsity


@dataclasses.dataclass
class Report:
    """The result of :func:`compare`.

    Attributes
    ----------
    layers : list of dict
        One per weighted layer: ``layer, op, shape, encoding_before, encoding, status,
        reason, sparsity, bytes_before, bytes_after, rel_l2, cosine, latency_before_s,
        latency_after_s, speedup, kept`` (None where not measured; ``kept``: [neurons
        kept, total] after structured pruning; its rel_l2 and cosine are None).
    total : dict
        ``bytes_before, bytes_after, compression, latency_before_s, latency_after_s,
        speedup, accuracy_before, accuracy_after, agreement, output_rel_l2, samples``.
    batch : int
        Rows per call in the latency measurements.
    record : dict or None
        The compression record (``CompressionRecord.to_dict()``) when the compressed
        model carries one; its ``finetune`` entry (also :attr:`finetune`) holds what
        fine-tuning did: epochs, loss and accuracy per epoch, distillation, and with
        ``compare_distill`` the run without distillation (``without_distill``).
    advice : dict or None
        When the compressed model was chosen per layer (``compress(model, "auto", ...)``):
        ``Advice.to_dict()``, whose ``summary`` (one line per layer) and ``table`` (every
        candidate's sensitivity beside its latency) the text table ends with.
    """

    layers: list[dict[str, Any]]
    total: dict[str, Any]
    batch: int
    record: dict[str, Any] | None = None
    advice: dict[str, Any] | None = None

    @property
    def finetune(self) -> dict[str, Any] | None:
        """What fine-tuning did (``FineTuneRecord.to_dict()``), or None."""
        return (self.record or {}).get("finetune")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the report."""
        return {
            "batch": self.batch,
            "total": dict(self.total),
            "layers": [dict(r) for r in self.layers],
            "record": self.record,
            "advice": self.advice,
        }

    def to_json(self, path: str | None = None) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=_jsonable)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    def table(self) -> str:
        """The report as a text table for a terminal."""
        header = (
            "layer",
            "op",
            "encoding",
            "sparsity",
            "bytes",
            "rel L2",
            "cosine",
            f"latency (batch {self.batch})",
            "speed-up",
            "note",
        )
        rows = [header]
        for r in self.layers:
            enc = r["encoding"]
            if r["encoding_before"] != enc:
                enc = f"{r['encoding_before']} -> {enc}"
            note = "" if r["status"] in ("compressed", "unchanged") else r["status"]
            if r.get("kept"):
                note = f"{note} kept {r['kept'][0]}/{r['kept'][1]}".strip()
            rows.append(
                (
                    r["layer"],
                    r["op"],
                    enc,
                    _pct(r["sparsity"]),
                    f"{_size(r['bytes_before'])} -> {_size(r['bytes_after'])}",
                    _num(r["rel_l2"]),
                    _num(r["cosine"], 4),
                    f"{_us(r['latency_before_s'])} -> {_us(r['latency_after_s'])}",
                    _ratio(r["speedup"]),
                    note,
                )
            )
        t = self.total
        rows.append(
            (
                "total",
                "",
                "",
                "",
                f"{_size(t['bytes_before'])} -> {_size(t['bytes_after'])}",
                _num(t["output_rel_l2"]),
                "",
                f"{_us(t['latency_before_s'])} -> {_us(t['latency_after_s'])}",
                _ratio(t["speedup"]),
                f"{t['compression']:.2f}x smaller" if t["compression"] else "",
            )
        )
        lines = text_table(rows)
        lines.insert(len(lines) - 1, lines[1])
        if t["accuracy_before"] is not None:
            drop = 100 * (t["accuracy_after"] - t["accuracy_before"])
            lines.append(
                f"accuracy on {t['samples']} samples: {t['accuracy_before']:.2%} -> "
                f"{t['accuracy_after']:.2%} ({drop:+.2f} points)"
            )
        if t["agreement"] is not None:
            lines.append(f"top-1 agreement with the original: {t['agreement']:.2%}")
        if self.finetune is not None:
            lines += _finetune_lines(self.finetune)
        if self.advice is not None:
            lines += ["", *self.advice["summary"], "", self.advice["table"]]
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        """Write a PNG: bytes and latency per layer, before and after (needs matplotlib)."""
        figure_cls, canvas_cls = require_matplotlib()
        fig = figure_cls(figsize=(10, 4.5))
        names = [r["layer"] for r in self.layers]
        x = np.arange(len(names))
        ax1, ax2 = fig.subplots(1, 2)
        ax1.bar(x - 0.2, [r["bytes_before"] / 1024 for r in self.layers], 0.4, label="before")
        ax1.bar(x + 0.2, [r["bytes_after"] / 1024 for r in self.layers], 0.4, label="after")
        ax1.set_ylabel("weight KiB")
        ax1.set_title("size per layer")
        lat = [(r["latency_before_s"] or 0, r["latency_after_s"] or 0) for r in self.layers]
        ax2.bar(x - 0.2, [a * 1e6 for a, _ in lat], 0.4, label="before")
        ax2.bar(x + 0.2, [b * 1e6 for _, b in lat], 0.4, label="after")
        ax2.set_ylabel(f"microseconds per call (batch {self.batch})")
        ax2.set_title("latency per layer")
        for ax in (ax1, ax2):
            ax.set_xticks(x)
            ax.set_xticklabels(
                [f"{n}\n{r['encoding']}" for n, r in zip(names, self.layers)], fontsize=8
            )
            ax.legend()
        t = self.total
        if t["accuracy_before"] is not None:
            fig.suptitle(
                f"accuracy {t['accuracy_before']:.2%} -> {t['accuracy_after']:.2%}, "
                f"{t['compression']:.2f}x smaller, {_ratio(t['speedup'])} speed-up"
            )
        fig.tight_layout()
        canvas_cls(fig).print_png(path)


def text_table(rows: list) -> list[str]:
    """Lines of a plain-text table: ``rows[0]`` is the header, columns padded to their
    widest cell, a rule of dashes under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _finetune_lines(ft: dict[str, Any]) -> list[str]:
    """Fine-tuning in the table: one line per run, with and without distillation side by
    side when both ran."""
    from pyinfer.convert.finetune import FineTuneRecord

    fields = {f.name for f in dataclasses.fields(FineTuneRecord)}
    runs = [ft] if ft.get("without_distill") is None else [ft["without_distill"], ft]
    return [FineTuneRecord(**{k: v for k, v in r.items() if k in fields}).describe() for r in runs]


def plot_variants(groups: dict[str, dict[str, Report]], path: str, title: str = "") -> None:
    """Write a PNG comparing compressed variants, one row of panels per model: accuracy
    (or top-1 agreement) against size, and speed-up against the dense original.

    Parameters
    ----------
    groups : dict of model name -> {variant name: Report}
    path : str
        The PNG to write (needs matplotlib).
    """
    figure_cls, canvas_cls = require_matplotlib()
    fig = figure_cls(figsize=(11, 4 * max(1, len(groups))))
    axes = fig.subplots(max(1, len(groups)), 2, squeeze=False)
    for (model_name, reports), (ax1, ax2) in zip(groups.items(), axes):
        names = list(reports)
        quality = []
        for r in reports.values():
            t = r.total
            q = t["accuracy_after"] if t["accuracy_after"] is not None else t["agreement"]
            quality.append(100 * (q or 0))
        sizes = [r.total["bytes_after"] / 1024 for r in reports.values()]
        speed = [r.total["speedup"] or 0 for r in reports.values()]
        ax1.scatter(sizes, quality)
        for n, s, q in zip(names, sizes, quality):
            ax1.annotate(n, (s, q), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax1.set_xlim(0, None)
        ax1.set_xlabel("model size (KiB)")
        ax1.set_ylabel("accuracy (%)")
        ax1.set_title(f"{model_name}: accuracy vs size")
        y = np.arange(len(names))
        ax2.barh(y, speed)
        ax2.axvline(1.0, color="gray", linestyle="--")
        ax2.set_yticks(y)
        ax2.set_yticklabels(names, fontsize=8)
        ax2.invert_yaxis()
        batch = next(iter(reports.values())).batch if reports else 1
        ax2.set_xlabel(f"speed-up vs dense (batch {batch})")
        ax2.set_title(f"{model_name}: latency")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    canvas_cls(fig).print_png(path)


def require_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install matplotlib (or pip install 'pyinfer[report]')"
        ) from None
    return Figure, FigureCanvasAgg


def compare(
    original: Model,
    compressed: Model,
    data: Any = None,
    labels: Any = None,
    *,
    batch: int = 1,
    batch_size: int = measure.BATCH_SIZE,
    timing: bool = True,
    per_layer: bool = True,
    progress: bool = True,
) -> Report:
    """Compare a compressed model with its original, layer by layer and in total.

    Parameters
    ----------
    original, compressed : Model
        The same graph (layers matched by node name), different weights.
    data : ndarray or mapping of str -> ndarray, optional
        Samples of the inputs (first axis), streamed in batches of ``batch_size``; gives
        the output errors, accuracy and agreement.
    labels : array_like of int, optional
        One class per sample: accuracy before and after (argmax of the first output).
    batch : int
        Rows per call in the latency measurements.
    timing : bool
        Measure latencies (False leaves them None).
    per_layer : bool
        Measure each layer's output error (False: only the model's; faster, as the
        models then run with their activations fused).
    progress : bool
        Show progress bars (when tqdm is installed and stderr is a terminal).

    Returns
    -------
    Report
    """
    layers_o = measure.weighted_layers(original)
    layers_c = measure.weighted_layers(compressed)
    if list(layers_o) != list(layers_c):
        raise ValueError(
            f"the models have different weighted layers: {list(layers_o)} and {list(layers_c)}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    arrays = measure.check_data(original, data) if data is not None else None
    if labels is not None:
        if arrays is None:
            raise ValueError("labels need data")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != measure.n_samples(arrays):
            raise measure.DataError(
                f"labels has {labels.shape[0]} entries but data has "
                f"{measure.n_samples(arrays)} samples"
            )
    record = getattr(compressed, "compression", None)
    stats = _run_data(
        original, compressed, layers_o if per_layer else {}, arrays, labels, batch_size, progress
    )

    rows = []
    nodes = list(layers_o.values())
    for node in measure.progress(nodes, "timing layers", enabled=progress and timing):
        w_o = measure.layer_weight(node)[1]
        w_c = measure.layer_weight(layers_c[node.name])[1]
        t_o = t_c = None
        shape = measure.layer_input_shape(node, batch, stats["shapes"].get(node.name))
        if timing and shape is not None:
            from pyinfer.convert.compress import time_layer

            if w_c is w_o:
                (t_o,) = time_layer(node, [w_o], shape)
                t_c = t_o
            elif w_c.shape != w_o.shape:  # structured pruning: each at its own width
                node_c = layers_c[node.name]
                shape_c = measure.layer_input_shape(node_c, batch)
                (t_o,) = time_layer(node, [w_o], shape)
                t_c = time_layer(node_c, [w_c], shape_c)[0] if shape_c else None
            else:
                t_o, t_c = time_layer(node, [w_o, w_c], shape)
        err = stats["layers"].get(node.name)
        decision = _decision(record, node.name)
        if decision is not None:
            status, reason = decision.status, decision.reason
        else:
            status, reason = ("unchanged" if w_c is w_o else "compressed"), ""
        fact = getattr(decision, "structured", None)
        rows.append(
            {
                "layer": node.name,
                "op": node.op,
                "shape": list(w_o.shape),
                "encoding_before": w_o.encoding,
                "encoding": w_c.encoding,
                "status": status,
                "reason": reason,
                "sparsity": sparsity(w_c),
                "bytes_before": w_o.nbytes,
                "bytes_after": w_c.nbytes,
                "rel_l2": err[0] if err else None,
                "cosine": err[1] if err else None,
                "latency_before_s": t_o,
                "latency_after_s": t_c,
                "speedup": t_o / t_c if t_o and t_c else None,
                "kept": None if fact is None or fact.refused else [fact.kept, fact.total],
            }
        )

    t_o = t_c = None
    if timing:
        x = _model_input(original, arrays, batch)
        if x is not None:
            t_o, t_c = measure.time_calls([lambda: original.run(x), lambda: compressed.run(x)])
    total = {
        "bytes_before": _model_bytes(original),
        "bytes_after": _model_bytes(compressed),
        "latency_before_s": t_o,
        "latency_after_s": t_c,
        "speedup": t_o / t_c if t_o and t_c else None,
        "samples": stats["samples"],
        "accuracy_before": stats["accuracy"][0],
        "accuracy_after": stats["accuracy"][1],
        "agreement": stats["agreement"],
        "output_rel_l2": stats["output_rel_l2"],
    }
    after = total["bytes_after"]
    total["compression"] = total["bytes_before"] / after if after else 0
    advice = getattr(compressed, "advice", None)
    return Report(
        layers=rows,
        total=total,
        batch=batch,
        record=record.to_dict() if record else None,
        advice=advice.to_dict() if advice is not None else None,
    )


def _decision(record, name: str):
    if record is None:
        return None
    try:
        return record.layer(name)
    except KeyError:
        return None


def _run_data(original, compressed, layers, arrays, labels, batch_size, progress) -> dict:
    """One streaming pass of ``arrays`` through both models: per-layer output errors,
    the output error, accuracy and top-1 agreement, and each layer's input shape."""
    result = {
        "layers": {},
        "shapes": {},
        "samples": 0,
        "accuracy": (None, None),
        "agreement": None,
        "output_rel_l2": None,
    }
    if arrays is None:
        return result
    outs = [n.outputs[0] for n in layers.values()]
    ins = [n.inputs[0] for n in layers.values()]
    probe_o = measure.with_outputs(original, outs + ins)
    probe_c = measure.with_outputs(compressed, outs)
    final = original.output_names[0]
    sums = {n: np.zeros(4) for n in [*layers, "__output__"]}  # Σd², Σa², Σab, Σb²
    agree = correct_o = correct_c = count = 0
    total = math.ceil(measure.n_samples(arrays) / batch_size)
    start = 0
    stream = measure.batches(arrays, batch_size)
    for batch in measure.progress(stream, "comparing", total, progress):
        out_o, out_c = probe_o.run(batch), probe_c.run(batch)
        for name, node in layers.items():
            if name not in result["shapes"]:
                v = node.inputs[0]
                result["shapes"][name] = (out_o[v] if v in out_o else batch[v]).shape
            a, b = out_o[node.outputs[0]], out_c[node.outputs[0]]
            if a.shape == b.shape:
                _accumulate(sums[name], a, b)
            else:  # structured pruning removed outputs: no error to measure
                sums[name] = None
        y_o, y_c = out_o[final], out_c[final]
        _accumulate(sums["__output__"], y_o, y_c)
        p_o, p_c = y_o.argmax(axis=-1), y_c.argmax(axis=-1)
        agree += int(np.sum(p_o == p_c))
        count += p_o.size
        if labels is not None and y_o.ndim == 2:
            lab = labels[start : start + y_o.shape[0]]
            correct_o += int(np.sum(p_o == lab))
            correct_c += int(np.sum(p_c == lab))
        start += y_o.shape[0]
    for name in layers:
        if sums[name] is not None:
            result["layers"][name] = _errors(sums[name])
    result["output_rel_l2"] = _errors(sums["__output__"])[0]
    result["samples"] = start
    result["agreement"] = agree / count if count else None
    if labels is not None:
        result["accuracy"] = (correct_o / start, correct_c / start)
    return result


def _accumulate(s: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    # float32 dot products (BLAS) per batch, summed over batches in float64
    a = a.reshape(-1)
    b = b.reshape(-1)
    d = a - b
    s += (float(d @ d), float(a @ a), float(a @ b), float(b @ b))


def _errors(s: np.ndarray) -> tuple[float, float]:
    """(relative L2 error, cosine similarity) from accumulated sums."""
    dd, aa, ab, bb = s
    rel = math.sqrt(dd / aa) if aa > 0 else (0.0 if dd == 0 else math.inf)
    cos = ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else (1.0 if aa == bb else 0.0)
    return float(rel), float(cos)


def _model_input(model: Model, arrays, batch: int) -> dict | None:
    """Inputs of ``batch`` rows for timing a whole model: from the data, else random
    when every input dim besides the batch is known."""
    if arrays is not None:
        first = next(measure.batches(arrays, batch))
        if all(a.shape[0] == batch for a in first.values()):
            return first
    inputs = {}
    for spec in model.inputs:
        if spec.dtype != "float32" or None in spec.shape[1:]:
            return None
        inputs[spec.name] = measure.sample_input((batch, *spec.shape[1:]))
    return inputs


def _model_bytes(model: Model) -> int:
    return sum(w.nbytes for w in model.weights.values()) + sum(
        c.nbytes for c in model.constants.values()
    )


def _size(n: int) -> str:
    """Bytes in KiB: one unit down a column reads at a glance."""
    return f"{n / 1024:.1f} KiB"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if digits == 3 else f"{v:.{digits}f}"


def _us(v) -> str:
    return "-" if v is None else f"{v * 1e6:.1f} us"


def _ratio(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
