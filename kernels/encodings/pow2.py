"""``pow2``: power-of-two weights w ≈ s·α·2^(−e), 4-bit codes, one α per output channel.

Stored: ``codes`` uint8 [out, ceil(in / 2)] (two codes per byte) and ``alpha`` float32
[out].

Code (4 bits): 0 is exact zero. Otherwise bit 3 is the sign s (1: negative) and bits 0..2
hold ``e + 1`` with e = 0..6, so the magnitude is α·2^(−e). Code 8 (a "negative zero")
is never produced and is rejected. Nibble order: column ``2·j`` is the low nibble of
byte ``j`` of the row, column ``2·j + 1`` the high nibble; with an odd ``in`` the last
high nibble is padding and must be 0.

Encoding rule (per output row, in float64):

1. m = max |w|; a row of zeros gets α = 0 and all-zero codes.
2. For each of the 8 candidates α_t = m·2^(−t/8), t = 0..7 (one octave: the grid of
   levels repeats past it), round every |w|/α_t to the nearest level of
   {0, 2^−6, ..., 2^−1, 1} in the linear sense (between 2^(−e−1) and 2^(−e) the
   boundary is their midpoint 0.75·2^(−e); below 2^−7, the midpoint to 2^−6, the
   weight becomes 0; above 1 it is clipped to 1), and keep the candidate whose decoded
   row has the least squared error.
3. With those codes fixed, α is refitted by least squares: α = Σ|w|·2^(−e) / Σ 2^(−2e).

Activations, chosen at encode time (``activations=``):

* ``"float"``: y = α·Σ_k s_k·x_k·2^(−e_k). x·2^(−e) is exact (barring underflow), so
  the only rounding is the float32 accumulation.
* ``"int8"``: each row of x is quantized dynamically, symmetric, with the ``int8``
  encoding's rule: sx = max|x| / 127, x_q = clip(rint(x / sx), −127, 127) (float32
  division, ties to even; a row of zeros gives zeros; a row holding NaN or ±Inf gives
  NaN outputs); acc = Σ_k s_k·(x_q << (6 − e_k)) in int32, exact;
  y = ((α·sx)·float(acc))·2^−6 in float32. ``in`` above 264 208 could overflow int32
  and raises OverflowError.

With ``activations="float"``: overflow: sums are float32 in the C and Numba kernels and
float64 in the reference; products of one sign that overflow give that infinity on every
backend. With cancellation, an output the reference finds non-finite is non-finite on
every backend, but ±inf or NaN by summation order (inf − inf), and a fast kernel may
overflow (±inf or NaN) where the float64 reference stays finite. With ``"int8"``:
overflow: the integer sums are exact, so near float32's max only the float epilogue can
overflow: every backend gives the reference's ±inf (a static activation scale saturates
the inputs instead).
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
ACTIVATIONS = ("float", "int8")
#: Largest exponent: magnitudes α·2^0 .. α·2^−6.
MAX_EXP = 6
#: The reserved code that is never valid ("negative zero").
INVALID_CODE = 8
#: Largest ``in`` whose int8-path accumulation provably fits int32 (127·64 per term).
MAX_IN_INT8 = (2**31 - 1) // (127 << MAX_EXP)
#: α candidates per octave tried by the encoder.
ALPHA_CANDIDATES = 8


def code_values() -> np.ndarray:
    """float64 [16]: the value of each code for α = 1 (NaN for the invalid code 8)."""
    values = np.zeros(16)
    for code in range(1, 16):
        field, negative = code & 7, code >> 3
        values[code] = np.nan if field == 0 else (-1.0) ** negative * 2.0 ** -(field - 1)
    return values


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [rows, cols] (each < 16) -> uint8 [rows, ceil(cols / 2)], low nibble first."""
    rows, cols = codes.shape
    padded = np.zeros((rows, cols + (cols & 1)), np.uint8)
    padded[:, :cols] = codes
    return np.ascontiguousarray(padded[:, 0::2] | (padded[:, 1::2] << 4))


