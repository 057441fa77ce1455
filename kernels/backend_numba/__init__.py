"""The ``numba`` backend: flat modules of ``@njit(cache=True, nogil=True)`` kernels,
one module per encoding, each exposing ``linear(x, w, bias, activation, out)``."""
