"""``int4``: signed 4-bit weights (-8..7), groups along ``in`` with one float32 scale each.

Weights, per row and per group of ``group_size`` consecutive ``k`` (32 by default; 64
or 128): let ``m`` be the group's value of largest magnitude (the first one on a tie).
For each divisor ``c`` in ``DIVISORS`` (-8 first), ``d = m / c`` (float32) and ``q =
clip(rint(W / d), -8, 7)`` (round half to even); the group keeps the (d, q) of least
squared error ``Σ (q·d - W)²`` (the first on a tie; a zero group has d = 0 and q = 0).
With c = -8, ``m`` maps to -8 exactly and all 16 levels are used (ggml's q4_0); the
other divisors trade clipping of the extremes for a finer step, which lowers the error
on bell-shaped weights by about 2.5 %. d may be negative. ``decode() = q · d``.

``in`` not a multiple of ``group_size``: the matrix is padded on the right with zero
columns up to ``n_groups · group_size`` (the last group's scale comes from its real
columns only), and rows up to a multiple of 8 with zero rows. Kernels pad the quantized
activations with zeros the same way, so padding never changes a result.

Activations: int8 per row, as for ``int8`` (see :mod:`kernels.encodings.quant`; one
scale per row, not per group). Then, with every operation a float32 one, in this order:

    acc[b, o, g] = Σ_{k in group g} xq[b, k] · q[o, k]        (int32, exact)
    t[b, o]      = (...((0 + f32(acc[b,o,0]) * d[o,0]) + f32(acc[b,o,1]) * d[o,1]) ...)
    y[b, o]      = act(t[b, o] * s_b + bias[o])

(no fused multiply-add; groups summed in increasing order). Every backend gives the same
bits as this reference.

Packed layout (``packed`` uint8 [out/8, k_pad/8, 8, 4]): each weight is stored as the
offset-binary nibble ``u = q + 8`` (0..15); byte ``packed[ob, c, r, j]`` holds
``u[8·ob + r, 8·c + j]`` in its low nibble and ``u[8·ob + r, 8·c + 4 + j]`` in its high
nibble. So a 32-byte tile gives, after ``& 0x0F`` and ``>> 4``, two 8-row x 4-k int8
tiles laid out like the ``int8`` encoding's (one row per 32-bit lane). Scales
``scale`` float32 [out/8, n_groups, 8]: ``scale[ob, g, r]`` belongs to row 8·ob + r,
so the 8 scales of a row block and group are one contiguous vector.

The kernels compute Σ u·x (unsigned nibble x signed int8: at most 2·15·127 per pair,
so eight of them sum exactly in int16) and subtract 8·Σ_{k in g} xq[b, k].

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
    ROW_BLOCK,
    blocks,
    check_activation_scale,
    check_finite_weight,
    finish,
    quantize_activations,
)
from kernels.registry import Encoding, register

#: Allowed group sizes (multiples of 32: the kernels' int16 partial sums cover 32 k).
GROUP_SIZES = (32, 64, 128)
#: k per byte column of a tile (4 in the low nibbles, 4 in the high nibbles).
K_CHUNK = 8
#: Candidate divisors of a group's extreme value (see the module docstring).
DIVISORS = (-8.0, -7.5, -7.0, -6.5, -6.0, -9.0)
#: Largest ``in`` (so that sizes stay within int32 in every kernel).
MAX_IN = 2**31 - 2**8
#: Nibbles of each byte value that are not 8 (q = 0 is stored as 8).
_NONZERO_NIBBLES = np.array([((b & 0x0F) != 8) + ((b >> 4) != 8) for b in range(256)], np.uint8)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Int4Weight(EncodedWeight):
    """Signed 4-bit weights with per-group float32 scales, in 8-row tiles.

    Attributes
    ----------
    packed : ndarray of uint8, shape [ceil(out/8), n_groups·group_size/8, 8, 4]
        Offset-binary nibbles ``q + 8``, two per byte (see the module docstring).
    scale : ndarray of float32, shape [ceil(out/8), n_groups, 8]
        ``scale[ob, g, r]``: scale of row 8·ob + r in group g (finite; may be negative).
    group_size : int
        One of 32, 64, 128.
    activation_scale : float or None
        Static activation scale (None: dynamic per-row quantization).
    """

    encoding = "int4"
    packed: np.ndarray
    scale: np.ndarray
    group_size: int = 32
    activation_scale: float | None = None

    def __post_init__(self):
        self._check_shape()
        if self.group_size not in GROUP_SIZES:
            raise ValueError(
                f"int4 group_size must be one of {GROUP_SIZES}, got {self.group_size!r}"
            )
        out, k = self.out_features, self.in_features
        if k > MAX_IN:
            raise ValueError(f"int4 supports in <= {MAX_IN}, got in={k}")
        rows, groups = blocks(out), self.n_groups
        layout = (rows, groups * self.group_size // K_CHUNK, ROW_BLOCK, 4)
        packed = check_array("packed", self.packed, np.uint8, layout, "int4")
        scale = check_array("scale", self.scale, np.float32, (rows, groups, ROW_BLOCK), "int4")
        if not _all_finite(scale):
            raise ValueError("int4 scale must be finite")
        freeze(self, "packed", packed)
        freeze(self, "scale", scale)
        freeze(self, "group_size", int(self.group_size))
        freeze(self, "activation_scale", check_activation_scale(self.activation_scale))

    @property
    def n_groups(self) -> int:
        """Groups along ``in`` (the last one may be padded)."""
        return -(-self.in_features // self.group_size)

    def quantized(self) -> np.ndarray:
        """The signed 4-bit values q [out, in] as int8 (unpacked)."""
        rows, chunks = self.packed.shape[:2]
        low = (self.packed & 0x0F).astype(np.int8) - 8
        high = (self.packed >> 4).astype(np.int8) - 8
        both = np.stack([low, high], axis=3)  # [ob, c, r, half, j]
        q = both.transpose(0, 2, 1, 3, 4).reshape(rows * ROW_BLOCK, chunks * K_CHUNK)
        return np.ascontiguousarray(q[: self.out_features, : self.in_features])

    def group_scales(self) -> np.ndarray:
        """Scales as [out, n_groups]."""
        s = self.scale.transpose(0, 2, 1).reshape(-1, self.n_groups)
        return np.ascontiguousarray(s[: self.out_features])

    def decode_matrix(self) -> np.ndarray:
        q = self.quantized().astype(np.float32)
        per_column = np.repeat(self.group_scales(), self.group_size, axis=1)
        return q * per_column[:, : self.in_features]

    def nonzero_count(
        self, chunk_bytes: int = 1 << 22, after_chunk: Callable[[], None] | None = None
    ) -> int:
        """Nonzeros of the decoded matrix, counted on the packed nibbles and the scales
        about ``chunk_bytes`` of tiles at a time: an entry ``q · d`` is zero exactly where
        its nibble is 8 (q = 0) or its group's scale is 0 (|q| >= 1 cannot underflow).
        ``after_chunk`` as in :meth:`EncodedWeight.nonzero_count`."""
        ob = self.packed.shape[0]
        per_group = self.group_size // K_CHUNK  # byte columns of a tile per group
        groups = self.n_groups
        padding_rows = -self.out_features % ROW_BLOCK  # in the last row block
        # the last group's columns past ``in`` are padding: count them per nibble
        tail = self.in_features - (groups - 1) * self.group_size
        real = np.arange(per_group * K_CHUNK).reshape(per_group, 2, 4) < tail
        group_step = max(1, min(groups, chunk_bytes // (per_group * ROW_BLOCK * 4)))
        block_step = max(1, chunk_bytes // (group_step * per_group * ROW_BLOCK * 4))
        total = 0
        for b in range(0, ob, block_step):
            for g in range(0, groups, group_step):
                g_end = min(groups, g + group_step)
                tiles = self.packed[b : b + block_step, g * per_group : g_end * per_group]
                tiles = tiles.reshape(tiles.shape[0], g_end - g, per_group, ROW_BLOCK, 4)
                counts = _NONZERO_NIBBLES[tiles].sum(axis=(2, 4), dtype=np.int64)
                if g_end == groups and tail < self.group_size:
                    last = tiles[:, -1]  # [blocks, per_group, 8, 4]
                    low = ((last & 0x0F) != 8) & real[None, :, None, 0, :]
                    high = ((last >> 4) != 8) & real[None, :, None, 1, :]
                    counts[:, -1] = low.sum(axis=(1, 3)) + high.sum(axis=(1, 3))
                live = self.scale[b : b + block_step, g:g_end] != 0  # [blocks, groups, 8]
                if padding_rows and b + block_step >= ob:
                    live[-1, :, ROW_BLOCK - padding_rows :] = False
                total += int((counts * live).sum())
                if after_chunk is not None:
                    after_chunk()
        return total

    def slice_rows(self, lo: int, hi: int) -> Int4Weight:
        """Output rows ``lo:hi``, re-tiled (tiles hold 8 rows)."""
        q = np.zeros((hi - lo, self.n_groups * self.group_size), np.int8)
        q[:, : self.in_features] = self.quantized()[lo:hi]
        packed, scale = pack(q, self.group_scales()[lo:hi], self.group_size)
        return Int4Weight(
            shape=self._rows_shape(lo, hi),
            packed=packed,
            scale=scale,
            group_size=self.group_size,
            activation_scale=self.activation_scale,
        )


def _all_finite(a: np.ndarray) -> bool:
    """Is every value finite? Checked a chunk at a time (a large weight's scales are an
    eighth of its size: no temporary of their size)."""
    return all(np.isfinite(chunk).all() for chunk in row_chunks(a))


def pack(q: np.ndarray, scales: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay out q [out, k_pad] (int8 in -8..7) and scales [out, groups] as stored."""
    out, kp = q.shape
    rows = blocks(out)
    u = np.full((rows * ROW_BLOCK, kp), 8, np.uint8)  # padding rows hold q = 0
    u[:out] = (q + 8).astype(np.uint8)
    tiles = u.reshape(rows, ROW_BLOCK, kp // K_CHUNK, 2, 4).transpose(0, 2, 1, 3, 4)
    packed = np.ascontiguousarray(tiles[..., 0, :] | (tiles[..., 1, :] << 4))
    s = np.zeros((rows * ROW_BLOCK, scales.shape[1]), np.float32)
    s[:out] = scales
    s = np.ascontiguousarray(s.reshape(rows, ROW_BLOCK, -1).transpose(0, 2, 1))
    return packed, s


def encode(
    matrix: np.ndarray, group_size: int = 32, activation_scale: float | None = None
) -> Int4Weight:
    """Quantize a float32 matrix [out, in] to 4 bits per weight, one scale per group.

    Parameters
    ----------
    matrix : ndarray of float32, shape [out, in]
        Finite values.
    group_size : {32, 64, 128}
        Consecutive ``k`` sharing a scale.
    activation_scale : float, optional
        A calibrated static activation scale (> 0). Default: dynamic per-row scales.
    """
    check_finite_weight(matrix, "int4")
    if group_size not in GROUP_SIZES:
        raise ValueError(f"int4 group_size must be one of {GROUP_SIZES}, got {group_size!r}")
    out, k = matrix.shape
    groups = -(-k // group_size)
    w = np.zeros((out, groups * group_size), np.float32)
    w[:, :k] = matrix
    g = w.reshape(out, groups, group_size)
    extreme = np.take_along_axis(g, np.abs(g).argmax(axis=2)[..., None], axis=2)[..., 0]
    best = np.full(extreme.shape, np.inf)
    d = np.zeros_like(extreme)
    q = np.zeros(g.shape, np.int8)
    for c in DIVISORS:
        dc = (extreme / np.float32(c)).astype(np.float32)
        with np.errstate(over="ignore"):
            ratio = np.divide(g, dc[..., None], out=np.zeros_like(g), where=(dc != 0)[..., None])
        qc = np.clip(np.rint(ratio), -8, 7).astype(np.float32)
        err = ((qc * dc[..., None] - g).astype(np.float64) ** 2).sum(axis=2)
        better = err < best
        best = np.where(better, err, best)
        d = np.where(better, dc, d)
        q = np.where(better[..., None], qc.astype(np.int8), q)
    packed, scale = pack(q.reshape(out, -1), d, group_size)
    return Int4Weight(
        shape=matrix.shape,
        packed=packed,
        scale=scale,
        group_size=group_size,
        activation_scale=activation_scale,
    )


def accumulate(xq: np.ndarray, w: Int4Weight) -> np.ndarray:
    """acc[b, o, g] = Σ_{k in group g} xq[b, k] · q[o, k], exact, as int32."""
    gs, groups = w.group_size, w.n_groups
    pad = groups * gs - w.in_features
    xg = np.pad(xq, ((0, 0), (0, pad))).reshape(xq.shape[0], groups, gs).astype(np.int64)
    qg = np.pad(w.quantized(), ((0, 0), (0, pad))).reshape(-1, groups, gs).astype(np.int64)
    return np.einsum("bgk,ogk->bog", xg, qg).astype(np.int32)


def linear_reference(x, w: Int4Weight, bias=None, activation=None) -> np.ndarray:
    """y[b, o] = act((Σ_g f32(acc[b, o, g]) · d[o, g]) · s_b + bias[o]), g in order."""
    xq, sx, bad = quantize_activations(x, w.activation_scale)
    acc = accumulate(xq, w)
    d = w.group_scales()
    t = np.zeros((x.shape[0], w.out_features), np.float32)
    for g in range(w.n_groups):
        t = t + acc[:, :, g].astype(np.float32) * d[:, g]
    y = t * sx[:, None]
    return finish(y, bad, bias, activation)


register(
    Encoding(
        name="int4",
        weight_type=Int4Weight,
        encode=encode,
        reference_linear=linear_reference,
        kernels={
            "linear/numba": "kernels.backend_numba.int4:linear",
            "linear/c": "kernels.backend_c.int4:linear",
        },
        c_slots={"linear": {"any": "linear_int4"}},
        options={"group_size": GROUP_SIZES, "activation_scale": None},
        bits_per_weight="4 + 32/group_size (4.25 / 4.5 / 5 for groups of 128 / 64 / 32)",
        activations=(
            "int8, symmetric, one scale per row; dynamic (max|x|/127, round half to even) "
            "or static (activation_scale=); rows with NaN/Inf give NaN"
        ),
        exact=True,
        rtol=0.0,
        test_options=(
            {},
            {"group_size": 64},
            {"group_size": 128, "activation_scale": 0.05},
        ),
        description=(
            "signed 4-bit weights (offset-binary nibbles), float32 scale per group of "
            "32/64/128 along in; exact int32 group sums; bit-identical on every backend"
        ),
    )
)
