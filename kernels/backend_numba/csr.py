"""Numba kernels for ``csr`` weights: rows in parallel, batch tiled so each nonzero
multiplies a contiguous vector of activations.

Every output is summed by one iteration of a ``prange`` loop, in the order of its row's
nonzeros, so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.common import ACTIVATION_CODES, activate, bias_or_empty

#: Batch rows per transposed tile: each nonzero multiplies TILE contiguous floats
#: (_spmm keeps one scalar accumulator per lane, so changing TILE means editing it).
TILE = 8


@njit(cache=True, nogil=True, parallel=True)
def _spmv(x, indptr, indices, values, bias, activation, y):
    """y[o] = act(Σ_p values[p] x[indices[p]] + bias[o]) over row o's nonzeros p."""
    for o in prange(indptr.shape[0] - 1):
        lo, hi = indptr[o], indptr[o + 1]
        # two accumulators halve the dependency chain; the order is fixed by the row
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        p = lo
        while p + 1 < hi:
            a0 += values[p] * x[indices[p]]
            a1 += values[p + 1] * x[indices[p + 1]]
            p += 2
        if p < hi:
            a0 += values[p] * x[indices[p]]
        acc = a0 + a1
        if bias.shape[0]:
            acc += bias[o]
        y[o] = activate(acc, activation)


@njit(cache=True, nogil=True, parallel=True)
def _spmm(x, indptr, indices, values, bias, activation, y):
    """y[b, o] = act(Σ_p values[p] x[b, indices[p]] + bias[o]), x transposed in tiles.

    ``xt[t, k, j] = x[t * TILE + j, k]`` (zero past the batch), so the TILE products of
    one nonzero read contiguous memory. The TILE accumulators are scalars so that they
    stay in registers (an accumulator array would be stored back at every nonzero).
    """
    batch, k = x.shape
    rows = indptr.shape[0] - 1
    tiles = (batch + TILE - 1) // TILE
    xt = np.zeros((tiles, k, TILE), np.float32)
    for kk in prange(k):
        for b in range(batch):
            xt[b // TILE, kk, b % TILE] = x[b, kk]
    for o in prange(rows):
        add = bias[o] if bias.shape[0] else np.float32(0.0)
        for t in range(tiles):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
            for p in range(indptr[o], indptr[o + 1]):
                v = values[p]
                c = indices[p]
                a0 += v * xt[t, c, 0]
                a1 += v * xt[t, c, 1]
                a2 += v * xt[t, c, 2]
                a3 += v * xt[t, c, 3]
                a4 += v * xt[t, c, 4]
                a5 += v * xt[t, c, 5]
                a6 += v * xt[t, c, 6]
                a7 += v * xt[t, c, 7]
            acc = (a0, a1, a2, a3, a4, a5, a6, a7)
            for j in range(min(TILE, batch - t * TILE)):
                y[t * TILE + j, o] = activate(acc[j] + add, activation)


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W in CSR; arguments already validated by kernels.linear."""
    code = ACTIVATION_CODES[activation]
    if x.shape[0] == 1:
        _spmv(x[0], w.indptr, w.indices, w.values, bias_or_empty(bias), code, out[0])
    else:
        _spmm(x, w.indptr, w.indices, w.values, bias_or_empty(bias), code, out)
