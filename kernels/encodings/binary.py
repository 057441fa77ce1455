"""``binary``: 1-bit weights w ≈ α·sign(w), one α per output channel (XNOR-Net).

Stored: ``bits`` uint64 [out, words] with ``words = ceil(in / 64)`` and ``alpha`` float32
[out]. Bit order: bit ``j`` (value ``1 << j``) of word ``i`` of a row is column
``64·i + j``; a set bit means +1, a clear bit −1. The padding bits of the last word
(columns ``in .. 64·words − 1``) are 0 and never contribute to a result. The words are
little-endian uint64, so the same data read as bytes is ``np.packbits(bitorder="little")``.

sign(0) = +1 for weights and activations alike (so ``sign(v) = +1`` iff ``v >= 0``, which
includes −0.0). α is mean |w| of the row, the L2-optimal scale for sign(w).

Activations, chosen at encode time (``activations=``):

* ``"float"``: y = α·(Σ_{w=+1} x − Σ_{w=−1} x) -- a sign-select sum, no multiplications
  in the inner loop.
* ``"binary"``: each row of x becomes β·sign(x) with β = mean |x| of the row, then
  y = α·β·(in − 2·popcount(xbits XOR wbits)). The integer part is exact; the float
  epilogue is ``(α·β)·float(n)`` in float32, the same in every backend.

With ``activations="float"``: overflow: sums are float32 in the C and Numba kernels and
float64 in the reference; products of one sign that overflow give that infinity on every
backend. With cancellation, an output the reference finds non-finite is non-finite on
every backend, but ±inf or NaN by summation order (inf − inf), and a fast kernel may
overflow (±inf or NaN) where the float64 reference stays finite. With ``"binary"``: the
popcount is exact and the float epilogue gives the reference's ±inf on every backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from kernels.encodings.base import (
    EncodedWeight,
    apply_epilogue,
    check_array,
    freeze,
    row_chunks,
)
from kernels.registry import Encoding, register

#: Activation treatments, the first is the default.
ACTIVATIONS = ("float", "binary")


def words_for(in_features: int) -> int:
    """uint64 words per row holding ``in_features`` bits."""
    return (int(in_features) + 63) // 64


def pack_signs(v: np.ndarray) -> np.ndarray:
    """Bits of sign(v) along the last axis of a 2-D array: uint64 [rows, words].

    Bit ``j`` of word ``i`` is column ``64·i + j``; 1 where ``v >= 0`` (sign(0) = +1);
    padding bits are 0.
    """
    rows, cols = v.shape
    words = words_for(cols)
    padded = np.zeros((rows, words * 64), np.bool_)
    padded[:, :cols] = v >= 0
    packed = np.packbits(padded, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def unpack_signs(bits: np.ndarray, cols: int) -> np.ndarray:
    """The ±1 int8 matrix [rows, cols] that :func:`pack_signs` packed."""
    as_bytes = np.ascontiguousarray(bits.astype("<u8", copy=False)).view(np.uint8)
    set_ = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :cols]
    return np.where(set_ == 1, 1, -1).astype(np.int8)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class BinaryWeight(EncodedWeight):
    """Sign bits and one scale per output channel.

    Attributes
    ----------
    bits : ndarray of uint64, shape [out, ceil(in / 64)]
        Bit ``j`` of word ``i`` is column ``64·i + j``; 1 means +1, 0 means −1. Padding
        bits of the last word are 0.
    alpha : ndarray of float32, shape [out]
        Finite, non-negative scale per output channel.
    activations : {"float", "binary"}
        How activations are treated (see the module docstring).
    """

    encoding = "binary"
    bits: np.ndarray
    alpha: np.ndarray
    activations: str = "float"

    def __post_init__(self):
        self._check_shape()
        rows, cols = self.out_features, self.in_features
        words = words_for(cols)
        bits = check_array("bits", self.bits, np.uint64, (rows, words), "binary")
        alpha = check_array("alpha", self.alpha, np.float32, (rows,), "binary")
        if self.activations not in ACTIVATIONS:
            raise ValueError(
                f"binary activations must be one of {list(ACTIVATIONS)}, got {self.activations!r}"
            )
        if not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
            raise ValueError("binary alpha must be finite and non-negative")
        if cols % 64 and words and rows:
            pad_mask = np.uint64(~((1 << (cols % 64)) - 1) & (2**64 - 1))
            if any(np.any(chunk[:, -1] & pad_mask) for chunk in row_chunks(bits)):
                raise ValueError(
                    f"binary bits: padding bits {cols % 64}..63 of the last word must be 0"
                )
        freeze(self, "bits", bits)
        freeze(self, "alpha", alpha)

    def signs(self) -> np.ndarray:
        """The ±1 matrix [out, in] (int8)."""
        return unpack_signs(self.bits, self.in_features)

    def decode_matrix(self) -> np.ndarray:
        return (self.signs().astype(np.float32) * self.alpha[:, None]).astype(np.float32)

    def nonzero_count(
        self, chunk_bytes: int = 1 << 22, after_chunk: Callable[[], None] | None = None
    ) -> int:
        """Nonzeros of the decoded matrix: every entry of a row is ±α, so a row is all
        nonzero or (α = 0) all zero; the bits are not read (so ``after_chunk`` is never
        called)."""
        return int(np.count_nonzero(self.alpha)) * self.in_features


def encode(matrix: np.ndarray, activations: str = "float") -> BinaryWeight:
    """sign(w) packed along ``in`` and α = mean |w| per output row.

    Parameters
    ----------
    matrix : ndarray of float32, shape [out, in]
        Finite weights.
    activations : {"float", "binary"}
        Float activations (sign-select sums) or binary activations (XNOR + popcount).
    """
    if not np.all(np.isfinite(matrix)):
        raise ValueError("binary encoding needs finite weights (found Inf or NaN)")
    rows, cols = matrix.shape
    if cols:
        alpha = np.abs(matrix.astype(np.float64)).mean(axis=1).astype(np.float32)
    else:
        alpha = np.zeros(rows, np.float32)
    return BinaryWeight(
        shape=(rows, cols), bits=pack_signs(matrix), alpha=alpha, activations=activations
    )


def binarize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [batch, in] -> (sign bits uint64 [batch, words], β float32 [batch]).

    β = mean |x| of each row (accumulated in float64, rounded once to float32).
    """
    cols = x.shape[1]
    if cols:
        beta = np.abs(x.astype(np.float64)).mean(axis=1).astype(np.float32)
    else:
        beta = np.zeros(x.shape[0], np.float32)
    return pack_signs(x), beta


