"""``csr``: unstructured sparse weights in compressed sparse row form.

Stored: ``indptr`` int32 [out+1] (row o's nonzeros are positions indptr[o]:indptr[o+1]),
``indices`` column of each nonzero (uint16 when in <= 65536, else int32), ``values``
float32. Only stored nonzeros multiply: like scipy.sparse, an Inf or NaN in x that meets
only zero weights does not reach the output (it does where it meets a stored value).

Overflow: sums are float32 in the C and Numba kernels and float64 in the reference;
products of one sign that overflow give that infinity on every backend. With
cancellation, an output the reference finds non-finite is non-finite on every backend,
but ±inf or NaN by summation order (inf − inf), and a fast kernel may overflow (±inf or
NaN) where the float64 reference stays finite.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kernels.encodings.base import (
    EncodedWeight,
    apply_epilogue,
    check_array,
    freeze,
    row_chunks,
)
from kernels.registry import Encoding, register

#: Largest ``in`` whose column indices are stored as uint16.
UINT16_MAX_IN = 65536


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CSRWeight(EncodedWeight):
    """A sparse matrix [out, in] in CSR form.

    Attributes
    ----------
    indptr : ndarray of int32, shape [out + 1]
        Monotone row pointers, ``indptr[0] == 0`` and ``indptr[-1] == nnz``.
    indices : ndarray of uint16 or int32, shape [nnz]
        Column of each nonzero, in ``[0, in)``, strictly increasing within a row; uint16
        exactly when ``in <= 65536``.
    values : ndarray of float32, shape [nnz]
    """

    encoding = "csr"
    address_fields = ("indptr", "indices")
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        self._check_shape()
        rows, cols = self.out_features, self.in_features
        indptr = check_array("indptr", self.indptr, np.int32, (rows + 1,), "csr")
        index_dtype = np.uint16 if cols <= UINT16_MAX_IN else np.int32
        indices = check_array("indices", self.indices, index_dtype, None, "csr")
        values = check_array("values", self.values, np.float32, None, "csr")
        nnz = values.shape[0] if values.ndim == 1 else -1
        if indices.ndim != 1 or values.ndim != 1 or indices.shape[0] != nnz:
            raise ValueError(
                f"csr indices {indices.shape} and values {values.shape} must be "
                "1-D of the same length"
            )
        if indptr[0] != 0 or indptr[-1] != nnz:
            raise ValueError(
                f"csr indptr must start at 0 and end at nnz={nnz}, got {indptr[0]} .. {indptr[-1]}"
            )
        if np.any(np.diff(indptr) < 0):
            raise ValueError("csr indptr must be non-decreasing")
        if nnz:
            low = high = int(indices[0])
            for chunk in row_chunks(indices):  # one pass, no temporary of its size
                low, high = min(low, int(chunk.min())), max(high, int(chunk.max()))
            if low < 0 or high >= cols:
                raise ValueError(f"csr column indices must lie in [0, {cols}), got [{low}, {high}]")
        if not _rows_strictly_increasing(indptr, indices):
            # sorted and distinct within each row: what encode() makes, and what makes
            # decode() (an assignment) agree with the kernels (which would sum duplicates)
            raise ValueError(
                "csr column indices must be strictly increasing within each row "
                "(sorted, no duplicates)"
            )
        freeze(self, "indptr", indptr)
        freeze(self, "indices", indices)
        freeze(self, "values", values)

    @property
    def nnz(self) -> int:
        """Number of stored nonzeros."""
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        """Fraction of the matrix that is stored."""
        size = self.out_features * self.in_features
        return self.nnz / size if size else 0.0

    def decode_matrix(self) -> np.ndarray:
        dense = np.zeros((self.out_features, self.in_features), np.float32)
        rows = np.repeat(np.arange(self.out_features), np.diff(self.indptr))
        dense[rows, self.indices.astype(np.int64)] = self.values
        return dense


def _rows_strictly_increasing(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Are the column indices strictly increasing within each row? Checked a chunk of
    positions at a time, so a large weight needs no temporary of its size."""
    starts = indptr[1:-1]  # positions that begin a row: no step to check there
    lo, last = 0, -1  # any index is greater than the one "before" position 0
    for chunk in row_chunks(indices, 1 << 19):
        hi = lo + chunk.shape[0]
        wide = chunk.astype(np.int64)
        step = np.empty_like(wide)  # step[i]: index at position lo + i minus the one before
        step[0] = wide[0] - last
        np.subtract(wide[1:], wide[:-1], out=step[1:])
        first, end = np.searchsorted(starts, (lo, hi))
        step[starts[first:end] - lo] = 1
        if np.any(step <= 0):
            return False
        lo, last = hi, wide[-1]
    return True


def encode(matrix: np.ndarray) -> CSRWeight:
    """Keep exactly the nonzeros of a float32 matrix [out, in] (NaN counts as nonzero)."""
    rows, cols = matrix.shape
    mask = matrix != 0
    counts = mask.sum(axis=1)
    if counts.sum() > np.iinfo(np.int32).max:
        raise ValueError(f"csr supports at most {np.iinfo(np.int32).max} nonzeros")
    indptr = np.zeros(rows + 1, np.int32)
    np.cumsum(counts, out=indptr[1:])
    _, col = np.nonzero(mask)  # row-major order: sorted by row, then column
    index_dtype = np.uint16 if cols <= UINT16_MAX_IN else np.int32
    return CSRWeight(
        shape=(rows, cols),
        indptr=indptr,
        indices=col.astype(index_dtype),
        values=np.ascontiguousarray(matrix[mask], dtype=np.float32),
    )


def linear_reference(x, w: CSRWeight, bias=None, activation=None) -> np.ndarray:
    """y[b, o] = act(Σ_p values[p] · x[b, indices[p]] + bias[o]) over row o's nonzeros p."""
    x64 = x.astype(np.float64)
    y = np.zeros((x.shape[0], w.out_features), np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # Inf/NaN propagate, as in dense math
        for o in range(w.out_features):
            lo, hi = w.indptr[o], w.indptr[o + 1]
            y[:, o] = x64[:, w.indices[lo:hi]] @ w.values[lo:hi].astype(np.float64)
    return apply_epilogue(y, bias, activation).astype(np.float32)


register(
    Encoding(
        name="csr",
        weight_type=CSRWeight,
        encode=encode,
        reference_linear=linear_reference,
        kernels={
            "linear/numba": "kernels.backend_numba.csr:linear",
            "linear/c": "kernels.backend_c.csr:linear",
            "conv2d/numba": "kernels.conv.lowerings:csr",
            "conv2d/c": "kernels.conv.lowerings:csr",
        },
        reference_conv2d="kernels.conv.reference:float_reference",
        c_slots={
            "linear": {"batch 1": "linear_csr_slices", "batch > 1": "linear_csr"},
            "conv2d": {"any": "conv_csr"},
        },
        bits_per_weight="(32 + 16) x density (+ 32 per row)",
        activations="float32; batch > 1 transposed so each nonzero meets a contiguous vector",
        description="unstructured sparse, CSR with uint16 column indices where in <= 65536",
    )
)
