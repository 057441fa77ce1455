"""What every encoded weight is: a frozen record of arrays with a shape and a decode().

Subclasses are dataclasses whose array fields are the stored tensors. They validate
their invariants in ``__post_init__`` (so a weight built by hand or read from a file is
checked once, before any kernel sees it) and mark their arrays read-only.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

#: Epilogue activations understood by every kernel.
ACTIVATIONS = (None, "relu", "relu6")

#: What validation calls after each chunk of a stored array it reads (see ``row_chunks``).
_after_chunk: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "after_chunk", default=None
)


def apply_epilogue(y: np.ndarray, bias: np.ndarray | None, activation: str | None) -> np.ndarray:
    """Reference epilogue: ``act(y + bias)``; NaN passes through relu/relu6 as in NumPy."""
    if bias is not None:
        y = y + bias
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "relu6":
        y = np.clip(y, 0, 6)
    return y


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedWeight:
    """Base of encoded weights.

    Attributes
    ----------
    shape : tuple of int
        The shape of the dense weight this encodes: [out, in] for linear layers,
        [out, in/groups, kh, kw] for convolutions (stored as the matrix [out, in*kh*kw]).
    """

    encoding: ClassVar[str] = ""
    #: Fields a kernel uses as positions (row pointers, indices, offsets, lengths). A
    #: loader copies them into private memory before they are validated, so a file
    #: changed after load can change numbers but never send a kernel out of bounds.
    address_fields: ClassVar[tuple[str, ...]] = ()
    shape: tuple[int, ...]

    # NOTE: cached: kernels.linear reads these on every call.
    @functools.cached_property
    def out_features(self) -> int:
        """Rows of the weight matrix."""
        return int(self.shape[0])

    @functools.cached_property
    def in_features(self) -> int:
        """Columns of the weight matrix (in·kh·kw for a convolution)."""
        return int(math.prod(self.shape[1:]))

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored tensors, by field name (what a file writes)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }

    def params(self) -> dict[str, Any]:
        """The JSON-able parameters besides ``shape`` (options chosen at encode time)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "shape" and not isinstance(getattr(self, f.name), np.ndarray)
        }

    @classmethod
    def from_arrays(
        cls,
        shape,
        arrays: dict[str, np.ndarray],
        params: dict[str, Any],
        after_chunk: Callable[[], None] | None = None,
    ):
        """Rebuild (and validate) a weight from what :meth:`arrays` and :meth:`params` gave.

        Validation reads large arrays a chunk at a time; ``after_chunk`` is called after
        each chunk (a caller reading a memory-mapped file once drops the pages read so far
        there, so that not even one large weight is resident whole).

        Raises ValueError naming the field when anything is missing or inconsistent.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"shape"}
        given = set(arrays) | set(params)
        if given != names:
            raise ValueError(
                f"{cls.encoding} weight needs fields {sorted(names)}, got {sorted(given)}"
            )
        from kernels import registry  # here: the registry imports the encoding modules

        row = registry.ENCODINGS.get(cls.encoding)
        if row is not None:  # options follow the rule kernels.encode applies
            registry.check_options(row, {k: v for k, v in params.items() if k in row.options})
        with _calling_after_chunk(after_chunk):
            return cls(shape=tuple(int(s) for s in shape), **arrays, **params)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors."""
        return int(sum(a.nbytes for a in self.arrays().values()))

    def decode(self) -> np.ndarray:
        """The dense float32 weight (of ``shape``) this encoding effectively multiplies by."""
        return self.decode_matrix().reshape(self.shape)

    def decode_matrix(self) -> np.ndarray:
        """The dense float32 matrix [out_features, in_features]."""
        raise NotImplementedError

    def nonzero_count(
        self, chunk_bytes: int = 1 << 22, after_chunk: Callable[[], None] | None = None
    ) -> int:
        """Entries of the decoded matrix that are not zero, in bounded memory.

        An encoding that stores only its nonzeros (it has a ``density``) knows the count;
        otherwise the matrix is decoded a block of rows at a time (about ``chunk_bytes``
        of float32 each) through :meth:`slice_rows`, or whole when it cannot be sliced.
        An encoding whose own ``slice_rows`` may cost a full unpack is decoded in at
        most 16 blocks: such encodings should override this and count on their stored
        arrays (the built-in ones do). ``after_chunk`` is called after each chunk of
        stored data is read: a caller reading a memory-mapped file once drops the pages
        read so far there, so that not even one large weight is resident whole.
        """
        rows, cols = self.out_features, self.in_features
        density = getattr(self, "density", None)
        if density is not None:
            return round(float(density) * rows * cols)
        if not rows * cols:
            return 0
        step = max(8, chunk_bytes // (4 * cols) // 8 * 8)  # whole 8-row tiles
        if type(self).slice_rows is not EncodedWeight.slice_rows:
            step = max(step, -(-rows // 16 // 8) * 8)
        if step >= rows:
            return int(np.count_nonzero(self.decode_matrix()))
        total = 0
        for lo in range(0, rows, step):
            part = self.slice_rows(lo, min(rows, lo + step))
            if part is None:
                return int(np.count_nonzero(self.decode_matrix()))
            total += int(np.count_nonzero(part.decode_matrix()))
            if after_chunk is not None:
                after_chunk()
        return total

    def reshaped(self, shape: tuple[int, ...]):
        """The same weight seen as another dense shape with the same matrix (e.g. 4-D)."""
        shape = tuple(int(s) for s in shape)
        if shape[0] != self.out_features or math.prod(shape[1:]) != self.in_features:
            raise ValueError(f"cannot view a {self.shape} weight as {shape}")
        return dataclasses.replace(self, shape=shape)

    def slice_rows(self, lo: int, hi: int) -> EncodedWeight | None:
        """Output rows ``lo:hi`` as a weight of the same encoding (None: not sliceable).

        Grouped conv runs each group's rows on its own; a weight that cannot be sliced
        serves every group whole, at ``groups`` times the work. The default slices every
        stored array along its first axis when all of them are per output row; encodings
        storing rows in blocks override it.
        """
        arrays = self.arrays()
        if not arrays or not all(
            a.ndim >= 1 and a.shape[0] == self.out_features for a in arrays.values()
        ):
            return None
        sliced = {k: np.ascontiguousarray(a[lo:hi]) for k, a in arrays.items()}
        return type(self).from_arrays(self._rows_shape(lo, hi), sliced, self.params())

    def _rows_shape(self, lo: int, hi: int) -> tuple[int, ...]:
        return (hi - lo,) + tuple(self.shape[1:])

    def _check_shape(self) -> None:
        if len(self.shape) < 2 or any(int(s) < 0 for s in self.shape):
            raise ValueError(
                f"{self.encoding} weight shape {self.shape} must be [out, in, ...] "
                "with non-negative sizes"
            )

    def __getstate__(self) -> dict:
        # what derived() caches (C pointers among it) is rebuilt on demand, not copied
        return {k: v for k, v in self.__dict__.items() if k != "_derived"}

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} encoding={self.encoding!r} shape={self.shape} "
            f"nbytes={self.nbytes}>"
        )


def derived(w: EncodedWeight) -> dict:
    """A per-weight dict for data computed once from its arrays (C pointers, group
    slices, packed conv weights, conv plans): weights are frozen, so it never goes
    stale. Not pickled or copied."""
    try:
        return w.__dict__["_derived"]
    except KeyError:
        return w.__dict__.setdefault("_derived", {})


def check_array(
    name: str, a: Any, dtype, shape: tuple | None = None, owner: str = ""
) -> np.ndarray:
    """Check one stored tensor: an ndarray of ``dtype`` (and ``shape``), made read-only."""
    where = f"{owner} " if owner else ""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"{where}{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{where}{name} must have shape {tuple(shape)}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{where}{name} must be C-contiguous")
    if _mutable(a):
        # NOTE: a private copy: whoever holds a writable view could otherwise change
        # indices after validation and send a C kernel out of bounds.
        a = a.copy()
    a = a.view()
    a.flags.writeable = False
    return a


