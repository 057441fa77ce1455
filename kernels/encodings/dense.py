"""``dense``: float32 weights; C kernels with packed weights (``kernels.backend_c.dense``),
NumPy's BLAS on the other backends -- the baseline.

Overflow: sums are float32 on every backend (the reference is NumPy's BLAS), in
different orders: products of one sign that overflow give that infinity everywhere; with
cancellation, an output the reference finds non-finite is non-finite on every backend,
±inf or NaN by summation order (inf − inf).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from kernels.encodings.base import EncodedWeight, apply_epilogue, check_array, freeze
from kernels.registry import BACKENDS, Encoding, register


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class DenseWeight(EncodedWeight):
    """A plain float32 matrix [out, in].

    Attributes
    ----------
    data : ndarray of float32, shape [out, in]
    """

    encoding = "dense"
    #: True for a view made by :meth:`wrap` for one call: kernels keep nothing derived
    #: from it (no packed copy).
    transient: ClassVar[bool] = False
    data: np.ndarray

    def __post_init__(self):
        self._check_shape()
        freeze(
            self,
            "data",
            check_array(
                "data", self.data, np.float32, (self.out_features, self.in_features), "dense"
            ),
        )

    def decode_matrix(self) -> np.ndarray:
        return np.array(self.data, dtype=np.float32)

    @classmethod
    def wrap(cls, matrix: np.ndarray) -> DenseWeight:
        """A view of a float32 C-contiguous matrix the caller has already checked.

        NOTE: skips ``__post_init__`` -- this is the per-call path of ``kernels.linear``
        on a plain ndarray, where building and checking a record would cost more than
        a small matmul.
        """
        weight = object.__new__(cls)
        object.__setattr__(weight, "shape", matrix.shape)
        object.__setattr__(weight, "data", matrix)
        weight.__dict__.update(
            out_features=matrix.shape[0], in_features=matrix.shape[1], transient=True
        )
        return weight


def encode(matrix: np.ndarray) -> DenseWeight:
    """Wrap a float32 matrix [out, in] (no copy when already float32 and contiguous)."""
    return DenseWeight(shape=matrix.shape, data=np.ascontiguousarray(matrix, dtype=np.float32))


def linear_reference(x, w: DenseWeight, bias=None, activation=None) -> np.ndarray:
    """y = act(x @ Wᵀ + bias), computed in float64."""
    y = x.astype(np.float64) @ w.data.astype(np.float64).T
    return apply_epilogue(y, bias, activation).astype(np.float32)


def linear_blas(x, w: DenseWeight, bias, activation, out) -> None:
    """The baseline every backend uses for dense weights: float32 BLAS sgemm."""
    np.matmul(x, w.data.T, out=out)
    if bias is not None:
        out += bias
    if activation == "relu":
        np.maximum(out, 0, out=out)
    elif activation == "relu6":
        np.clip(out, 0, 6, out=out)


register(
    Encoding(
        name="dense",
        weight_type=DenseWeight,
        encode=encode,
        reference_linear=linear_reference,
        kernels={
            **{f"linear/{b}": "kernels.encodings.dense:linear_blas" for b in BACKENDS},
            "linear/c": "kernels.backend_c.dense:linear",
            "conv2d/numba": "kernels.conv.lowerings:dense",
            "conv2d/c": "kernels.conv.lowerings:dense",
        },
        reference_conv2d="kernels.conv.reference:float_reference",
        c_slots={
            "linear": {"batch 1": "dense_dot", "batch > 1": "dense_gemm"},
            "conv2d": {"depthwise": "conv_depthwise", "groups < channels": "conv_gemm"},
        },
        bits_per_weight="32",
        activations="float32",
        description="float32 [out, in]; C GEMV, GEMM on packed panels, else NumPy/BLAS sgemm",
    )
)
