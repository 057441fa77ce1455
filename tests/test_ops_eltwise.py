"""GELU, softmax and LayerNorm in C (kernels.eltwise) against float64 statements of the
semantics and the runtime's NumPy references: shapes with tails, special values, every
ISA level, any thread count, and the runtime ops using them."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kernels
import pyinfer
from kernels import eltwise
from pyinfer.ops.elementwise import gelu_reference
from pyinfer.ops.normalization import layer_norm_reference, softmax_reference

pytestmark = pytest.mark.skipif(
    "c" not in kernels.available_backends(), reason="C kernel library not built"
)

RNG = np.random.default_rng(19)
SHAPES = [(1,), (7,), (9,), (3, 17), (5, 128), (2, 3, 31), (128, 384)]
SPECIALS = [
    0.0,
    -0.0,
    np.inf,
    -np.inf,
    np.nan,
    1e-30,
    -1e-30,
    1.4142135,
    -1.4142135,
    14.0,
    -14.0,
    -13.9,
    -9.5,
    1e20,
    -1e20,
    3.4e38,
    -3.4e38,
]


def _isas() -> list:
    supported = kernels.supported_isas()
    return [
        pytest.param(
            isa, marks=pytest.mark.skipif(isa not in supported, reason=f"this CPU lacks {isa}")
        )
        for isa in kernels.backends.isa_levels()
    ]


@pytest.fixture(params=_isas())
def isa(request):
    with kernels.using(backend="c", isa=request.param):
        yield request.param


def _randn(shape, scale=4.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _with_specials(shape) -> np.ndarray:
    x = _randn(shape, 6.0).ravel()
    n = min(x.size, len(SPECIALS))
    x[:n] = SPECIALS[:n]
    return x.reshape(shape)


def gelu64(x: np.ndarray, approximate: str) -> np.ndarray:
    """GELU in float64 (the tanh form without the cancellation of 1 + tanh(u))."""
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "tanh":
            return x / (1 + np.exp(-2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * np.vectorize(math.erfc, otypes=[float])(-x / math.sqrt(2))


def gelu_rtol(x: np.ndarray, approximate: str) -> np.ndarray:
    """The promised relative error (the tanh form's exponent is rounded to float32)."""
    if approximate == "none":
        return np.full(x.shape, 1e-6)
    x = np.abs(x.astype(np.float64))
    with np.errstate(over="ignore"):
        return 1e-6 + 3e-7 * 2 * math.sqrt(2 / math.pi) * x * (1 + 0.044715 * x * x)


def assert_gelu_close(got: np.ndarray, x: np.ndarray, approximate: str) -> None:
    want = gelu64(x, approximate)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
        err = np.abs(got[finite] - want[finite])
        ok = (got[finite] == want[finite]) | (
            err <= gelu_rtol(x[finite], approximate) * np.abs(want[finite]) + 1e-37
        )
    assert ok.all(), list(zip(x[finite][~ok][:5], got[finite][~ok][:5], want[finite][~ok][:5]))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_matches_float64(isa, shape, approximate):
    x = _with_specials(shape)
    assert_gelu_close(eltwise.gelu(x, approximate), x, approximate)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_dense_range_and_reference(isa, approximate):
    x = np.linspace(-20, 20, 40001, dtype=np.float32)
    got = eltwise.gelu(x, approximate)
    assert_gelu_close(got, x, approximate)
    # the runtime's NumPy formula: its tanh form rounds 1 + tanh(u) to 0 below u ~ -18
    np.testing.assert_allclose(got, gelu_reference(x, approximate), rtol=1e-5, atol=1e-12)


def test_gelu_in_place_and_non_contiguous(isa):
    x = _randn((6, 10))
    want = eltwise.gelu(x)
    np.testing.assert_array_equal(eltwise.gelu(np.asfortranarray(x)), want)
    y = x.copy()
    assert eltwise.gelu(y, out=y) is y
    np.testing.assert_array_equal(y, want)


def softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_matches_float64(isa, shape):
    x = _randn(shape)
    np.testing.assert_allclose(eltwise.softmax(x), softmax64(x, -1), rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_other_axes(isa, axis):
    x = _randn((4, 9, 5))
    np.testing.assert_allclose(eltwise.softmax(x, axis), softmax64(x, axis), rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("cols", [1, 8, 13])
def test_softmax_special_rows_as_numpy(isa, cols):
    x = _randn((6, cols))
    x[1, cols // 2] = -np.inf  # a -inf entry: weight 0
    x[2] = -np.inf  # only -inf: NaN
    x[3, -1] = np.nan
    x[4, 0] = np.inf
    x[5, 0] = 3e38  # large but finite: no overflow after subtracting the max
    with np.errstate(invalid="ignore"):
        want = softmax_reference(x, -1)
    got = eltwise.softmax(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, softmax64(x, -1), rtol=1e-5, atol=1e-30)


def layer_norm64(x, scale, bias, eps, axis):
    x = x.astype(np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    with np.errstate(invalid="ignore"):
        d = x - x.mean(axis=axes, keepdims=True)
        y = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + np.float32(eps))
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm_matches_float64(isa, shape, affine):
    x = _randn(shape) + 3
    params = [_randn(shape[-1:], 1.0), _randn(shape[-1:], 1.0)] if affine else [None, None]
    got = eltwise.layer_norm(x, *params, 1e-5)
    np.testing.assert_allclose(got, layer_norm64(x, *params, 1e-5, -1), rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(
        got, layer_norm_reference(x, *params, np.float32(1e-5), x.ndim - 1), rtol=1e-5, atol=2e-5
    )


def test_layer_norm_several_axes_and_specials(isa):
    x = _randn((3, 4, 5))
    x[1, 2, 3] = np.nan
    x[2, 0, 0] = np.inf
    scale, bias = _randn((4, 5), 1.0), _randn((4, 5), 1.0)
    got = eltwise.layer_norm(x, scale, bias, 1e-3, axis=1)
    with np.errstate(invalid="ignore"):
        want = layer_norm_reference(x, scale, bias, np.float32(1e-3), 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1:]).all() and not np.isnan(got[0]).any()
    np.testing.assert_allclose(got, layer_norm64(x, scale, bias, 1e-3, 1), rtol=1e-5, atol=2e-5)


def test_scalar_and_simd_agree():
    levels = kernels.supported_isas()
    if len(levels) < 2:
        pytest.skip("this CPU has no SIMD level beyond scalar")
    x = _with_specials((37, 53))
    runs = []
    for isa in (levels[0], levels[-1]):
        with kernels.using(backend="c", isa=isa):
            with np.errstate(invalid="ignore"):
                runs.append(
                    [
                        eltwise.gelu(x),
                        eltwise.gelu(x, "tanh"),
                        eltwise.softmax(x),
                        eltwise.layer_norm(x + 0, None, None, 1e-5),
                    ]
                )
    # LayerNorm sums in float64 (scalar) or float32 lanes (SIMD): values near a row's
    # mean differ by an absolute rounding
    for a, b, atol in zip(*runs, [1e-30, 1e-30, 1e-30, 1e-6]):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=atol)


def test_thread_count_does_not_change_results():
    x = _randn((256, 1536))
    results = []
    for threads in (1, 2, 3):
        with kernels.using(backend="c", threads=threads):
            results.append(
                [
                    eltwise.gelu(x),
                    eltwise.softmax(x),
                    eltwise.layer_norm(x, None, None, 1e-5),
                ]
            )
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_bad_arguments_are_refused():
    x = _randn((2, 3))
    with pytest.raises(TypeError):
        eltwise.gelu(x.astype(np.float64))
    with pytest.raises(ValueError):
        eltwise.gelu(x, "erf")
    with pytest.raises(ValueError):
        eltwise.gelu(x, out=np.empty((3, 2), np.float32))
    with pytest.raises(ValueError):
        eltwise.softmax(x, axis=2)
    with pytest.raises(ValueError):
        eltwise.softmax(np.empty((2, 0), np.float32))
    with pytest.raises(ValueError):
        eltwise.layer_norm(x, _randn((2,)), None, 1e-5)


def _one_op(op, x, *extra, **attrs):
    g = pyinfer.Graph()
    xi = g.input("x", [None, *x.shape[1:]], "float32")
    g.output(g.node(op, xi, *extra, **attrs))
    return g.build()(x)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_runtime_ops_on_either_path(backend):
    """The ops give the same results on the C kernels and on their NumPy references."""
    x = _randn((3, 8, 19))
    scale, bias = _randn((19,), 1.0), _randn((19,), 1.0)
    with kernels.using(backend=backend):
        np.testing.assert_allclose(_one_op("Gelu", x), gelu64(x, "none"), rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(
            _one_op("Gelu", x, approximate="tanh"), gelu64(x, "tanh"), rtol=1e-5, atol=1e-12
        )
        np.testing.assert_allclose(
            _one_op("Softmax", x, axis=1), softmax64(x, 1), rtol=1e-5, atol=1e-30
        )
        np.testing.assert_allclose(
            _one_op("LayerNorm", x, scale, bias, eps=1e-5),
            layer_norm64(x, scale, bias, 1e-5, -1),
            rtol=1e-5,
            atol=2e-5,
        )
