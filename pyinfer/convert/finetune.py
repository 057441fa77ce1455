"""Fine-tuning inside ``pyinfer.compress``: recover the accuracy pruning and quantization cost.

The dense model becomes a torch module (:class:`GraphModule`, built from its graph; or the
user's own module, ``FineTune(module=...)``, when the model came from ``from_torch``) and
is trained on labelled data with

- masks fixed for pruned weights: a layer's mask follows its recipe's pruning (magnitude,
  global, N:M or block), computed with the same functions ``compress`` prunes with;
  targets above ``GRADUAL_ABOVE`` are reached gradually on the cubic schedule of Zhu &
  Gupta, ``s_t = s_f + (s_i - s_f)(1 - t/n)^3`` with ``s_i = 0`` over the first
  ``RAMP_FRACTION`` of the steps, and kept fixed after; lower targets are pruned at the
  start;
- fake quantization of lossy encodings (int8, int4, pow2, binary, ...): the forward uses
  ``kernels.encode(w, encoding, **options).decode()``, the very codec the file is written
  with, and the gradient passes straight through (``w + (q - w).detach()``);
- optionally, distillation from the original model: ``(1-α)·CE + α·T²·KL(p_t ‖ p_s)``
  with ``p = softmax(z / T)``, the teacher's logits computed once by the runtime.

The trained float weights then go through ``compress``'s own prune and encode steps, which
reproduce the trained masks and quantized values exactly: the file holds what was trained.
Torch is imported only here, when fine-tuning runs; it runs on ``threads`` threads (1 by
default), restored afterwards. Ctrl-C stops the training and raises KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

import kernels
from pyinfer.convert import measure
from pyinfer.convert.recipe import LayerPlan
from pyinfer.model import Model

#: Targets above this sparsity are reached gradually (cubic schedule); lower ones at once.
GRADUAL_ABOVE = 0.5
#: The cubic ramp spans this fraction of the training steps; the rest trains at the target.
RAMP_FRACTION = 0.6
#: Masks are recomputed about this many times during the ramp.
MASK_UPDATES = 50
#: Keys of a data mapping that hold labels rather than inputs.
LABEL_KEYS = ("labels", "label", "y")
SCHEDULES = ("cubic", "oneshot")


class FineTuneError(ValueError):
    """Fine-tuning cannot start: an op torch cannot run, a module that does not match."""


@dataclasses.dataclass
class Distill:
    """Knowledge distillation from the original (uncompressed) model.

    The loss is ``(1-alpha)·CE(z_s, y) + alpha·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``.
    It is measured, not assumed, to help: high temperatures can cost accuracy.
    """

    temperature: float = 2.0
    alpha: float = 0.5

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"Distill temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1):
            raise ValueError(f"Distill alpha must be in [0, 1], got {self.alpha!r}")


@dataclasses.dataclass
class FineTune:
    """How ``pyinfer.compress`` fine-tunes (``compress(..., finetune=FineTune(...))``).

    Attributes
    ----------
    epochs : int
        Passes over the labelled data.
    lr : float
        Adam's learning rate, decayed on a cosine to 0 over the training.
    batch_size : int
        Samples per step.
    schedule : {"cubic", "oneshot"}
        ``"cubic"``: targets above ``GRADUAL_ABOVE`` sparsity are reached gradually;
        ``"oneshot"``: every mask is set at the start.
    distill : Distill or None
        Distillation from the original model.
    seed : int
        Seeds the shuffling (and the torch RNG, restored afterwards): same seed, same
        weights.
    threads : int or None
        Torch threads while training (None: 1, leaving the other cores to the kernels).
    compare_distill : bool
        With ``distill``: also train without it, and record both runs side by side (the
        model keeps the distilled weights).
    validation : tuple (inputs, labels) or None
        Held-out data: accuracy after each epoch is measured on it (else on the training
        batches as they were trained).
    module : torch.nn.Module or None
        The user's own module the model was converted from (``pyinfer.from_torch``):
        trained instead of a module built from the graph (a copy; the original is left
        as it is). Its weighted layers are matched by name and must hold the model's
        weights.
    """

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 128
    schedule: str = "cubic"
    distill: Distill | None = None
    seed: int = 0
    threads: int | None = None
    compare_distill: bool = False
    validation: Any = None
    module: Any = None

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"FineTune {name} must be a positive integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"FineTune lr must be > 0, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"FineTune schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.distill is not None and not isinstance(self.distill, Distill):
            raise TypeError(f"FineTune distill must be a Distill, got {self.distill!r}")
        if self.compare_distill and self.distill is None:
            raise ValueError("FineTune compare_distill needs distill=Distill(...)")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"FineTune threads must be a positive integer, got {self.threads!r}")


@dataclasses.dataclass
class FineTuneRecord:
    """What one fine-tuning run did, as kept in ``CompressionRecord.finetune``."""

    epochs: int
    lr: float
    batch_size: int
    schedule: str
    seed: int
    distill: dict | None  # {"temperature", "alpha"} or None
    steps: int
    seconds: float
    loss: list[float]  # mean training loss per epoch
    accuracy: list[float]  # per epoch: on the validation data, else the training batches
    accuracy_on: str  # "validation" or "training batches"
    sparsity: float  # fraction of zero weights over the pruned layers at the end
    without_distill: dict | None = None  # the run without distillation (compare_distill)

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        d = dataclasses.asdict(self)
        d["final_loss"] = self.final_loss
        return d

    def describe(self) -> str:
        """One line for the report."""
        how = (
            "with distillation (T={temperature:g}, alpha={alpha:g})".format(**self.distill)
            if self.distill
            else "without distillation"
        )
        acc = ", ".join(f"{a:.2%}" for a in self.accuracy)
        return (
            f"fine-tuned {self.epochs} epoch(s) {how} in {self.seconds:.1f} s: final loss "
            f"{self.final_loss:.4f}, accuracy per epoch ({self.accuracy_on}) {acc}"
        )


# ---------------------------------------------------------------------- data


def split_labels(model: Model, data: Any) -> tuple[Any, Any]:
    """(inputs, labels or None) from ``data``: a tuple ``(inputs, labels)``, or a mapping
    whose key ``labels`` (or ``label``, ``y``; not a model input) holds them, or inputs
    alone."""
    if isinstance(data, tuple):
        if len(data) != 2:
            raise measure.DataError(
                f"data as a tuple must be (inputs, labels), got {len(data)} items"
            )
        return data
    if isinstance(data, Mapping):
        names = {s.name for s in model.inputs}
        key = next((k for k in LABEL_KEYS if k in data.keys() and k not in names), None)
        if key is not None:
            return {k: data[k] for k in data.keys() if k != key}, data[key]
    return data, None


def check_labels(model: Model, labels: Any, n: int, what: str = "data") -> np.ndarray:
    """Labels as int64 [n] class indices, checked against the model's output width."""
    if labels is None:
        raise measure.DataError(
            "fine-tuning needs labels: give data=(inputs, labels) or a mapping with a "
            "'labels' key (in a --data .npz: an array named 'labels')"
        )
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise measure.DataError(
            f"{what}: labels must be one class per sample ({n}), got shape {list(y.shape)}"
        )
    if y.dtype.kind not in "iu":
        if y.dtype.kind != "f" or not np.all(y == np.round(y)):
            raise measure.DataError(f"{what}: labels must be integer classes, got {y.dtype}")
    y = y.astype(np.int64)
    classes = model.shapes.get(logits_value(model))
    width = classes[-1] if classes else None
    if y.size and (y.min() < 0 or (width is not None and y.max() >= width)):
        raise measure.DataError(
            f"{what}: labels must be classes in [0, {width}), got {y.min()}..{y.max()}"
        )
    return y


