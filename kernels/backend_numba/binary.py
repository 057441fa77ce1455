"""Numba kernels for ``binary`` weights: sign-select sums (float activations) and
XNOR + popcount (binary activations), output rows in parallel."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.common import ACTIVATION_CODES, activate, bias_or_empty
from kernels.encodings.binary import binarize_activations

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True, inline="always")
def popcount64(v):
    """Bits set in a uint64 (SWAR)."""
    v = v - ((v >> np.uint64(1)) & _M1)
    v = (v & _M2) + ((v >> np.uint64(2)) & _M2)
    v = (v + (v >> np.uint64(4))) & _M4
    return np.int64((v * _H01) >> np.uint64(56))


@njit(cache=True, nogil=True, parallel=True)
def _linear_float(x, bits, alpha, bias, activation, y):
    """y[b, o] = act(α[o]·(Σ_{bit=1} x[b, k] − Σ_{bit=0} x[b, k]) + bias[o])."""
    batch, k = x.shape
    for o in prange(bits.shape[0]):
        for b in range(batch):
            acc = np.float32(0.0)
            for c in range(k):
                if (bits[o, c >> 6] >> np.uint64(c & 63)) & np.uint64(1):
                    acc += x[b, c]
                else:
                    acc -= x[b, c]
            v = alpha[o] * acc
            if bias.shape[0]:
                v += bias[o]
            y[b, o] = activate(v, activation)


@njit(cache=True, nogil=True, parallel=True)
def _linear_xnor(xbits, beta, k, bits, alpha, bias, activation, y):
    """y[b, o] = act((α[o]·β[b])·(k − 2·popcount(xbits[b] XOR bits[o])) + bias[o])."""
    batch, words = xbits.shape
    for o in prange(bits.shape[0]):
        for b in range(batch):
            pop = 0
            for i in range(words):
                pop += popcount64(xbits[b, i] ^ bits[o, i])
            v = (alpha[o] * beta[b]) * np.float32(k - 2 * pop)
            if bias.shape[0]:
                v += bias[o]
            y[b, o] = activate(v, activation)


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) for a BinaryWeight; arguments validated by kernels.linear."""
    code = ACTIVATION_CODES[activation]
    if w.activations == "binary":
        xbits, beta = binarize_activations(x)
        _linear_xnor(xbits, beta, w.in_features, w.bits, w.alpha, bias_or_empty(bias), code, out)
    else:
        _linear_float(x, w.bits, w.alpha, bias_or_empty(bias), code, out)
