"""Numba kernels for ``pow2`` weights: float activations (x·2^−e from a table of the
16 code values) and int8 activations (exact int32 shifts), output rows in parallel."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.common import ACTIVATION_CODES, activate, bias_or_empty
from kernels.encodings.pow2 import INVALID_CODE, MAX_EXP, code_values, quantize_activations

#: Value of each code for α = 1 (the invalid code 8 never occurs; it maps to 0 here).
_VALUES = np.nan_to_num(code_values(), nan=0.0).astype(np.float32)
assert _VALUES[INVALID_CODE] == 0


@njit(cache=True, nogil=True, parallel=True)
def _linear_float(x, codes, alpha, values, bias, activation, y):
    """y[b, o] = act(α[o]·Σ_k x[b, k]·value(code[o, k]) + bias[o])."""
    batch, k = x.shape
    for o in prange(codes.shape[0]):
        for b in range(batch):
            acc = np.float32(0.0)
            for c in range(k):
                byte = np.int64(codes[o, c >> 1])
                code = (byte >> 4) if c & 1 else (byte & 15)
                acc += x[b, c] * values[code]
            v = alpha[o] * acc
            if bias.shape[0]:
                v += bias[o]
            y[b, o] = activate(v, activation)


@njit(cache=True, nogil=True, parallel=True)
def _linear_int8(q, sx, codes, alpha, bias, activation, y):
    """acc = Σ_k s·(q[b, k] << (6 − e)); y[b, o] = act(((α[o]·sx[b])·acc)·2^−6 + bias[o])."""
    batch, k = q.shape
    for o in prange(codes.shape[0]):
        for b in range(batch):
            acc = np.int32(0)
            for c in range(k):
                byte = np.int64(codes[o, c >> 1])
                code = (byte >> 4) if c & 1 else (byte & 15)
                field = code & 7
                if field:
                    t = np.int32(q[b, c]) << np.int32(MAX_EXP + 1 - field)
                    acc += -t if code & 8 else t
            v = (alpha[o] * sx[b]) * np.float32(acc) * np.float32(2.0**-MAX_EXP)
            if bias.shape[0]:
                v += bias[o]
            y[b, o] = activate(v, activation)


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) for a Pow2Weight; arguments validated by kernels.linear."""
    code = ACTIVATION_CODES[activation]
    if w.activations == "int8":
        q, sx, bad = quantize_activations(x)
        _linear_int8(q, sx, w.codes, w.alpha, bias_or_empty(bias), code, out)
        out[bad] = np.nan
    else:
        _linear_float(x, w.codes, w.alpha, _VALUES, bias_or_empty(bias), code, out)