def linear_reference(x, w: BinaryWeight, bias=None, activation=None) -> np.ndarray:
    """Float activations: y = α·(x @ sign(W)ᵀ) in float64.
    Binary activations: y = (α·β)·(sign(x) @ sign(W)ᵀ) with an exact integer dot."""
    signs = w.signs()
    if w.activations == "binary":
        _, beta = binarize_activations(x)
        xs = np.where(x >= 0, 1, -1).astype(np.int64)
        dots = xs @ signs.astype(np.int64).T  # = in − 2·popcount(xbits XOR wbits)
        scale = beta[:, None] * w.alpha[None, :]  # float32 product, as the kernels do
        y = (scale * dots.astype(np.float32)).astype(np.float32)
        return apply_epilogue(y, bias, activation).astype(np.float32)
    y = (x.astype(np.float64) @ signs.astype(np.float64).T) * w.alpha.astype(np.float64)
    return apply_epilogue(y, bias, activation).astype(np.float32)


register(
    Encoding(
        name="binary",
        weight_type=BinaryWeight,
        encode=encode,
        reference_linear=linear_reference,
        kernels={
            "linear/numba": "kernels.backend_numba.binary:linear",
            "linear/c": "kernels.backend_c.binary:linear",
            "conv2d/numba": "kernels.conv.lowerings:binary",
            "conv2d/c": "kernels.conv.lowerings:binary",
        },
        options={"activations": ACTIVATIONS},
        bits_per_weight="1 (+ 32 per row)",
        activations="float (sign-select sums) or binary: β·sign(x) per row, XNOR + popcount",
        exact=True,
        rtol=1e-5,
        test_options=({"activations": "float"}, {"activations": "binary"}),
        reference_conv2d="kernels.conv.reference:binary_reference",
        c_slots={
            "linear": {"any": "linear_binary"},
            "conv2d": {"activations=float": "conv_gemm", "activations=binary": "conv_binary"},
        },
        description="1-bit weights α·sign(w), bits packed along in into uint64 words",
    )
)
