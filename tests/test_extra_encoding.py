"""An encoding defined entirely here -- a registry row, a NumPy codec and a reference, no
C -- runs through kernels.linear, kernels.conv2d (grouped too), the file format and the
runtime: the registry is all a new encoding needs on the Python side."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import kernels
import pyinfer
from kernels import registry
from kernels.encodings.base import EncodedWeight, apply_epilogue, check_array, freeze

NAME = "ternary_test"


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TernaryWeight(EncodedWeight):
    """Weights scale[o]·t with t in {-1, 0, +1}: codes int8 [out, in], scale float32 [out]."""

    encoding = NAME
    codes: np.ndarray
    scale: np.ndarray

    def __post_init__(self):
        self._check_shape()
        out, k = self.out_features, self.in_features
        codes = check_array("codes", self.codes, np.int8, (out, k), NAME)
        scale = check_array("scale", self.scale, np.float32, (out,), NAME)
        if codes.size and np.abs(codes.astype(np.int16)).max() > 1:
            raise ValueError(f"{NAME} codes must lie in -1..1")
        freeze(self, "codes", codes)
        freeze(self, "scale", scale)

    def decode_matrix(self) -> np.ndarray:
        return self.codes.astype(np.float32) * self.scale[:, None]


def encode_ternary(matrix: np.ndarray, threshold: float = 0.5) -> TernaryWeight:
    """t = sign(w) where |w| > threshold·max|w[o]|, else 0; scale = mean |w| over kept ones."""
    a = np.abs(matrix)
    keep = a > threshold * a.max(axis=1, keepdims=True, initial=0)
    kept = keep.sum(axis=1)
    scale = np.where(kept > 0, (a * keep).sum(axis=1) / np.maximum(kept, 1), 0)
    codes = (np.sign(matrix) * keep).astype(np.int8)
    return TernaryWeight(shape=matrix.shape, codes=codes, scale=scale.astype(np.float32))


#: Output rows of every weight the reference was called with (to see grouped conv slice).
calls: list[int] = []


def ternary_linear_reference(x, w: TernaryWeight, bias=None, activation=None) -> np.ndarray:
    """y = act(x @ (scale·t)ᵀ + bias) in float64."""
    calls.append(w.out_features)
    y = x.astype(np.float64) @ w.decode_matrix().astype(np.float64).T
    return apply_epilogue(y, bias, activation).astype(np.float32)


ROW = registry.Encoding(
    name=NAME,
    weight_type=TernaryWeight,
    encode=encode_ternary,
    reference_linear=ternary_linear_reference,
    options={"threshold": None},
    bits_per_weight="8 (+ 32 per row)",
    description="test-only ternary weights",
)


@pytest.fixture(scope="module", autouse=True)
def ternary_row():
    """The row is registered for this module only; other tests see the usual rows."""
    registry.register(ROW)
    try:
        yield ROW
    finally:
        registry.unregister(NAME)


def float_conv(x, w, bias, stride, padding, groups, activation=None):
    """Independent oracle: float64 conv of the decoded weight, one loop per tap."""
    wd = w.decode().astype(np.float64)
    out, cg, kh, kw = wd.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (xp.shape[2] - kh) // stride + 1
    wo = (xp.shape[3] - kw) // stride + 1
    og = out // groups
    y = np.zeros((x.shape[0], out, ho, wo))
    for g in range(groups):
        xs = xp[:, g * cg : (g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky : ky + stride * ho : stride, kx : kx + stride * wo : stride]
                y[:, g * og : (g + 1) * og] += np.einsum(
                    "ncyx,oc->noyx", patch, wd[g * og : (g + 1) * og, :, ky, kx]
                )
    b = None if bias is None else bias.astype(np.float64)[:, None, None]
    return apply_epilogue(y, b, activation)


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(np.abs(want).max(), 1))


RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_the_row_is_listed_only_while_registered():
    assert NAME in registry.names()
    assert registry.get(NAME) is ROW


def test_encode_and_linear_on_every_backend():
    w = kernels.encode(randn(7, 13), NAME, threshold=0.3)
    assert isinstance(w, TernaryWeight) and set(np.unique(w.codes)) <= {-1, 0, 1}
    x, b = randn(5, 13), randn(7)
    want = apply_epilogue(x.astype(np.float64) @ w.decode().astype(np.float64).T, b, "relu")
    for backend in kernels.available_backends():
        with kernels.using(backend=backend):
            close(kernels.linear(x, w, b, activation="relu"), want)


@pytest.mark.parametrize("stride, padding, groups", [(1, 1, 1), (2, 0, 1), (1, 1, 2), (1, 0, 4)])
def test_conv2d_on_every_backend(stride, padding, groups):
    x, b = randn(2, 8, 7, 6), randn(8)
    w = kernels.encode(randn(8, 8 // groups, 3, 3), NAME)
    want = float_conv(x, w, b, stride, padding, groups, "relu6")
    for backend in kernels.available_backends():
        with kernels.using(backend=backend):
            got = kernels.conv2d(x, w, b, stride, padding, groups=groups, activation="relu6")
        close(got, want)


def test_grouped_conv_runs_each_group_on_its_own_rows():
    """The default slice_rows splits the weight per group: every linear call sees out /
    groups rows, so grouped conv does not do groups times the work."""
    groups = 4
    x = randn(1, 8, 5, 5)
    w = kernels.encode(randn(12, 8 // groups, 3, 3), NAME)
    for backend in kernels.available_backends():
        calls.clear()
        with kernels.using(backend=backend):
            got = kernels.conv2d(x, w, padding=1, groups=groups)
        close(got, float_conv(x, w, None, 1, 1, groups))
        assert calls == [12 // groups] * groups, backend


def test_plan_runs_any_batch_and_follows_backend_changes():
    w = kernels.encode(randn(6, 3, 3, 3), NAME)
    plan = kernels.conv.plan_conv2d(w, (None, 3, 6, 6), padding=1)
    assert plan.out_shape == (None, 6, 6, 6)
    for n, backend in ((1, "numpy"), (3, kernels.available_backends()[0])):
        x = randn(n, 3, 6, 6)
        with kernels.using(backend=backend):
            y = plan(x)
        assert plan.backend == backend
        close(y, float_conv(x, w, None, 1, 1, 1))


def test_save_load_and_runtime(tmp_path):
    x = randn(2, 4, 6, 5)
    wc = kernels.encode(randn(6, 2, 3, 3), NAME)
    wl = kernels.encode(randn(5, 6 * 6 * 5), NAME)
    bc, bl = randn(6), randn(5)
    g = pyinfer.Graph()
    h = g.conv2d(g.input("x", (None, 4, 6, 5)), wc, bc, padding=1, groups=2, name="conv")
    h = g.node("Relu", h)
    h = g.node("Reshape", h, shape=[-1, 6 * 6 * 5])
    g.output(g.linear(h, wl, bl, name="fc"))
    model = g.build()
    conv = np.maximum(float_conv(x, wc, bc, 1, 1, 2), 0).reshape(2, -1)
    want = conv @ wl.decode().astype(np.float64).T + bl
    close(model(x), want)
    pyinfer.save(model, tmp_path / "t.pinf")
    loaded = pyinfer.load(tmp_path / "t.pinf", verify=True)
    for name, w in (("conv.weight", wc), ("fc.weight", wl)):
        again = loaded.weights[name]
        assert isinstance(again, TernaryWeight) and again.shape == w.shape
        np.testing.assert_array_equal(again.codes, w.codes)
        np.testing.assert_array_equal(again.scale, w.scale)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_a_row_cannot_be_registered_twice_or_removed_when_absent():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(ROW)
    with pytest.raises(ValueError, match="unknown encoding"):
        registry.unregister("no_such_encoding")
