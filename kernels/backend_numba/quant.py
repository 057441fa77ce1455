"""Numba pieces shared by the ``int8`` and ``int4`` kernels: the row quantizer and the
epilogue of one output, doing the float32 operations of the NumPy reference in order."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.common import activate

FLT_MAX = np.float32(np.finfo(np.float32).max)


@njit(cache=True, nogil=True, parallel=True)
def quantize_rows(x, act_scale, xq, xs, bad):
    """xq[b, :in] = clip(rint(x[b] / s_b), -127, 127) (zero padded), xs[b] = s_b, bad[b].

    ``act_scale > 0``: static scale; 0: s_b = max|x[b]| / 127. Rows holding NaN/Inf are
    all zero with bad = 1; rows with s_b == 0 are all zero.
    """
    batch, k = x.shape
    for b in prange(batch):
        amax = np.float32(0.0)
        nonfinite = False
        for i in range(k):
            a = abs(x[b, i])
            if not (a <= FLT_MAX):
                nonfinite = True
            elif a > amax:
                amax = a
        xq[b, :] = 0
        bad[b] = nonfinite
        if nonfinite:
            xs[b] = np.float32(0.0)
            continue
        s = np.float32(act_scale) if act_scale > 0 else np.float32(amax / np.float32(127.0))
        xs[b] = s
        if not (s > 0):
            continue
        for i in range(k):
            r = np.rint(np.float32(x[b, i] / s))
            if r < -127:
                r = np.float32(-127.0)
            elif r > 127:
                r = np.float32(127.0)
            xq[b, i] = np.int8(r)


@njit(cache=True, nogil=True, inline="always")
def store(v, bias, o, activation, bad):
    """The epilogue of one output: NaN for a bad row, else act(v + bias[o])."""
    if bad:
        return np.float32(np.nan)
    if bias.shape[0]:
        v = np.float32(v + bias[o])
    return activate(v, activation)


def quantize(x, act_scale, padded_in):
    """Quantized rows [batch, padded_in], scales [batch] and bad flags [batch]."""
    batch = x.shape[0]
    xq = np.zeros((batch, padded_in), np.int8)
    xs = np.zeros(batch, np.float32)
    bad = np.zeros(batch, np.bool_)
    quantize_rows(x, np.float32(act_scale or 0.0), xq, xs, bad)
    return xq, xs, bad
