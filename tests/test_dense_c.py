"""The C dense kernels: ``kernels.linear`` on dense weights (packed at batch 1 and above,
and plain ndarrays) and ``kernels.matmul``, at every C ISA level, against float64 math."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels.backend_c.ffi import library

pytestmark = pytest.mark.skipif(library() is None, reason="the C kernel library is not built")

ISAS = [
    pytest.param(
        isa,
        marks=pytest.mark.skipif(
            isa not in kernels.supported_isas(), reason=f"this CPU (or build) lacks {isa}"
        ),
    )
    for isa in ("scalar", "avx2", "avx512")
]


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test body on the C backend capped at one ISA level."""
    with kernels.using(backend="c", isa=request.param):
        yield request.param


def reference(x, w, bias=None, activation=None) -> np.ndarray:
    y = x.astype(np.float64) @ w.astype(np.float64).T
    if bias is not None:
        y += bias
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "relu6":
        y = np.clip(y, 0, 6)
    return y


def assert_close(got, x, w, want) -> None:
    """Within 1e-5 of the sum of |terms| (bounds float32 rounding in any order)."""
    scale = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T + 1.0
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_less(np.abs(got - want), 1e-5 * scale)


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 7, 8, 64, 257])
@pytest.mark.parametrize("n_in, n_out", [(1, 1), (3, 17), (17, 3), (1023, 33), (300, 1023)])
def test_linear_matches_float64(isa, batch, n_in, n_out):
    rng = np.random.default_rng(batch * 1000 + n_in + n_out)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    weight = kernels.encode(w, "dense")
    for b, act in [(None, None), (bias, "relu"), (bias, "relu6"), (bias, None)]:
        want = reference(x, w, b, act)
        assert_close(kernels.linear(x, weight, b, act), x, w, want)
        assert_close(kernels.linear(x, w, b, act), x, w, want)  # plain ndarray: unpacked


def test_packed_once_on_the_first_batched_call():
    w = kernels.encode(np.ones((20, 9), np.float32), "dense")
    kernels.api.prepare(w)
    kernels.linear(np.ones((1, 9), np.float32), w)
    assert "packed" not in w.__dict__.get("_derived", {})  # batch 1 reads W as stored
    kernels.linear(np.ones((3, 9), np.float32), w)
    packed = w.__dict__["_derived"]["packed"]
    assert packed.shape == (32 * 9,) and not packed.flags.writeable
    kernels.linear(np.ones((5, 9), np.float32), w)
    assert w.__dict__["_derived"]["packed"] is packed


def test_cpu_info_names_the_dense_slots():
    with kernels.using(backend="c"):
        linear = kernels.cpu_info()["serving_detail"]["dense"]["linear"]
    assert linear["batch 1"].startswith("c:pk_dense_dot_")
    assert linear["batch > 1"].startswith("c:pk_dense_gemm_")


