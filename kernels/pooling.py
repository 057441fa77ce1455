"""Max and average pooling of NCHW float32 arrays, in the C library (``pk_pool2d_f32``).

The runtime's pooling ops (``pyinfer.ops.pooling``) call :func:`pool2d` when
:func:`kernels.eltwise.available` says so and keep their NumPy code as the reference and
fallback; the C results equal it bit for bit.
"""

from __future__ import annotations

import numpy as np

from kernels.backend_c.ffi import check, library, ptr

#: mode -> the C library's PK_POOL_* code.
MODES = {"max": 0, "avg": 1, "avg_valid": 2}


def pool2d(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    out_hw: tuple[int, int],
    mode: str,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Pool every kh x kw window of each plane of ``x``.

    Parameters
    ----------
    x : numpy.ndarray
        float32 [n, c, h, w].
    kernel, stride, padding : (int, int)
        Window size, step and the padding before the first row / column (the windows
        are clipped to the input).
    out_hw : (int, int)
        Output height and width; every window must hold an input element.
    mode : {"max", "avg", "avg_valid"}
        Largest value (NaN wins), mean over kh·kw taps (padding counts as zeros), or mean
        over the taps inside the input.
    out : numpy.ndarray, optional
        C-contiguous float32 [n, c, *out_hw].

    Returns
    -------
    numpy.ndarray
        ``out``, or a new array.
    """
    if mode not in MODES:
        raise ValueError(f"pool2d: mode must be one of {list(MODES)}, got {mode!r}")
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError(f"pool2d: expected a float32 NCHW array, got {getattr(x, 'shape', x)!r}")
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    shape = (n, c, *out_hw)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.dtype != np.float32 or out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"pool2d: out must be a C-contiguous float32 array of shape {shape}")
    ffi, lib = library()
    status = lib.pk_pool2d_f32(
        ptr(ffi, "float *", x), n * c, h, w, *kernel, *stride, *padding, *out_hw,
        MODES[mode], ptr(ffi, "float *", out),
    )  # fmt: skip
    check(status, f"{mode} pool")
    return out


def bind_pool2d(kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                mode: str):  # fmt: skip
    """``run(x, out_hw) -> y``: :func:`pool2d` with these settings for float32 NCHW x
    (the runtime's op: its planner has checked the dtype and rank), converting only x and
    y per call."""
    if mode not in MODES:
        raise ValueError(f"pool2d: mode must be one of {list(MODES)}, got {mode!r}")
    ffi, lib = library()
    fn, from_buffer, fp = lib.pk_pool2d_f32, ffi.from_buffer, ffi.typeof("float *")
    window = (*kernel, *stride, *padding)
    code = MODES[mode]

    def run(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        x = np.ascontiguousarray(x)
        n, c, h, w = x.shape
        y = np.empty((n, c, *out_hw), np.float32)
        status = fn(from_buffer(fp, x), n * c, h, w, *window, *out_hw, code, from_buffer(fp, y))
        if status:
            check(status, f"{mode} pool")
        return y

    return run
