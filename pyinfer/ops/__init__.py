"""The runtime's operators: the op registry, attribute schemas and shape helpers.

Each op is one :class:`OpSpec` in :data:`OPS`, registered by its family module
(``linear``, ``conv``, ``elementwise``, ``arith``, ``normalization``, ``pooling``,
``shape``, ``shape_ops``).
Planning (``pyinfer.plan``) checks a node's inputs and attributes against the spec,
infers its output shape, and builds once the step a call runs. Inputs have roles:

- ``tensor``: an activation or a constant, passed to the step at run time;
- ``weight``: an encoded weight (``kernels`` encoding), bound at build time;
- ``param``: a constant array bound at build time (bias, LayerNorm scale).

Tensors are float32, int64, int32 or bool (:data:`DTYPES`). Each op says which dtypes its
inputs take and which its output has (``OpSpec.dtypes``, checked when the graph is
planned); most ops take float32 only, and integer and bool tensors flow through the ops
of masks and sizes: comparisons, logic, ``Where``, ``Cast``, the shape ops and integer
arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernels.api import check_bias
from kernels.encodings.base import ACTIVATIONS

Shape = "tuple[int | None, ...] | None"  # None: rank unknown; a None dim: size unknown

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)
I32 = np.dtype(np.int32)
BOOL = np.dtype(np.bool_)
#: Every dtype a tensor may have at run time.
DTYPES = (F32, I64, I32, BOOL)
#: The dtypes of integer and float arithmetic.
NUMERIC = (F32, I64, I32)

#: A planned step: reads its inputs from a call's list of values and writes its output.
Step = Callable[[list], None]


@dataclass(frozen=True)
class Attr:
    """One attribute: its kind (how it is checked) and default (``REQUIRED`` if none)."""

    kind: str  # int, float, bool, ints, pair, str, activation
    default: Any = None
    choices: tuple | None = None  # str: the values; int, pair: (minimum,)


REQUIRED = object()


@dataclass
class Node:
    """A checked node, as the planner and the builders see it."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    # filled by the planner: per input, the static object (weight, param array) or None
    static: list[Any] = field(default_factory=list)
    in_shapes: list[Any] = field(default_factory=list)
    out_shape: Any = None
    out_dtype: Any = None  # planner: the output's NumPy dtype
    buffer: int | None = None  # planner: id of the reusable output buffer, if any


@dataclass(frozen=True)
class Slots:
    """Where a step reads and writes in a call's list of values (``env``)."""

    inputs: tuple[int, ...]  # the tensor inputs, in order
    output: int
    dead: tuple[int, ...]  # freed after the step: no later step reads them
    arena: int  # env[arena]: this thread's reusable buffers (see Node.buffer)


@dataclass(frozen=True)
class OpSpec:
    """An operator: input roles, attributes, shape inference, builder and planner facts.

    ``roles`` lists each input's role; a trailing ``?`` marks an optional input and
    ``tensor+`` a variadic list of tensors. ``dtypes(node, in_dtypes) -> dtype`` checks
    the inputs' dtypes (None for a weight) and gives the output's, raising ValueError
    naming the input otherwise; without it every input is float32 except
    ``index_inputs``, which hold integer indices, and the output is float32.

    An op gives either ``build(node) -> fn`` (the step computes ``fn(*tensor inputs)``)
    or ``build_step(node, slots) -> step`` (it writes the step itself, e.g. to write into
    a reused buffer with one Python call per layer).
    """

    name: str
    roles: tuple[str, ...]
    attrs: dict[str, Attr]
    infer: Callable[[Node], Any]
    build: Callable[[Node], Callable[..., np.ndarray]] | None = None
    build_step: Callable[[Node, Slots], Step] | None = None
    index_inputs: tuple[int, ...] = ()
    dtypes: Callable[[Node, list], np.dtype] | None = None
    #: takes an ``activation`` attribute applied in its kernel's epilogue
    fuses_activation: bool = False
    #: the epilogue activation this op is, when a fusing op before it can absorb it
    as_activation: str | None = None
    #: its output may live in a reused per-thread buffer (``Node.buffer``)
    pooled: bool = False
    #: its output may be a view of its first input's memory
    view: bool = False
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

    def out_dtype(self, node: Node, in_dtypes: list) -> np.dtype:
        """The output's dtype given each input's (None for a weight); ValueError naming
        the first input of a dtype this op does not take."""
        if self.dtypes is not None:
            return self.dtypes(node, in_dtypes)
        for pos, dt in enumerate(in_dtypes):
            if dt is None:
                continue
            if pos in self.index_inputs:
                if dt.kind not in "iu":
                    raise ValueError(f"input {node.inputs[pos]!r} must hold integers, got {dt}")
            elif dt != F32:
                raise ValueError(f"input {node.inputs[pos]!r} must be float32, got {dt}")
        return F32


