"""Kernel-side hardening: hostile conv attributes, aliasing of bias and out, one rule for
encode options, overflow near float32's max, and CSR slices built at model build."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kernels
import pyinfer
from kernels import registry
from kernels.api import prepare
from kernels.backend_c import csr as c_csr
from kernels.conv import plan_conv2d, reference
from kernels.conv.compact import needs_compaction
from kernels.conv.shapes import as_conv_weight, geometry
from kernels.encodings.base import derived

RNG = np.random.default_rng(26)
BACKENDS = kernels.available_backends()
ROWS = [(name, opts) for name in registry.names() for opts in registry.get(name).test_options]


def _weight(name, opts, dense):
    return dense if name == "dense" else kernels.encode(dense, name, **opts)


# ---- hostile conv attributes -------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "opts"), ROWS)
def test_conv_huge_stride_and_padding_equal_a_small_conv(backend, name, opts):
    """Stride 16384 reads one window; padding 3000 with stride 2999 reads one real window
    (the middle output, which is output (0, 0) of padding 1); every other window is all
    padding, so it is the bias."""
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = _weight(name, opts, RNG.standard_normal((4, 3, 3, 3)).astype(np.float32))
    bias = RNG.standard_normal(4).astype(np.float32)
    with kernels.using(backend=backend):
        small = kernels.conv2d(x, w, bias, stride=1, padding=1)
        huge_stride = kernels.conv2d(x, w, bias, stride=16384)
        corner = kernels.conv2d(x, w, bias, stride=16384, padding=3000)
        spread = kernels.conv2d(x, w, bias, stride=2999, padding=3000)
        valid = kernels.conv2d(x, w, bias, stride=1, padding=0)
    np.testing.assert_allclose(huge_stride[:, :, 0, 0], valid[:, :, 0, 0], rtol=1e-5, atol=1e-5)
    assert huge_stride.shape == (2, 4, 1, 1)
    np.testing.assert_array_equal(corner, np.broadcast_to(bias[None, :, None, None], corner.shape))
    assert spread.shape == (2, 4, 3, 3)
    want = np.broadcast_to(bias[None, :, None, None], spread.shape).copy()
    want[:, :, 1, 1] = small[:, :, 0, 0]
    np.testing.assert_allclose(spread, want, rtol=1e-5, atol=1e-5)


SPREAD = [
    dict(stride=9, padding=0, dilation=1),  # kernel 3, stride 9: rows between windows unread
    dict(stride=(1, 20), padding=(2, 12), dilation=1),
    dict(stride=1, padding=9, dilation=8),  # taps 8 apart over a mostly padded extent
    dict(stride=(40, 3), padding=(30, 1), dilation=(2, 1)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SPREAD)
@pytest.mark.parametrize(("name", "opts"), ROWS)
def test_compacted_conv_equals_the_reference_on_the_original_geometry(backend, case, name, opts):
    x = RNG.standard_normal((2, 4, 13, 17)).astype(np.float32)
    w = _weight(name, opts, RNG.standard_normal((6, 2, 3, 3)).astype(np.float32))
    bias = RNG.standard_normal(6).astype(np.float32)
    geo = geometry(x.shape, (6, 2, 3, 3), groups=2, **case)
    weight = as_conv_weight(w)
    want = registry.conv_reference(weight.encoding)(x, weight, bias, geo, "relu")
    with kernels.using(backend=backend):
        plan = plan_conv2d(w, x.shape, bias, groups=2, activation="relu", **case)
        got = plan(x)
    larq_padding = getattr(weight, "activations", None) == "binary"  # runs uncompacted
    assert plan.lowering.startswith("compacted") == (needs_compaction(geo) and not larq_padding)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_int8_conv_scale_and_nan_rule_hold_when_compacted():
    """The per-image scale and the NaN rule see pixels no output of a huge stride reads."""
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    x[0, 2, 7, 7] = np.nan  # never read by the one output window
    x[1, 1, 7, 7] = 50.0  # sets image 1's scale, never read
    w = kernels.encode(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "int8")
    with kernels.using(backend="numpy"):
        want = kernels.conv2d(x, w, stride=1)[:, :, :1, :1]
    for backend in BACKENDS:
        with kernels.using(backend=backend):
            got = kernels.conv2d(x, w, stride=16384)
        assert np.isnan(got[0]).all(), backend
        np.testing.assert_array_equal(got[1], want[1], err_msg=backend)


@pytest.mark.parametrize("case", SPREAD + [dict(stride=2999, padding=3000, dilation=1),
                                  dict(stride=2, padding=(0, 5), dilation=(3, 1))])  # fmt: skip
def test_patches_gathered_in_bounds_equal_the_padded_patches(case):
    x = RNG.standard_normal((2, 4, 13, 17)).astype(np.float32)
    geo = geometry(x.shape, (6, 2, 3, 3), groups=2, **case)
    inside_ones = reference.patch_rows(np.ones((1, 2, 13, 17), np.float32),
                                       dataclasses.replace(geo, c=2, groups=1), 0) != 0  # fmt: skip
    for g in range(2):
        rows, inside = reference.patch_rows_in_bounds(x, geo, g)
        np.testing.assert_array_equal(rows, reference.patch_rows(x, geo, g))
        np.testing.assert_array_equal(inside, inside_ones)


_PEAK_SCRIPT = """
import json, resource, numpy as np, kernels
from kernels import registry
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
dense = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
cases = [dict(stride=16384), dict(stride=16384, padding=3000), dict(stride=2999, padding=3000),
         dict(stride=1, padding=1000, dilation=1000)]
