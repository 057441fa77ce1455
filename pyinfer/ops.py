"""The runtime's operators: attribute schemas, shape inference and NumPy implementations.

Each op is one :class:`OpSpec` in :data:`OPS`. Planning (``pyinfer.model``) checks a
node's inputs and attributes against the spec, infers its output shape, and calls
``build`` once to get the function a call runs. Inputs have roles:

- ``tensor``: an activation or a constant, passed to the function at run time;
- ``weight``: an encoded weight (``kernels`` encoding), bound at build time;
- ``param``: a constant array bound at build time (bias, LayerNorm scale).

All float tensors are float32; only ``Gather`` indices are integers. Weighted ops call
the registry kernel resolved once at plan time (``kernels.backends.resolve``), with
arguments the plan has already validated, so a layer costs one kernel call.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import kernels
from kernels import backends
from kernels.api import check_activation, check_bias
from kernels.encodings.base import ACTIVATIONS, EncodedWeight

Shape = "tuple[int | None, ...] | None"  # None: rank unknown; a None dim: size unknown

F32 = np.dtype(np.float32)


@dataclass(frozen=True)
class Attr:
    """One attribute: its kind (how it is checked) and default (``REQUIRED`` if none)."""

    kind: str  # int, float, bool, ints, pair, str, activation
    default: Any = None
    choices: tuple | None = None


REQUIRED = object()


@dataclass
class Node:
    """A checked node, as the planner and ``build`` see it."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    # filled by the planner: per input, the static object (weight, param array) or None
    static: list[Any] = field(default_factory=list)
    in_shapes: list[Any] = field(default_factory=list)
    out_shape: Any = None
    buffer: int | None = None  # planner: id of the reusable output buffer, if any


@dataclass(frozen=True)
class OpSpec:
    """An operator: input roles, attributes, shape inference and builder.

    ``roles`` lists each input's role; a trailing ``?`` marks an optional input and
    ``tensor+`` a variadic list of tensors. ``index_inputs`` are positions that hold
    integer indices (every other tensor is float32).
    """

    name: str
    roles: tuple[str, ...]
    attrs: dict[str, Attr]
    infer: Callable[[Node], Any]
    build: Callable[[Node], Callable[..., np.ndarray]]
    index_inputs: tuple[int, ...] = ()
    fuses_activation: bool = False
    description: str = ""

    def arity(self) -> tuple[int, int | None]:
        """(minimum, maximum) number of inputs; maximum None when variadic."""
        if self.roles and self.roles[-1].endswith("+"):
            return 1, None
        required = sum(not r.endswith("?") for r in self.roles)
        return required, len(self.roles)

    def role(self, i: int) -> str:
        """Role of input ``i`` (without the ``?``/``+`` marks)."""
        r = self.roles[min(i, len(self.roles) - 1)]
        return r.rstrip("?+")


OPS: dict[str, OpSpec] = {}


def _op(name: str, roles, attrs=None, index_inputs=(), fuses_activation=False, description=""):
    def register(pair):
        infer, build = pair
        OPS[name] = OpSpec(
            name,
            tuple(roles),
            dict(attrs or {}),
            infer,
            build,
            tuple(index_inputs),
            fuses_activation,
            description,
        )
        return pair

    return register


# ----------------------------------------------------------------- attribute checks


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_attrs(node_label: str, spec: OpSpec, attrs: Any) -> dict[str, Any]:
    """Attributes with defaults filled in; ValueError naming the attribute otherwise."""
    if not isinstance(attrs, dict):
        raise ValueError(f"{node_label}: attrs must be an object, got {type(attrs).__name__}")
    unknown = set(attrs) - set(spec.attrs)
    if unknown:
        raise ValueError(
            f"{node_label}: unknown attribute(s) {sorted(unknown)}; "
            f"{spec.name} takes {sorted(spec.attrs) or 'none'}"
        )
    out = {}
    for name, a in spec.attrs.items():
        if name not in attrs:
            if a.default is REQUIRED:
                raise ValueError(f"{node_label}: attribute {name!r} is required")
            out[name] = a.default
            continue
        out[name] = _check_attr(f"{node_label}: attribute {name!r}", a, attrs[name])
    return out


