"""What the ``int8`` and ``int4`` encodings share: quantizing activations, and the rules.

Activations (both encodings)
----------------------------
Each row ``x[b, :]`` of the float32 activations is quantized to int8 inside the call:

- *dynamic* (the default): ``amax = max_k |x[b, k]|``, ``s_b = amax / 127`` (float32
  division), ``q = clip(rint(x / s_b), -127, 127)`` with ``x / s_b`` a float32 division
  and ``np.rint`` rounding half to even (the default IEEE mode; C uses ``nearbyintf`` and
  ``_mm256_round_ps(_MM_FROUND_TO_NEAREST_INT)``, Numba ``np.rint``). A row whose scale is
  0 (all zeros, or so tiny that ``amax / 127`` underflows) quantizes to zeros and gives
  ``y = bias`` -- never NaN.
- *static*: the weight carries a calibrated ``activation_scale`` (encode option); every
  row uses ``s_b = activation_scale`` and values beyond ``±127 · s`` saturate.
- NaN or ±Inf anywhere in a row: every output of that row is NaN (the bias and
  relu/relu6 keep it NaN), in both modes and on every backend.

The value -128 is never produced, so a product of an activation and an int8 weight
(also in -127..127) fits the exact-integer tricks the kernels use.
"""

from __future__ import annotations

import numpy as np

#: Largest |quantized activation| and |int8 weight|.
QMAX = 127

#: Rows of a weight are stored in blocks of this many (padded with zero rows): in a
#: SIMD register each 32-bit lane holds one row, so 8 rows fill an AVX2 register.
ROW_BLOCK = 8


def quantize_activations(
    x: np.ndarray, activation_scale: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize each row of float32 ``x`` [batch, in] to int8, as every kernel does.

    Parameters
    ----------
    x : ndarray of float32, shape [batch, in]
    activation_scale : float, optional
        The static scale; None for dynamic per-row scales.

    Returns
    -------
    q : ndarray of int8, shape [batch, in]
        In -127..127; all zero in rows with a zero scale or a non-finite value.
    scale : ndarray of float32, shape [batch]
        ``s_b`` (0 for rows with a non-finite value).
    bad : ndarray of bool, shape [batch]
        Rows holding a NaN or an Inf: their outputs are NaN.
    """
    x = np.asarray(x, np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if activation_scale is None:
        amax = np.abs(x).max(axis=1, initial=np.float32(0))
        amax = np.where(bad, np.float32(0), amax).astype(np.float32)
        scale = (amax / np.float32(QMAX)).astype(np.float32)
    else:
        scale = np.where(bad, np.float32(0), np.float32(activation_scale)).astype(np.float32)
    usable = (scale > 0)[:, None]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ratio = np.divide(x, scale[:, None], out=np.zeros_like(x), where=usable)
    q = np.clip(np.rint(ratio), -QMAX, QMAX)
    return q.astype(np.int8), scale, bad


def check_activation_scale(value) -> float | None:
    """The static activation scale as a float32-exact Python float (None: dynamic)."""
    if value is None:
        return None
    try:
        s = float(np.float32(value))
    except (TypeError, ValueError):
        raise TypeError(f"activation_scale must be a number or None, got {value!r}") from None
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"activation_scale must be a finite number > 0, got {value!r}")
    return s


def check_finite_weight(matrix: np.ndarray, encoding: str) -> None:
    """ValueError when a weight to quantize holds NaN or Inf."""
    if not np.isfinite(matrix).all():
        raise ValueError(f"{encoding} weights must be finite (no NaN or Inf)")


def blocks(n: int) -> int:
    """Row blocks covering ``n`` rows."""
    return -(-n // ROW_BLOCK)


def finish(y: np.ndarray, bad: np.ndarray, bias, activation) -> np.ndarray:
    """Rows with non-finite activations become NaN; then ``act(y + bias)``, in float32."""
    from kernels.encodings.base import apply_epilogue

    y[bad, :] = np.nan
    if bias is not None:
        bias = np.asarray(bias, np.float32)
    return apply_epilogue(y, bias, activation).astype(np.float32)
