"""Pieces every Numba kernel shares: the fused epilogue, activation codes, and serial
kernels in a process forked after parallel ones ran."""

from __future__ import annotations

import os
import sys

import numba
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


def _serial_kernels_after_fork() -> None:
    """In a forked child: replace every ``parallel=True`` kernel of this backend by a
    serial compilation of the same function, if the parent ran parallel kernels on
    Numba's OpenMP threading layer. Launching that layer again in a forked child ends
    the process ("fork() called from a process already using GNU OpenMP"); the
    workqueue and TBB layers survive a fork. The kernels are called through their
    module's globals, so the child's calls reach the serial twins (compiled on first
    use, never cached: the cache would not tell them from the parallel kernels).
    """
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process
        return
    if layer != "omp":
        return
    for name, module in list(sys.modules.items()):
        if not name.startswith("kernels.backend_numba.") or module is None:
            continue
        for attr, obj in list(vars(module).items()):
            if getattr(obj, "targetoptions", {}).get("parallel"):
                setattr(module, attr, njit(nogil=True)(obj.py_func))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_serial_kernels_after_fork)
