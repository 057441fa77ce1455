"""Sizes known only at run time, as the ONNX importer reasons about them.

A :class:`Dim` is a polynomial with integer coefficients in named symbols: the free dims
of the graph inputs (``batch``, ``seq``) and sizes only a run settles. Shape tensors of an
ONNX graph (``Shape -> Gather -> Concat``) become NumPy object arrays of ints and Dims, so
the importer evaluates them with ordinary NumPy and turns the result into a static or
run-time target shape.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np


class NotStatic(ValueError):
    """An operation on sizes whose result the importer cannot know before a run."""


class Dim:
    """A size known only at run time: ``sum(coef * prod(symbols))``, never a constant."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict[tuple[str, ...], int]):
        self.terms = terms  # monomial (sorted symbol names) -> nonzero coefficient

    @staticmethod
    def symbol(name: str) -> Dim:
        return Dim({(name,): 1})

    # ------------------------------------------------------------------ arithmetic

    def __add__(self, other):
        terms = dict(self.terms)
        for m, c in _terms(other).items():
            terms[m] = terms.get(m, 0) + c
        return _make(terms)

    __radd__ = __add__

    def __neg__(self):
        return _make({m: -c for m, c in self.terms.items()})

    def __sub__(self, other):
        return self + (-_as_size(other))

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        terms: dict[tuple[str, ...], int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in _terms(other).items():
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, 0) + c1 * c2
        return _make(terms)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        """Exact division by an int or a monomial; NotStatic otherwise."""
        if isinstance(other, Dim) and other == self:
            return 1
        divisor = _terms(other)
        if len(divisor) != 1:
            raise NotStatic(f"cannot divide {self} by {other} before a run")
        ((dm, dc),) = divisor.items()
        out = {}
        for m, c in self.terms.items():
            rest = list(m)
            for s in dm:
                if s not in rest:
                    raise NotStatic(f"cannot divide {self} by {other} before a run")
                rest.remove(s)
            if c % dc:
                raise NotStatic(f"cannot divide {self} by {other} before a run")
            out[tuple(rest)] = c // dc
        return _make(out)

    __truediv__ = __floordiv__

    def __rfloordiv__(self, other):
        raise NotStatic(f"cannot divide {other} by {self} before a run")

    __rtruediv__ = __rfloordiv__

    def __eq__(self, other):
        return isinstance(other, Dim) and self.terms == other.terms

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(frozenset(self.terms.items()))

    def __bool__(self):
        return True  # a size known only at run time is never 0 here

    def __repr__(self):
        parts = []
        for m, c in sorted(self.terms.items()):
            factors = ([str(c)] if c != 1 or not m else []) + list(m)
            parts.append("*".join(factors))
        return " + ".join(parts)

    def monomial(self) -> tuple[int, tuple[str, ...]] | None:
        """(coefficient, symbols) when this is a single product, else None."""
        if len(self.terms) != 1:
            return None
        ((m, c),) = self.terms.items()
        return c, m


Size = Union[int, Dim]


def _terms(x) -> dict[tuple[str, ...], int]:
    if isinstance(x, Dim):
        return x.terms
    x = int(x)
    return {(): x} if x else {}


def _make(terms: dict) -> Size:
    terms = {m: c for m, c in terms.items() if c}
    if not terms:
        return 0
    if set(terms) == {()}:
        return terms[()]
    return Dim(terms)


def _as_size(x) -> Size:
    return x if isinstance(x, Dim) else int(x)


def is_symbolic(a) -> bool:
    """Whether ``a`` is an object array (holding Dims)."""
    return isinstance(a, np.ndarray) and a.dtype == object


def simplify(a: np.ndarray) -> np.ndarray:
    """An object array whose entries are all ints, as int64; else ``a`` itself."""
    if is_symbolic(a) and not any(isinstance(v, Dim) for v in a.flat):
        return np.asarray(a.tolist(), dtype=np.int64).reshape(a.shape)
    return a


def prod(sizes) -> Size:
    """The product of sizes (ints and Dims)."""
    return math.prod(sizes, start=1)