OPS: dict[str, OpSpec] = {}


def register(op: OpSpec) -> OpSpec:
    """Add ``op`` to :data:`OPS` under its name."""
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is already registered")
    if (op.build is None) == (op.build_step is None):
        raise ValueError(f"op {op.name!r} needs exactly one of build and build_step")
    OPS[op.name] = op
    return op


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
        if a.choices is not None and v < a.choices[0]:
            raise ValueError(f"{label} must be at least {a.choices[0]}, got {v!r:.60}")
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


def input_shape(node: Node, i: int, want: int | None = None, at_least: int = 0):
    """Input i's shape, checked to have rank ``want`` (or at least ``at_least``)."""
    s = node.in_shapes[i]
    if s is None:
        return None
    if want is not None and len(s) != want:
        raise ValueError(
            f"input {node.inputs[i]!r} must have {want} dimensions, got shape {fmt_shape(s)}"
        )
    if len(s) < at_least:
        raise ValueError(
            f"input {node.inputs[i]!r} must have at least {at_least} dimensions, "
            f"got shape {fmt_shape(s)}"
        )
    return s


def fmt_shape(shape) -> str:
    """``[2, ?, 8]``: a shape with unknown dims as ``?``."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def axis_index(axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` (negative counts from the end) as an index in ``range(rank)``."""
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
            raise ValueError(f"shapes {fmt_shape(a)} and {fmt_shape(b)} do not broadcast")
        else:
            out.append(x)
    return tuple(reversed(out))


def same_shape(node: Node):
    """Shape inference of an op whose output has its first input's shape."""
    return node.in_shapes[0]


def static_input(node: Node, i: int):
    """The static object (weight, param array) bound at input ``i``, or None."""
    return node.static[i] if len(node.static) > i else None


def bias_param(node: Node, i: int, n: int):
    """The float32 bias of ``n`` entries at input ``i`` (None if absent), checked."""
    b = static_input(node, i)
    if b is None:
        return None
    if b.dtype != F32:
        raise ValueError(f"bias {node.inputs[i]!r} must be float32, got {b.dtype}")
    return check_bias(b, n)


# ----------------------------------------------------------------- dtype rules


def _names(dtypes) -> str:
    return ", ".join(str(d) for d in dtypes)


def check_dtype(node: Node, pos: int, dtype, allowed) -> None:
    """ValueError naming input ``pos`` unless its dtype is one of ``allowed``."""
    if dtype not in allowed:
        want = str(allowed[0]) if len(allowed) == 1 else f"one of {_names(allowed)}"
        raise ValueError(f"input {node.inputs[pos]!r} must be {want}, got {dtype}")


def one_dtype(node: Node, dtypes, allowed, first: int = 0) -> np.dtype:
    """The dtype inputs ``first`` on share, one of ``allowed``; ValueError otherwise."""
    check_dtype(node, first, dtypes[first], allowed)
    for pos in range(first + 1, len(dtypes)):
        if dtypes[pos] != dtypes[first]:
            raise ValueError(
                f"inputs {node.inputs[first]!r} ({dtypes[first]}) and {node.inputs[pos]!r} "
                f"({dtypes[pos]}) must have the same dtype"
            )
    return dtypes[first]


def dtype_of_data(node: Node, dtypes) -> np.dtype:
    """Rule of the shape ops: input 0 of any runtime dtype, passed on; the others are
    read only for their sizes."""
    check_dtype(node, 0, dtypes[0], DTYPES)
    return dtypes[0]


def dtype_arithmetic(node: Node, dtypes) -> np.dtype:
    """Rule of integer-or-float arithmetic: inputs of one numeric dtype, kept."""
    return one_dtype(node, dtypes, NUMERIC)


# Family modules register their ops on import; they need the names above.
from pyinfer.ops import (  # noqa: E402
    arith,
    conv,
    elementwise,
    linear,
    logic,
    normalization,
    pooling,
    shape,
    shape_ops,
)
from pyinfer.ops.elementwise import erf  # noqa: E402
from pyinfer.ops.linear import linear_kernel  # noqa: E402
from pyinfer.ops.shape import reshape_target  # noqa: E402

__all__ = [
    "BOOL",
    "DTYPES",
    "F32",
    "I32",
    "I64",
    "NUMERIC",
    "OPS",
    "REQUIRED",
    "Attr",
    "Node",
    "OpSpec",
    "Slots",
    "Step",
    "arith",
    "broadcast_shapes",
    "check_attrs",
    "check_dtype",
    "conv",
    "dtype_arithmetic",
    "dtype_of_data",
    "elementwise",
    "erf",
    "linear",
    "linear_kernel",
    "logic",
    "names",
    "normalization",
    "one_dtype",
    "pooling",
    "register",
    "reshape_target",
    "shape",
    "shape_ops",
    "spec",
    "static_roles",
]