@contextlib.contextmanager
def _calling_after_chunk(after_chunk: Callable[[], None] | None) -> Iterator[None]:
    token = _after_chunk.set(after_chunk)
    try:
        yield
    finally:
        _after_chunk.reset(token)


def row_chunks(a: np.ndarray, chunk_bytes: int = 1 << 22) -> Iterator[np.ndarray]:
    """``a`` a chunk of leading-axis rows at a time (about ``chunk_bytes`` each), for
    checks over a large stored array: no temporary of its size, and after each chunk the
    ``after_chunk`` hook of :meth:`EncodedWeight.from_arrays`, if one was given."""
    rows = a.shape[0]
    step = max(1, chunk_bytes * rows // max(1, a.nbytes))
    after_chunk = _after_chunk.get()
    for lo in range(0, rows, step):
        yield a[lo : lo + step]
        if after_chunk is not None:
            after_chunk()


def _mutable(a: np.ndarray) -> bool:
    """Can anyone write to ``a``'s memory through some ndarray (it, or a base of it)?"""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return True
        a = a.base
    return False  # read-only all the way down: bytes, a read-only mmap, or no base


def freeze(obj: EncodedWeight, name: str, a: np.ndarray) -> None:
    """Store a checked array on a frozen dataclass (used in ``__post_init__``)."""
    object.__setattr__(obj, name, a)
