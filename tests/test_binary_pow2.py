"""binary and pow2 encodings: codecs, bit/nibble order, exact integer paths, edge sizes,
and clear errors for malformed weights -- every backend and ISA level (``variant``; the
numpy variant, the reference, is held to the oracle of ``tests/oracle.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import registry
from kernels.encodings import binary as B
from kernels.encodings import pow2 as P
from tests import oracle
from tests.conftest import assert_linear_correct

SIZES = [1, 63, 64, 65, 4097]


def signs_of(a: np.ndarray) -> np.ndarray:
    """sign with sign(0) = +1, as int64."""
    return np.where(a >= 0, 1, -1).astype(np.int64)


# ---- binary -------------------------------------------------------------------------


@pytest.mark.parametrize("k", SIZES)
@pytest.mark.parametrize("batch", [1, 257])
def test_xnor_popcount_is_exact(variant, k, batch):
    rng = np.random.default_rng(k + batch)
    n = 7
    w = np.where(rng.random((n, k)) < 0.5, -0.5, 0.5).astype(np.float32)  # alpha = 0.5
    x = np.where(rng.random((batch, k)) < 0.5, -1.0, 1.0).astype(np.float32)  # beta = 1
    enc = kernels.encode(w, "binary", activations="binary")
    assert np.all(enc.alpha == 0.5)
    want = (0.5 * (signs_of(x) @ signs_of(w).T)).astype(np.float32)
    np.testing.assert_array_equal(kernels.linear(x, enc), want)


@pytest.mark.parametrize(("out", "k", "batch"), [(37, 200, 19), (64, 4097, 8), (5, 130, 9)])
def test_xnor_popcount_exact_across_tiles(variant, out, k, batch):
    # several output panels and activation blocks, each with a partial last one
    rng = np.random.default_rng(out + k)
    w = np.where(rng.random((out, k)) < 0.5, -0.25, 0.25).astype(np.float32)
    x = np.where(rng.random((batch, k)) < 0.5, -2.0, 2.0).astype(np.float32)  # beta = 2
    enc = kernels.encode(w, "binary", activations="binary")
    want = (0.5 * (signs_of(x) @ signs_of(w).T)).astype(np.float32)
    np.testing.assert_array_equal(kernels.linear(x, enc), want)


@pytest.mark.parametrize("k", SIZES)
@pytest.mark.parametrize("batch", [1, 257])
@pytest.mark.parametrize("acts", B.ACTIVATIONS)
def test_binary_on_every_variant(variant, k, batch, acts):
    rng = np.random.default_rng(10 * k + batch)
    enc = kernels.encode(rng.standard_normal((9, k)), "binary", activations=acts)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    bias = rng.standard_normal(9).astype(np.float32)
    got = kernels.linear(x, enc, bias=bias, activation="relu")
    assert_linear_correct(got, x, enc, bias, "relu")


def test_binary_sign_of_zero_is_plus_one(variant):
    rng = np.random.default_rng(3)
    w = np.where(rng.random((5, 64)) < 0.5, -0.5, 0.5).astype(np.float32)
    w[:, :3] = 0.0  # zero weights count as +1 (alpha is still mean |w|)
    enc = kernels.encode(w, "binary", activations="binary")
    assert np.array_equal(enc.signs()[:, :3], np.ones((5, 3)))
    # activations: 63 exact zeros (sign +1) and one 64.0, so beta = 1 exactly
    x = np.zeros((1, 64), np.float32)
    x[0, 17] = 64.0
    want = (enc.alpha * signs_of(w).sum(axis=1)).astype(np.float32)[None, :]
    np.testing.assert_array_equal(kernels.linear(x, enc), want)


@pytest.mark.parametrize("acts", B.ACTIVATIONS)
def test_binary_zero_activations_and_zero_weights(variant, acts):
    rng = np.random.default_rng(4)
    bias = rng.standard_normal(6).astype(np.float32)
    enc = kernels.encode(rng.standard_normal((6, 65)), "binary", activations=acts)
    zeros = np.zeros((3, 65), np.float32)
    np.testing.assert_array_equal(kernels.linear(zeros, enc, bias=bias), np.tile(bias, (3, 1)))
    dead = kernels.encode(np.zeros((6, 65)), "binary", activations=acts)
    assert np.all(dead.alpha == 0) and np.all(dead.signs() == 1)
    x = rng.standard_normal((3, 65)).astype(np.float32)
    np.testing.assert_array_equal(kernels.linear(x, dead, bias=bias), np.tile(bias, (3, 1)))


def test_binary_bit_order_and_padding():
    k = 130  # three words, the last with 62 padding bits
    w = np.ones((1, k), np.float32)
    w[0, 64 * 1 + 5] = -1.0  # word 1, bit 5
    enc = B.encode(w)
    assert enc.bits.shape == (1, 3) and enc.bits.dtype == np.uint64
    assert enc.bits[0, 0] == np.uint64(2**64 - 1)
    assert enc.bits[0, 1] == np.uint64((2**64 - 1) ^ (1 << 5))
    assert enc.bits[0, 2] == np.uint64(0b11)  # columns 128, 129; padding bits are 0


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(0, 5),
    cols=st.integers(0, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_packing_round_trip(rows, cols, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[rng.random((rows, cols)) < 0.1] = 0.0
    enc = B.encode(w)
    assert np.array_equal(enc.signs(), signs_of(w))
    again = B.BinaryWeight.from_arrays(enc.shape, enc.arrays(), enc.params())
    assert np.array_equal(again.bits, enc.bits) and np.array_equal(again.alpha, enc.alpha)
    redo = B.encode(enc.decode())  # decode is alpha * sign: re-encoding is a fixed point
    assert np.array_equal(redo.bits, enc.bits) and np.array_equal(redo.alpha, enc.alpha)
    # the bytes of the words are np.packbits(bitorder="little") of the sign bits
    if rows and cols:
        packed = np.packbits(w >= 0, axis=1, bitorder="little")
        as_bytes = enc.bits.astype("<u8").view(np.uint8)[:, : packed.shape[1]]
        assert np.array_equal(as_bytes, packed)


def test_binary_bad_weights_raise_clear_errors():
    good = B.encode(np.ones((2, 70), np.float32))
    with pytest.raises(TypeError, match="bits must have dtype uint64"):
        B.BinaryWeight(shape=(2, 70), bits=good.bits.astype(np.int64), alpha=good.alpha)
    with pytest.raises(ValueError, match=r"bits must have shape \(2, 2\)"):
        B.BinaryWeight(shape=(2, 70), bits=good.bits[:, :1].copy(), alpha=good.alpha)
    bad = good.bits.copy()
    bad[1, 1] |= np.uint64(1 << 40)  # column 104 does not exist
    with pytest.raises(ValueError, match="padding bits"):
        B.BinaryWeight(shape=(2, 70), bits=bad, alpha=good.alpha)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        B.BinaryWeight(shape=(2, 70), bits=good.bits, alpha=np.array([1, np.nan], np.float32))
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        B.BinaryWeight(shape=(2, 70), bits=good.bits, alpha=np.array([1, -1], np.float32))
    with pytest.raises(ValueError, match="activations must be one of"):
        B.BinaryWeight(shape=(2, 70), bits=good.bits, alpha=good.alpha, activations="int8")
    with pytest.raises(ValueError, match="finite weights"):
        kernels.encode(np.array([[1.0, np.inf]]), "binary")
    with pytest.raises(ValueError, match="activations"):
        kernels.encode(np.ones((2, 3)), "binary", activations="int8")


# ---- pow2 ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", SIZES)
@pytest.mark.parametrize("batch", [1, 257])
def test_pow2_int8_is_exact(variant, k, batch):
    rng = np.random.default_rng(k * 3 + batch)
    enc = kernels.encode(rng.standard_normal((7, k)), "pow2", activations="int8")
    x = rng.standard_normal((batch, k)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    # every fast backend computes ((alpha * sx) * float(acc)) * 2^-6 + bias in float32,
    # as the reference does: the same bits
    got = kernels.linear(x, enc, bias=bias, activation="relu6")
    assert_linear_correct(got, x, enc, bias, "relu6")


@pytest.mark.parametrize("k", SIZES)
@pytest.mark.parametrize("batch", [1, 257])
def test_pow2_float_on_every_variant(variant, k, batch):
    rng = np.random.default_rng(k * 5 + batch)
    enc = kernels.encode(rng.standard_normal((7, k)), "pow2")
    x = rng.standard_normal((batch, k)).astype(np.float32)
    assert_linear_correct(kernels.linear(x, enc), x, enc)


@pytest.mark.parametrize("acts", P.ACTIVATIONS)
def test_pow2_zero_activations_and_weights(variant, acts):
    rng = np.random.default_rng(6)
    bias = rng.standard_normal(5).astype(np.float32)
    enc = kernels.encode(rng.standard_normal((5, 33)), "pow2", activations=acts)
    zeros = np.zeros((4, 33), np.float32)
    np.testing.assert_array_equal(kernels.linear(zeros, enc, bias=bias), np.tile(bias, (4, 1)))
    dead = kernels.encode(np.zeros((5, 33)), "pow2", activations=acts)
    assert np.all(dead.alpha == 0) and not np.any(dead.codes)
    x = rng.standard_normal((4, 33)).astype(np.float32)
    np.testing.assert_array_equal(kernels.linear(x, dead, bias=bias), np.tile(bias, (4, 1)))


def test_pow2_int8_rows_with_nan_give_nan(variant):
    rng = np.random.default_rng(7)
    enc = kernels.encode(rng.standard_normal((3, 40)), "pow2", activations="int8")
    x = rng.standard_normal((5, 40)).astype(np.float32)
    x[1, 3] = np.nan
    x[4, 0] = np.inf
    y = kernels.linear(x, enc)
    assert np.all(np.isnan(y[[1, 4]])) and np.all(np.isfinite(y[[0, 2, 3]]))


def test_pow2_code_layout_and_rule():
    # exact powers of two (times alpha = 3) are represented exactly; nibble order
    alpha = 3.0
    w = np.array([[alpha, -alpha / 2, alpha / 64, 0.0, -alpha / 8]], np.float32)
    enc = P.encode(w)
    assert enc.alpha[0] == np.float32(alpha)
    codes = enc.unpacked_codes()[0]
    assert list(codes) == [1, 8 | 2, 7, 0, 8 | 4]
    assert enc.codes[0, 0] == 1 | ((8 | 2) << 4)  # column 0 low nibble, column 1 high
    assert enc.codes[0, 2] == 8 | 4  # odd in: the padding high nibble is 0
    np.testing.assert_array_equal(enc.decode(), w)
    # below alpha * 2^-7 a weight becomes zero, at it the smallest level alpha * 2^-6
    w2 = np.array([[1.0, 2.0**-7 * 0.99, 2.0**-7 * 1.01]], np.float32)
    assert list(P.encode(w2).unpacked_codes()[0][1:]) == [0, 7]


def test_pow2_error_on_gaussian_is_reasonable():
    w = np.random.default_rng(8).standard_normal((64, 512)).astype(np.float32)
    err = np.linalg.norm(P.encode(w).decode() - w) / np.linalg.norm(w)
    assert err < 0.25  # log-domain rounding of a Gaussian: about 0.19


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 5), cols=st.integers(0, 99), seed=st.integers(0, 2**32 - 1))
def test_pow2_packing_round_trip(rows, cols, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (rows, cols)).astype(np.uint8)
    packed = P.pack_nibbles(codes)
    assert packed.shape == (rows, (cols + 1) // 2)
    assert np.array_equal(P.unpack_nibbles(packed, cols), codes)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    enc = P.encode(w, activations="int8")
    again = P.Pow2Weight.from_arrays(enc.shape, enc.arrays(), enc.params())
    assert np.array_equal(again.codes, enc.codes) and np.array_equal(again.alpha, enc.alpha)
    assert again.params() == enc.params()
    assert not np.any(enc.unpacked_codes() == P.INVALID_CODE)


def test_pow2_bad_weights_raise_clear_errors():
    good = P.encode(np.ones((2, 5), np.float32))
    with pytest.raises(TypeError, match="codes must have dtype uint8"):
        P.Pow2Weight(shape=(2, 5), codes=good.codes.astype(np.int8), alpha=good.alpha)
    with pytest.raises(ValueError, match=r"codes must have shape \(2, 3\)"):
        P.Pow2Weight(shape=(2, 5), codes=good.codes[:, :2].copy(), alpha=good.alpha)
    bad = good.codes.copy()
    bad[0, 0] = 0x18  # high nibble 1 is fine, low nibble 8 is the invalid code
    with pytest.raises(ValueError, match="code 8"):
        P.Pow2Weight(shape=(2, 5), codes=bad, alpha=good.alpha)
    bad = good.codes.copy()
    bad[1, 2] |= 0x10  # padding nibble of the odd row
    with pytest.raises(ValueError, match="padding"):
        P.Pow2Weight(shape=(2, 5), codes=bad, alpha=good.alpha)
    with pytest.raises(ValueError, match="alpha must be finite and non-negative"):
        P.Pow2Weight(shape=(2, 5), codes=good.codes, alpha=np.array([np.inf, 1], np.float32))
    with pytest.raises(ValueError, match="activations must be one of"):
        P.Pow2Weight(shape=(2, 5), codes=good.codes, alpha=good.alpha, activations="binary")
    big = P.MAX_IN_INT8 + 2
    with pytest.raises(OverflowError, match="int8 activations supports in"):
        P.Pow2Weight(
            shape=(1, big),
            codes=np.zeros((1, big // 2), np.uint8),
            alpha=np.ones(1, np.float32),
            activations="int8",
        )
    with pytest.raises(ValueError, match="finite weights"):
        kernels.encode(np.array([[np.nan, 1.0]]), "pow2")
    with pytest.raises(ValueError, match="activations"):
        kernels.encode(np.ones((2, 3)), "pow2", activations="binary")


def test_pow2_int8_quantizer_matches_the_oracle_exactly():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 50)).astype(np.float32) * np.float32(3)
    x[1] = 0
    x[2, 4] = np.nan
    x[3] = 1e-44  # max / 127 underflows to 0: a zero row
    x[4, 0] = np.finfo(np.float32).max
    q, sx, bad = P.quantize_activations(x)
    want_q, want_sx, want_bad = oracle.quantize_int8(x)
    np.testing.assert_array_equal(bad, want_bad)
    np.testing.assert_array_equal(q.astype(np.int64), want_q)
    np.testing.assert_array_equal(sx, want_sx)


def test_cpu_info_names_the_kernels():
    info = kernels.cpu_info()
    for name in registry.names():
        assert name in info["serving"]