def logits_value(model: Model) -> str:
    """The value holding the logits: the first output, or the input of a final Softmax."""
    out = model.output_names[0]
    for node in model.nodes:
        if node.outputs[0] == out and node.op == "Softmax":
            return node.inputs[0]
    return out


# ---------------------------------------------------------------------- torch


def require_torch():
    """The torch module, or ImportError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            "fine-tuning needs PyTorch: pip install 'pyinfer[torch]' (torch==2.13.0, CPU)"
        ) from None
    return torch


def _ops():
    """op -> fn(node, *tensor inputs) for every op the graph module translates."""
    import torch
    import torch.nn.functional as F

    def act(y, node):
        a = node.attrs.get("activation")
        return F.relu(y) if a == "relu" else F.hardtanh(y, 0.0, 6.0) if a == "relu6" else y

    def reshape(node, x):
        target = [x.shape[i] if t == 0 else t for i, t in enumerate(node.attrs["shape"])]
        return x.reshape(target)

    def reduce(fn):
        def run(node, x):
            axes = node.attrs["axes"] or tuple(range(x.ndim))
            return fn(x, dim=tuple(axes), keepdim=node.attrs["keepdims"])

        return run

    def reduce_max(x, dim, keepdim):
        return torch.amax(x, dim=dim, keepdim=keepdim)

    def conv2d(n, x, w, b=None):
        a = n.attrs
        y = F.conv2d(x, w, b, a["stride"], a["padding"], a["dilation"], a["groups"])
        return act(y, n)

    return {
        "Linear": lambda n, x, w, b=None: act(F.linear(x, w, b), n),
        "Gemm": lambda n, x, w, b=None: act(F.linear(x, w, b), n),
        "Conv2d": conv2d,
        "MatMul": lambda n, x, y: torch.matmul(x, y),
        "Relu": lambda n, x: F.relu(x),
        "Relu6": lambda n, x: F.hardtanh(x, 0.0, 6.0),
        "Clip": lambda n, x: torch.clamp(x, n.attrs["min"], n.attrs["max"]),
        "Sigmoid": lambda n, x: torch.sigmoid(x),
        "Tanh": lambda n, x: torch.tanh(x),
        "HardSwish": lambda n, x: F.hardswish(x),
        "HardSigmoid": lambda n, x: torch.clamp(n.attrs["alpha"] * x + n.attrs["beta"], 0, 1),
        "Gelu": lambda n, x: F.gelu(x, approximate=n.attrs["approximate"]),
        "Softmax": lambda n, x: torch.softmax(x, n.attrs["axis"]),
        "MaxPool2d": lambda n, x: F.max_pool2d(
            x,
            n.attrs["kernel_size"],
            n.attrs["stride"] or n.attrs["kernel_size"],
            n.attrs["padding"],
        ),
        "AvgPool2d": lambda n, x: F.avg_pool2d(
            x,
            n.attrs["kernel_size"],
            n.attrs["stride"] or n.attrs["kernel_size"],
            n.attrs["padding"],
            count_include_pad=n.attrs["count_include_pad"],
        ),
        "GlobalAvgPool": lambda n, x: x.mean(dim=(2, 3), keepdim=n.attrs["keepdims"]),
        "ReduceMean": reduce(torch.mean),
        "ReduceSum": reduce(torch.sum),
        "ReduceMax": reduce(reduce_max),
        "Add": lambda n, x, y: x + y,
        "Sub": lambda n, x, y: x - y,
        "Mul": lambda n, x, y: x * y,
        "Div": lambda n, x, y: x / y,
        "Max": lambda n, x, y: torch.maximum(x, y),
        "Min": lambda n, x, y: torch.minimum(x, y),
        "Neg": lambda n, x: -x,
        "Abs": lambda n, x: torch.abs(x),
        "Exp": lambda n, x: torch.exp(x),
        "Log": lambda n, x: torch.log(x),
        "Sqrt": lambda n, x: torch.sqrt(x),
        "Reciprocal": lambda n, x: 1 / x,
        "Erf": lambda n, x: torch.erf(x),
        "Flatten": lambda n, x: torch.flatten(x, n.attrs["start_dim"], n.attrs["end_dim"]),
        "Reshape": reshape,
        "Transpose": lambda n, x: x.permute(*n.attrs["perm"]),
        "Concat": lambda n, *xs: torch.cat(xs, n.attrs["axis"]),
    }


def check_translatable(model: Model) -> None:
    """Raise FineTuneError listing every op of ``model`` the graph module cannot run."""
    known = sorted(_ops())
    missing: dict[str, list[str]] = {}
    for node in model.nodes:
        if node.op not in known:
            missing.setdefault(node.op, []).append(node.name)
    if missing:
        found = "; ".join(f"{op} (nodes {', '.join(names[:3])})" for op, names in missing.items())
        raise FineTuneError(
            f"fine-tuning cannot translate these ops to torch: {found}. It covers: "
            f"{', '.join(known)}; or pass your own module: FineTune(module=...)"
        )


def _layer_holder():
    import torch

    class LayerParams(torch.nn.Module):
        """One weighted layer's trainable weight and bias."""

        def __init__(self, weight: np.ndarray, bias: np.ndarray | None):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.from_numpy(np.array(weight, np.float32)))
            b = None if bias is None else torch.nn.Parameter(torch.from_numpy(np.array(bias)))
            self.bias = b

    return LayerParams


