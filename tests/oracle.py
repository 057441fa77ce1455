"""An independent oracle for ``linear``: float64 math on ``w.decode()``.

The NumPy reference of each encoding defines the semantics and the fast kernels are held
to it; the reference itself is held to this file, written from the documented rules in
``kernels/encodings/*`` (module docstrings) without calling any of their code: the
activation treatment (float, int8 per row, binary) is re-derived here, the weight is
only seen through ``decode()``, and every sum is a float64 sum.
"""

from __future__ import annotations

import numpy as np

#: Tolerance of the reference against the oracle, relative to the largest |output|:
#: the reference rounds in float32 (decoded weights, scales, epilogue), the oracle does not.
RTOL = 1e-5


def activation_treatment(w) -> tuple[str, float | None]:
    """How ``w``'s encoding treats activations: ("float" | "int8" | "binary", static scale).

    Read from the weight's encode-time options: ``activations`` names the treatment;
    an ``activation_scale`` option means int8 activations (static when it is set).
    """
    params = w.params()
    if "activations" in params:
        return params["activations"], None
    if "activation_scale" in params:
        return "int8", params["activation_scale"]
    return "float", None


def quantize_int8(x: np.ndarray, static_scale: float | None = None):
    """Symmetric int8 activations per row, as documented in ``kernels.encodings.quant``.

    Returns (q int64 [batch, in], s float32 [batch], bad bool [batch]): ``s`` is
    ``max|x| / 127`` in float32 (or the static scale), ``q = clip(rint(x / s), -127,
    127)`` with a float32 division rounded half to even, zeros where ``s`` is 0, and
    ``bad`` marks rows holding NaN or Inf.
    """
    x = np.asarray(x, np.float32)
    batch, k = x.shape
    q = np.zeros((batch, k), np.int64)
    s = np.zeros(batch, np.float32)
    bad = np.zeros(batch, bool)
    for b in range(batch):
        row = x[b]
        if not np.all(np.isfinite(row)):
            bad[b] = True
            continue
        if static_scale is None:
            amax = np.float32(np.max(np.abs(row))) if k else np.float32(0)
            s[b] = amax / np.float32(127)
        else:
            s[b] = np.float32(static_scale)
        if s[b] > 0:
            with np.errstate(over="ignore"):
                ratio = row / s[b]  # float32 / float32: a float32 division
            q[b] = np.clip(np.rint(ratio), -127, 127).astype(np.int64)
    return q, s, bad


def float_activations(x: np.ndarray, static_scale: float | None) -> np.ndarray:
    """x itself, in float64."""
    return x.astype(np.float64)


def int8_activations(x: np.ndarray, static_scale: float | None) -> np.ndarray:
    """s_b · q_b (:func:`quantize_int8`); NaN rows where x has NaN or Inf."""
    q, s, bad = quantize_int8(x, static_scale)
    xq = q.astype(np.float64) * s.astype(np.float64)[:, None]
    xq[bad] = np.nan
    return xq


def binary_activations(x: np.ndarray, static_scale: float | None) -> np.ndarray:
    """β_b · sign(x_b), β_b = mean |x_b| (rounded to float32), sign(0) = +1."""
    k = x.shape[1]
    beta = np.abs(x.astype(np.float64)).sum(axis=1) / k if k else np.zeros(len(x))
    beta = beta.astype(np.float32).astype(np.float64)
    return np.where(x >= 0, 1.0, -1.0) * beta[:, None]


#: What each activation treatment makes of x before the product, in float64.
TREATMENTS = {"float": float_activations, "int8": int8_activations, "binary": binary_activations}


def linear(x, w, bias=None, activation=None) -> np.ndarray:
    """y = act(x' @ decode(W)ᵀ + bias) in float64, x' being x as ``w`` treats it
    (see ``TREATMENTS``)."""
    x = np.asarray(x, np.float32)
    decoded = w.decode().reshape(w.shape[0], -1).astype(np.float64)
    treatment, static_scale = activation_treatment(w)
    with np.errstate(invalid="ignore", over="ignore"):
        y = TREATMENTS[treatment](x, static_scale) @ decoded.T
        if bias is not None:
            y = y + np.asarray(bias, np.float64)
        if activation == "relu":
            y = np.maximum(y, 0)
        elif activation == "relu6":
            y = np.clip(y, 0, 6)
    return y.astype(np.float32)


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> None:
    """``got`` within ``rtol`` of ``want``, relative to max(|want|, 1); NaN where NaN."""
    finite = np.isfinite(want)
    scale = max(float(np.abs(want[finite]).max()), 1.0) if finite.any() else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