def _check_attr(label: str, a: Attr, v: Any) -> Any:
    if a.kind == "int":
        if not _is_int(v):
            raise ValueError(f"{label} must be an integer, got {v!r:.60}")
        return int(v)
    if a.kind == "float":
        if not (_is_int(v) or isinstance(v, float)) or not math.isfinite(v):
            raise ValueError(f"{label} must be a finite number, got {v!r:.60}")
        return float(v)
    if a.kind == "bool":
        if not isinstance(v, bool):
            raise ValueError(f"{label} must be true or false, got {v!r:.60}")
        return v
    if a.kind == "ints":
        if not isinstance(v, (list, tuple)) or not all(_is_int(i) for i in v) or len(v) > 64:
            raise ValueError(f"{label} must be a list of at most 64 integers, got {v!r:.60}")
        return tuple(int(i) for i in v)
    if a.kind == "pair":  # int or [int, int], each >= minimum given by choices[0]
        if _is_int(v):
            v = (int(v), int(v))
        if (
            not isinstance(v, (list, tuple))
            or len(v) != 2
            or not all(_is_int(i) for i in v)
            or min(v) < a.choices[0]
            or max(v) > 1 << 20
        ):
            raise ValueError(
                f"{label} must be an integer or a pair of integers in "
                f"[{a.choices[0]}, {1 << 20}], got {v!r:.60}"
            )
        return (int(v[0]), int(v[1]))
    if a.kind == "str":
        if v not in a.choices:
            raise ValueError(f"{label} must be one of {list(a.choices)}, got {v!r:.60}")
        return v
    if a.kind == "activation":
        if v not in ACTIVATIONS:
            raise ValueError(f"{label} must be one of {list(ACTIVATIONS)}, got {v!r:.60}")
        return v
    raise AssertionError(a.kind)


# ----------------------------------------------------------------- shape helpers


def _rank(node: Node, i: int, want: int | None = None, at_least: int = 0):
    """Input i's shape, checked to have rank ``want`` (or at least ``at_least``)."""
    s = node.in_shapes[i]
    if s is None:
        return None
    if want is not None and len(s) != want:
        raise ValueError(
            f"input {node.inputs[i]!r} must have {want} dimensions, got shape {_fmt(s)}"
        )
    if len(s) < at_least:
        raise ValueError(
            f"input {node.inputs[i]!r} must have at least {at_least} dimensions, "
            f"got shape {_fmt(s)}"
        )
    return s


def _fmt(shape) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for {rank} dimensions")
    return axis % rank


def broadcast_shapes(a, b):
    """NumPy broadcasting on shapes whose dims may be None (unknown)."""
    if a is None or b is None:
        return None
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x is None or y is None:
            out.append(x if y is None else y)
        elif x != y:
            raise ValueError(f"shapes {_fmt(a)} and {_fmt(b)} do not broadcast")
        else:
            out.append(x)
    return tuple(reversed(out))


def _same(node: Node):
    return node.in_shapes[0]


# ----------------------------------------------------------------- weighted layers


def linear_kernel(weight: EncodedWeight):
    """The registry kernel serving ``weight`` now, and whether it needs Numba threads."""
    backend, fn = backends.resolve("linear", weight.encoding)
    return fn, backend == "numba"


def _bias(node: Node, i: int, n: int):
    b = node.static[i] if len(node.static) > i else None
    if b is None:
        return None
    if b.dtype != F32:
        raise ValueError(f"bias {node.inputs[i]!r} must be float32, got {b.dtype}")
    return check_bias(b, n)


def _infer_linear(node: Node):
    w = node.static[1]
    _bias(node, 2, w.out_features)
    s = _rank(node, 0, at_least=1)
    if s is None:
        return None
    if s[-1] is not None and s[-1] != w.in_features:
        raise ValueError(
            f"input {node.inputs[0]!r} has {s[-1]} features (last axis) but the "
            f"{w.encoding} weight {w.shape} expects {w.in_features}"
        )
    return (*s[:-1], w.out_features)


