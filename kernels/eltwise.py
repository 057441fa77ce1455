"""GELU, softmax and LayerNorm on float32 arrays, in the C library.

The runtime ops (``pyinfer.ops.elementwise``, ``pyinfer.ops.normalization``) call these
when :func:`available` says so and keep their NumPy code as the reference and fallback.
Inputs are validated and made contiguous float32 here; the C kernels split the rows over
the library's threads.
"""

from __future__ import annotations

import numpy as np

from kernels import backends
from kernels.backend_c.ffi import check, library, ptr

_F32 = np.dtype(np.float32)
_FORMS = {"none": 0, "tanh": 1}


def available() -> bool:
    """Whether the C kernels serve these ops under the current backend setting."""
    return backends.conv_backend() == "c"


def _input(x: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != _F32:
        raise TypeError(f"{name}: expected a float32 array, got {getattr(x, 'dtype', type(x))}")
    return np.ascontiguousarray(x)


def _output(out: np.ndarray | None, shape: tuple, name: str) -> np.ndarray:
    if out is None:
        return np.empty(shape, _F32)
    if out.dtype != _F32 or out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"{name}: out must be a C-contiguous float32 array of shape {shape}")
    return out


def gelu(x: np.ndarray, approximate: str = "none", out: np.ndarray | None = None) -> np.ndarray:
    """GELU of every element: ``x * Phi(x)`` (``approximate="none"``, the erf form) or the
    tanh approximation (``"tanh"``).

    Parameters
    ----------
    x : numpy.ndarray
        float32, any shape.
    approximate : {"none", "tanh"}
    out : numpy.ndarray, optional
        C-contiguous float32 of x's shape; may be x itself.

    Returns
    -------
    numpy.ndarray
        ``out``, or a new array.
    """
    if approximate not in _FORMS:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    x = _input(x, "gelu")
    y = _output(out, x.shape, "gelu")
    ffi, lib = library()
    status = lib.pk_gelu_f32(
        ptr(ffi, "float *", x), x.size, _FORMS[approximate], ptr(ffi, "float *", y)
    )
    check(status, "gelu")
    return y


def softmax(x: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``, in float32.

    A slice holding NaN or +Inf, or only -Inf, gives NaN, as the NumPy formula does.

    Parameters
    ----------
    x : numpy.ndarray
        float32 with at least one dimension, none of size 0 along ``axis``.
    axis : int
    out : numpy.ndarray, optional
        C-contiguous float32 of x's shape.

    Returns
    -------
    numpy.ndarray
    """
    x, axis = _input_axis(x, axis, "softmax")
    if x.shape[axis] == 0:
        raise ValueError("softmax: the axis has size 0")
    y = _output(out, x.shape, "softmax")
    last = axis == x.ndim - 1
    xs = x if last else np.ascontiguousarray(np.moveaxis(x, axis, -1))
    ys = y if last else np.empty(xs.shape, _F32)
    ffi, lib = library()
    cols = xs.shape[-1]
    status = lib.pk_softmax_f32(
        ptr(ffi, "float *", xs), xs.size // cols, cols, ptr(ffi, "float *", ys)
    )
    check(status, "softmax")
    if not last:
        y[...] = np.moveaxis(ys, -1, axis)
    return y


def layer_norm(
    x: np.ndarray,
    scale: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
    axis: int = -1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the axes from ``axis`` on.

    Parameters
    ----------
    x : numpy.ndarray
        float32 with at least one dimension.
    scale, bias : numpy.ndarray or None
        float32 of shape ``x.shape[axis:]``.
    eps : float
        Added to the variance (as float32).
    axis : int
        First normalised axis.
    out : numpy.ndarray, optional
        C-contiguous float32 of x's shape.

    Returns
    -------
    numpy.ndarray
    """
    x, axis = _input_axis(x, axis, "layer_norm")
    norm = x.shape[axis:]
    params = []
    for name, p in (("scale", scale), ("bias", bias)):
        if p is not None:
            if not isinstance(p, np.ndarray) or p.dtype != _F32 or p.shape != norm:
                raise ValueError(f"layer_norm: {name} must be float32 of shape {norm}")
            p = np.ascontiguousarray(p)
        params.append(p)
    y = _output(out, x.shape, "layer_norm")
    cols = int(np.prod(norm))
    ffi, lib = library()
    status = lib.pk_layer_norm_f32(
        ptr(ffi, "float *", x),
        x.size // cols if cols else 0,
        cols,
        ptr(ffi, "float *", params[0]),
        ptr(ffi, "float *", params[1]),
        float(np.float32(eps)),
        ptr(ffi, "float *", y),
    )
    check(status, "layer_norm")
    return y


def _input_axis(x: np.ndarray, axis: int, name: str) -> tuple[np.ndarray, int]:
    """x as a contiguous float32 array of at least one dimension, and axis made >= 0."""
    x = _input(x, name)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{name}: axis {axis} out of range for {x.ndim} dimensions")
    return x, axis % x.ndim
