"""The public calls: ``encode`` a weight, run ``linear`` on it (and ``matmul`` on two
tensors). Everything a kernel
receives is checked and normalised here, so no kernel ever sees a bad argument."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kernels import backends, registry
from kernels.encodings.base import ACTIVATIONS, EncodedWeight
from kernels.encodings.dense import DenseWeight


def encode(w: Any, encoding: str, **options: Any) -> EncodedWeight:
    """Encode a dense weight.

    Parameters
    ----------
    w : array_like of float, shape [out, in] or [out, in/groups, kh, kw]
        The dense weight (PyTorch layout). Converted to float32.
    encoding : str
        A registered encoding name (see ``kernels.registry.names()``).
    **options
        Encoding-specific options (``registry.get(encoding).options`` lists them), under
        :func:`kernels.registry.check_options`'s rule, the one files are read with.

    Returns
    -------
    EncodedWeight
        Has ``.encoding``, ``.shape``, ``.nbytes`` and ``.decode()``.
    """
    row = registry.get(encoding)
    if isinstance(w, EncodedWeight):
        w = w.decode()
    dense = _as_float32("w", w)
    if dense.ndim < 2:
        raise ValueError(
            f"w must be [out, in] or [out, in/groups, kh, kw], got shape {dense.shape}"
        )
    options = registry.check_options(row, options)
    matrix = np.ascontiguousarray(dense.reshape(dense.shape[0], math.prod(dense.shape[1:])))
    weight = row.encode(matrix, **options)
    return weight if dense.ndim == 2 else weight.reshaped(dense.shape)


def prepare(w: EncodedWeight) -> None:
    """Build now what the kernel serving ``linear`` on ``w`` would build on a first call.

    Some kernels keep a derived layout per weight (the C ``csr`` kernel's batch-1
    slices); preparing moves that cost and memory from the first call to model
    construction. Idempotent; nothing to do for most encodings and backends.
    """
    import sys

    _, kernel = backends.resolve("linear", w.encoding)
    prepare_kernel = getattr(sys.modules[kernel.__module__], "prepare", None)
    if prepare_kernel is not None:
        prepare_kernel(w)


def as_weight(w: Any) -> EncodedWeight:
    """An encoded weight as is; a dense array wrapped as ``dense`` (no copy if float32)."""
    if isinstance(w, EncodedWeight):
        return w
    dense = _as_float32("w", w)
    if dense.ndim < 2:
        raise ValueError(f"w must be [out, in], got shape {dense.shape}")
    return DenseWeight.wrap(
        np.ascontiguousarray(dense.reshape(dense.shape[0], math.prod(dense.shape[1:])))
    )


def linear(
    x: Any, w: Any, bias: Any = None, activation: str | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """y = activation(x @ Wᵀ + bias), dispatched on the weight's encoding.

    Parameters
    ----------
    x : array_like of float, shape [batch, in] or [in]
        Activations; converted to C-contiguous float32 (other dtypes raise TypeError).
    w : ndarray [out, in] or EncodedWeight
    bias : array_like of float, shape [out], optional
    activation : {None, "relu", "relu6"}
        Applied in the kernel's store loop, together with the bias.
    out : ndarray of float32, shape [batch, out] (or [out] for 1-D x), optional
        C-contiguous buffer to write into; returned.

    Returns
    -------
    ndarray of float32, shape [batch, out] (or [out])
    """
    weight = w if isinstance(w, EncodedWeight) else as_weight(w)
    xa = _as_float32("x", x)
    squeeze = xa.ndim == 1
    if squeeze:
        xa = xa[None, :]
    if xa.ndim != 2:
        raise ValueError(f"x must be [batch, in] or [in], got shape {xa.shape}")
    if xa.shape[1] != weight.in_features:
        raise ValueError(
            f"x has {xa.shape[1]} features (last axis) but the {weight.encoding} "
            f"weight {weight.shape} expects {weight.in_features}"
        )
    if not xa.flags.c_contiguous:
        xa = np.ascontiguousarray(xa)
    b = None if bias is None else check_bias(bias, weight.out_features)
    check_activation(activation)
    shape = (weight.out_features,) if squeeze else (xa.shape[0], weight.out_features)
    # a plain ndarray W is the caller's, so out may alias it too (encoded arrays are frozen)
    inputs = (xa, weight.data) if getattr(weight, "transient", False) else (xa,)
    result = check_out(out, shape, inputs=inputs)
    if b is not None and out is not None and np.may_share_memory(b, result):
        b = b.copy()  # the kernel writes out while it reads the bias
    backend, kernel = backends.resolve("linear", weight.encoding)
    if backend == "numba":
        backends.apply_numba_threads()
    kernel(xa, weight, b, activation, result.reshape(1, -1) if squeeze else result)
    return result


def matmul(a: Any, b: Any, out: np.ndarray | None = None) -> np.ndarray:
    """The product of two float32 tensors with ``numpy.matmul`` semantics.

    Runs on the C dense kernels (the micro-kernel of :func:`linear`, packing ``b`` on
    the fly) when the C backend serves ``dense`` weights, else on ``numpy.matmul``.

    Parameters
    ----------
    a : array_like of float, shape [..., m, k] or [k]
    b : array_like of float, shape [..., k, n] or [k]
        Converted to float32 (other dtypes raise TypeError). Leading (batch) axes
        broadcast against each other; a 1-D operand gains an axis that the result drops,
        as in ``numpy.matmul``.
    out : ndarray of float32, optional
        C-contiguous buffer of the result's shape, not overlapping ``a`` or ``b``.

    Returns
    -------
    ndarray of float32, shape [..., m, n] (without the axes of 1-D operands)
    """
    aa, bb = _as_float32("a", a), _as_float32("b", b)
    if aa.ndim == 0 or bb.ndim == 0:
        raise ValueError("matmul operands must have at least one dimension")
    a2 = aa[None, :] if aa.ndim == 1 else aa
    b2 = bb[:, None] if bb.ndim == 1 else bb
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    if b2.shape[-2] != k:
        raise ValueError(f"matmul shapes {aa.shape} @ {bb.shape}: inner dimensions differ")
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    shape = (*batch, m, n)
    if aa.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if bb.ndim == 1:
        shape = shape[:-1]
    result = check_out(out, shape, inputs=(aa, bb))
    if backends.resolve("linear", "dense")[0] != "c":
        np.matmul(aa, bb, out=result)
        return result
    from kernels.backend_c import dense

    dense.matmul(a2, b2, batch, result.reshape(*batch, m, n))
    return result


_FLOAT32 = np.dtype(np.float32)


def _as_float32(name: str, a: Any) -> np.ndarray:
    if type(a) is np.ndarray and a.dtype is _FLOAT32:  # the common case, fast
        return a
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must hold floating-point numbers (float32 preferred), got dtype {arr.dtype}"
        )
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def check_bias(bias: Any, n: int) -> np.ndarray | None:
    """The bias as contiguous float32 [n], or None; ValueError naming the expected length."""
    if bias is None:
        return None
    b = np.ascontiguousarray(_as_float32("bias", bias))
    if b.shape != (n,):
        raise ValueError(f"bias must have shape ({n},) (one per output), got {b.shape}")
    return b


def check_activation(activation: str | None) -> None:
    """ValueError unless ``activation`` is one the kernels fuse."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")


def check_out(
    out: np.ndarray | None, shape: tuple[int, ...], inputs: tuple[np.ndarray, ...] = ()
) -> np.ndarray:
    """A fresh float32 array of ``shape``, or ``out`` once checked to fit."""
    if out is None:
        return np.empty(shape, np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != _FLOAT32:
        raise TypeError(
            f"out must be a float32 numpy array, got {getattr(out, 'dtype', type(out))}"
        )
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    flags = out.flags
    if not (flags.c_contiguous and flags.writeable):
        raise ValueError("out must be C-contiguous and writeable")
    for a in inputs:
        if flags.owndata and a.flags.owndata and out is not a:
            continue  # two arrays that each own their memory are disjoint
        if np.may_share_memory(out, a) and np.shares_memory(out, a):
            raise ValueError("out must not overlap the inputs")
    return out