def _build_linear(node: Node):
    w = node.static[1]
    bias = _bias(node, 2, w.out_features)
    activation = node.attrs["activation"]
    check_activation(activation)
    kernel, numba_threads = linear_kernel(w)
    k, n = w.in_features, w.out_features
    name = node.name

    def general(x: np.ndarray) -> np.ndarray:
        if x.shape[-1:] != (k,):
            raise ValueError(
                f"node {name!r}: input has shape {x.shape}, expected last axis of size {k}"
            )
        lead = x.shape[:-1]
        x = np.ascontiguousarray(x.reshape(-1, k))
        out = np.empty((x.shape[0], n), F32)
        if x.shape[0]:
            if numba_threads:
                backends.apply_numba_threads()
            kernel(x, w, bias, activation, out)
        return out.reshape(*lead, n)

    if node.buffer is not None:
        slot = node.buffer

        def linear_into_buffer(x: np.ndarray, arena: list) -> np.ndarray:
            # arena: this thread's buffers; the planner proved this one free here
            shape = x.shape
            if len(shape) == 2 and shape[1] == k and shape[0] and x.flags.c_contiguous:
                out = arena[slot]
                if out is None or out.shape[0] != shape[0]:
                    out = arena[slot] = np.empty((shape[0], n), F32)
                if numba_threads:
                    backends.apply_numba_threads()
                kernel(x, w, bias, activation, out)
                return out
            return general(x)

        if not numba_threads:  # the planner may inline this step (see model._bind)
            linear_into_buffer.parts = (kernel, w, bias, activation, k, n, slot, general)
        return linear_into_buffer

    if numba_threads:
        return general

    def linear(x: np.ndarray) -> np.ndarray:
        # the common case in as few Python operations as possible: [batch, k], contiguous
        shape = x.shape
        if len(shape) == 2 and shape[1] == k and shape[0] and x.flags.c_contiguous:
            out = np.empty((shape[0], n), F32)
            kernel(x, w, bias, activation, out)
            return out
        return general(x)

    return linear


_op(
    "Linear",
    ["tensor", "weight", "param?"],
    {"activation": Attr("activation", None)},
    fuses_activation=True,
    description="y = act(x @ W.T + b) over the last axis; W any encoding",
)((_infer_linear, _build_linear))
# ONNX's Gemm with alpha = beta = 1, transB = 1 is the same layer.
OPS["Gemm"] = dataclasses.replace(OPS["Linear"], name="Gemm")


def _conv_out(size, k, s, p, d):
    if size is None:
        return None
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ValueError(
            f"spatial size {size} is too small for kernel {k} (padding {p}, dilation {d})"
        )
    return out


def _infer_conv(node: Node):
    w = node.static[1]
    a = node.attrs
    if len(w.shape) != 4:
        raise ValueError(f"Conv2d weight must be [out, in/groups, kh, kw], got shape {w.shape}")
    o, cg, kh, kw = w.shape
    g = a["groups"]
    if o % g:
        raise ValueError(f"weight has {o} output channels, not divisible by groups={g}")
    _bias(node, 2, o)
    s = _rank(node, 0, 4)
    if s is None:
        return None
    n, c, h, wd = s
    if c is not None and c != cg * g:
        raise ValueError(
            f"input {node.inputs[0]!r} has {c} channels but the weight {w.shape} with "
            f"groups={g} expects {cg * g}"
        )
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    return (n, o, _conv_out(h, kh, sh, ph, dh), _conv_out(wd, kw, sw, pw, dw))