def graph_module(model: Model):
    """``model`` as a torch module: weighted layers' weights and biases are parameters
    (``module.layers[name]``), other constants fixed; ``forward`` takes the inputs in
    order and returns the logits (:func:`logits_value`)."""
    torch = require_torch()
    check_translatable(model)
    ops = _ops()
    layers = measure.weighted_layers(model)
    holder = _layer_holder()
    target = logits_value(model)
    names = [s.name for s in model.inputs]

    class GraphModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleDict()
            self._keys = {}
            for i, (name, node) in enumerate(layers.items()):
                bias = node.static[2] if len(node.static) > 2 else None
                key = f"layer{i}"  # ModuleDict keys may not hold dots
                self.layers[key] = holder(measure.layer_weight(node)[1].decode(), bias)
                self._keys[name] = key
            self.constants = {k: torch.from_numpy(np.array(v)) for k, v in model.constants.items()}

        def layer(self, name: str):
            return self.layers[self._keys[name]]

        def value(self, env: dict, name: str, static: Any):
            """An input of a node: an activation, a constant, or a parameter array."""
            if name in env:
                return env[name]
            if name in self.constants:
                return self.constants[name]
            return torch.from_numpy(np.array(static))

        def forward(self, *inputs):
            env = dict(zip(names, inputs))
            for node in model.nodes:
                if node.name in self._keys:
                    p = self.layer(node.name)
                    args = [env[node.inputs[0]], p.weight]
                    if p.bias is not None:
                        args.append(p.bias)
                else:
                    args = [self.value(env, v, s) for v, s in zip(node.inputs, node.static)]
                env[node.outputs[0]] = ops[node.op](node, *args)
                if node.outputs[0] == target:
                    return env[target]
            return env[target]

    return GraphModule()


