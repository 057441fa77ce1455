"""``int8``: symmetric int8 weights with one float32 scale per output channel.

Weights: ``scale[o] = max_k |W[o, k]| / 127`` (float32), ``q = clip(rint(W / scale),
-127, 127)`` (round half to even; a zero row has scale 0 and q 0). ``decode() = q ·
scale``. Activations are quantized per row to int8 (see :mod:`kernels.encodings.quant`:
dynamic by default, static with ``activation_scale=``), and

    acc[b, o] = Σ_k xq[b, k] · q[o, k]            (int32, exact)
    y[b, o]   = act(f32(acc) * (s_b * scale[o]) + bias[o])

with every operation a float32 operation in that order (product of the two scales
first, no fused multiply-add). Every backend gives the same bits as this reference.

Packed layout (what is stored, ``packed`` int8 [out/8, in/4, 8, 4], both sizes rounded
up): ``packed[ob, c, r, j] = q[8·ob + r, 4·c + j]``, zero in the padding. A 32-byte
tile holds 4 consecutive ``k`` of 8 consecutive rows, so one SIMD register is 8 rows
(one per 32-bit lane) and a kernel streams each block of rows contiguously: the layout
of ``vpdpbusd`` (AVX-512 VNNI) and of NEON ``sdot`` by element.

Largest ``in``: 127 · 127 · in must fit int32, so ``in <= 133144`` (checked).

Convolutions (``kernels.conv2d`` with a 4-D int8 weight) quantize per *image*, not per
patch: the dynamic scale is ``max |x[n]| / 127`` over the whole image n (the static one
is ``activation_scale``, per tensor as in ONNX Runtime's ``QLinearConv``), the zero
padding is the quantized zero, and each output is the int8 ``linear`` formula above
applied to the patch of quantized values (see :mod:`kernels.conv`).

Overflow: the integer sums are exact, so near float32's max only the float epilogue can
overflow: every backend gives the reference's ±inf (a static activation scale saturates
the inputs instead).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from kernels.encodings.base import EncodedWeight, check_array, freeze, row_chunks
from kernels.encodings.quant import (
    QMAX,
    ROW_BLOCK,
    blocks,
    check_activation_scale,
    check_finite_weight,
    finish,
    quantize_activations,
)
from kernels.registry import Encoding, register

#: Consecutive ``k`` per 32-bit lane of a tile.
K_CHUNK = 4
#: Largest ``in`` whose exact int32 accumulation cannot overflow: 127·127·in < 2^31.
MAX_IN = (2**31 - 1) // (QMAX * QMAX)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Int8Weight(EncodedWeight):
    """Symmetric per-output-channel int8 weights, stored in 8-row tiles.

    Attributes
    ----------
    packed : ndarray of int8, shape [ceil(out/8), ceil(in/4), 8, 4]
        ``packed[ob, c, r, j] = q[8·ob + r, 4·c + j]``; values in -127..127.
    scale : ndarray of float32, shape [out]
        Per output channel; finite and >= 0.
    activation_scale : float or None
        Static activation scale (None: dynamic per-row quantization).
    """

    encoding = "int8"
    packed: np.ndarray
    scale: np.ndarray
    activation_scale: float | None = None

    def __post_init__(self):
        self._check_shape()
        out, k = self.out_features, self.in_features
        if k > MAX_IN:
            raise ValueError(
                f"int8 supports in <= {MAX_IN} (127*127*in must fit int32 for exact "
                f"accumulation), got in={k}"
            )
        layout = (blocks(out), -(-k // K_CHUNK), ROW_BLOCK, K_CHUNK)
        packed = check_array("packed", self.packed, np.int8, layout, "int8")
        scale = check_array("scale", self.scale, np.float32, (out,), "int8")
        if packed.size and any(chunk.min() < -QMAX for chunk in row_chunks(packed)):
            raise ValueError("int8 packed weights must lie in -127..127 (found -128)")
        if not np.all(np.isfinite(scale)) or np.any(scale < 0):
            raise ValueError("int8 scale must be finite and >= 0")
        freeze(self, "packed", packed)
        freeze(self, "scale", scale)
        freeze(self, "activation_scale", check_activation_scale(self.activation_scale))

    def quantized(self) -> np.ndarray:
        """The int8 matrix q [out, in] (unpacked)."""
        ob, chunks = self.packed.shape[:2]
        q = self.packed.transpose(0, 2, 1, 3).reshape(ob * ROW_BLOCK, chunks * K_CHUNK)
        return np.ascontiguousarray(q[: self.out_features, : self.in_features])

    def decode_matrix(self) -> np.ndarray:
        return self.quantized().astype(np.float32) * self.scale[:, None]

    def nonzero_count(
        self, chunk_bytes: int = 1 << 22, after_chunk: Callable[[], None] | None = None
    ) -> int:
        """Nonzeros of the decoded matrix, counted on the packed tiles a block of rows at
        a time (an entry is zero where q is 0 or its row's scale is 0); ``after_chunk`` as
        in :meth:`EncodedWeight.nonzero_count`."""
        ob, chunks = self.packed.shape[:2]
        step = max(1, chunk_bytes // max(1, chunks * K_CHUNK * ROW_BLOCK))
        total = 0
        for b in range(0, ob, step):
            tiles = self.packed[b : b + step]  # [blocks, chunks, 8, 4]
            q = tiles.transpose(0, 2, 1, 3).reshape(-1, chunks * K_CHUNK)
            rows = slice(b * ROW_BLOCK, min((b + step) * ROW_BLOCK, self.out_features))
            q = q[: rows.stop - rows.start, : self.in_features]
            total += int(np.count_nonzero(q, axis=1) @ (self.scale[rows] != 0))
            if after_chunk is not None:
                after_chunk()
        return total

    def slice_rows(self, lo: int, hi: int) -> Int8Weight:
        """Output rows ``lo:hi``, re-tiled (tiles hold 8 rows)."""
        return Int8Weight(
            shape=self._rows_shape(lo, hi),
            packed=pack(self.quantized()[lo:hi]),
            scale=np.ascontiguousarray(self.scale[lo:hi]),
            activation_scale=self.activation_scale,
        )


def pack(q: np.ndarray) -> np.ndarray:
    """Lay out an int8 matrix [out, in] in 8-row x 4-k tiles (zero padding)."""
    out, k = q.shape
    rows, chunks = blocks(out), -(-k // K_CHUNK)
    padded = np.zeros((rows * ROW_BLOCK, chunks * K_CHUNK), np.int8)
    padded[:out, :k] = q
    tiles = padded.reshape(rows, ROW_BLOCK, chunks, K_CHUNK).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(tiles)


def encode(matrix: np.ndarray, activation_scale: float | None = None) -> Int8Weight:
    """Quantize a float32 matrix [out, in] per output channel (round half to even).

    Parameters
    ----------
    matrix : ndarray of float32, shape [out, in]
        Finite values.
    activation_scale : float, optional
        A calibrated static activation scale (> 0). Default: dynamic per-row scales.
    """
    check_finite_weight(matrix, "int8")
    if matrix.shape[1] > MAX_IN:
        raise ValueError(f"int8 supports in <= {MAX_IN}, got in={matrix.shape[1]}")
    m = np.asarray(matrix, np.float32)
    amax = np.abs(m).max(axis=1, initial=np.float32(0)).astype(np.float32)
    scale = (amax / np.float32(QMAX)).astype(np.float32)
    ratio = np.divide(m, scale[:, None], out=np.zeros_like(m), where=(scale > 0)[:, None])
    q = np.clip(np.rint(ratio), -QMAX, QMAX).astype(np.int8)
    return Int8Weight(shape=m.shape, packed=pack(q), scale=scale, activation_scale=activation_scale)


def accumulate(xq: np.ndarray, w: Int8Weight) -> np.ndarray:
    """acc[b, o] = Σ_k xq[b, k] · q[o, k], exact, as int32."""
    acc = xq.astype(np.int64) @ w.quantized().astype(np.int64).T
    return acc.astype(np.int32)


def linear_reference(x, w: Int8Weight, bias=None, activation=None) -> np.ndarray:
    """y[b, o] = act(f32(acc[b, o]) · (s_b · scale[o]) + bias[o]) on quantized rows of x."""
    xq, sx, bad = quantize_activations(x, w.activation_scale)
    acc = accumulate(xq, w)
    y = acc.astype(np.float32) * (sx[:, None] * w.scale[None, :])
    return finish(y, bad, bias, activation)


register(
    Encoding(
        name="int8",
        weight_type=Int8Weight,
        encode=encode,
        reference_linear=linear_reference,
        kernels={
            "linear/numba": "kernels.backend_numba.int8:linear",
            "linear/c": "kernels.backend_c.int8:linear",
            "conv2d/numba": "kernels.conv.lowerings:int8",
            "conv2d/c": "kernels.conv.lowerings:int8",
        },
        reference_conv2d="kernels.conv.reference:int8_reference",
        c_slots={
            "linear": {"any": "linear_int8"},
            "conv2d": {
                "depthwise": "pk_conv_depthwise_int8_f32",
                "groups < channels": "conv_int8",
            },
        },
        options={"activation_scale": None},
        bits_per_weight="8 (+ 32 per output channel)",
        activations=(
            "int8, symmetric; dynamic per row (max|x|/127, round half to even) or static "
            "(activation_scale=); rows with NaN/Inf give NaN; conv2d: one scale per image"
        ),
        exact=True,
        rtol=0.0,
        test_options=({}, {"activation_scale": 0.05}),
        description=(
            "int8 per-output-channel symmetric weights in 8-row x 4-k tiles; exact int32 "
            f"accumulation (in <= {MAX_IN}); results bit-identical on every backend"
        ),
    )
)
