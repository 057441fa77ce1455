"""Pieces every Numba kernel shares: the fused epilogue and activation codes."""

from __future__ import annotations

import numpy as np
from numba import njit

ACTIVATION_CODES = {None: 0, "relu": 1, "relu6": 2}

#: Passed for "no bias" so kernels keep one signature (numba dislikes Optional arrays).
NO_BIAS = np.zeros(0, np.float32)


@njit(cache=True, nogil=True, inline="always")
def activate(v, activation):
    """act(v) for activation 0 (none), 1 (relu), 2 (relu6); NaN passes through."""
    if activation == 1:
        return np.float32(0.0) if v < 0 else v
    if activation == 2:
        return np.float32(0.0) if v < 0 else (np.float32(6.0) if v > 6 else v)
    return v


def bias_or_empty(bias):
    """The bias array, or an empty one meaning "no bias"."""
    return NO_BIAS if bias is None else bias