def user_module_layers(module: Any, model: Model) -> dict[str, Any]:
    """The submodules of the user's ``module`` that hold ``model``'s weighted layers, by
    layer name; FineTuneError when one is missing or holds other weights."""
    subs = dict(module.named_modules())
    found = {}
    for name, node in measure.weighted_layers(model).items():
        sub = subs.get(name)
        w = measure.layer_weight(node)[1]
        if sub is None or not hasattr(sub, "weight"):
            raise FineTuneError(
                f"FineTune(module=...): the module has no submodule {name!r} with a weight; "
                "give the module the model was converted from (pyinfer.from_torch)"
            )
        have = sub.weight.detach().cpu().numpy()
        bias = node.static[2] if len(node.static) > 2 else None
        same = have.shape == tuple(w.shape) and np.allclose(have, w.decode(), 1e-5, 1e-7)
        has_bias = getattr(sub, "bias", None) is not None
        if same and bias is not None:
            same = has_bias and np.allclose(sub.bias.detach().cpu().numpy(), bias, 1e-5, 1e-7)
        if not same or (bias is None and has_bias):
            raise FineTuneError(
                f"FineTune(module=...): layer {name!r} of the module holds other weights than "
                "the model's (a BatchNorm folded into it at conversion?); fine-tune the "
                "model's own graph instead (no module)"
            )
        found[name] = sub
    return found


# ---------------------------------------------------------------------- masks, fake quantization


def lossy(plan: LayerPlan, shape: tuple) -> bool:
    """Does the encoding change weight values (so training must see them quantized)?"""
    if plan.encoding == "dense":
        return False
    probe = np.random.default_rng(0).standard_normal((2, *shape[1:])).astype(np.float32)
    try:
        return not np.array_equal(
            kernels.encode(probe, plan.encoding, **codec_options(plan)).decode(), probe
        )
    except (ValueError, TypeError):
        return True


def codec_options(plan: LayerPlan) -> dict:
    """The ``kernels.encode`` options of a layer (the static activation scale, set by
    calibration later, does not change the weight values)."""
    options = dict(plan.options)
    if plan.calibration:
        options["activation_scale"] = 1.0
    return options


