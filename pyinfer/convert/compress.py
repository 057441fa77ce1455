"""``pyinfer.compress``: prune, calibrate and encode a model's weights by a recipe.

The steps, each layer by its :class:`~pyinfer.convert.recipe.LayerPlan`:

1. check everything before any work: the recipe against the layers, that each encoding
   can serve its layer (an encoding the default asked for that cannot is skipped and
   recorded; one a layer entry asked for is an error), the data's shapes;
2. prune (magnitude per layer or global, N:M, output-channel blocks) on float32 copies;
3. calibrate static activation scales for layers that ask (one streaming pass over
   ``data`` through the original model; memory bounded by one batch);
4. encode with ``kernels.encode``;
5. time each compressed layer against its dense form with the kernels that will run it
   (one-layer models, batch ``batch``); a layer whose compressed form is slower (by more
   than ``SLOWER_MARGIN``) keeps its original weight unless ``force=True``.

Every decision lands in a :class:`CompressionRecord`, kept on the returned model as
``model.compression`` and read by :func:`pyinfer.convert.compare.compare`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

import kernels
from kernels.encodings.base import EncodedWeight
from pyinfer import ops
from pyinfer.convert import measure
from pyinfer.convert.finetune import check_labels, fine_tune, split_labels
from pyinfer.convert.recipe import LayerPlan, RecipeError, plan_layers, read_recipe
from pyinfer.convert.structured import StructuredFact, prune_structured
from pyinfer.model import Model, sparsity

#: Bins of the streaming |x| histogram behind percentile calibration.
HISTOGRAM_BINS = 2048
#: A compressed layer counts as slower than dense when its time exceeds dense's by more
#: than this factor: differences within timing noise keep the smaller form.
SLOWER_MARGIN = 1.05


@dataclasses.dataclass
class LayerDecision:
    """What happened to one weighted layer.

    ``status`` is one of ``"compressed"``, ``"dense"`` (the recipe asked for dense),
    ``"kept dense: slower"`` (the compressed form measured slower), ``"skipped"`` (the
    default encoding cannot serve the layer); ``reason`` says why in words.
    """

    layer: str
    op: str
    shape: tuple
    asked: str  # the encoding the recipe asked for
    encoding: str  # the encoding the layer holds now
    source: str  # the recipe entry that chose it ("default" or a layer key)
    options: dict
    pruning: str | None
    sparsity: float  # fraction of zero weights in the layer now
    calibration: str | None
    activation_scale: float | None
    status: str
    reason: str
    bytes_before: int
    bytes_after: int
    latency_dense_s: float | None = None  # measured while deciding (batch ``batch``)
    latency_compressed_s: float | None = None
    # structured pruning: neurons (channels) kept of the layer's total, or why it refused;
    # shape is then the pruned one, bytes_before the original layer's
    structured: StructuredFact | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclasses.dataclass
class CompressionRecord:
    """Every decision :func:`compress` made, in layer order."""

    recipe: dict
    force: bool
    batch: int  # rows per call when timing layers
    calibration_samples: int
    layers: list[LayerDecision]
    finetune: Any = None  # a FineTuneRecord when the model was fine-tuned

    def layer(self, name: str) -> LayerDecision:
        """The decision about layer ``name`` (KeyError if it has none)."""
        for d in self.layers:
            if d.layer == name:
                return d
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "recipe": json.loads(json.dumps(self.recipe, default=str)),
            "force": self.force,
            "batch": self.batch,
            "calibration_samples": self.calibration_samples,
            "layers": [d.to_dict() for d in self.layers],
            "finetune": self.finetune.to_dict() if self.finetune is not None else None,
        }


def compress(
    model: Model,
    recipe: Any,
    data: Any = None,
    *,
    force: bool = False,
    batch: int = 1,
    batch_size: int = measure.BATCH_SIZE,
    progress: bool = True,
    finetune: Any = None,
    max_drop: float | None = None,
    objective: str = "latency",
    seed: int = 0,
) -> Model:
    """Prune, quantize and encode a model's weighted layers by ``recipe``.

    Parameters
    ----------
    model : Model
        Usually dense (from ``pyinfer.Graph``, ``pyinfer.load`` or the importer).
    recipe : str, dict or path
        An encoding name for every layer that can take it (``"int8"``), or
        ``{"default": ..., "layers": {name or pattern: encoding or options}}``, or a
        JSON/YAML file of it; see :mod:`pyinfer.convert.recipe`. ``"auto"``: chosen per
        layer by measured latency and sensitivity within ``max_drop`` on ``data`` (see
        :mod:`pyinfer.convert.advise`; the model's ``.advice`` holds the measurements,
        the chosen recipe and the reasons).
    data : ndarray, mapping of str -> ndarray, or tuple (inputs, labels), optional
        Samples (first axis) of the model's inputs; needed by layers calibrating static
        activation scales, streamed in batches of ``batch_size``. Fine-tuning also needs
        labels (one class per sample): ``data=(inputs, labels)``, or a mapping with a
        ``labels`` key besides the inputs (a ``.npz`` opened with ``numpy.load``).
    force : bool
        Keep every asked encoding, even where it measures slower than dense (and skip
        the timing).
    batch : int
        Rows per call when timing a layer's compressed form against its dense form.
    batch_size : int
        Rows per batch when streaming ``data``.
    progress : bool
        Show progress bars (when tqdm is installed and stderr is a terminal).
    finetune : pyinfer.FineTune, optional
        Fine-tune before encoding (needs torch and labelled ``data``): masks for pruned
        layers, fake quantization with the encodings' own codecs, optional distillation;
        see :mod:`pyinfer.convert.finetune`. The trained weights are then pruned and
        encoded as without it, which reproduces exactly what was trained. With
        ``"auto"``: the chosen assignment is fine-tuned, then verified again.
    max_drop : float, optional
        With ``"auto"``: the largest accuracy drop allowed, a fraction in (0, 1) (0.005 is
        half a point; default 0.01); against top-1 agreement with the original when
        ``data`` has no labels.
    objective : {"latency", "bytes"}
        With ``"auto"``: what the choice minimizes (latency at batch ``batch``).
    seed : int
        With ``"auto"``: chooses the calibration subset of large data.

    Returns
    -------
    Model
        The compressed model, with the :class:`CompressionRecord` as ``.compression``.

    Raises
    ------
    RecipeError
        Before any work: malformed recipe, unknown layer names (listing the layers),
        an encoding a layer entry asked for that cannot serve the layer, calibration
        without data.
    DataError
        Before any work: data that does not fit the model's inputs; fine-tuning
        without labels.
    FineTuneError, ImportError
        Before any work: fine-tuning a model with ops torch cannot run (listed), or
        without torch.
    """
    if not isinstance(model, Model):
        raise TypeError(f"compress() takes a pyinfer.Model, got {type(model).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if isinstance(recipe, str) and recipe == "auto":
        from pyinfer.convert.advise import advise

        advice = advise(
            model,
            data,
            max_drop=0.01 if max_drop is None else max_drop,
            batch=batch,
            objective=objective,
            seed=seed,
            finetune=finetune,
            batch_size=batch_size,
            progress=progress,
        )
        return advice.model
    if max_drop is not None:
        raise RecipeError(
            f"max_drop applies to recipe 'auto' (chosen per layer), not to recipe {recipe!r}"
        )
    layers = measure.weighted_layers(model)
    weights = {name: measure.layer_weight(node)[1] for name, node in layers.items()}
    spec = read_recipe(recipe)
    plans = plan_layers(spec, weights)
    before = weights
    model, structured = prune_structured(model, plans)  # first: smaller dense layers
    if structured:
        layers = measure.weighted_layers(model)
        weights = {name: measure.layer_weight(node)[1] for name, node in layers.items()}

    # -- every check before any work
    skipped: dict[str, str] = {}
    for p in plans:
        node, w = layers[p.layer], weights[p.layer]
        reason = cannot_apply(p, w)
        if reason is None:
            continue
        if not p.from_default:
            raise RecipeError(
                f"layer {p.layer!r} ({node.op}, weight {list(w.shape)}): encoding "
                f"{p.encoding!r} cannot apply: {reason}"
            )
        skipped[p.layer] = reason
    active = [p for p in plans if p.layer not in skipped]
    calibrated = [p for p in active if p.calibration]
    if calibrated and data is None:
        raise RecipeError(
            f"layers {[p.layer for p in calibrated]} ask for calibration "
            f"({calibrated[0].calibration}): it needs data"
        )
    data, labels = split_labels(model, data) if data is not None else (None, None)
    if finetune is not None and data is None:
        check_labels(model, None, 0)  # says what fine-tuning needs
    arrays = measure.check_data(model, data) if data is not None else None
    tuning = None
    if finetune is not None:
        model, tuning = fine_tune(model, active, arrays, labels, finetune, progress)
        layers = measure.weighted_layers(model)
        weights = {name: measure.layer_weight(node)[1] for name, node in layers.items()}

    # -- prune, calibrate, encode
    matrices = prune({p.layer: weights[p.layer] for p in active}, active)
    scales: dict[str, float] = {}
    seen: dict[str, tuple] = {}
    if calibrated:
        scales, seen = calibrate(model, calibrated, arrays, batch_size, progress)
    encoded: dict[str, EncodedWeight] = {}
    for p in measure.progress(active, "encoding", enabled=progress):
        options = dict(p.options)
        if p.layer in scales:
            options["activation_scale"] = scales[p.layer]
        if p.encoding == "dense" and not p.sparsity and weights[p.layer].encoding == "dense":
            encoded[p.layer] = weights[p.layer]  # as it is: no copy
            continue
        dense = matrices[p.layer].reshape(weights[p.layer].shape)
        try:
            encoded[p.layer] = kernels.encode(dense, p.encoding, **options)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"layer {p.layer!r}: encoding {p.encoding!r} failed: {exc}") from None

    # -- honest choice: time what will run
    timings: dict[str, tuple[float, float]] = {}
    timed = [p for p in active if p.encoding != "dense" and not force]
    if timed and arrays is not None:
        unknown = [p.layer for p in timed if measure.layer_input_shape(layers[p.layer], 1) is None]
        if unknown and not seen:
            seen = input_shapes(model, [layers[n] for n in unknown], arrays)
    for p in measure.progress(timed, "timing layers", enabled=progress):
        node = layers[p.layer]
        shape = measure.layer_input_shape(node, batch, seen.get(p.layer))
        if shape is None:
            continue
        dense = kernels.encode(weights[p.layer].decode(), "dense")
        timings[p.layer] = time_layer(node, [dense, encoded[p.layer]], shape)

    # -- the model and the record
    new_weights = dict(model.weights)
    decisions = []
    for p in plans:
        node, w = layers[p.layer], weights[p.layer]
        wname, _ = measure.layer_weight(node)
        t_dense, t_comp = timings.get(p.layer, (None, None))
        if p.layer in skipped:
            status, reason, now = "skipped", f"{p.encoding} cannot apply: {skipped[p.layer]}", w
        elif t_comp is not None and t_comp > t_dense * SLOWER_MARGIN:
            status, now = "kept dense: slower", w
            reason = (
                f"{p.encoding} measured {t_comp * 1e6:.1f} us vs dense {t_dense * 1e6:.1f} us "
                f"at batch {batch}; force=True keeps it"
            )
        else:
            now = encoded[p.layer]
            status = "dense" if p.encoding == "dense" else "compressed"
            reason = _describe(p, t_dense, t_comp, force, batch)
        new_weights[wname] = now
        decisions.append(
            LayerDecision(
                layer=p.layer,
                op=node.op,
                shape=tuple(w.shape),
                asked=p.encoding,
                encoding=now.encoding,
                source=p.source,
                options=dict(p.options),
                pruning=p.pruning if p.sparsity and now is not w else None,
                sparsity=sparsity(now),
                calibration=p.calibration if now is not w else None,
                activation_scale=getattr(now, "activation_scale", None),
                status=status,
                reason=reason,
                bytes_before=before[p.layer].nbytes,
                bytes_after=now.nbytes,
                latency_dense_s=t_dense,
                latency_compressed_s=t_comp,
                structured=structured.get(p.layer),
            )
        )
    result = Model(model.graph, new_weights, model.constants)
    result.compression = CompressionRecord(
        recipe=spec,
        force=force,
        batch=batch,
        calibration_samples=measure.n_samples(arrays) if calibrated else 0,
        layers=decisions,
        finetune=tuning,
    )
    return result


def _describe(p: LayerPlan, t_dense, t_comp, force: bool, batch: int) -> str:
    parts = []
    if p.sparsity:
        parts.append(f"pruned {p.sparsity:.0%} ({p.pruning})")
    if p.calibration:
        parts.append(f"static activation scale ({p.calibration})")
    if t_comp is not None:
        parts.append(f"{t_dense / t_comp:.2f}x dense speed at batch {batch}")
    elif force and p.encoding != "dense":
        parts.append("forced (not timed)")
    elif p.encoding != "dense":
        parts.append("not timed (input size unknown without data)")
    return "; ".join(parts)


# ---------------------------------------------------------------------- applicability


def cannot_apply(plan: LayerPlan, weight: EncodedWeight) -> str | None:
    """Why ``plan.encoding`` cannot serve a layer with ``weight``'s shape (None: it can).

    Encodes one zero row of the layer's width and runs the linear kernel on it, so
    every limit of the encoding and its kernels (e.g. the int8 width bound) speaks.
    """
    options = dict(plan.options)
    if plan.calibration:
        options["activation_scale"] = 1.0
    row = np.zeros((1, weight.in_features), np.float32)
    try:
        probe = kernels.encode(row, plan.encoding, **options)
        kernels.linear(row, probe)
    except (ValueError, TypeError, OverflowError) as exc:
        return str(exc)
    if plan.sparsity and not _keeps_zeros(plan.encoding, options):
        return f"{plan.encoding} cannot store zero weights, so pruning would be lost"
    return None


def _keeps_zeros(encoding: str, options: dict) -> bool:
    m = np.array([[0.0, 1.0, -0.5, 0.0]], np.float32)
    decoded = kernels.encode(m, encoding, **options).decode()
    return bool(np.all(decoded[m == 0] == 0))


# ---------------------------------------------------------------------- pruning


def prune(weights: dict[str, EncodedWeight], plans: list[LayerPlan]) -> dict[str, np.ndarray]:
    """Pruned float32 matrices [out, in·kh·kw] (decoded copies) by layer name."""
    matrices = {}
    for p in plans:
        w = weights[p.layer]
        matrices[p.layer] = np.array(w.decode().reshape(w.out_features, -1), np.float32)
    by_global = [p for p in plans if p.sparsity and p.pruning == "global"]
    if by_global:
        prune_global([matrices[p.layer] for p in by_global], by_global[0].sparsity)
    for p in plans:
        if not p.sparsity or p.pruning == "global":
            continue
        m = matrices[p.layer]
        if p.nm() is not None:
            prune_n_m(m, *p.nm())
        elif p.pruning == "block":
            prune_blocks(m, p.sparsity, p.block_size)
        else:
            prune_magnitude(m, p.sparsity)
    return matrices


def prune_magnitude(m: np.ndarray, fraction: float) -> None:
    """Zero, in place, the ``round(fraction · size)`` weights of least magnitude."""
    k = round(fraction * m.size)
    if k:
        flat = m.reshape(-1)
        flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0


def prune_global(matrices: list[np.ndarray], fraction: float) -> None:
    """Zero, in place, the ``round(fraction · total)`` weights of least magnitude over all
    ``matrices`` together: one threshold, so layers end with different sparsities."""
    sizes = [m.size for m in matrices]
    total = sum(sizes)
    k = round(fraction * total)
    if not k:
        return
    magnitude = np.concatenate([np.abs(m).reshape(-1) for m in matrices])
    drop = np.zeros(total, bool)
    drop[np.argpartition(magnitude, k - 1)[:k]] = True
    start = 0
    for m, size in zip(matrices, sizes):
        m.reshape(-1)[drop[start : start + size]] = 0
        start += size


def prune_n_m(m: np.ndarray, n: int, group: int) -> None:
    """N:M pruning in place: in every ``group`` consecutive weights of a row (along the
    input axis) keep the ``n`` of largest magnitude (a shorter last group keeps at most
    ``n``); ties keep the later weight."""
    rows, k = m.shape
    pad = (-k) % group
    magnitude = np.pad(np.abs(m), ((0, 0), (0, pad)), constant_values=-1.0)
    groups = magnitude.reshape(rows, -1, group)
    order = np.argsort(groups, axis=2, kind="stable")
    keep = np.ones(groups.shape, bool)
    np.put_along_axis(keep, order[..., : group - n], False, axis=2)
    m *= keep.reshape(rows, -1)[:, :k]


def prune_blocks(m: np.ndarray, fraction: float, block: int) -> None:
    """Zero, in place, the ``round(fraction · blocks)`` blocks of least L2 norm, a block
    being ``block`` consecutive output channels at one input position."""
    rows, k = m.shape
    pad = (-rows) % block
    norms = np.pad(m.astype(np.float64) ** 2, ((0, pad), (0, 0)))
    norms = norms.reshape(-1, block, k).sum(axis=1)
    n_drop = round(fraction * norms.size)
    if not n_drop:
        return
    drop = np.zeros(norms.size, bool)
    drop[np.argpartition(norms.reshape(-1), n_drop - 1)[:n_drop]] = True
    mask = np.repeat(~drop.reshape(norms.shape), block, axis=0)[:rows]
    m *= mask


# ---------------------------------------------------------------------- calibration


class ActivationRange:
    """Streaming statistics of ``|x|`` for one layer's input: the running maximum, and
    for percentiles a histogram on [0, hi] whose range doubles (merging bin pairs) when
    a batch exceeds it, so memory stays fixed whatever the data size."""

    def __init__(self, method: str, percentile: float = 99.99, bins: int = HISTOGRAM_BINS):
        self.method = method
        self.percentile = percentile
        self.amax = 0.0
        self.hist = np.zeros(bins, np.int64) if method == "percentile" else None
        self.hi = 0.0

    def update(self, x: np.ndarray) -> None:
        """Add a batch of activations."""
        a = np.abs(x[np.isfinite(x)]).astype(np.float32, copy=False).reshape(-1)
        if not a.size:
            return
        self.amax = max(self.amax, float(a.max()))
        if self.hist is None or self.amax == 0:
            return
        if self.hi == 0:
            self.hi = self.amax
        while self.amax > self.hi:  # double the range: bin pairs merge exactly
            merged = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist[:] = 0
            self.hist[: merged.size] = merged
            self.hi *= 2
        n = self.hist.size
        idx = np.minimum((a * (n / self.hi)).astype(np.int64), n - 1)
        self.hist += np.bincount(idx, minlength=n)

    def bound(self) -> float:
        """The |x| the scale maps to 127: the maximum, or the chosen percentile."""
        if self.hist is None or not self.hist.sum():
            return self.amax
        cum = np.cumsum(self.hist)
        i = int(np.searchsorted(cum, self.percentile / 100 * cum[-1]))
        return min(self.amax, (i + 1) * self.hi / self.hist.size)

    def scale(self) -> float:
        """The static activation scale: bound / 127 (positive even for all-zero input)."""
        return max(self.bound(), 1e-12) / 127.0


def calibrate(
    model: Model,
    plans: list[LayerPlan],
    arrays: dict[str, Any],
    batch_size: int = measure.BATCH_SIZE,
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, tuple]]:
    """Static activation scales of the layers in ``plans``, from one pass of ``arrays``
    through the (original) model; also each layer's input shape as seen.

    Returns
    -------
    scales : dict of layer -> float
    shapes : dict of layer -> tuple (input shape of the first batch)
    """
    layers = measure.weighted_layers(model)
    values = {p.layer: layers[p.layer].inputs[0] for p in plans}
    stats = {p.layer: ActivationRange(p.calibration, p.percentile) for p in plans}
    probe = measure.with_outputs(model, list(values.values()))
    shapes: dict[str, tuple] = {}
    total = math.ceil(measure.n_samples(arrays) / batch_size)
    for batch in measure.progress(
        measure.batches(arrays, batch_size), "calibrating", total, progress
    ):
        out = probe.run(batch)
        for layer, v in values.items():
            x = out[v] if v in out else batch[v]
            shapes.setdefault(layer, x.shape)
            stats[layer].update(x)
    return {k: s.scale() for k, s in stats.items()}, shapes


def input_shapes(model: Model, nodes: list[ops.Node], arrays: dict[str, Any]) -> dict[str, tuple]:
    """Input shape of each node on the first sample of ``arrays``."""
    probe = measure.with_outputs(model, [n.inputs[0] for n in nodes])
    first = next(measure.batches(arrays, 1))
    out = probe.run(first)
    return {
        n.name: (out[n.inputs[0]] if n.inputs[0] in out else first[n.inputs[0]]).shape
        for n in nodes
    }


def time_layer(node: ops.Node, weights: list[EncodedWeight], shape: tuple) -> tuple:
    """Seconds per call of the one-layer model ``node`` with each weight, at input
    ``shape``, measured interleaved (see :func:`pyinfer.convert.measure.time_calls`)."""
    x = measure.sample_input(shape)
    models = [measure.layer_model(node, w, shape) for w in weights]
    return tuple(measure.time_calls([lambda m=m: m(x) for m in models]))
