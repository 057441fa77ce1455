"""MaxPool2d and AvgPool2d in C (kernels.pooling) against the runtime's NumPy reference,
bit for bit: window geometries with padding, strides and tails, special values, any
thread count; and the C entry's own argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
import pyinfer
from kernels import pooling

pytestmark = pytest.mark.skipif(
    "c" not in kernels.available_backends(), reason="C kernel library not built"
)

# (input n, c, h, w), kernel, stride (None: the kernel), padding
GEOMETRIES = [
    ((1, 16, 28, 28), (2, 2), None, (0, 0)),
    ((2, 3, 7, 9), (2, 2), None, (0, 0)),  # odd sizes: the last row/column is dropped
    ((2, 4, 9, 9), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 5, 6), (3, 2), (1, 2), (1, 1)),
    ((3, 1, 1, 1), (1, 1), None, (0, 0)),
    ((1, 5, 8, 8), (4, 4), (1, 1), (2, 2)),
    ((2, 2, 6, 5), (2, 3), (3, 1), (0, 1)),
]


def one_op(op: str, x: np.ndarray, **attrs) -> np.ndarray:
    g = pyinfer.Graph()
    g.output(g.node(op, g.input("x", [None, *x.shape[1:]]), **attrs))
    return g.build()(x)


def inputs(shape) -> np.ndarray:
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape, dtype=np.float32) * 10
    flat = x.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, -0.0, 0.0, 3.4e38, -3.4e38]
    picks = rng.choice(flat.size, size=min(flat.size // 3, len(specials)), replace=False)
    flat[picks] = specials[: len(picks)]
    return x


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,kernel,stride,padding", GEOMETRIES)
@pytest.mark.parametrize(
    "op,extra",
    [
        ("MaxPool2d", {}),
        ("AvgPool2d", {"count_include_pad": True}),
        ("AvgPool2d", {"count_include_pad": False}),
    ],
)
def test_pool_ops_equal_the_numpy_reference_bit_for_bit(
    op, extra, shape, kernel, stride, padding, threads
):
    x = inputs(shape)
    attrs = {"kernel_size": list(kernel), "padding": list(padding), **extra}
    if stride is not None:
        attrs["stride"] = list(stride)
    with kernels.using(backend="numpy"):
        want = one_op(op, x, **attrs)
    with kernels.using(backend="c", threads=threads):
        got = one_op(op, x, **attrs)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_max_pool_keeps_signed_zeros_and_nan_as_the_reference_does():
    # every order of -0.0 / 0.0 / NaN / 1 within 2x2 windows, 4+ windows per row
    values = np.array([-0.0, 0.0, np.nan, 1.0, -1.0], np.float32)
    rng = np.random.default_rng(7)
    x = values[rng.integers(0, len(values), size=(3, 2, 8, 18))]
    attrs = {"kernel_size": [2, 2]}
    with kernels.using(backend="numpy"):
        want = one_op("MaxPool2d", x, **attrs)
    got = one_op("MaxPool2d", x, **attrs)
    np.testing.assert_array_equal(got, want)
    numbers = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


def test_pool2d_of_a_strided_view_reads_the_view():
    x = inputs((2, 4, 8, 8))[:, ::2]
    got = pooling.pool2d(x, (2, 2), (2, 2), (0, 0), (4, 4), "max")
    want = x.reshape(2, 2, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "kernel,stride,padding,out_hw,why",
    [
        ((2, 2), (2, 2), (2, 0), (3, 3), "padding as large as the kernel"),
        ((2, 2), (2, 2), (0, 0), (5, 4), "a window starting past the input"),
        ((0, 2), (1, 1), (0, 0), (4, 4), "an empty kernel"),
        ((2, 2), (0, 1), (0, 0), (4, 4), "a zero stride"),
    ],
)
def test_pool2d_rejects_bad_geometry_before_reading(kernel, stride, padding, out_hw, why):
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError):
        pooling.pool2d(x, kernel, stride, padding, out_hw, "max")


def test_pool2d_names_a_bad_mode_and_a_bad_input():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="mode must be one of"):
        pooling.pool2d(x, (2, 2), (2, 2), (0, 0), (2, 2), "min")
    with pytest.raises(TypeError, match="float32 NCHW"):
        pooling.pool2d(x[0], (2, 2), (2, 2), (0, 0), (2, 2), "max")
    with pytest.raises(ValueError, match="out must be"):
        pooling.pool2d(x, (2, 2), (2, 2), (0, 0), (2, 2), "max", out=np.empty((1, 1, 3, 3)))