def sparsity_at(step: int, ramp: int, final: float, initial: float = 0.0) -> float:
    """The cubic schedule: ``s_f + (s_i - s_f)(1 - t/n)^3``, ``s_f`` from step ``n`` on."""
    t = min(1.0, step / ramp) if ramp > 0 else 1.0
    return final + (initial - final) * (1.0 - t) ** 3


def compute_masks(
    matrices: dict[str, np.ndarray], plans: list[LayerPlan], level: dict[str, float]
) -> dict[str, np.ndarray]:
    """Keep-masks (bool, the weights' shapes) pruning each layer's ``matrices`` to
    ``level[layer]`` by its plan's pruning mode, as ``compress.prune`` does."""
    from pyinfer.convert import compress as c

    pruned = {
        p.layer: matrices[p.layer].reshape(matrices[p.layer].shape[0], -1).copy() for p in plans
    }
    by_global = [p for p in plans if p.pruning == "global"]
    if by_global:
        c.prune_global([pruned[p.layer] for p in by_global], level[by_global[0].layer])
    for p in plans:
        m = pruned[p.layer]
        if p.nm() is not None:
            c.prune_n_m(m, *p.nm())
        elif p.pruning == "block":
            c.prune_blocks(m, level[p.layer], p.block_size)
        elif p.pruning != "global":
            c.prune_magnitude(m, level[p.layer])
    return {k: (m != 0).reshape(matrices[k].shape) for k, m in pruned.items()}


def _transform(torch, mask_ref: dict, layer: str, plan: LayerPlan | None, quantize: bool):
    """The parametrization of a layer's weight: mask, then the codec's round trip with a
    straight-through gradient."""
    options = codec_options(plan) if plan is not None else {}

    class StraightThrough(torch.autograd.Function):
        """Forward: the codec's values, bit for bit (``w + (q - w).detach()`` can round
        off q); backward: the gradient as it is."""

        @staticmethod
        def forward(ctx, w):
            q = kernels.encode(w.detach().numpy(), plan.encoding, **options).decode()
            return torch.from_numpy(np.ascontiguousarray(q, np.float32))

        @staticmethod
        def backward(ctx, grad):
            return grad

    class WeightTransform(torch.nn.Module):
        def forward(self, w):
            mask = mask_ref.get(layer)
            if mask is not None:
                w = w * mask
            return StraightThrough.apply(w) if quantize else w

    return WeightTransform()


def _factors(torch, plan: LayerPlan):
    """The parametrization of a ``lowrank`` layer: its weight is ``u @ v.T``, the factors
    (from the encoding, at the plan's rank) are what trains -- an SVD per step would cost
    far more than the step."""
    options = codec_options(plan)

    class LowRankFactors(torch.nn.Module):
        def forward(self, u, v):
            return u @ v.T

        def right_inverse(self, w):
            f = kernels.encode(w.detach().numpy(), "lowrank", **options)
            return torch.from_numpy(f.u.copy()), torch.from_numpy(f.v.copy())

    return LowRankFactors()


# ---------------------------------------------------------------------- training


def fine_tune(
    model: Model,
    plans: list[LayerPlan],
    arrays: dict[str, Any],
    labels: Any,
    config: FineTune,
    progress: bool = True,
) -> tuple[Model, FineTuneRecord]:
    """Train ``model``'s weighted layers for ``plans`` on labelled data.

    Parameters
    ----------
    model : Model
        The dense model (its weights are the starting point and the teacher).
    plans : list of LayerPlan
        The layers ``compress`` will encode (others train as plain dense layers).
    arrays : dict of str -> ndarray
        Inputs checked by ``measure.check_data``.
    labels : array_like of int
        One class per sample.
    config : FineTune
    progress : bool
        Progress bars (tqdm, when installed and stderr is a terminal).

    Returns
    -------
    (Model, FineTuneRecord)
        The model with the trained weights (dense, masked, not yet quantized) and biases,
        and what the training did.

    Raises
    ------
    DataError, FineTuneError, ImportError
        Before any training: labels missing or malformed, an op torch cannot run, a
        module that does not match, torch missing.
    """
    if not isinstance(config, FineTune):
        raise TypeError(f"finetune must be a pyinfer.FineTune, got {type(config).__name__}")
    torch = require_torch()
    n = measure.n_samples(arrays)
    y = check_labels(model, labels, n)
    validation = None
    if config.validation is not None:
        vx, vy = split_labels(model, config.validation)
        vx = measure.check_data(model, vx)
        validation = (vx, check_labels(model, vy, measure.n_samples(vx), "validation"))
    if config.module is None:
        check_translatable(model)
    else:
        user_module_layers(config.module, model)
    runs = [None, config.distill] if config.compare_distill else [config.distill]
    teacher = _teacher_logits(model, arrays) if config.distill is not None else None
    result = compared = None
    for distill in runs:
        result = _train(
            torch, model, plans, arrays, y, config, distill, teacher, validation, progress
        )
        if distill is None and config.compare_distill:
            compared = result[1].to_dict()
    trained, record = result
    record.without_distill = compared
    return trained, record


