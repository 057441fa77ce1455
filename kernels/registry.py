"""The one table of weight encodings, and of the fast kernels serving each of them.

Everything else -- ``kernels.encode``, the dispatch in ``kernels.linear`` and
``kernels.conv2d``, ``kernels.cpu_info``, the tests, the benchmarks, the file format and
the converter -- iterates this table instead of keeping its own list. A new encoding is
one module in ``kernels/encodings/`` that calls :func:`register`, plus its kernels
(named in the record, imported only when first used); the checklist is in
:mod:`kernels.encodings`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Kernel backends, fastest first. ``numpy`` (the reference) always exists.
BACKENDS = ("c", "numba", "numpy")

#: Operations a kernel can serve. ``linear``: y = act(x @ W.T + b) with x [batch, in];
#: ``conv2d``: NCHW convolution with a weight [out, in/groups, kh, kw].
OPS = ("linear", "conv2d")

#: What serves a conv2d whose row names no lowering for the backend: the encoding's
#: linear kernel on patch rows; and its reference: the linear reference on patch rows.
DEFAULT_CONV_LOWERING = "kernels.conv.lowerings:patch_rows"
DEFAULT_CONV_REFERENCE = "kernels.conv.reference:patch_rows_reference"


@dataclass(frozen=True)
class Encoding:
    """One weight encoding: how it is stored, what defines it, and who runs it.

    Attributes
    ----------
    name : str
        The name users pass to ``kernels.encode`` and that files record.
    weight_type : type
        The :class:`~kernels.encodings.base.EncodedWeight` subclass holding the data.
    encode : callable
        ``encode(matrix, **options) -> weight`` for a float32 matrix [out, in]. Options
        are keyword arguments listed in ``options``.
    reference_linear : callable
        The NumPy reference ``(x, w, bias, activation) -> y``: plain, readable, and the
        definition of the semantics (rounding included) that fast kernels must match.
    kernels : mapping
        ``"op/backend" -> "module:function"`` for the fast kernels, imported on first use.
        ``linear/<backend>``: ``fn(x, w, bias, activation, out) -> None`` with ``x``
        float32 C-contiguous [batch, in], ``bias`` float32 [out] or None, ``activation``
        one of None/"relu"/"relu6", ``out`` float32 C-contiguous [batch, out].
        ``conv2d/<backend>``: a lowering ``fn(w, geo, bias, activation, ops) -> run`` or
        None (see :mod:`kernels.conv.lowerings`), called once per plan; ``run(x, y)``
        then computes one call. Without one, conv2d runs ``DEFAULT_CONV_LOWERING``.
    reference_conv2d : str or None
        ``"module:function"`` of the NumPy conv reference ``(x, w, bias, geo, activation)
        -> y`` (see :mod:`kernels.conv.reference`); None: ``DEFAULT_CONV_REFERENCE``.
    c_slots : mapping
        ``op -> {regime: C slot}``: the C dispatch slots (``pk_kernel_slot`` names) that
        run the op, per regime (e.g. ``"batch 1"``, ``"batch > 1"``, ``"depthwise"``);
        the general regime is listed last. A name that is no slot is a C function with
        no per-ISA variants, reported as it is. ``kernels.cpu_info()`` reports from it.
    options : mapping
        Encode-time options: name -> allowed values (the first is the default), or None
        when any value of the right type goes (e.g. a scale).
    bits_per_weight : str
        Storage cost, for documentation and reports.
    activations : str
        How activations are treated (float, dynamic int8 per row, ...).
    exact : bool
        Integer paths: fast kernels equal the reference bit for bit on the integer part.
    rtol : float
        Relative tolerance of fast float results against the reference.
    test_options : tuple of dict
        Option sets that tests and benchmarks iterate over.
    """

    name: str
    weight_type: type
    encode: Callable[..., Any]
    reference_linear: Callable[..., Any]
    kernels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, tuple | None] = field(default_factory=dict)
    bits_per_weight: str = "32"
    activations: str = "float32"
    exact: bool = False
    rtol: float = 1e-5
    test_options: tuple[dict, ...] = ({},)
    description: str = ""
    reference_conv2d: str | None = None
    c_slots: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


ENCODINGS: dict[str, Encoding] = {}
_resolved: dict[str, Callable] = {}


def register(encoding: Encoding) -> Encoding:
    """Add a row to the table (called once by each module in ``kernels/encodings``)."""
    if encoding.name in ENCODINGS:
        raise ValueError(f"encoding {encoding.name!r} is registered twice")
    for key in encoding.kernels:
        op, _, backend = key.partition("/")
        if op not in OPS or backend not in BACKENDS:
            raise ValueError(
                f"encoding {encoding.name!r}: bad kernel key {key!r}; "
                f"expected 'op/backend' with op in {OPS}, backend in {BACKENDS}"
            )
    for op in encoding.c_slots:
        if op not in OPS:
            raise ValueError(f"encoding {encoding.name!r}: c_slots names unknown op {op!r}")
    ENCODINGS[encoding.name] = encoding
    return encoding


def unregister(name: str) -> Encoding:
    """Remove a row added by :func:`register` (for rows defined by tests or plugins).

    Returns the removed row; ValueError when ``name`` is not registered.
    """
    row = get(name)
    del ENCODINGS[name]
    from kernels import backends  # a cached dispatch may name the removed row

    backends.forget_dispatch()
    return row


def get(name: str) -> Encoding:
    """The registry row called ``name``; ValueError naming the known ones otherwise."""
    _load_rows()
    try:
        return ENCODINGS[name]
    except KeyError:
        known = ", ".join(sorted(ENCODINGS))
        raise ValueError(f"unknown encoding {name!r}; expected one of: {known}") from None


def check_options(row: Encoding, options: Mapping[str, Any]) -> dict[str, Any]:
    """The one rule for encode-time options, in ``kernels.encode`` and in files alike.

    An option must be one ``row.options`` names; one with a list of allowed values must
    be one of them, of the same type (``32.0`` is not the int ``32``, ``True`` not ``1``).
    Options listed with ``None`` (free values, e.g. a scale) are left to the encoding's
    own validation. Returns the options as a new dict.

    Raises
    ------
    TypeError
        An option the encoding does not have (naming the ones it has).
    ValueError
        A value that is not one of the allowed ones (naming the option).
    """
    for name, value in options.items():
        if name not in row.options:
            allowed = ", ".join(row.options) or "none"
            raise TypeError(f"encoding {row.name!r} has no option {name!r}; options: {allowed}")
        choices = row.options[name]
        if choices is not None and not any(type(value) is type(c) and value == c for c in choices):
            raise ValueError(
                f"encoding {row.name!r} option {name}={value!r}; expected one of {list(choices)}"
            )
    return dict(options)


def names() -> list[str]:
    """Every registered encoding, in registration order."""
    _load_rows()
    return list(ENCODINGS)


def kernel(op: str, encoding: str, backend: str) -> Callable | None:
    """The fast kernel for ``op`` on ``encoding`` in ``backend``, imported on first use.

    Returns None when that backend has no such kernel. For ``linear`` the ``numpy``
    backend always has one: the reference, writing into ``out``.
    """
    row = get(encoding)
    spec = row.kernels.get(f"{op}/{backend}")
    if spec is None:
        if backend == "numpy" and op == "linear":
            return _reference_kernel(row)
        return None
    return resolve_spec(spec)


def conv_lowering(encoding: str, backend: str) -> Callable:
    """The conv2d lowering of ``encoding`` on ``backend`` (the row's, or the default)."""
    return kernel("conv2d", encoding, backend) or resolve_spec(DEFAULT_CONV_LOWERING)


def conv_reference(encoding: str) -> Callable:
    """The NumPy conv2d reference of ``encoding`` (the row's, or the default)."""
    return resolve_spec(get(encoding).reference_conv2d or DEFAULT_CONV_REFERENCE)


def resolve_spec(spec: str) -> Callable:
    """The function a ``"module:function"`` spec names, imported on first use."""
    fn = _resolved.get(spec)
    if fn is None:
        module, _, attr = spec.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        _resolved[spec] = fn
    return fn


def _reference_kernel(row: Encoding) -> Callable:
    def run_reference(x, w, bias, activation, out):
        out[...] = row.reference_linear(x, w, bias, activation)

    return run_reference


def _load_rows() -> None:
    if not ENCODINGS:
        importlib.import_module("kernels.encodings")