def _build_conv(node: Node):
    w = node.static[1]
    a = node.attrs
    bias = _bias(node, 2, w.shape[0])
    activation = a["activation"]
    stride, padding, dilation, groups = a["stride"], a["padding"], a["dilation"], a["groups"]
    cg = w.shape[1]
    name = node.name

    def conv2d(x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != cg * groups:
            raise ValueError(
                f"node {name!r}: input has shape {x.shape}, expected [N, {cg * groups}, H, W]"
            )
        return kernels.conv2d(x, w, bias, stride, padding, dilation, groups, activation)

    return conv2d


_op(
    "Conv2d",
    ["tensor", "weight", "param?"],
    {
        "stride": Attr("pair", (1, 1), (1,)),
        "padding": Attr("pair", (0, 0), (0,)),
        "dilation": Attr("pair", (1, 1), (1,)),
        "groups": Attr("int", 1),
        "activation": Attr("activation", None),
    },
    fuses_activation=True,
    description="2-D convolution, NCHW, weight [out, in/groups, kh, kw]; any encoding",
)((_infer_conv, _build_conv))


# ----------------------------------------------------------------- elementwise


def _infer_binary(node: Node):
    return broadcast_shapes(node.in_shapes[0], node.in_shapes[1])


_op("Add", ["tensor", "tensor"], description="a + b, broadcasting")(
    (_infer_binary, lambda node: np.add)
)
_op("Mul", ["tensor", "tensor"], description="a * b, broadcasting")(
    (_infer_binary, lambda node: np.multiply)
)


def _relu(x):
    return np.maximum(x, np.float32(0))


def _relu6(x):
    return np.clip(x, np.float32(0), np.float32(6))


def _sigmoid(x):
    # exp of -|x| never overflows; both branches are exact forms of 1 / (1 + e^-x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32, copy=False)


def _hardswish(x):
    return x * np.clip(x + np.float32(3), np.float32(0), np.float32(6)) / np.float32(6)


def erf(x: np.ndarray) -> np.ndarray:
    """erf in NumPy (float64 in, float64 out), relative error below 1.2e-7 everywhere.

    Numerical Recipes' Chebyshev fit of erfc, accurate in the tails too (GELU of large
    negative inputs depends on erfc there).
    """
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1 - erfc, erfc - 1)


def _build_gelu(node: Node):
    if node.attrs["approximate"] == "tanh":
        c = math.sqrt(2 / math.pi)

        def gelu_tanh(x):
            x64 = x.astype(np.float64)
            return (0.5 * x64 * (1 + np.tanh(c * (x64 + 0.044715 * x64**3)))).astype(np.float32)

        return gelu_tanh

    def gelu(x):
        x64 = x.astype(np.float64)
        # x * Phi(x) = x/2 * erfc(-x / sqrt 2), written so negative tails keep precision
        return (0.5 * x64 * (1 + erf(x64 * (1 / math.sqrt(2))))).astype(np.float32)

    return gelu


for _name, _fn, _desc in [
    ("Relu", _relu, "max(x, 0)"),
    ("Relu6", _relu6, "min(max(x, 0), 6)"),
    ("Sigmoid", _sigmoid, "1 / (1 + exp(-x))"),
    ("Tanh", np.tanh, "tanh(x)"),
    ("HardSwish", _hardswish, "x * relu6(x + 3) / 6"),
]:
    _op(_name, ["tensor"], description=_desc)((_same, lambda node, f=_fn: f))

_op(
    "Gelu",
    ["tensor"],
    {"approximate": Attr("str", "none", ("none", "tanh"))},
    description="x * Phi(x) (exact, erf) or the tanh approximation",
)((_same, _build_gelu))


# ----------------------------------------------------------------- normalisation


def _infer_softmax(node: Node):
    s = node.in_shapes[0]
    if s is not None:
        _axis(node.attrs["axis"], len(s))
    return s


def _build_softmax(node: Node):
    axis = node.attrs["axis"]

    def softmax(x):
        _axis(axis, x.ndim)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
        return e

    return softmax


_op("Softmax", ["tensor"], {"axis": Attr("int", -1)}, description="exp(x) / sum(exp(x)) on axis")(
    (_infer_softmax, _build_softmax)
)


def _infer_layernorm(node: Node):
    s = node.in_shapes[0]
    for i in (1, 2):
        p = node.static[i] if len(node.static) > i else None
        if p is not None and p.dtype != F32:
            raise ValueError(f"LayerNorm input {node.inputs[i]!r} must be float32, got {p.dtype}")
    if s is None:
        return None
    axis = _axis(node.attrs["axis"], len(s))
    norm = s[axis:]
    for i in (1, 2):
        p = node.static[i] if len(node.static) > i else None
        if p is not None and any(d is not None and d != q for d, q in zip(norm, p.shape)):
            raise ValueError(
                f"LayerNorm {node.inputs[i]!r} has shape {p.shape}, expected {_fmt(norm)} "
                f"(the input's axes from {node.attrs['axis']})"
            )
        if p is not None and len(p.shape) != len(norm):
            raise ValueError(
                f"LayerNorm {node.inputs[i]!r} has shape {p.shape}, expected {_fmt(norm)}"
            )
    return s


