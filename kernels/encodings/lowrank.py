"""``lowrank``: a weight factored as W ≈ u · vᵀ, run as two dense products.

Stored: ``u`` float32 [out, r] and ``v`` float32 [in, r]; ``decode() = u @ vᵀ``. Encoding
takes the truncated SVD W = U·S·Vᵀ and splits each singular value evenly between the
factors (u = U·√S, v = V·√S, so both are of the same scale when they are fine-tuned).
The rank is given (``rank=``, capped at min(out, in), so one recipe serves layers of
any size), or else the smallest that keeps ``energy`` of Σ s² (0.9 by default). An
all-zero matrix keeps rank 1 with zero factors.

linear: y = act((x @ v) @ uᵀ + bias). The C backend runs the two products on the dense
kernels (``kernels.backend_c.dense``, the one pool): x @ v into a [batch, r] buffer,
then the second product with bias and activation fused into its store. Storage and
work are r·(in + out) against in·out for dense: it pays when r is well below
in·out / (in + out).

conv2d: the default lowering, patches one per row through this linear kernel (grouped
conv runs each group's rows of u with the shared v). A factored convolution (r filters,
then a 1x1 conv) would be faster; not built.

Overflow: sums are float32 in the fast kernels (two of them) and float64 in the
reference; the intermediate x @ v can overflow where the reference stays finite.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kernels.encodings import dense
from kernels.encodings.base import EncodedWeight, apply_epilogue, check_array, derived, freeze
from kernels.registry import Encoding, register

#: Fraction of Σ s² kept when no rank is given.
DEFAULT_ENERGY = 0.9


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LowRankWeight(EncodedWeight):
    """A matrix [out, in] stored as two factors, W = u @ vᵀ.

    Attributes
    ----------
    u : ndarray of float32, shape [out, r]
    v : ndarray of float32, shape [in, r]
    """

    encoding = "lowrank"
    u: np.ndarray
    v: np.ndarray

    def __post_init__(self):
        self._check_shape()
        u = check_array("u", self.u, np.float32, None, "lowrank")
        v = check_array("v", self.v, np.float32, None, "lowrank")
        if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
            raise ValueError(
                f"lowrank u {u.shape} and v {v.shape} must be [out, r] and [in, r] "
                "with the same rank r"
            )
        if u.shape[0] != self.out_features or v.shape[0] != self.in_features:
            raise ValueError(
                f"lowrank u {u.shape} and v {v.shape} do not fit the weight shape "
                f"{tuple(self.shape)} ([{self.out_features}, r] and [{self.in_features}, r])"
            )
        freeze(self, "u", u)
        freeze(self, "v", v)

    @property
    def rank(self) -> int:
        """The rank r of the factors."""
        return int(self.u.shape[1])

    def decode_matrix(self) -> np.ndarray:
        return (self.u.astype(np.float64) @ self.v.astype(np.float64).T).astype(np.float32)

    def slice_rows(self, lo: int, hi: int) -> LowRankWeight:
        """Rows ``lo:hi``: those rows of u, all of v."""
        u = np.ascontiguousarray(self.u[lo:hi])
        return LowRankWeight(shape=self._rows_shape(lo, hi), u=u, v=self.v)


def from_factors(u, v, shape: tuple | None = None) -> LowRankWeight:
    """The weight u @ vᵀ from its factors (e.g. after they were fine-tuned).

    Parameters
    ----------
    u : array_like of float, shape [out, r]
    v : array_like of float, shape [in, r]
    shape : tuple of int, optional
        The dense weight's shape (e.g. [out, in/groups, kh, kw] for a convolution);
        default [out, in].

    Returns
    -------
    LowRankWeight
    """
    u = np.ascontiguousarray(u, dtype=np.float32)
    v = np.ascontiguousarray(v, dtype=np.float32)
    if u.ndim != 2 or v.ndim != 2:
        raise ValueError(f"lowrank factors must be 2-D, got u {u.shape} and v {v.shape}")
    if shape is None:
        shape = (u.shape[0], v.shape[0])
    return LowRankWeight(shape=tuple(int(s) for s in shape), u=u, v=v)


def choose_rank(singular_values: np.ndarray, energy: float) -> int:
    """The smallest r with Σ_{i<r} s_i² >= energy · Σ s² (at least 1)."""
    squares = np.asarray(singular_values, np.float64) ** 2
    total = squares.sum()
    if not squares.size or total == 0:
        return min(1, squares.size)
    kept = np.cumsum(squares)
    return int(min(np.searchsorted(kept, energy * total * (1 - 1e-12)) + 1, squares.size))


def encode(matrix: np.ndarray, rank: int | None = None, energy: float = DEFAULT_ENERGY):
    """Factor a float32 matrix [out, in] by its truncated SVD.

    Parameters
    ----------
    matrix : ndarray of float32, shape [out, in]
        Finite values.
    rank : int, optional
        Rank of the factors (>= 1; capped at min(out, in)). Default: chosen by ``energy``.
    energy : float
        With no ``rank``: keep the smallest rank holding this fraction (0 < energy <= 1)
        of the squared singular values.
    """
    whole = isinstance(rank, (int, np.integer)) and not isinstance(rank, bool)
    if rank is not None and (not whole or rank < 1):
        raise ValueError(f"lowrank rank must be a positive integer, got {rank!r}")
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
        raise ValueError(f"lowrank energy must be a number in (0, 1], got {energy!r}")
    if not np.isfinite(matrix).all():
        raise ValueError("lowrank weights must be finite (no NaN or Inf)")
    rows, cols = matrix.shape
    left, s, right_t = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    r = min(int(rank), s.size) if rank is not None else choose_rank(s, float(energy))
    root = np.sqrt(s[:r])
    u = (left[:, :r] * root).astype(np.float32)
    v = (right_t[:r].T * root).astype(np.float32)
    return LowRankWeight(shape=(rows, cols), u=np.ascontiguousarray(u), v=np.ascontiguousarray(v))


def linear_reference(x, w: LowRankWeight, bias=None, activation=None) -> np.ndarray:
    """y = act(x @ v @ uᵀ + bias), computed in float64."""
    y = (x.astype(np.float64) @ w.v.astype(np.float64)) @ w.u.astype(np.float64).T
    return apply_epilogue(y, bias, activation).astype(np.float32)


def linear_blas(x, w: LowRankWeight, bias, activation, out) -> None:
    """The two products on NumPy's BLAS (the Numba backend's path, as for ``dense``)."""
    dense.linear_blas(x @ w.v, dense.DenseWeight.wrap(w.u), bias, activation, out)


def _factor_weights(w: LowRankWeight):
    """The two products as dense weights: vᵀ [r, in] (a transposed copy, made once and
    kept with the weight) and u [out, r] (the stored array itself)."""
    cache = derived(w)
    pair = cache.get("dense_factors")
    if pair is None:
        first = dense.DenseWeight(shape=(w.rank, w.in_features), data=np.ascontiguousarray(w.v.T))
        second = dense.DenseWeight(shape=(w.out_features, w.rank), data=w.u)
        pair = cache["dense_factors"] = (first, second)
    return pair


def bind_linear_c(w: LowRankWeight, bias, activation):
    """``run(x, out)``: y = act((x @ v) @ uᵀ + bias) as two calls of the C dense kernel,
    each bound once."""
    from kernels.backend_c import dense as dense_c

    first, second = _factor_weights(w)
    to_middle = dense_c.bind_linear(first, None, None)
    to_out = dense_c.bind_linear(second, bias, activation)

    def run(x, out):
        middle = np.empty((x.shape[0], w.rank), np.float32)
        to_middle(x, middle)
        to_out(middle, out)

    return run


def linear_c(x, w: LowRankWeight, bias, activation, out) -> None:
    """y = act((x @ v) @ uᵀ + bias) as two calls of the C dense kernel."""
    bind_linear_c(w, bias, activation)(x, out)


linear_c.bind = bind_linear_c


register(
    Encoding(
        name="lowrank",
        weight_type=LowRankWeight,
        encode=encode,
        reference_linear=linear_reference,
        kernels={
            "linear/c": "kernels.encodings.lowrank:linear_c",
            "linear/numba": "kernels.encodings.lowrank:linear_blas",
        },
        c_slots={"linear": {"batch 1": "dense_dot", "batch > 1": "dense_gemm"}},
        options={"rank": None, "energy": None},
        bits_per_weight="32 x r x (in + out) / (in x out)",
        activations="float32",
        rtol=1e-5,
        test_options=({}, {"rank": 3}),
        description=(
            "W = u @ v.T (truncated SVD; rank given or by kept energy); two C dense "
            "products, bias and activation fused in the second"
        ),
    )
)