weights = [dense] + [kernels.encode(dense, n, **o) for n in registry.names() if n != "dense"
                     for o in registry.get(n).test_options]
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for backend in BACKEND_LIST:
    with kernels.using(backend=backend):
        for w in weights:
            kernels.conv2d(x, w, padding=1)  # imports and first-call set-up, not measured
before = peak()
for backend in BACKEND_LIST:
    with kernels.using(backend=backend):
        for w in weights:
            for case in cases:
                kernels.conv2d(x, w, **case)
if BACKEND_LIST == ["c"]:  # the C kernel itself, on the uncompacted geometry
    from kernels.backend_c import conv as ops
    from kernels.conv.lowerings import int8
    from kernels.conv.shapes import geometry
    geo = geometry(x.shape, dense.shape, stride=16384)
    w8 = kernels.encode(dense, "int8")
    y = np.empty(geo.out_shape(2), np.float32)
    int8(w8, geo, None, None, ops)(x, y)
    assert np.array_equal(y, kernels.conv2d(x, w8, stride=16384))
print(json.dumps(peak() - before))
"""


@pytest.mark.parametrize("backend", [b for b in ("c", "numpy") if b in BACKENDS])
def test_conv_hostile_attributes_take_little_memory(backend):
    """Peak RSS growth of every encoding's conv at stride 16384, padding 3000 and dilation
    1000 on an 8x8 input (the int8 C kernel allocated 2.1 GB at stride 16384)."""
    script = _PEAK_SCRIPT.replace("BACKEND_LIST", repr([backend]))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    growth = json.loads(done.stdout.strip().splitlines()[-1])
    assert growth < 64 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"


# ---- bias sharing memory with out --------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "opts"), ROWS)
def test_linear_bias_that_is_a_row_of_out(backend, name, opts):
    x = RNG.standard_normal((5, 40)).astype(np.float32)
    w = _weight(name, opts, RNG.standard_normal((24, 40)).astype(np.float32))
    bias = RNG.standard_normal(24).astype(np.float32)
    with kernels.using(backend=backend):
        want = kernels.linear(x, w, bias, "relu")
        out = np.zeros((5, 24), np.float32)
        out[0] = bias
        got = kernels.linear(x, w, out[0], "relu", out=out)
    assert got is out
    np.testing.assert_array_equal(got, want)


def test_conv_plan_keeps_its_bias_when_out_is_the_bias_memory():
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    out = np.zeros((2, 4, 6, 6), np.float32)
    out.reshape(-1)[:4] = RNG.standard_normal(4)
    want = kernels.conv2d(x, w, out.reshape(-1)[:4].copy(), padding=1)
    plan = plan_conv2d(w, (2, 3, 6, 6), out.reshape(-1)[:4], padding=1)
    np.testing.assert_array_equal(plan(x, out=out), want)


# ---- one rule for options ----------------------------------------------------------


@pytest.mark.parametrize("value", [32.0, True, np.float32(32), "32"])
def test_encode_option_of_the_wrong_type_names_the_option(value):
    dense = RNG.standard_normal((8, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="group_size"):
        kernels.encode(dense, "int4", group_size=value)


def test_weight_params_follow_the_encode_rule():
    """What a file's params give from_arrays is checked like kernels.encode's options."""
    w = kernels.encode(RNG.standard_normal((8, 64)).astype(np.float32), "int4")
    params = w.params()
    assert type(w).from_arrays(w.shape, w.arrays(), params).group_size == 32
    with pytest.raises(ValueError, match="group_size"):
        type(w).from_arrays(w.shape, w.arrays(), {**params, "group_size": 32.0})
    b = kernels.encode(RNG.standard_normal((8, 64)).astype(np.float32), "binary")
    with pytest.raises(ValueError, match="activations"):
        type(b).from_arrays(b.shape, b.arrays(), {**b.params(), "activations": "int8"})


def test_a_file_with_a_float_group_size_is_refused(tmp_path):
    g = pyinfer.Graph()
    h = g.input("x", (None, 64))
    g.output(g.linear(h, RNG.standard_normal((8, 64)).astype(np.float32), encoding="int4"))
    path = tmp_path / "m.pinf"
    pyinfer.save(g.build(), path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + n].decode()
    edited = header.replace('\\"group_size\\":32', '\\"group_size\\":32.0', 1)
    assert edited != header
    edited = edited.rstrip().ljust(n)  # same header length (it ends in padding)
    assert len(edited) == n
    path.write_bytes(raw[:8] + edited.encode() + raw[8 + n :])
    with pytest.raises(pyinfer.FormatError, match="group_size"):
        pyinfer.load(path)


# ---- overflow near float32's max ---------------------------------------------------


def _classes(y):
    return np.select([np.isnan(y), np.isposinf(y), np.isneginf(y)], ["nan", "+inf", "-inf"], "f")


def _integer_path(name: str, w) -> bool:
    """Activations quantized and summed exactly (the rest sums float products)."""
    return name in ("int8", "int4") or getattr(w, "activations", None) in ("int8", "binary")


@pytest.mark.parametrize(("name", "opts"), ROWS)
def test_overflow_agrees_across_backends(name, opts):
    """Near float32's max every backend follows the rule its encoding's module documents.

    Integer paths: the sums are exact, so every backend gives the reference's ±inf and
    NaN where it does, and its finite values within the row's tolerance (bit for bit
    where that is 0). Float sums: products of one sign that overflow give that infinity
    on every backend; an output the reference finds non-finite is non-finite on every
    backend (±inf or NaN by summation order); a finite one is finite and within float32
    rounding of Σ|w·x|, unless Σ|w·x| itself passes float32's max (then a float32
    partial sum may overflow where the float64 reference stays finite). ``lowrank``
    sums products of factors of either sign: its x @ v may overflow to ±inf, and then
    (x @ v) @ uᵀ to NaN, where the one-sign rows of the reference give ±inf.
    """
    k = 40
    dense = (np.abs(RNG.standard_normal((16, k))) + 0.5).astype(np.float32)
    dense[RNG.random(dense.shape) < 0.5] = 0
    dense[:, 0] = 1.0  # no row all zero
    w = _weight(name, opts, dense)
    big = np.float32(3.0e38)
    x = np.full((5, k), big, np.float32)
    x[1] = -big
    x[2, 1::2] = -big  # cancellation: partial sums overflow float32, the total may not
    x[3] = RNG.choice([-1.0e33, 1.0e33], k)  # large, but no sum (or epilogue) overflows
    x[4] = x[3] * RNG.random(k).astype(np.float32)
    with kernels.using(backend="numpy"), np.errstate(all="ignore"):
        ref = kernels.linear(x, w)
    decoded = dense if name == "dense" else w.decode_matrix()
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(decoded.astype(np.float64)).T  # Σ|w·x|
    rtol = registry.get(name).rtol
    integer = _integer_path(name, w)
    if getattr(w, "activation_scale", None) is None:  # a static scale saturates instead
        assert (_classes(ref[0]) == "+inf").all() and (_classes(ref[1]) == "-inf").all()
    assert np.isfinite(ref[3:]).all()
    for backend in BACKENDS:
        for rows in (slice(0, 1), slice(0, 5)):  # batch 1 and batch > 1 kernels
            with kernels.using(backend=backend), np.errstate(all="ignore"):
                y = kernels.linear(x[rows], w)
            want, size = ref[rows], magnitude[rows]
            msg = f"{backend}, batch {y.shape[0]}"
            finite = np.isfinite(want)
            if integer:
                np.testing.assert_array_equal(_classes(y), _classes(want), msg)
                np.testing.assert_allclose(y[finite], want[finite], rtol=rtol, atol=0, err_msg=msg)
                continue
            if name != "lowrank":
                np.testing.assert_array_equal(_classes(y[:2]), _classes(want[:2]), msg)
            assert not np.isfinite(y[~finite]).any(), msg
            overflowed = finite & ~np.isfinite(y)
            assert (size[overflowed] > np.finfo(np.float32).max).all(), msg
            close = finite & np.isfinite(y)
            bound = 2 * k * np.finfo(np.float32).eps * size[close]
            assert (np.abs(y[close] - want[close]) <= bound).all(), msg


# ---- CSR slices built at model build -----------------------------------------------


def test_row_slices_do_not_depend_on_the_scatter_block(monkeypatch):
    dense = RNG.standard_normal((300, 70)).astype(np.float32)
    dense[RNG.random(dense.shape) < 0.8] = 0
    dense[5] = 0  # an empty row
    w = kernels.encode(dense, "csr")
    whole = c_csr.row_slices(w.indptr, w.indices, w.values, w.in_features)
    monkeypatch.setattr(c_csr, "SCATTER_BLOCK", 7)
    blocks = c_csr.row_slices(w.indptr, w.indices, w.values, w.in_features)
    for a, b in zip(whole, blocks, strict=True):
        np.testing.assert_array_equal(a, b)
    # every nonzero sits in its row's lane, in order
    slice_ptr, slice_rows, indices, values = blocks
    for lane, row in enumerate(slice_rows):
        if row < 0:
            continue
        s, j = divmod(lane, c_csr.SLICE)
        run = slice(slice_ptr[s] + j, slice_ptr[s + 1], c_csr.SLICE)
        lo, hi = w.indptr[row], w.indptr[row + 1]
        np.testing.assert_array_equal(values[run][: hi - lo], w.values[lo:hi])
        np.testing.assert_array_equal(indices[run][: hi - lo], w.indices[lo:hi])
        assert (values[run][hi - lo :] == 0).all()


@pytest.mark.skipif("c" not in BACKENDS, reason="the C library is not built")
def test_model_build_prepares_the_csr_batch_1_slices():
    dense = RNG.standard_normal((32, 64)).astype(np.float32)
    dense[RNG.random(dense.shape) < 0.9] = 0
    g = pyinfer.Graph()
    h = g.input("x", (None, 64))
    g.output(g.linear(h, dense, encoding="csr"))
    with kernels.using(backend="c"):
        model = g.build()
        w = _csr_weight(model)
        assert "slices" in derived(w)  # built with the model, before any call
        x = RNG.standard_normal((1, 64)).astype(np.float32)
        np.testing.assert_allclose(model(x), x @ dense.T, rtol=1e-5, atol=1e-5)


def _csr_weight(model):
    found = [w for w in model.weights.values() if w.encoding == "csr"]
    assert len(found) == 1
    return found[0]


def test_prepare_is_a_no_op_where_nothing_is_derived():
    w = kernels.encode(RNG.standard_normal((8, 16)).astype(np.float32), "int8")
    with kernels.using(backend="numpy"):
        prepare(w)
    assert "slices" not in derived(w)
