"""Encodings with int8 activations (the rows offering ``activation_scale``: int8, int4):
codecs, the quantization rules, and every backend/ISA variant bit-exact against the NumPy
reference, the reference against the oracle (the generic tests in
test_linear_all_encodings.py cover the common cases; these cover the quantized ones)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kernels
from kernels import registry
from kernels.encodings import int4 as int4_mod
from kernels.encodings import int8 as int8_mod
from kernels.encodings.quant import quantize_activations
from tests import oracle
from tests.conftest import assert_linear_correct

#: Rows whose activations are quantized to int8, dynamically or with a static scale.
INT8_ACTIVATION_ROWS = [
    n for n in registry.names() if "activation_scale" in registry.get(n).options
]

#: The static activation scale the cases use (inputs are about standard normal).
STATIC_SCALE = 0.02


def option_cases() -> list:
    """Each row of ``INT8_ACTIVATION_ROWS`` with each value of its enumerated options
    (one at a time, the rest default), and once with a static activation scale."""
    cases = []
    for name in INT8_ACTIVATION_ROWS:
        sets = [{}]
        for option, choices in registry.get(name).options.items():
            sets += [{option: v} for v in (choices or ())[1:]]
        sets.append({"activation_scale": STATIC_SCALE})
        for opts in sets:
            label = name + "".join(f"-{k}={v}" for k, v in opts.items())
            cases.append(pytest.param(name, opts, id=label))
    return cases


CASES = option_cases()

SHAPES = [  # (batch, in, out): in = 1, 31, 33, 4095, group tails; batch 1 and 257
    (1, 1, 9),
    (2, 31, 17),
    (1, 33, 8),
    (3, 4095, 16),
    (4, 100, 23),
    (5, 130, 40),
    (257, 70, 24),
]


def reference(name, x, w, bias=None, activation=None):
    return registry.get(name).reference_linear(x, w, bias, activation)


@pytest.mark.parametrize("name, opts", CASES)
@pytest.mark.parametrize("batch, k, n", SHAPES)
def test_every_variant_is_exact(variant, name, opts, batch, k, n):
    """Fast variants bit-exact against the reference; the reference against the oracle."""
    rng = np.random.default_rng(batch + 7 * k + 13 * n)
    w = kernels.encode(rng.standard_normal((n, k)).astype(np.float32), name, **opts)
    x = (rng.standard_normal((batch, k)) * 2).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for activation in (None, "relu6"):
        got = kernels.linear(x, w, bias=bias, activation=activation)
        assert_linear_correct(got, x, w, bias, activation)
    assert_linear_correct(kernels.linear(x, w), x, w)


@pytest.mark.parametrize("name, opts", CASES)
def test_special_rows_and_values(variant, name, opts):
    rng = np.random.default_rng(11)
    dense = rng.standard_normal((21, 75)).astype(np.float32)
    dense[4] = 0  # an all-zero weight row
    dense[9, 40] = 1e30  # a single huge outlier
    w = kernels.encode(dense, name, **opts)
    fmax = np.finfo(np.float32).max
    x = rng.standard_normal((8, 75)).astype(np.float32)
    x[1] = 0  # scale 0: must give the bias, not NaN
    x[2] = np.where(rng.random(75) < 0.5, fmax, -fmax)  # activations at ±max
    x[3, 5] = np.nan
    x[4, 70] = np.inf
    x[5, 0] = -np.inf
    x[6] = 1e-44  # subnormal: max/127 underflows to 0 in the dynamic mode
    bias = rng.standard_normal(21).astype(np.float32)
    got = kernels.linear(x, w, bias=bias, activation="relu")
    assert_linear_correct(got, x, w, bias, "relu")
    assert np.isnan(got[3:6]).all(), "rows with NaN/Inf activations give NaN outputs"
    assert not np.isnan(got[[0, 1, 2, 6, 7]]).any()
    np.testing.assert_array_equal(got[1], np.maximum(bias, 0))
    np.testing.assert_array_equal(
        got[:, 4], np.where(np.isnan(got[:, 4]), np.nan, np.maximum(bias[4], 0))
    )


@pytest.mark.parametrize("name, opts", CASES)
def test_all_zero_weights_give_the_bias(variant, name, opts):
    w = kernels.encode(np.zeros((12, 40), np.float32), name, **opts)
    x = np.random.default_rng(3).standard_normal((3, 40)).astype(np.float32)
    bias = np.arange(12, dtype=np.float32) - 5
    np.testing.assert_array_equal(kernels.linear(x, w, bias=bias), np.tile(bias, (3, 1)))


@pytest.mark.parametrize("name", INT8_ACTIVATION_ROWS)
def test_static_scale_saturates(variant, name):
    rng = np.random.default_rng(5)
    dense = rng.standard_normal((16, 64)).astype(np.float32)
    w = kernels.encode(dense, name, activation_scale=0.01)
    x = (rng.standard_normal((4, 64)) * 10).astype(np.float32)  # far beyond 1.27
    xq, scale, bad = quantize_activations(x, 0.01)
    assert np.abs(xq).max() == 127 and not bad.any()
    np.testing.assert_array_equal(scale, np.float32(0.01))
    assert_linear_correct(kernels.linear(x, w), x, w)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(0, 40)),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
    st.sampled_from([None, 0.02, 1e-30]),
)
def test_activation_quantizer_matches_the_oracle_exactly(x, static_scale):
    """The library's quantizer gives the documented integers and scales (NaN/Inf rows,
    subnormals and saturation included)."""
    q, scale, bad = quantize_activations(x, static_scale)
    want_q, want_scale, want_bad = oracle.quantize_int8(x, static_scale)
    np.testing.assert_array_equal(bad, want_bad)
    np.testing.assert_array_equal(q.astype(np.int64), want_q)
    np.testing.assert_array_equal(scale[~bad], want_scale[~bad])


def test_activation_quantization_rounds_half_to_even():
    # amax = 127 gives scale 1 exactly, so x / scale is x: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    x = np.array([[127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49]], np.float32)
    xq, scale, bad = quantize_activations(x)
    assert scale[0] == 1.0 and not bad[0]
    np.testing.assert_array_equal(xq[0], [127, 0, 2, 2, 0, -2, -2, 3])


def test_int8_in_limit_is_checked():
    assert int8_mod.MAX_IN == 133144 and 127 * 127 * int8_mod.MAX_IN < 2**31
    assert 127 * 127 * (int8_mod.MAX_IN + 1) >= 2**31
    with pytest.raises(ValueError, match="in <= 133144"):
        kernels.encode(np.zeros((1, int8_mod.MAX_IN + 1), np.float32), "int8")


def test_c_entry_points_refuse_bad_sizes():
    handle = kernels.backend_c.ffi.library() if "c" in kernels.available_backends() else None
    if handle is None:
        pytest.skip("C kernel library not built")
    ffi, lib = handle
    buf = np.zeros(64, np.float32)
    p = ffi.cast("float *", buf.ctypes.data)
    q8 = ffi.cast("int8_t *", buf.ctypes.data)
    q4 = ffi.cast("uint8_t *", buf.ctypes.data)
    # too wide for exact int32 accumulation: refused before any memory is read
    assert lib.pk_linear_int8_f32(p, 1, 133145, q8, p, 1, 0.0, ffi.NULL, 0, p) == -2
    assert lib.pk_linear_int4_f32(p, 1, 4, q4, p, 1, 48, 0.0, ffi.NULL, 0, p) == -1
    assert lib.pk_linear_int8_f32(p, 1, 4, q8, p, 1, float("nan"), ffi.NULL, 0, p) == -1
    assert lib.pk_linear_int8_f32(p, 1, 4, q8, p, 1, -1.0, ffi.NULL, 0, p) == -1


def test_options_and_weight_validation():
    dense = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="group_size"):
        kernels.encode(dense, "int4", group_size=16)
    with pytest.raises(ValueError, match="activation_scale"):
        kernels.encode(dense, "int8", activation_scale=-1.0)
    with pytest.raises(ValueError, match="finite"):
        kernels.encode(np.full((2, 2), np.nan, np.float32), "int4")
    w = kernels.encode(dense, "int8")
    bad = w.packed.copy()
    bad[0, 0, 0, 0] = -128
    with pytest.raises(ValueError, match="-128"):
        int8_mod.Int8Weight(shape=w.shape, packed=bad, scale=w.scale)
    with pytest.raises(ValueError, match="packed must have shape"):
        int8_mod.Int8Weight(shape=(4, 9), packed=w.packed, scale=w.scale)
    w4 = kernels.encode(dense, "int4")
    rebuilt = int4_mod.Int4Weight.from_arrays(w4.shape, w4.arrays(), w4.params())
    np.testing.assert_array_equal(rebuilt.decode(), w4.decode())


def test_layouts_are_as_documented():
    rng = np.random.default_rng(0)
    w = kernels.encode(rng.standard_normal((10, 12)).astype(np.float32), "int8")
    packed, q = w.packed, w.quantized()
    assert packed.shape == (2, 3, 8, 4)
    for o in range(10):
        for k in range(12):
            assert packed[o // 8, k // 4, o % 8, k % 4] == q[o, k]
    assert not packed[1, :, 2:].any()  # padding rows are zero
    dense = rng.standard_normal((9, 40)).astype(np.float32)
    w4 = kernels.encode(dense, "int4")  # 2 groups, the second holds 8 real columns
    q4 = w4.quantized()
    assert w4.packed.shape == (2, 8, 8, 4) and w4.scale.shape == (2, 2, 8)
    for o in range(9):
        for k in range(40):
            byte = int(w4.packed[o // 8, k // 8, o % 8, k % 4])
            nibble = byte & 15 if k % 8 < 4 else byte >> 4
            assert nibble - 8 == q4[o, k]
    assert (w4.packed[0, 5:] == 0x88).all(), "padded columns hold q = 0 (nibble 8)"


# NOTE: magnitudes below 1e-30 are left out: their scales (max/127, max/8) would be
# subnormal and lose the precision these bounds assume.
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32).filter(lambda v: v == 0 or abs(v) > 1e-30)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40), elements=finite)
)
def test_int8_codec_properties(dense):
    w = int8_mod.encode(dense)
    q = w.quantized()
    assert q.min(initial=0) >= -127 and q.max(initial=0) <= 127
    decoded = w.decode()
    # each weight is within half a step of its row's scale (plus float32 rounding)
    err = np.abs(decoded.astype(np.float64) - dense)
    assert (err <= w.scale[:, None] * (0.5 + 1e-5) + 1e-30).all()
    # the row maximum is represented by ±127
    rows = np.abs(dense).max(axis=1, initial=0) > 0
    assert (np.abs(q[rows]).max(axis=1) == 127).all()
    # encoding what decode gives is stable: same integers
    again = int8_mod.encode(decoded)
    np.testing.assert_array_equal(again.quantized(), q)
    np.testing.assert_allclose(again.scale, w.scale, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 140)), elements=finite),
    st.sampled_from(int4_mod.GROUP_SIZES),
)
def test_int4_codec_properties(dense, group_size):
    w = int4_mod.encode(dense, group_size=group_size)
    q = w.quantized()
    assert q.shape == dense.shape and q.min(initial=0) >= -8 and q.max(initial=0) <= 7
    d = np.repeat(np.abs(w.group_scales()), group_size, axis=1)[:, : dense.shape[1]]
    err = np.abs(w.decode().astype(np.float64) - dense)
    # within half a step, except clipped values (then within 2 steps: divisor -9)
    assert (err <= d * (2 + 1e-5) + 1e-30).all()
    assert ((err <= d * (0.5 + 1e-5) + 1e-30) | (q == 7) | (q == -8)).all()
    # re-encoding what decode gives reproduces it
    again = int4_mod.encode(w.decode(), group_size=group_size)
    np.testing.assert_allclose(again.decode(), w.decode(), rtol=1e-5, atol=1e-30)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 70)), elements=finite),
    st.sampled_from([None, 0.5]),
    st.sampled_from(INT8_ACTIVATION_ROWS),
)
def test_activation_quantizer_matches_every_fast_backend(x, act_scale, name):
    """The C and Numba quantizers give the reference's bits (through a unit weight, so
    each output is one quantized activation times its scale)."""
    k = x.shape[1]
    w = kernels.encode(np.eye(k, dtype=np.float32), name, activation_scale=act_scale)
    want = reference(name, x, w)
    for backend in kernels.available_backends():
        if backend != "numpy":  # numpy runs the reference itself
            with kernels.using(backend=backend):
                np.testing.assert_array_equal(kernels.linear(x, w), want)


def relative_l2(y, exact):
    return float(np.linalg.norm(y - exact) / np.linalg.norm(exact))


#: Documented bounds on the relative L2 error of y = x Wᵀ, Gaussian x and W [512, 1024].
ERROR_BOUNDS = {"int8": 1.5e-2, "int4": 8.6e-2}


@pytest.mark.parametrize("name", INT8_ACTIVATION_ROWS)
def test_quantization_error_on_gaussian_data(name):
    assert name in ERROR_BOUNDS, f"document the error bound of {name} in ERROR_BOUNDS"
    rng = np.random.default_rng(2024)
    dense = rng.standard_normal((512, 1024)).astype(np.float32)
    x = rng.standard_normal((32, 1024)).astype(np.float32)
    exact = x.astype(np.float64) @ dense.T.astype(np.float64)
    ours = relative_l2(reference(name, x, kernels.encode(dense, name)), exact)
    print(f"\n{name}: relative L2 error of x Wᵀ, ours {ours:.4g}")
    assert ours <= ERROR_BOUNDS[name]


def _peer_outputs(dense: np.ndarray, x: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(peer, our encoding of the same bit width, y = x Wᵀ) for each installed peer: torch
    and ONNX Runtime dynamic int8, ONNX Runtime MatMulNBits int4 (block 32,
    accuracy_level 4)."""
    import importlib.util

    from pyinfer.bench.suites import quant as suite

    found = []
    if importlib.util.find_spec("torch"):
        import torch

        with torch.inference_mode():
            y = suite.torch_int8_module(dense)(torch.from_numpy(x)).numpy()
        found.append(("torch int8", "int8", y))
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        sess = suite.onnxruntime_int8_session([dense], x, threads=1)
        found.append(("onnxruntime int8", "int8", sess.run(None, {"X": x})[0]))
        found.append(("onnxruntime int4", "int4", _matmulnbits(dense, x)))
    return found


