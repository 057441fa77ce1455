"""Numba kernels for ``int8`` weights: rows of x quantized to int8, then row blocks in
parallel, each an exact int32 dot product per batch row over the packed 8x4 tiles."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.common import ACTIVATION_CODES, bias_or_empty
from kernels.backend_numba.quant import quantize, store


@njit(cache=True, nogil=True, parallel=True)
def _linear(xq, xs, bad, packed, scale, bias, activation, y):
    """y[b, o] = act(f32(Σ_k xq[b, k] q[o, k]) · (xs[b] · scale[o]) + bias[o])."""
    batch = xq.shape[0]
    nblocks, chunks = packed.shape[0], packed.shape[1]
    out = y.shape[1]
    for ob in prange(nblocks):
        acc = np.zeros(8, np.int32)
        for b in range(batch):
            acc[:] = 0
            for c in range(chunks):
                for r in range(8):
                    s = np.int32(0)
                    for j in range(4):
                        s += np.int32(packed[ob, c, r, j]) * np.int32(xq[b, c * 4 + j])
                    acc[r] += s
            for r in range(8):
                o = ob * 8 + r
                if o < out:
                    t = np.float32(xs[b] * scale[o])
                    y[b, o] = store(np.float32(np.float32(acc[r]) * t), bias, o, activation, bad[b])


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W int8; arguments already validated by kernels.linear."""
    xq, xs, bad = quantize(x, w.activation_scale, w.packed.shape[1] * 4)
    _linear(xq, xs, bad, w.packed, w.scale, bias_or_empty(bias), ACTIVATION_CODES[activation], out)
