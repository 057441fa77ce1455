"""The one table of weight encodings, and of the fast kernels serving each of them.

Everything else -- ``kernels.encode``, the dispatch in ``kernels.linear``, the tests, the
benchmarks, the file format and the converter -- iterates this table instead of keeping
its own list. A new encoding is one module in ``kernels/encodings/`` that calls
:func:`register`, plus its kernels (named in the record, imported only when first used).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Kernel backends, fastest first. ``numpy`` (the reference) always exists.
BACKENDS = ("c", "numba", "numpy")

#: Operations a kernel can serve. ``linear``: y = act(x @ W.T + b) with x [batch, in].
OPS = ("linear",)


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
        ``"op/backend" -> "module:function"`` for the fast kernels. Each has the
        signature ``fn(x, w, bias, activation, out) -> None`` with ``x`` float32
        C-contiguous [batch, in], ``bias`` float32 [out] or None, ``activation`` one of
        None/"relu"/"relu6", ``out`` float32 C-contiguous [batch, out].
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
    conv_as_dense : callable or None
        ``conv_as_dense(weight) -> bool``: conv2d runs such weights as their effective
        dense matrix (``weight.decode()``, made once per weight) on the dense kernels.
        For float activations times weights with no multiply to save on CPUs where an
        FMA costs what an add does, and where conv reuses each weight thousands of times.
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
    conv_as_dense: Callable[[Any], bool] | None = None


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
    ENCODINGS[encoding.name] = encoding
    return encoding


def get(name: str) -> Encoding:
    """The registry row called ``name``; ValueError naming the known ones otherwise."""
    _load_rows()
    try:
        return ENCODINGS[name]
    except KeyError:
        known = ", ".join(sorted(ENCODINGS))
        raise ValueError(f"unknown encoding {name!r}; expected one of: {known}") from None


def names() -> list[str]:
    """Every registered encoding, in registration order."""
    _load_rows()
    return list(ENCODINGS)


def kernel(op: str, encoding: str, backend: str) -> Callable | None:
    """The fast kernel for ``op`` on ``encoding`` in ``backend``, imported on first use.

    Returns None when that backend has no such kernel. The ``numpy`` backend always
    has one: the reference, writing into ``out``.
    """
    row = get(encoding)
    spec = row.kernels.get(f"{op}/{backend}")
    if spec is None:
        if backend == "numpy" and op == "linear":
            return _reference_kernel(row)
        return None
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
