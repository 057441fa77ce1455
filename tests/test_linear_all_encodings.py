"""Every encoding x every backend x every ISA level: fast backends against the NumPy
reference (bit for bit on exact integer paths), the NumPy reference against the
independent oracle of ``tests/oracle.py``."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

import kernels
from tests.conftest import assert_linear_correct, encoding_cases, sparse_gaussian

SHAPES = [  # (batch, in, out)
    (1, 1, 1),
    (1, 33, 17),
    (3, 65, 9),
    (8, 130, 40),
    (17, 257, 31),
    (64, 96, 64),
]


@pytest.mark.parametrize("name, opts", encoding_cases())
@pytest.mark.parametrize("batch, k, n", SHAPES)
def test_linear_on_every_variant(variant, name, opts, batch, k, n):
    rng = np.random.default_rng(batch * 1000 + k * 10 + n)
    w = kernels.encode(sparse_gaussian(rng, (n, k)), name, **opts)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for activation in (None, "relu", "relu6"):
        got = kernels.linear(x, w, bias=bias, activation=activation)
        assert got.dtype == np.float32 and got.shape == (batch, n)
        assert_linear_correct(got, x, w, bias, activation)


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_empty_rows_and_all_zero_weights(variant, name, opts):
    rng = np.random.default_rng(1)
    w = sparse_gaussian(rng, (12, 70))
    w[3] = 0
    w[7:9] = 0
    x = rng.standard_normal((5, 70)).astype(np.float32)
    for weights in (w, np.zeros_like(w)):
        enc = kernels.encode(weights, name, **opts)
        assert_linear_correct(kernels.linear(x, enc), x, enc)
    assert not np.any(kernels.linear(x, kernels.encode(np.zeros_like(w), name, **opts)))


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_batch_one_vector_input_and_out_buffer(variant, name, opts):
    rng = np.random.default_rng(2)
    enc = kernels.encode(sparse_gaussian(rng, (20, 45)), name, **opts)
    x = rng.standard_normal(45).astype(np.float32)
    assert_linear_correct(kernels.linear(x, enc), x, enc)
    out = np.full(20, np.nan, np.float32)
    assert kernels.linear(x, enc, out=out) is out
    assert_linear_correct(out, x, enc)


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_non_contiguous_and_float64_inputs(variant, name, opts):
    rng = np.random.default_rng(3)
    enc = kernels.encode(sparse_gaussian(rng, (16, 40)), name, **opts)
    wide = rng.standard_normal((6, 80)).astype(np.float64)
    x = wide[:, ::2]  # strided float64 view
    assert_linear_correct(kernels.linear(x, enc), x, enc)
    assert_linear_correct(kernels.linear(np.asfortranarray(x), enc), x, enc)


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_thread_count_does_not_change_results(fast_variant, name, opts):
    rng = np.random.default_rng(4)
    enc = kernels.encode(sparse_gaussian(rng, (301, 200)), name, **opts)
    x = rng.standard_normal((19, 200)).astype(np.float32)
    with kernels.using(threads=1):
        one = kernels.linear(x, enc)
    with kernels.using(threads=2):
        two = kernels.linear(x, enc)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_decode_shape_and_nbytes(name, opts):
    rng = np.random.default_rng(5)
    dense = sparse_gaussian(rng, (10, 3, 3, 3))
    enc = kernels.encode(dense, name, **opts)
    assert enc.encoding == name
    assert enc.shape == dense.shape
    assert enc.decode().shape == dense.shape and enc.decode().dtype == np.float32
    assert enc.nbytes > 0


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_bad_inputs_raise_clear_errors(name, opts):
    rng = np.random.default_rng(6)
    enc = kernels.encode(sparse_gaussian(rng, (8, 16)), name, **opts)
    x = rng.standard_normal((2, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="expects 16"):
        kernels.linear(x[:, :15], enc)
    with pytest.raises(TypeError, match="floating-point"):
        kernels.linear(x.astype(np.int32), enc)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        kernels.linear(x, enc, bias=np.ones(7, np.float32))
    with pytest.raises(ValueError, match="activation"):
        kernels.linear(x, enc, activation="gelu")
    with pytest.raises(ValueError, match="out must have shape"):
        kernels.linear(x, enc, out=np.empty((2, 9), np.float32))
    with pytest.raises(TypeError, match="out must be a float32"):
        kernels.linear(x, enc, out=np.empty((2, 8), np.float64))
    with pytest.raises(ValueError, match=r"\[batch, in\]"):
        kernels.linear(x[None], enc)
    buf = np.zeros(64, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        kernels.linear(buf[:32].reshape(2, 16), enc, out=buf[8:24].reshape(2, 8))
    square = kernels.encode(sparse_gaussian(rng, (16, 16)), name, **opts)
    with pytest.raises(ValueError, match="overlap"):
        kernels.linear(x, square, out=x)


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_copies_of_a_used_weight_work(fast_variant, name, opts):
    # a weight keeps per-weight data (C pointers) once used; copies must not share or
    # choke on it
    rng = np.random.default_rng(7)
    enc = kernels.encode(sparse_gaussian(rng, (12, 33)), name, **opts)
    x = rng.standard_normal((3, 33)).astype(np.float32)
    want = kernels.linear(x, enc)
    for twin in (copy.copy(enc), copy.deepcopy(enc), enc.reshaped((12, 3, 11))):
        np.testing.assert_array_equal(kernels.linear(x, twin), want)


def test_a_process_exits_cleanly_while_the_pools_workers_still_spin():
    """Python exits right after a parallel kernel call, while the pool's workers still
    spin in the library's code: it must not be unloaded under them (it was: SIGSEGV)."""
    if "c" not in kernels.available_backends():
        pytest.skip("C kernel library not built")
    code = (
        "import numpy as np, kernels; kernels.set_num_threads(2); "
        "rng = np.random.default_rng(0); w = rng.standard_normal((4096, 1024), np.float32); "
        "w[rng.random(w.shape) < 0.9] = 0; a = kernels.encode(w, 'csr'); "
        "kernels.linear(rng.standard_normal((1, 1024), np.float32), a); print('done')"
    )
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert (out.returncode, out.stdout.strip()) == (0, "done"), out.stderr
