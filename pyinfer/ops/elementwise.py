"""Elementwise ops: Add and Mul (broadcasting) and the activations.

Relu and Relu6 name the epilogue activation they are (``as_activation``), so the planner
folds one into a Linear or Conv2d that alone feeds it.
"""

from __future__ import annotations

import math

import numpy as np

from kernels import eltwise
from pyinfer.ops import (
    Attr,
    Node,
    OpSpec,
    broadcast_shapes,
    dtype_arithmetic,
    register,
    same_shape,
)


def _infer_binary(node: Node):
    return broadcast_shapes(node.in_shapes[0], node.in_shapes[1])


for _name, _fn, _desc in [
    ("Add", np.add, "a + b, broadcasting"),
    ("Mul", np.multiply, "a * b, broadcasting"),
]:
    register(
        OpSpec(
            _name,
            ("tensor", "tensor"),
            {},
            infer=_infer_binary,
            build=lambda node, f=_fn: f,
            dtypes=dtype_arithmetic,  # integer Add and Mul: shape and position arithmetic
            description=_desc,
        )
    )


def _relu(x):
    return np.maximum(x, np.float32(0))


def _relu6(x):
    return np.clip(x, np.float32(0), np.float32(6))


def _sigmoid(x):
    # exp of -|x| never overflows; both branches are exact forms of 1 / (1 + e^-x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32, copy=False)


def _hardswish(x):
    return x * np.clip(x + np.float32(3), np.float32(0), np.float32(6)) / np.float32(6)


def erf(x: np.ndarray) -> np.ndarray:
    """erf in NumPy (float64 in, float64 out), relative error below 1.2e-7 everywhere.

    Numerical Recipes' Chebyshev fit of erfc, accurate in the tails too (GELU of large
    negative inputs depends on erfc there).
    """
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1 - erfc, erfc - 1)


def gelu_reference(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU in NumPy float64 math, rounded to float32 (the reference of the C kernel)."""
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        return (0.5 * x64 * (1 + np.tanh(c * (x64 + 0.044715 * x64**3)))).astype(np.float32)
    # x * Phi(x) = x/2 * erfc(-x / sqrt 2), written so negative tails keep precision
    return (0.5 * x64 * (1 + erf(x64 * (1 / math.sqrt(2))))).astype(np.float32)


def _build_gelu(node: Node):
    approximate = node.attrs["approximate"]

    def gelu(x):
        if x.dtype == np.float32 and eltwise.available():
            return eltwise.gelu(x, approximate)
        return gelu_reference(x, approximate)

    return gelu


for _name, _fn, _act, _desc in [
    ("Relu", _relu, "relu", "max(x, 0)"),
    ("Relu6", _relu6, "relu6", "min(max(x, 0), 6)"),
    ("Sigmoid", _sigmoid, None, "1 / (1 + exp(-x))"),
    ("Tanh", np.tanh, None, "tanh(x)"),
    ("HardSwish", _hardswish, None, "x * relu6(x + 3) / 6"),
]:
    register(
        OpSpec(
            _name,
            ("tensor",),
            {},
            infer=same_shape,
            build=lambda node, f=_fn: f,
            as_activation=_act,
            description=_desc,
        )
    )

register(
    OpSpec(
        "Gelu",
        ("tensor",),
        {"approximate": Attr("str", "none", ("none", "tanh"))},
        infer=same_shape,
        build=_build_gelu,
        description="x * Phi(x) (exact, erf) or the tanh approximation",
    )
)
