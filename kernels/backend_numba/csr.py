"""Numba kernels for ``csr`` weights: rows in parallel, batch tiled so each nonzero
multiplies a contiguous vector of activations."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.common import ACTIVATION_CODES, activate, bias_or_empty

TILE = 16


@njit(cache=True, nogil=True, parallel=True)
def _spmv(x, indptr, indices, values, bias, activation, y):
    """y[o] = act(Σ_p values[p] x[indices[p]] + bias[o])."""
    for o in prange(indptr.shape[0] - 1):
        acc = np.float32(0.0)
        for p in range(indptr[o], indptr[o + 1]):
            acc += values[p] * x[indices[p]]
        if bias.shape[0]:
            acc += bias[o]
        y[o] = activate(acc, activation)


@njit(cache=True, nogil=True, parallel=True)
def _spmm(x, indptr, indices, values, bias, activation, y):
    """y[b, o] = act(Σ_p values[p] x[b, indices[p]] + bias[o]) over batch tiles of TILE."""
    batch, k = x.shape
    rows = indptr.shape[0] - 1
    xt = np.zeros((k, TILE), np.float32)
    for b0 in range(0, batch, TILE):
        bt = min(TILE, batch - b0)
        for kk in range(k):
            for j in range(bt):
                xt[kk, j] = x[b0 + j, kk]
        for o in prange(rows):
            acc = np.zeros(TILE, np.float32)
            for p in range(indptr[o], indptr[o + 1]):
                v = values[p]
                c = indices[p]
                for j in range(TILE):
                    acc[j] += v * xt[c, j]
            add = bias[o] if bias.shape[0] else np.float32(0.0)
            for j in range(bt):
                y[b0 + j, o] = activate(acc[j] + add, activation)


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W in CSR; arguments already validated by kernels.linear."""
    code = ACTIVATION_CODES[activation]
    if x.shape[0] == 1:
        _spmv(x[0], w.indptr, w.indices, w.values, bias_or_empty(bias), code, out[0])
    else:
        _spmm(x, w.indptr, w.indices, w.values, bias_or_empty(bias), code, out)