def _build_layernorm(node: Node):
    axis, eps = node.attrs["axis"], np.float32(node.attrs["eps"])
    scale = node.static[1] if len(node.static) > 1 else None
    shift = node.static[2] if len(node.static) > 2 else None

    def layer_norm(x):
        axes = tuple(range(_axis(axis, x.ndim), x.ndim))
        if scale is not None and x.shape[axes[0] :] != scale.shape:
            raise ValueError(f"LayerNorm: input {x.shape} does not end with {scale.shape}")
        mean = x.mean(axis=axes, keepdims=True)
        d = x - mean
        var = np.mean(np.square(d), axis=axes, keepdims=True)
        d /= np.sqrt(var + eps)
        if scale is not None:
            d *= scale
        if shift is not None:
            d += shift
        return d

    return layer_norm


_op(
    "LayerNorm",
    ["tensor", "param?", "param?"],
    {"axis": Attr("int", -1), "eps": Attr("float", 1e-5)},
    description="(x - mean) / sqrt(var + eps) * scale + bias over the axes from axis on",
)((_infer_layernorm, _build_layernorm))


# ----------------------------------------------------------------- pooling

_POOL_ATTRS = {
    "kernel_size": Attr("pair", REQUIRED, (1,)),
    "stride": Attr("pair", None, (1,)),  # default: kernel_size
    "padding": Attr("pair", (0, 0), (0,)),
}


def _pool_params(node: Node):
    a = node.attrs
    k = a["kernel_size"]
    s = a["stride"] or k
    p = a["padding"]
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding {p} must be at most half the kernel size {k}")
    return k, s, p


def _infer_pool(node: Node):
    k, s, p = _pool_params(node)
    shape = _rank(node, 0, 4)
    if shape is None:
        return None
    n, c, h, w = shape
    return (n, c, _conv_out(h, k[0], s[0], p[0], 1), _conv_out(w, k[1], s[1], p[1], 1))


def _windows(xp, k, s, oh, ow):
    for i in range(k[0]):
        for j in range(k[1]):
            yield xp[:, :, i : i + s[0] * (oh - 1) + 1 : s[0], j : j + s[1] * (ow - 1) + 1 : s[1]]


def _build_maxpool(node: Node):
    k, s, p = _pool_params(node)

    def max_pool(x):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d: input must be NCHW, got shape {x.shape}")
        oh = _conv_out(x.shape[2], k[0], s[0], p[0], 1)
        ow = _conv_out(x.shape[3], k[1], s[1], p[1], 1)
        xp = np.pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2), constant_values=-np.inf)
        windows = _windows(xp, k, s, oh, ow)
        out = np.array(next(windows))
        for win in windows:
            np.maximum(out, win, out=out)
        return out

    return max_pool


def _build_avgpool(node: Node):
    k, s, p = _pool_params(node)
    include_pad = node.attrs["count_include_pad"]

    def avg_pool(x):
        if x.ndim != 4:
            raise ValueError(f"AvgPool2d: input must be NCHW, got shape {x.shape}")
        oh = _conv_out(x.shape[2], k[0], s[0], p[0], 1)
        ow = _conv_out(x.shape[3], k[1], s[1], p[1], 1)
        xp = np.pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2))
        out = np.zeros((x.shape[0], x.shape[1], oh, ow), np.float32)
        for win in _windows(xp, k, s, oh, ow):
            out += win
        if include_pad or not any(p):
            out /= np.float32(k[0] * k[1])
        else:
            ones = np.pad(
                np.ones((1, 1) + x.shape[2:], np.float32),
                ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2),
            )
            count = sum(_windows(ones, k, s, oh, ow))
            out /= count
        return out

    return avg_pool


