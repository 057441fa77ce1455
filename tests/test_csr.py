"""``csr`` specifics beyond the generic encoding tests: the codec keeps exactly the
nonzeros (bit for bit), index width follows ``in``, hand-built weights are validated,
special values (Inf, NaN, 1e30) behave as dense float math on the stored entries, and
the thread count does not change results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kernels
from kernels.backend_c.csr import SLICE, row_slices
from kernels.encodings.csr import UINT16_MAX_IN, CSRWeight
from kernels.encodings.csr import encode as csr_encode
from kernels.encodings.csr import linear_reference as csr_reference
from tests.conftest import sparse_gaussian

# --- codec ----------------------------------------------------------------------------

_ELEMENTS = st.one_of(
    st.just(0.0),
    st.just(-0.0),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _check_round_trip(matrix: np.ndarray) -> None:
    # the codec itself (kernels.encode adds only dtype and shape handling on top)
    w = csr_encode(matrix)
    nonzero = matrix != 0  # NaN is a nonzero; -0.0 is a zero
    assert w.shape == matrix.shape
    assert w.nnz == int(np.count_nonzero(nonzero))
    assert w.indices.dtype == np.uint16
    # the stored values are the nonzeros in row-major order, bit for bit (NaN payloads too)
    np.testing.assert_array_equal(_bits(w.values), _bits(matrix[nonzero]))
    decoded = w.decode()
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(_bits(decoded)[nonzero], _bits(matrix)[nonzero])
    assert not np.any(_bits(decoded)[~nonzero])  # zeros come back as +0.0
    again = csr_encode(decoded)
    for name in ("indptr", "indices", "values"):
        np.testing.assert_array_equal(
            getattr(again, name).view(np.uint8), getattr(w, name).view(np.uint8)
        )


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 7), st.integers(0, 40)),
        elements=_ELEMENTS,
    )
)
def test_encode_keeps_exactly_the_nonzeros_and_decode_is_bit_exact(matrix):
    _check_round_trip(matrix)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (4, 1), (1, 1)])
def test_round_trip_empty_and_single_column(shape):
    rng = np.random.default_rng(0)
    _check_round_trip(sparse_gaussian(rng, shape, 0.5))
    _check_round_trip(np.zeros(shape, np.float32))


def test_nan_payloads_and_signed_zero_survive():
    nans = np.array([0x7FC00001, 0xFFC12345, 0x7F800001], np.uint32).view(np.float32)
    tiny = np.float32(1e-45)  # the smallest subnormal
    matrix = np.zeros((3, 3), np.float32)
    matrix[0] = [nans[0], -0.0, tiny]
    matrix[1] = [0.0, nans[1], -np.inf]
    matrix[2] = [nans[2], -tiny, 0.0]
    _check_round_trip(matrix)
    assert kernels.encode(matrix, "csr").nnz == 6
    np.testing.assert_array_equal(
        _bits(kernels.encode(matrix, "csr").values), _bits(matrix[matrix != 0])
    )


def test_from_arrays_round_trip():
    rng = np.random.default_rng(1)
    w = kernels.encode(sparse_gaussian(rng, (9, 30)), "csr")
    back = CSRWeight.from_arrays(w.shape, w.arrays(), w.params())
    np.testing.assert_array_equal(back.decode(), w.decode())


# --- index width ----------------------------------------------------------------------


def test_index_width_follows_in_features(variant):
    rng = np.random.default_rng(2)
    x_edge = rng.standard_normal((2, UINT16_MAX_IN)).astype(np.float32)
    edge = np.zeros((3, UINT16_MAX_IN), np.float32)
    edge[0, [0, 1, UINT16_MAX_IN - 1]] = [1.0, -2.0, 3.0]  # the last uint16 column
    edge[2, UINT16_MAX_IN - 1] = 0.5
    w = kernels.encode(edge, "csr")
    assert w.indices.dtype == np.uint16 and int(w.indices.max()) == UINT16_MAX_IN - 1
    np.testing.assert_allclose(kernels.linear(x_edge, w), x_edge @ edge.T, rtol=1e-6)

    wide_in = 70_000
    wide = np.zeros((4, wide_in), np.float32)
    cols = rng.choice(wide_in, size=40, replace=False)
    wide[rng.integers(0, 4, size=40), cols] = rng.standard_normal(40).astype(np.float32)
    wide[1, wide_in - 1] = 2.5  # a column past the uint16 range
    w = kernels.encode(wide, "csr")
    assert w.indices.dtype == np.int32 and int(w.indices.max()) == wide_in - 1
    for batch in (1, 5):
        x = rng.standard_normal((batch, wide_in)).astype(np.float32)
        np.testing.assert_allclose(
            kernels.linear(x, w),
            (x.astype(np.float64) @ wide.T.astype(np.float64)),
            rtol=1e-5,
            atol=1e-5,
        )


# --- hand-built weights are validated before any kernel sees them ---------------------


def _good():
    # [[1, 0, 2], [0, 0, 0], [0, 3, 0]]
    return {
        "indptr": np.array([0, 2, 2, 3], np.int32),
        "indices": np.array([0, 2, 1], np.uint16),
        "values": np.array([1.0, 2.0, 3.0], np.float32),
    }


def _build(shape=(3, 3), **changes):
    arrays = _good()
    arrays.update(changes)
    return CSRWeight(shape=shape, **arrays)


def test_hand_built_valid_weight():
    np.testing.assert_array_equal(
        _build().decode(), np.array([[1, 0, 2], [0, 0, 0], [0, 3, 0]], np.float32)
    )


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"indptr": np.array([0, 2, 2, 3], np.int64)}, TypeError, "indptr must have dtype int32"),
        ({"indptr": [0, 2, 2, 3]}, TypeError, "indptr must be a numpy array"),
        ({"indptr": np.array([0, 2, 3], np.int32)}, ValueError, r"indptr must have shape \(4,\)"),
        ({"indptr": np.array([1, 2, 2, 3], np.int32)}, ValueError, "start at 0"),
        ({"indptr": np.array([0, 2, 2, 2], np.int32)}, ValueError, "end at nnz=3"),
        ({"indptr": np.array([0, 3, 2, 3], np.int32)}, ValueError, "non-decreasing"),
        ({"indices": np.array([0, 2, 3], np.uint16)}, ValueError, r"must lie in \[0, 3\)"),
        ({"indices": np.array([0, 2, 1], np.int32)}, TypeError, "indices must have dtype uint16"),
        ({"indices": np.array([2, 0, 1], np.uint16)}, ValueError, "strictly increasing"),
        ({"indices": np.array([2, 2, 1], np.uint16)}, ValueError, "no duplicates"),
        ({"indices": np.array([0, 2], np.uint16)}, ValueError, "same length"),
        (
            {"values": np.array([1.0, 2.0, 3.0], np.float64)},
            TypeError,
            "values must have dtype float32",
        ),
        ({"values": np.ones((3, 1), np.float32)}, ValueError, "1-D"),
        ({"values": np.ones(4, np.float32)}, ValueError, "same length"),
    ],
)
def test_hand_built_invalid_weight_raises(changes, error, match):
    with pytest.raises(error, match=match):
        _build(**changes)


def test_hand_built_wide_indices_are_checked():
    n = UINT16_MAX_IN + 10
    good = {
        "indptr": np.array([0, 1, 2], np.int32),
        "indices": np.array([n - 1, 5], np.int32),
        "values": np.ones(2, np.float32),
    }
    assert CSRWeight(shape=(2, n), **good).indices.dtype == np.int32
    with pytest.raises(TypeError, match="indices must have dtype int32"):
        CSRWeight(shape=(2, n), **{**good, "indices": np.array([7, 5], np.uint16)})
    with pytest.raises(ValueError, match="must lie in"):
        CSRWeight(shape=(2, n), **{**good, "indices": np.array([-1, 5], np.int32)})
    with pytest.raises(ValueError, match="must lie in"):
        CSRWeight(shape=(2, n), **{**good, "indices": np.array([n, 5], np.int32)})


def test_stored_arrays_are_read_only():
    w = _build()
    with pytest.raises(ValueError, match="read-only"):
        w.indices[0] = 2


def test_linear_with_empty_dimensions(variant):
    # in = 0: every output is its bias; out = 0: an empty result (encoded by the codec,
    # since kernels.encode needs at least one row)
    no_inputs = csr_encode(np.zeros((5, 0), np.float32))
    bias = np.arange(5, dtype=np.float32)
    for batch in (1, 3):
        y = kernels.linear(np.ones((batch, 0), np.float32), no_inputs, bias=bias)
        np.testing.assert_array_equal(y, np.broadcast_to(bias, (batch, 5)))
        y = kernels.linear(
            np.ones((batch, 4), np.float32), csr_encode(np.zeros((0, 4), np.float32))
        )
        assert y.shape == (batch, 0)


# --- special values -------------------------------------------------------------------


def test_inf_and_nan_in_x_propagate_through_stored_nonzeros(variant):
    # row 0 meets column 1 (Inf), row 1 meets column 3 (NaN), row 2 meets columns 1
    # and 5 (Inf and -Inf: NaN), row 3 meets only finite columns, row 4 is empty
    dense = np.zeros((5, 7), np.float32)
    dense[0, [0, 1]] = [2.0, 3.0]
    dense[1, [2, 3]] = [1.0, -1.0]
    dense[2, [1, 5]] = [1.0, 1.0]
    dense[3, [0, 6]] = [0.5, -4.0]
    w = kernels.encode(dense, "csr")
    x = np.array([[1, np.inf, 2, np.nan, 5, -np.inf, 3]] * 3, np.float32)
    x[1] = np.arange(7)  # a finite row in the same batch stays finite
    x[2, 1], x[2, 5] = -np.inf, np.inf
    for rows in (x[:1], x):
        y = kernels.linear(rows, w, bias=np.ones(5, np.float32))
        assert y[0, 0] == np.inf and np.isnan(y[0, 1]) and np.isnan(y[0, 2])
        assert y[0, 3] == np.float32(0.5 * 1 - 4.0 * 3 + 1) and y[0, 4] == 1.0
        if len(rows) > 1:
            assert np.all(np.isfinite(y[1]))
            np.testing.assert_allclose(y[1], np.arange(7) @ dense.T + 1, rtol=1e-6)
            assert y[2, 0] == -np.inf and np.isnan(y[2, 2])
        # relu keeps NaN (as np.maximum does) and clamps -Inf
        r = kernels.linear(rows, w, activation="relu")
        assert np.isnan(r[0, 1]) and r[0, 0] == np.inf
        if len(rows) > 1:
            assert r[2, 0] == 0.0


def test_large_values_overflow_only_where_float32_dense_does(variant):
    rng = np.random.default_rng(3)
    dense = sparse_gaussian(rng, (24, 50), 0.5) * np.float32(1e30)
    x = rng.standard_normal((9, 50)).astype(np.float32)
    want = (x.astype(np.float64) @ dense.T.astype(np.float64)).astype(np.float32)
    assert np.all(np.isfinite(x @ dense.T))  # float32 dense is finite here ...
    w = kernels.encode(dense, "csr")
    for rows in (x[:1], x):
        got = kernels.linear(rows, w)
        assert np.all(np.isfinite(got))  # ... so must we be
        np.testing.assert_allclose(got, want[: len(rows)], rtol=1e-5, atol=1e-5 * 1e31)
    # terms near the float32 limit: dense float32 stays finite, so must we
    big = np.zeros((2, 4), np.float32)
    big[0] = [3e38, -3e38, 1.0, 0.0]
    big[1] = [1e38, 1e38, 1e38, 0.0]
    xb = np.ones((2, 4), np.float32)
    assert np.all(np.isfinite(xb @ big.T))
    got = kernels.linear(xb, kernels.encode(big, "csr"))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[:, 0], [1.0, 1.0], atol=1e-5 * 3e38)
    np.testing.assert_allclose(got[:, 1], [3e38, 3e38], rtol=1e-6)


# --- threads --------------------------------------------------------------------------


def test_thread_count_does_not_change_results_at_a_larger_shape(variant):
    rng = np.random.default_rng(4)
    w = kernels.encode(sparse_gaussian(rng, (512, 700), 0.1), "csr")
    bias = rng.standard_normal(512).astype(np.float32)
    for batch in (1, 33):
        x = rng.standard_normal((batch, 700)).astype(np.float32)
        with kernels.using(threads=1):
            one = kernels.linear(x, w, bias=bias, activation="relu6")
        with kernels.using(threads=2):
            two = kernels.linear(x, w, bias=bias, activation="relu6")
        np.testing.assert_array_equal(one, two)


def test_cpu_info_names_the_best_csr_kernel():
    if "c" not in kernels.available_backends():
        pytest.skip("C kernel library not built")
    info = kernels.cpu_info()
    impl = info["c_kernels"]["linear_csr"]
    assert impl.startswith("pk_linear_csr_")
    if info["isa"] in ("scalar", "avx2"):  # levels with a CSR kernel of their own
        assert impl == f"pk_linear_csr_{info['isa']}"
    assert info["serving"]["csr"]["linear"] == f"c:{impl}"


# --- batch 1 on row slices (C backend) --------------------------------------------------


def _skewed(rng: np.random.Generator, out: int, cols: int) -> np.ndarray:
    """Rows from empty to dense, so that slices mix lengths and need padding."""
    density = rng.permutation(np.linspace(0.0, 1.0, out))[:, None]
    return np.where(rng.random((out, cols)) < density, rng.standard_normal((out, cols)), 0.0)


@pytest.mark.parametrize("cols", [7, 300, 65535, 65536, 70000])
def test_row_slices_hold_each_row_once_in_its_lane_and_pad_with_the_zero_column(cols):
    rng = np.random.default_rng(5)
    out = 601 if cols < 1000 else 37  # several sort windows, a partial last slice
    dense = np.zeros((out, cols), np.float32)
    small = _skewed(rng, out, min(cols, 300)).astype(np.float32)
    dense[:, rng.choice(cols, small.shape[1], replace=False)] = small
    w = csr_encode(dense)
    ptr, rows, indices, values = row_slices(w.indptr, w.indices, w.values, cols)
    assert indices.dtype == (np.uint16 if cols < 65536 else np.int32)
    assert len(rows) == len(ptr) * SLICE - SLICE and ptr[0] == 0 and np.all(ptr % SLICE == 0)
    assert sorted(rows[rows >= 0]) == list(range(out)) and np.all(rows[out:] == -1)
    lengths = np.diff(w.indptr)
    for s in range(len(ptr) - 1):
        lanes_idx = indices[ptr[s] : ptr[s + 1]].reshape(-1, SLICE)
        lanes_val = values[ptr[s] : ptr[s + 1]].reshape(-1, SLICE)
        for lane in range(SLICE):
            r = rows[s * SLICE + lane]
            n = lengths[r] if r >= 0 else 0
            if r >= 0:
                lo, hi = w.indptr[r], w.indptr[r + 1]
                np.testing.assert_array_equal(lanes_idx[:n, lane], w.indices[lo:hi])
                np.testing.assert_array_equal(_bits(lanes_val[:n, lane]), _bits(w.values[lo:hi]))
            assert np.all(lanes_idx[n:, lane] == cols) and not np.any(lanes_val[n:, lane])
        # rows are sorted by length within their window, so a slice pads little
        if s + 1 < len(ptr) - 1:
            assert lanes_idx.shape[0] == max(lengths[r] for r in rows[s * SLICE : (s + 1) * SLICE])


def test_batch_one_matches_the_reference_on_skewed_rows(fast_variant):
    rng = np.random.default_rng(6)
    dense = _skewed(rng, 700, 333).astype(np.float32)
    w = kernels.encode(dense, "csr")
    x = rng.standard_normal((1, 333)).astype(np.float32)
    x[0, rng.choice(333, 5, replace=False)] = [np.inf, -np.inf, np.nan, 1e30, -1e30]
    bias = rng.standard_normal(700).astype(np.float32)
    want = csr_reference(x, w, bias, "relu")
    got = kernels.linear(x, w, bias=bias, activation="relu")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * 1e30)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
