"""Numba kernels for ``int4`` weights: rows of x quantized to int8, then row blocks in
parallel; per group an exact int32 dot product over the unpacked nibbles, summed over
groups in float32 in order (the reference's operations)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.common import ACTIVATION_CODES, bias_or_empty
from kernels.backend_numba.quant import quantize, store


@njit(cache=True, nogil=True, parallel=True)
def _linear(xq, xs, bad, packed, scale, group_size, bias, activation, y):
    """y[b, o] = act((Σ_g f32(acc[b, o, g]) · d[o, g]) · xs[b] + bias[o])."""
    batch = xq.shape[0]
    nblocks, groups = scale.shape[0], scale.shape[1]
    per_group = group_size // 8
    out = y.shape[1]
    for ob in prange(nblocks):
        acc = np.zeros(8, np.int32)
        t = np.zeros(8, np.float32)
        for b in range(batch):
            t[:] = 0
            for g in range(groups):
                acc[:] = 0
                for c in range(g * per_group, (g + 1) * per_group):
                    for r in range(8):
                        s = np.int32(0)
                        for j in range(4):
                            v = np.int32(packed[ob, c, r, j])
                            s += ((v & 15) - 8) * np.int32(xq[b, c * 8 + j])
                            s += ((v >> 4) - 8) * np.int32(xq[b, c * 8 + 4 + j])
                        acc[r] += s
                for r in range(8):
                    t[r] = np.float32(t[r] + np.float32(np.float32(acc[r]) * scale[ob, g, r]))
            for r in range(8):
                o = ob * 8 + r
                if o < out:
                    y[b, o] = store(np.float32(t[r] * xs[b]), bias, o, activation, bad[b])


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W int4; arguments already validated by kernels.linear."""
    xq, xs, bad = quantize(x, w.activation_scale, w.n_groups * w.group_size)
    _linear(
        xq,
        xs,
        bad,
        w.packed,
        w.scale,
        w.group_size,
        bias_or_empty(bias),
        ACTIVATION_CODES[activation],
        out,
    )