_op("MaxPool2d", ["tensor"], _POOL_ATTRS, description="max over kh x kw windows (pad -inf)")(
    (_infer_pool, _build_maxpool)
)
_op(
    "AvgPool2d",
    ["tensor"],
    {**_POOL_ATTRS, "count_include_pad": Attr("bool", True)},
    description="mean over kh x kw windows",
)((_infer_pool, _build_avgpool))


def _infer_gap(node: Node):
    s = _rank(node, 0, 4)
    if s is None:
        return None
    return (s[0], s[1], 1, 1) if node.attrs["keepdims"] else (s[0], s[1])


def _build_gap(node: Node):
    keep = node.attrs["keepdims"]

    def global_avg_pool(x):
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPool: input must be NCHW, got shape {x.shape}")
        return x.mean(axis=(2, 3), keepdims=keep, dtype=np.float32)

    return global_avg_pool


_op(
    "GlobalAvgPool",
    ["tensor"],
    {"keepdims": Attr("bool", True)},
    description="mean over H and W: [N, C, 1, 1] (or [N, C] without keepdims)",
)((_infer_gap, _build_gap))


# ----------------------------------------------------------------- shape ops


def _flatten_axes(start, end, rank):
    a = _axis(start, rank, "start_dim") if rank else 0
    b = _axis(end, rank, "end_dim") if rank else 0
    if a > b:
        raise ValueError(f"start_dim {start} comes after end_dim {end}")
    return a, b


def _infer_flatten(node: Node):
    s = node.in_shapes[0]
    if s is None:
        return None
    a, b = _flatten_axes(node.attrs["start_dim"], node.attrs["end_dim"], len(s))
    mid = s[a : b + 1]
    size = None if None in mid else math.prod(mid)
    return (*s[:a], size, *s[b + 1 :])


def _build_flatten(node: Node):
    start, end = node.attrs["start_dim"], node.attrs["end_dim"]

    def flatten(x):
        a, b = _flatten_axes(start, end, x.ndim)
        return x.reshape(*x.shape[:a], -1, *x.shape[b + 1 :])

    return flatten


_op(
    "Flatten",
    ["tensor"],
    {"start_dim": Attr("int", 1), "end_dim": Attr("int", -1)},
    description="merge axes start_dim..end_dim (torch.flatten)",
)((_infer_flatten, _build_flatten))


def reshape_target(shape_in, target) -> tuple:
    """The shape ``target`` asks for: 0 copies the input's dim, one -1 is inferred.

    Dims may be None (unknown) in ``shape_in``; the result then may hold None too.
    """
    out = []
    for i, t in enumerate(target):
        if t == 0:
            if i >= len(shape_in):
                raise ValueError(f"shape {list(target)}: 0 at position {i} has no input dim")
            out.append(shape_in[i])
        else:
            out.append(t)
    if -1 in out:
        known = [d for d in out if d != -1]
        total = None if None in shape_in else math.prod(shape_in)
        if None in known or total is None:
            return tuple(None if d == -1 else d for d in out)
        rest = math.prod(known)
        if rest == 0 or total % rest:
            raise ValueError(f"cannot reshape {_fmt(shape_in)} into {list(target)}")
        out[out.index(-1)] = total // rest
    elif None not in out and None not in shape_in and math.prod(out) != math.prod(shape_in):
        raise ValueError(f"cannot reshape {_fmt(shape_in)} into {list(target)}")
    return tuple(out)


def _infer_reshape(node: Node):
    target = node.attrs["shape"]
    if any(t < -1 for t in target) or target.count(-1) > 1:
        raise ValueError(f"shape {list(target)}: dims must be >= -1 with at most one -1")
    s = node.in_shapes[0]
    return None if s is None else reshape_target(s, target)


def _build_reshape(node: Node):
    target = node.attrs["shape"]
    simple = 0 not in target

    def reshape(x):
        return x.reshape(target if simple else reshape_target(x.shape, target))

    return reshape


_op(
    "Reshape",
    ["tensor"],
    {"shape": Attr("ints", REQUIRED)},
    description="reshape; 0 keeps the input's dim, -1 is inferred",
)((_infer_reshape, _build_reshape))