def _teacher_logits(model: Model, arrays: dict[str, Any]) -> np.ndarray:
    """The original model's logits on every sample (the runtime, one pass)."""
    probe = measure.with_outputs(model, [logits_value(model)])
    value = logits_value(model)
    parts = [probe.run(b)[value] for b in measure.batches(arrays)]
    return np.concatenate(parts).astype(np.float32)


@contextlib.contextmanager
def _torch_state(torch, threads: int, seed: int):
    """Torch on ``threads`` threads with its RNG seeded; both restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)


class _Pruner:
    """The masks of the pruned layers: set by the plans' pruning, on the cubic schedule
    for high targets, and applied to the raw weights so pruned ones stay exactly zero."""

    def __init__(self, torch, plans: list[LayerPlan], raw: dict, total: int, schedule: str):
        self.torch = torch
        self.plans = [p for p in plans if p.sparsity]
        self.raw = raw
        self.masks: dict[str, Any] = {}  # shared with the weight transforms
        self.ramp = max(1, round(RAMP_FRACTION * total)) if schedule == "cubic" else 0
        self.every = max(1, self.ramp // MASK_UPDATES)
        self.gradual = {
            p.layer
            for p in self.plans
            if self.ramp and p.sparsity > GRADUAL_ABOVE and p.nm() is None
        }
        self.sparsity = 0.0  # over the pruned layers, now
        if self.plans:
            self.update(0)

    def due(self, step: int) -> bool:
        """Do the masks change before ``step``?"""
        return (
            bool(self.gradual)
            and 0 < step <= self.ramp
            and (step % self.every == 0 or step == self.ramp)
        )

    def update(self, step: int) -> None:
        """Masks for the sparsity of ``step``, by magnitude of the (masked) weights."""
        level = {
            p.layer: sparsity_at(step, self.ramp, p.sparsity)
            if p.layer in self.gradual
            else p.sparsity
            for p in self.plans
        }
        current = {p.layer: self.raw[p.layer].detach().numpy() for p in self.plans}
        for k, m in compute_masks(current, self.plans, level).items():
            self.masks[k] = self.torch.from_numpy(m)
        self.apply()
        total = sum(m.numel() for m in self.masks.values())
        self.sparsity = 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total

    def apply(self) -> None:
        """Zero the pruned raw weights (Adam's momentum would move them otherwise)."""
        with self.torch.no_grad():
            for k, m in self.masks.items():
                self.raw[k].mul_(m)


def _trainable(torch, model: Model, config: FineTune):
    """(module, {layer: submodule with .weight and .bias}) to train: built from the graph,
    or a copy of the user's module with only the model's layers trainable."""
    if config.module is None:
        net = graph_module(model)
        return net, {name: net.layer(name) for name in measure.weighted_layers(model)}
    net = copy.deepcopy(config.module)
    holders = user_module_layers(net, model)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, holders


def _train(torch, model, plans, arrays, y, config, distill, teacher, validation, progress):
    import torch.nn.functional as F
    from torch.nn.utils import parametrize

    with _torch_state(torch, config.threads or 1, config.seed):
        net, holders = _trainable(torch, model, config)
        net.eval()  # no dropout or BatchNorm updates: the module computes what the graph does
        n = len(y)
        per_epoch = math.ceil(n / config.batch_size)
        total = per_epoch * config.epochs
        raw = {name: h.weight for name, h in holders.items()}  # before parametrization
        pruner = _Pruner(torch, plans, raw, total, config.schedule)
        by_layer = {p.layer: p for p in plans}
        factored = set()  # lowrank layers: their two factors train, not the weight
        for name, h in holders.items():
            plan = by_layer.get(name)
            if plan is not None and plan.encoding == "lowrank" and not plan.sparsity:
                parametrize.register_parametrization(h, "weight", _factors(torch, plan))
                factored.add(name)
                continue
            quantize = plan is not None and lossy(plan, tuple(h.weight.shape))
            if plan is not None and (plan.sparsity or quantize):
                transform = _transform(torch, pruner.masks, name, plan, quantize)
                parametrize.register_parametrization(h, "weight", transform)
        params = []
        for name, h in holders.items():
            if name in factored:
                params += list(h.parametrizations.weight.parameters())
            else:
                params.append(raw[name])
            params += [h.bias] if h.bias is not None else []
        for p in params:
            p.requires_grad_(True)

        inputs = [torch.from_numpy(_as_array(arrays[s.name])) for s in model.inputs]
        labels = torch.from_numpy(y)
        soft = torch.from_numpy(teacher) if distill is not None else None
        opt = torch.optim.Adam(params, lr=config.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
        gen = torch.Generator().manual_seed(config.seed)
        losses, accuracies = [], []
        start = time.perf_counter()
        step = 0
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            desc = f"fine-tuning {epoch + 1}/{config.epochs}"
            bar = measure.progress(range(per_epoch), desc, per_epoch, progress)
            loss_sum = correct = 0.0
            try:
                for i in bar:
                    if pruner.due(step):
                        pruner.update(step)
                    idx = order[i * config.batch_size : (i + 1) * config.batch_size]
                    logits = net(*[x[idx] for x in inputs])
                    loss = _loss(
                        F, logits, labels[idx], distill, None if soft is None else soft[idx]
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    pruner.apply()
                    step += 1
                    value = float(loss.detach())
                    loss_sum += value * len(idx)
                    correct += float((logits.argmax(1) == labels[idx]).sum())
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{value:.4f}", sparsity=f"{pruner.sparsity:.1%}")
            finally:
                if hasattr(bar, "close"):
                    bar.close()
            losses.append(loss_sum / n)
            if validation is not None:
                accuracies.append(_accuracy(torch, net, model, *validation))
            else:
                accuracies.append(correct / n)
        seconds = time.perf_counter() - start
        for name in factored:  # u @ v.T: encoding it again finds the trained factors
            raw[name] = holders[name].weight
        trained = _with_weights(model, holders, raw)
    record = FineTuneRecord(
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        schedule=config.schedule,
        seed=config.seed,
        distill=dataclasses.asdict(distill) if distill is not None else None,
        steps=total,
        seconds=seconds,
        loss=losses,
        accuracy=accuracies,
        accuracy_on="validation" if validation is not None else "training batches",
        sparsity=pruner.sparsity,
    )
    return trained, record


def _as_array(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(a, np.float32) if a.dtype.kind == "f" else a


def _with_weights(model: Model, holders: dict, raw: dict) -> Model:
    """``model`` with the trained weights (dense; pruned ones exactly zero) and biases."""
    weights = dict(model.weights)
    constants = dict(model.constants)
    layers = measure.weighted_layers(model)
    for name, h in holders.items():
        node = layers[name]
        w = np.array(raw[name].detach().numpy(), np.float32)
        weights[node.inputs[1]] = kernels.encode(w, "dense")
        if h.bias is not None:
            constants[node.inputs[2]] = np.array(h.bias.detach().numpy(), np.float32)
    return Model(model.graph, weights, constants)


def _loss(F, logits, labels, distill: Distill | None, teacher):
    ce = F.cross_entropy(logits, labels)
    if distill is None or distill.alpha == 0:
        return ce
    t = distill.temperature
    kl = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - distill.alpha) * ce + distill.alpha * t * t * kl


def _accuracy(torch, net, model, arrays, labels) -> float:
    correct = 0
    names = [s.name for s in model.inputs]
    with torch.no_grad():
        for lo in range(0, len(labels), 1024):
            xs = [
                torch.from_numpy(np.ascontiguousarray(arrays[k][lo : lo + 1024], np.float32))
                for k in names
            ]
            correct += int((net(*xs).argmax(1).numpy() == labels[lo : lo + 1024]).sum())
    return correct / len(labels)