def _matmulnbits(dense: np.ndarray, x: np.ndarray) -> np.ndarray:
    from onnx import TensorProto, helper, numpy_helper

    from pyinfer.bench.baselines import onnx_session
    from pyinfer.bench.suites import quant as suite

    b, s = suite.matmulnbits_arrays(dense, block=32)
    n, k = dense.shape
    node = helper.make_node(
        "MatMulNBits",
        ["X", "B", "S"],
        ["Y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=4,
        block_size=32,
        accuracy_level=4,
    )
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(s, "S")]
    del TensorProto
    sess = onnx_session(lambda i, w: ([node], inits, "Y"), [None], x, 1)
    return sess.run(None, {"X": x})[0]


def test_quantization_error_next_to_peers():
    """Relative L2 error of y = x Wᵀ (Gaussian, seeded) for ours and each installed peer;
    ours must be no worse than any peer of the same bit width."""
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((256, 1024)).astype(np.float32)
    x = rng.standard_normal((16, 1024)).astype(np.float32)
    exact = x.astype(np.float64) @ dense.T.astype(np.float64)
    ours = {
        n: relative_l2(reference(n, x, kernels.encode(dense, n)), exact)
        for n in INT8_ACTIVATION_ROWS
    }
    peers = [(name, mine, relative_l2(y, exact)) for name, mine, y in _peer_outputs(dense, x)]
    print("\nrelative L2 error of x Wᵀ:", ours, {name: err for name, _, err in peers})
    if not peers:
        pytest.skip("neither torch nor onnxruntime is installed")
    for name, mine, err in peers:
        assert ours[mine] <= err, f"ours {ours[mine]:.4g} is worse than {name} {err:.4g}"