def _check_perm(perm, rank):
    if sorted(perm) != list(range(rank)):
        raise ValueError(f"perm {list(perm)} is not a permutation of the {rank} axes")


def _infer_transpose(node: Node):
    s = node.in_shapes[0]
    perm = node.attrs["perm"]
    _check_perm(perm, len(perm))
    if s is None:
        return None
    _check_perm(perm, len(s))
    return tuple(s[p] for p in perm)


def _build_transpose(node: Node):
    perm = node.attrs["perm"]

    def transpose(x):
        _check_perm(perm, x.ndim)
        return x.transpose(perm)

    return transpose


_op("Transpose", ["tensor"], {"perm": Attr("ints", REQUIRED)}, description="permute axes")(
    (_infer_transpose, _build_transpose)
)


def _infer_concat(node: Node):
    shapes = node.in_shapes
    if any(s is None for s in shapes):
        return None
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ValueError(f"Concat inputs must have equal ranks, got {[_fmt(s) for s in shapes]}")
    axis = _axis(node.attrs["axis"], rank)
    out = list(shapes[0])
    for s in shapes[1:]:
        for d in range(rank):
            if d == axis:
                out[d] = None if out[d] is None or s[d] is None else out[d] + s[d]
            elif out[d] is None:
                out[d] = s[d]
            elif s[d] is not None and s[d] != out[d]:
                raise ValueError(f"Concat inputs differ on axis {d}: {[_fmt(s) for s in shapes]}")
    return tuple(out)


def _build_concat(node: Node):
    axis = node.attrs["axis"]

    def concat(*xs):
        return np.concatenate(xs, axis=axis)

    return concat


_op("Concat", ["tensor+"], {"axis": Attr("int", 1)}, description="join along axis")(
    (_infer_concat, _build_concat)
)


def _infer_matmul(node: Node):
    a, b = node.in_shapes
    if a is None or b is None:
        return None
    if not a or not b:
        raise ValueError("MatMul inputs must have at least one dimension")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] is not None and b2[-2] is not None and a2[-1] != b2[-2]:
        raise ValueError(f"MatMul shapes {_fmt(a)} @ {_fmt(b)}: inner dims differ")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


_op("MatMul", ["tensor", "tensor"], description="numpy.matmul semantics")(
    (_infer_matmul, lambda node: np.matmul)
)


def _infer_gather(node: Node):
    data, idx = node.in_shapes
    if data is None or idx is None:
        return None
    axis = _axis(node.attrs["axis"], len(data))
    return (*data[:axis], *idx, *data[axis + 1 :])


def _build_gather(node: Node):
    axis = node.attrs["axis"]
    name = node.name

    def gather(data, indices):
        ax = _axis(axis, data.ndim)
        n = data.shape[ax]
        if indices.size and (int(indices.min()) < -n or int(indices.max()) >= n):
            raise ValueError(
                f"node {name!r}: Gather indices must lie in [{-n}, {n}), got "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        return np.take(data, indices, axis=ax)

    return gather


_op(
    "Gather",
    ["tensor", "tensor"],
    {"axis": Attr("int", 0)},
    index_inputs=(1,),
    description="take rows (embeddings): data[..., indices, ...] along axis",
)((_infer_gather, _build_gather))


#: Ops whose output may live in a reused per-thread buffer (their kernel takes ``out``).
POOLED_OPS = ("Linear", "Gemm")
#: Ops whose output may be a view of their first input's memory.
VIEW_OPS = ("Reshape", "Flatten", "Transpose")

#: Ops a preceding Linear/Conv2d absorbs into its kernel's epilogue.
FUSIBLE_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6"}


def names() -> list[str]:
    """Every op the runtime knows."""
    return sorted(OPS)


def spec(op: str) -> OpSpec:
    """The spec of ``op``; ValueError listing the known ops otherwise."""
    try:
        return OPS[op]
    except (KeyError, TypeError):
        raise ValueError(f"unknown op {op!r:.60}; expected one of {', '.join(names())}") from None


def static_roles(s: OpSpec, n_inputs: int) -> Sequence[str]:
    """The role of each of ``n_inputs`` inputs."""
    return [s.role(i) for i in range(n_inputs)]