def unpack_nibbles(packed: np.ndarray, cols: int) -> np.ndarray:
    """The uint8 codes [rows, cols] that :func:`pack_nibbles` packed."""
    rows = packed.shape[0]
    codes = np.empty((rows, packed.shape[1] * 2), np.uint8)
    codes[:, 0::2] = packed & 0x0F
    codes[:, 1::2] = packed >> 4
    return codes[:, :cols]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Pow2Weight(EncodedWeight):
    """4-bit sign + exponent codes and one scale per output channel.

    Attributes
    ----------
    codes : ndarray of uint8, shape [out, ceil(in / 2)]
        Two codes per byte, column 2j in the low nibble (see the module docstring).
    alpha : ndarray of float32, shape [out]
        Finite, non-negative scale per output channel.
    activations : {"float", "int8"}
        How activations are treated (see the module docstring).
    """

    encoding = "pow2"
    codes: np.ndarray
    alpha: np.ndarray
    activations: str = "float"

    def __post_init__(self):
        self._check_shape()
        rows, cols = self.out_features, self.in_features
        codes = check_array("codes", self.codes, np.uint8, (rows, (cols + 1) // 2), "pow2")
        alpha = check_array("alpha", self.alpha, np.float32, (rows,), "pow2")
        if self.activations not in ACTIVATIONS:
            raise ValueError(
                f"pow2 activations must be one of {list(ACTIVATIONS)}, got {self.activations!r}"
            )
        if not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
            raise ValueError("pow2 alpha must be finite and non-negative")
        for chunk in row_chunks(codes):  # no temporary of a large weight's size
            if _INVALID_BYTES[chunk].any():
                raise ValueError(f"pow2 codes: code {INVALID_CODE} (negative zero) is invalid")
            if cols & 1 and np.any(chunk[:, -1] >> 4):
                raise ValueError("pow2 codes: the padding (high) nibble of the last byte must be 0")
        if self.activations == "int8" and cols > MAX_IN_INT8:
            raise OverflowError(
                f"pow2 with int8 activations supports in <= {MAX_IN_INT8} "
                f"(exact int32 accumulation), got {cols}"
            )
        freeze(self, "codes", codes)
        freeze(self, "alpha", alpha)

    def unpacked_codes(self) -> np.ndarray:
        """The 4-bit codes [out, in] as uint8."""
        return unpack_nibbles(self.codes, self.in_features)

    def decode_matrix(self) -> np.ndarray:
        values = code_values().astype(np.float32)[self.unpacked_codes()]
        return (values * self.alpha[:, None]).astype(np.float32)

    def nonzero_count(
        self, chunk_bytes: int = 1 << 22, after_chunk: Callable[[], None] | None = None
    ) -> int:
        """Nonzeros of the decoded matrix, counted on the packed codes about
        ``chunk_bytes`` at a time: each row's codes are tallied, and a code counts where
        its float32 value times the row's α is not zero (code 0, α = 0, or a product
        that underflows give zero). ``after_chunk`` as in
        :meth:`EncodedWeight.nonzero_count`."""
        rows, width = self.codes.shape
        values = np.nan_to_num(code_values()).astype(np.float32)
        step = max(1, chunk_bytes // (8 * max(1, width)))  # the tallies index as intp
        total = 0
        for lo in range(0, rows, step):
            codes = self.codes[lo : lo + step]
            n = codes.shape[0]
            offset = (np.arange(n, dtype=np.intp) * 16)[:, None]
            tally = np.bincount((offset + (codes & 0x0F)).ravel(), minlength=16 * n)
            tally += np.bincount((offset + (codes >> 4)).ravel(), minlength=16 * n)
            tally = tally.reshape(n, 16)
            if self.in_features & 1:  # the last high nibble is padding (validated 0)
                tally[:, 0] -= 1
            live = values[None, :] * self.alpha[lo : lo + step, None] != 0
            total += int((tally * live).sum())
            if after_chunk is not None:
                after_chunk()
        return total


#: Bytes holding the invalid code in either nibble.
_INVALID_BYTES = np.array(
    [(b & 0x0F) == INVALID_CODE or (b >> 4) == INVALID_CODE for b in range(256)], np.bool_
)


def _nearest_codes(magnitude_ratio: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Codes of the levels nearest (linearly) to r = |w|/α, as described in the module."""
    r = magnitude_ratio
    mant, ex = np.frexp(r)  # r = mant·2^ex, mant in [0.5, 1)
    e = np.where(mant >= 0.75, -ex, 1 - ex)  # round up to 2^ex at the midpoint 0.75·2^ex
    e = np.clip(e, 0, MAX_EXP)
    codes = (e + 1).astype(np.uint8) | (negative.astype(np.uint8) << 3)
    return np.where(r < 2.0 ** -(MAX_EXP + 1), 0, codes).astype(np.uint8)


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes uint8 [out, in] and α float32 [out] following the module's rule."""
    w = matrix.astype(np.float64)
    rows, cols = w.shape
    mag = np.abs(w)
    negative = w < 0
    m = mag.max(axis=1) if cols else np.zeros(rows)
    values = code_values()
    values[INVALID_CODE] = 0.0
    best_codes = np.zeros((rows, cols), np.uint8)
    best_err = np.full(rows, np.inf)
    safe_m = np.where(m > 0, m, 1.0)
    for t in range(ALPHA_CANDIDATES):
        a = safe_m * 2.0 ** (-t / ALPHA_CANDIDATES)
        codes = _nearest_codes(mag / a[:, None], negative)
        err = ((values[codes] * a[:, None] - w) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_codes[better] = codes[better]
    levels = np.abs(values[best_codes])  # 2^−e, 0 for zero codes
    num = (mag * levels).sum(axis=1)
    den = (levels * levels).sum(axis=1)
    alpha = np.where((m > 0) & (den > 0), num / np.where(den > 0, den, 1.0), 0.0)
    best_codes[alpha == 0] = 0
    return best_codes, alpha.astype(np.float32)


#: Rows quantized at a time (bounds the encoder's float64 temporaries).
_CHUNK_ELEMENTS = 1 << 22


def encode(matrix: np.ndarray, activations: str = "float") -> Pow2Weight:
    """Round each weight to s·α·2^(−e) (see the module docstring for the rule).

    Parameters
    ----------
    matrix : ndarray of float32, shape [out, in]
        Finite weights.
    activations : {"float", "int8"}
        Float activations or dynamic per-row int8 activations (shifts).
    """
    if not np.all(np.isfinite(matrix)):
        raise ValueError("pow2 encoding needs finite weights (found Inf or NaN)")
    rows, cols = matrix.shape
    codes = np.zeros((rows, (cols + 1) // 2), np.uint8)
    alpha = np.zeros(rows, np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(cols, 1))
    for lo in range(0, rows, step):
        c, a = quantize_rows(matrix[lo : lo + step])
        codes[lo : lo + step] = pack_nibbles(c)
        alpha[lo : lo + step] = a
    return Pow2Weight(shape=(rows, cols), codes=codes, alpha=alpha, activations=activations)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [batch, in] -> (x_q int8 [batch, in], sx float32 [batch], bad bool [batch]).

    Symmetric per row, the same rule as the ``int8`` encoding's dynamic activations:
    sx = max|x| / 127, x_q = clip(rint(x / sx), −127, 127); a row with sx = 0 quantizes
    to zeros; a row holding NaN or ±Inf is flagged ``bad`` (its outputs are NaN) and
    quantizes to zeros with sx = 0.
    """
    x = np.asarray(x, np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    amax = np.abs(x).max(axis=1, initial=np.float32(0))
    amax = np.where(bad, np.float32(0), amax).astype(np.float32)
    sx = (amax / np.float32(127)).astype(np.float32)
    usable = (sx > 0)[:, None]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ratio = np.divide(x, sx[:, None], out=np.zeros_like(x), where=usable)
    q = np.clip(np.rint(ratio), -127, 127).astype(np.int8)
    return q, sx, bad


def linear_reference(x, w: Pow2Weight, bias=None, activation=None) -> np.ndarray:
    """Float activations: y = x @ decode(W)ᵀ in float64.
    int8 activations: y = ((α·sx)·acc)·2^−6 with acc = Σ s·(x_q << (6 − e)) exact."""
    if w.activations == "int8":
        q, sx, bad = quantize_activations(x)
        codes = w.unpacked_codes()
        field = (codes & 7).astype(np.int64)
        shifted = np.where(field > 0, 1 << np.maximum(MAX_EXP + 1 - field, 0), 0)
        wint = np.where(codes >> 3 == 1, -shifted, shifted)  # s·2^(6−e), 0 for zero codes
        acc = q.astype(np.int64) @ wint.T
        scale = sx[:, None] * w.alpha[None, :]  # float32 product, as the kernels do
        y = (scale * acc.astype(np.float32) * np.float32(2.0**-MAX_EXP)).astype(np.float32)
        y[bad] = np.nan
        return apply_epilogue(y, bias, activation).astype(np.float32)
    y = x.astype(np.float64) @ w.decode_matrix().astype(np.float64).T
    return apply_epilogue(y, bias, activation).astype(np.float32)


register(
    Encoding(
        name="pow2",
        weight_type=Pow2Weight,
        encode=encode,
        reference_linear=linear_reference,
        kernels={
            "linear/numba": "kernels.backend_numba.pow2:linear",
            "linear/c": "kernels.backend_c.pow2:linear",
            "conv2d/numba": "kernels.conv.lowerings:decoded_if_float",
            "conv2d/c": "kernels.conv.lowerings:decoded_if_float",
        },
        options={"activations": ACTIVATIONS},
        bits_per_weight="4 (+ 32 per row)",
        activations="float (x·2^−e) or int8 dynamic per row (shifts, exact int32)",
        exact=True,
        rtol=1e-5,
        test_options=({"activations": "float"}, {"activations": "int8"}),
        c_slots={
            "linear": {"any": "linear_pow2"},
            "conv2d": {"activations=int8": "linear_pow2", "activations=float": "conv_gemm"},
        },
        description="power-of-two weights s·α·2^−e, 4-bit sign+exponent codes, 2 per byte",
    )
)