@pytest.mark.parametrize("batch", [1, 9])
def test_nan_and_inf_propagate(isa, batch):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    x = rng.standard_normal((batch, 30)).astype(np.float32)
    x[0, 3], x[-1, 5] = np.nan, np.inf
    for weight in (kernels.encode(w, "dense"), w):
        for act in (None, "relu", "relu6"):
            got = kernels.linear(x, weight, None, act)
            with np.errstate(invalid="ignore"):
                want = reference(x, w, None, act).astype(np.float32)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_out_buffer_and_bias_aliasing(isa):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    weight = kernels.encode(w, "dense")
    x = rng.standard_normal((4, 16)).astype(np.float32)
    out = np.empty((4, 16), np.float32)
    assert kernels.linear(x, weight, out=out) is out
    assert_close(out, x, w, reference(x, w))
    with pytest.raises(ValueError, match="overlap"):
        kernels.linear(x, weight, out=x)
    square = np.ones((16, 16), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        kernels.linear(x[:, :16].copy(), square, out=square[:4])
    # a bias that is a row of out is read before out is written
    bias = out[0]
    want = reference(x, w, bias.copy())
    kernels.linear(x, weight, bias, out=out)
    assert_close(out, x, w, want)


def test_results_do_not_depend_on_threads():
    rng = np.random.default_rng(5)
    w = kernels.encode(rng.standard_normal((300, 700)).astype(np.float32), "dense")
    for batch in (1, 40):
        x = rng.standard_normal((batch, 700)).astype(np.float32)
        with kernels.using(backend="c", threads=1):
            one = kernels.linear(x, w)
        with kernels.using(backend="c", threads=2):
            two = kernels.linear(x, w)
        np.testing.assert_array_equal(one, two)


MATMUL_SHAPES = [
    ((5, 7), (7, 4)),
    ((7,), (7, 4)),
    ((5, 7), (7,)),
    ((7,), (7,)),
    ((2, 3, 5, 7), (2, 3, 7, 4)),
    ((3, 1, 4, 6), (2, 6, 5)),
    ((1, 12, 128, 64), (1, 12, 64, 128)),  # attention: q @ kᵀ
    ((2, 12, 1, 32), (2, 12, 32, 17)),
    ((0, 4, 6), (6, 5)),
    ((2, 0, 6), (6, 5)),
    ((2, 4, 0), (0, 3)),
    ((4, 1), (1, 300)),
]


@pytest.mark.parametrize("shape_a, shape_b", MATMUL_SHAPES)
def test_matmul_broadcasts_as_numpy(isa, shape_a, shape_b):
    rng = np.random.default_rng(len(shape_a) * 10 + len(shape_b))
    a = rng.standard_normal(shape_a).astype(np.float32)
    b = rng.standard_normal(shape_b).astype(np.float32)
    got = kernels.matmul(a, b)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    scale = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))) + 1.0
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_less(np.abs(got - want), 1e-5 * scale)


def test_matmul_strided_operands_and_out(isa):
    rng = np.random.default_rng(11)
    q = rng.standard_normal((2, 4, 9, 16)).astype(np.float32)
    k = rng.standard_normal((2, 4, 9, 16)).astype(np.float32)
    kt = k.transpose(0, 1, 3, 2)  # a view: read through its strides
    out = np.empty((2, 4, 9, 9), np.float32)
    assert kernels.matmul(q, kt, out=out) is out
    want = q.astype(np.float64) @ kt.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        kernels.matmul(q[..., ::-1, :], kt), q[..., ::-1, :] @ kt, 1e-5, 1e-5
    )
    square = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        kernels.matmul(square, square, out=square)


def test_matmul_errors():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        kernels.matmul(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError):
        kernels.matmul(np.ones((2, 3, 4), np.float32), np.ones((3, 4, 2), np.float32))
    with pytest.raises(TypeError):
        kernels.matmul(a, np.ones((4, 2), np.int32))
    with pytest.raises(ValueError, match="shape"):
        kernels.matmul(a, np.ones((4, 2), np.float32), out=np.empty((3, 3), np.float32))


def test_matmul_without_c_is_numpy():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.arange(8, dtype=np.float32).reshape(4, 2)
    with kernels.using(backend="numpy"):
        np.testing.assert_array_equal(kernels.matmul(a, b), a @ b)


def test_matmul_op_of_two_graph_inputs_runs_on_kernels_matmul(monkeypatch):
    import pyinfer

    calls = []
    real = kernels.matmul
    monkeypatch.setattr(kernels, "matmul", lambda a, b: calls.append(1) or real(a, b))
    g = pyinfer.Graph()
    q = g.input("q", [None, 4, 9, 16])
    k = g.input("k", [None, 4, 16, 9])
    g.output(g.node("MatMul", q, k))
    rng = np.random.default_rng(2)
    qa = rng.standard_normal((2, 4, 9, 16)).astype(np.float32)
    ka = rng.standard_normal((2, 4, 16, 9)).astype(np.float32)
    (got,) = g.build().run({"q": qa, "k": ka}).values()
    np.testing.assert_allclose(got, qa @ ka, rtol=1e-5, atol=1e-5)
    assert calls
