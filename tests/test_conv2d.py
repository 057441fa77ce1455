"""conv2d: every backend and ISA variant, every registry encoding, against the NumPy
reference and against torch.nn.functional.conv2d."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels import conv, registry
from tests.conftest import encoding_cases, sparse_gaussian

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# (kernel, stride, padding, dilation, groups, batch, in, out, height, width)
CASES = [
    pytest.param((1, 1, 0, 1, 1, 1, 8, 5, 5, 7), id="1x1"),
    pytest.param((1, 2, 0, 1, 1, 3, 4, 6, 7, 5), id="1x1-s2"),
    pytest.param((3, 1, 1, 1, 1, 3, 3, 6, 9, 7), id="3x3-p1"),
    pytest.param((3, 1, 0, 1, 1, 1, 4, 5, 8, 11), id="3x3-p0"),
    pytest.param((3, 2, 1, 1, 1, 1, 4, 5, 9, 9), id="3x3-s2-p1"),
    pytest.param((3, 2, "same", 1, 1, 3, 3, 4, 10, 7), id="3x3-s2-same"),
    pytest.param((3, 1, "same", 2, 1, 1, 2, 4, 9, 8), id="3x3-d2-same"),
    pytest.param((5, 1, 2, 1, 2, 1, 4, 6, 7, 9), id="5x5-g2"),
    pytest.param((5, 2, "same", 1, 1, 1, 3, 3, 11, 11), id="5x5-s2-same"),
    pytest.param((7, 2, 3, 1, 1, 1, 3, 4, 13, 15), id="7x7-s2-p3"),
    pytest.param((3, 1, 2, 2, 1, 1, 3, 5, 7, 7), id="3x3-d2-p2"),
    pytest.param((3, 1, 1, 1, 4, 3, 4, 4, 7, 9), id="depthwise"),
    pytest.param((3, 2, 1, 1, 6, 1, 6, 12, 9, 8), id="depthwise-s2-x2"),
    pytest.param((5, 1, "same", 1, 3, 1, 3, 3, 6, 5), id="depthwise-5x5-same"),
    pytest.param((3, 1, 1, 1, 2, 1, 4, 4, 1, 1), id="3x3-on-1x1"),
    pytest.param((1, 1, 0, 1, 1, 3, 5, 7, 1, 1), id="1x1-on-1x1"),
    pytest.param((3, 1, 1, 1, 1, 1, 2, 3, 5, 37), id="wide-rows"),
]

#: A smaller set for every encoding x variant (keeps the suite fast).
ENCODING_CASES = [CASES[i] for i in (0, 2, 5, 7, 11, 14)]


def make(case, seed=0, density=0.5):
    k, s, p, d, g, n, c, o, h, w = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = sparse_gaussian(rng, (o, c // g, k, k), density)
    bias = rng.standard_normal(o).astype(np.float32)
    return x, weight, bias, dict(stride=s, padding=p, dilation=d, groups=g)


def torch_conv(x, weight, bias, stride, padding, dilation, groups, activation=None):
    """torch's conv2d in float64; TF SAME padding applied explicitly (torch's 'same' is
    stride-1 only)."""
    xt = torch.from_numpy(x).double()
    if padding == "same":
        geo = conv.geometry(x.shape, weight.shape, stride, padding, dilation, groups)
        xt = F.pad(xt, (geo.pl, geo.pr, geo.pt, geo.pb))
        padding = 0
    y = F.conv2d(
        xt,
        torch.from_numpy(np.asarray(weight, np.float64)),
        None if bias is None else torch.from_numpy(bias).double(),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    if activation == "relu":
        y = torch.relu(y)
    elif activation == "relu6":
        y = torch.clamp(y, 0, 6)
    return y.numpy()


def reference(x, w, bias, activation=None, **kw):
    weight = w if isinstance(w, kernels.EncodedWeight) else conv.as_conv_weight(w)
    geo = conv.geometry(x.shape, weight.shape, kw["stride"], kw["padding"], kw["dilation"],
                        kw["groups"])  # fmt: skip
    return conv.conv2d_reference(x, weight, bias, geo, activation)


def assert_close(got, want, rtol=1e-5):
    scale = max(float(np.abs(want).max()), 1.0) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@needs_torch
@pytest.mark.parametrize("case", CASES)
def test_dense_matches_torch(variant, case):
    x, weight, bias, kw = make(case)
    for activation in (None, "relu6"):
        got = kernels.conv2d(x, weight, bias, activation=activation, **kw)
        want = torch_conv(x, weight, bias, activation=activation, **kw)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert_close(got, want)


@needs_torch
@pytest.mark.parametrize("case", CASES)
def test_csr_matches_torch(variant, case):
    x, weight, bias, kw = make(case, seed=1, density=0.3)
    enc = kernels.encode(weight, "csr")
    got = kernels.conv2d(x, enc, bias, activation="relu", **kw)
    assert_close(got, torch_conv(x, weight, bias, activation="relu", **kw))


@pytest.mark.parametrize("name, opts", encoding_cases())
@pytest.mark.parametrize("case", ENCODING_CASES)
def test_every_encoding_matches_reference(variant, name, opts, case):
    x, weight, bias, kw = make(case, seed=2)
    enc = kernels.encode(weight, name, **opts)
    row = registry.get(name)
    for activation in (None, "relu"):
        got = kernels.conv2d(x, enc, bias, activation=activation, **kw)
        want = reference(x, enc, bias, activation, **kw)
        if row.exact and row.rtol == 0:
            np.testing.assert_array_equal(got, want)
        else:
            assert_close(got, want, max(row.rtol, 1e-5))


@needs_torch
@pytest.mark.parametrize("name, opts", encoding_cases())
def test_float_encodings_match_torch_on_decoded_weights(name, opts):
    """Encodings whose activations stay float compute the conv of their decoded weight."""
    x, weight, bias, kw = make(CASES[5].values[0], seed=3)
    enc = kernels.encode(weight, name, **opts)
    if registry.get(name).exact and "float" not in opts.values():
        pytest.skip(f"{name} {opts} quantizes activations; checked against its reference")
    got = kernels.conv2d(x, enc, bias, **kw)
    assert_close(got, torch_conv(x, enc.decode(), bias, **kw), 1e-4)


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_encodings_lowered_as_dense_run_the_dense_conv_of_their_decoded_weight(variant, name, opts):
    """Rows whose lowering runs their decoded weight on the dense kernels (binary and pow2
    with float activations): the same result, bit for bit, as the dense conv of
    ``decode()``."""
    if variant[0] == "numpy":
        pytest.skip("the numpy backend runs each encoding's own reference")
    x, weight, bias, kw = make(CASES[2].values[0], seed=4)
    enc = kernels.encode(weight, name, **opts)
    plan = conv.plan_conv2d(enc, x.shape, bias, **kw)
    if plan.lowering != "dense" or isinstance(enc, type(kernels.encode(weight, "dense"))):
        pytest.skip(f"{name} {opts} is dense or has its own conv lowering ({plan.lowering})")
    dense = kernels.encode(enc.decode(), "dense")
    for activation in (None, "relu6"):
        got = kernels.conv2d(x, enc, bias, activation=activation, **kw)
        want = kernels.conv2d(x, dense, bias, activation=activation, **kw)
        np.testing.assert_array_equal(got, want)


def test_reference_is_plain_math():
    """The dense reference against a literal loop over every output and tap."""
    x, weight, bias, kw = make((3, 2, 1, 2, 2, 1, 4, 2, 7, 6), seed=4)
    got = reference(x, weight, bias, **kw)
    n, c, h, w = x.shape
    o, cg, kh, kwd = weight.shape
    geo = conv.geometry(x.shape, weight.shape, **kw)
    want = np.zeros(got.shape)
    for oc in range(o):
        g = oc // (o // 2)
        for oh in range(geo.ho):
            for ow in range(geo.wo):
                acc = float(bias[oc])
                for ci in range(cg):
                    for ky in range(kh):
                        for kx in range(kwd):
                            ih, iw = oh * 2 + ky * 2 - geo.pt, ow * 2 + kx * 2 - geo.pl
                            if 0 <= ih < h and 0 <= iw < w:
                                acc += float(x[0, g * cg + ci, ih, iw]) * float(
                                    weight[oc, ci, ky, kx]
                                )
                want[0, oc, oh, ow] = acc
    assert_close(got, want)


@pytest.mark.parametrize(
    "size, k, s, d", [(10, 3, 2, 1), (11, 3, 2, 1), (7, 5, 1, 1), (9, 3, 3, 2)]
)
def test_same_padding_is_tensorflow_same(size, k, s, d):
    geo = conv.geometry((1, 1, size, size), (1, 1, k, k), s, "same", d, 1)
    assert geo.ho == geo.wo == -(-size // s)
    total = max((geo.ho - 1) * s + (k - 1) * d + 1 - size, 0)
    assert (geo.pt, geo.pb) == (total // 2, total - total // 2)
    assert geo.pb - geo.pt in (0, 1)


@pytest.mark.skipif("binary" not in registry.names(), reason="no binary encoding registered")
def test_binary_activations_do_not_count_padding():
    """Larq's rule: a padded position adds 0, not sign(0) = +1, to the ±1 dot product."""
    x = np.ones((1, 2, 3, 3), np.float32)
    weight = -np.ones((1, 2, 3, 3), np.float32)  # every sign −1, α = 1
    enc = kernels.encode(weight, "binary", activations="binary")
    for backend in kernels.available_backends():
        with kernels.using(backend=backend):
            y = kernels.conv2d(x, enc, padding=1)[0, 0]
        # corner: 4 in-bounds taps x 2 channels = 8 products of −1; β = 8/18 (mean |x|)
        beta = np.float32(8 / 18)
        assert y[0, 0] == np.float32(beta * np.float32(-8.0))
        assert y[1, 1] == np.float32(-18.0)  # centre: no padding, β = 1


@pytest.mark.skipif("binary" not in registry.names(), reason="no binary encoding registered")
@pytest.mark.parametrize(
    "case",
    [
        (3, 1, 1, 1, 1, 2, 70, 9, 6, 19),  # two words per pixel, padded borders
        (3, 2, "same", 2, 1, 1, 5, 4, 12, 23),  # stride and dilation, asymmetric SAME
        (5, 1, 2, 1, 2, 1, 8, 6, 7, 21),  # groups
        (1, 1, 0, 1, 1, 1, 130, 5, 3, 17),  # 1x1, three words per pixel
        (3, 1, 0, 1, 1, 1, 64, 3, 10, 10),  # one full word per pixel, no padding
        (3, 1, 1, 1, 1, 2, 76, 4, 17, 19),  # channel octets + 4, 323-pixel images
    ],
)
def test_binary_activations_exact_on_wide_rows(variant, case):
    """Output rows of 8+ pixels run the blocked XNOR kernel; results equal the reference."""
    x, weight, bias, kw = make(case, seed=6)
    enc = kernels.encode(weight, "binary", activations="binary")
    for activation in (None, "relu6"):
        got = kernels.conv2d(x, enc, bias, activation=activation, **kw)
        np.testing.assert_array_equal(got, reference(x, enc, bias, activation, **kw))


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_thread_count_does_not_change_results(backend):
    if backend not in kernels.available_backends():
        pytest.skip(f"backend {backend} is not available here")
    x, weight, bias, kw = make((3, 1, 1, 1, 1, 2, 16, 32, 13, 21), seed=5)  # parallel sizes
    for w in (weight, kernels.encode(weight, "csr")):
        with kernels.using(backend=backend, threads=1):
            one = kernels.conv2d(x, w, bias, **kw)
        with kernels.using(backend=backend, threads=2):
            two = kernels.conv2d(x, w, bias, **kw)
        np.testing.assert_array_equal(one, two)


def test_non_contiguous_float64_input(variant):
    x, weight, bias, kw = make(CASES[2].values[0], seed=6)
    wide = np.repeat(x.astype(np.float64), 2, axis=3)[:, :, :, ::2]
    got = kernels.conv2d(wide, weight, bias, **kw)
    assert_close(got, reference(x, weight, bias, **kw))


def test_bad_inputs_raise_clear_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((6, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="not divisible by groups=3"):
        kernels.conv2d(x, np.zeros((6, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match="output channels, not divisible"):
        kernels.conv2d(x, np.zeros((5, 2, 3, 3), np.float32), groups=2)
    with pytest.raises(ValueError, match="expects 2 input channels per group"):
        kernels.conv2d(x, w)
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernels.conv2d(x, np.zeros((6, 4, 7, 7), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernels.conv2d(x, np.zeros((6, 4, 3, 3), np.float32), dilation=3)
    with pytest.raises(ValueError, match="NCHW"):
        kernels.conv2d(x[0], w, groups=2)
    with pytest.raises(ValueError, match=r"\[out, in/groups, kh, kw\]"):
        kernels.conv2d(x, np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match="encode the 4-D weight"):
        kernels.conv2d(x, kernels.encode(np.zeros((6, 36), np.float32), "csr"))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        kernels.conv2d(x, w, groups=2, stride=0)
    with pytest.raises(ValueError, match="padding must be"):
        kernels.conv2d(x, w, groups=2, padding="full")
    with pytest.raises(ValueError, match="padding must be >= 0"):
        kernels.conv2d(x, w, groups=2, padding=-1)
    with pytest.raises(ValueError, match="groups must be an int"):
        kernels.conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        kernels.conv2d(x, w, bias=np.zeros(5, np.float32), groups=2)
    with pytest.raises(ValueError, match="activation"):
        kernels.conv2d(x, w, groups=2, activation="gelu")
    with pytest.raises(TypeError, match="floating-point"):
        kernels.conv2d(x.astype(np.int32), w, groups=2)


@pytest.mark.parametrize("opts", [{}, {"activation_scale": 0.02}])
def test_int8_depthwise_is_exact_with_non_finite_inputs(variant, opts):
    """The int8 depthwise kernel quantizes each image exactly as the reference does."""
    x, weight, bias, kw = make((3, 1, 1, 1, 4, 3, 4, 8, 6, 7), seed=7)
    x[0, 1, 2, 3] = np.nan
    x[1, 3, 0, 0] = np.inf
    enc = kernels.encode(weight, "int8", **opts)
    got = kernels.conv2d(x, enc, bias, activation="relu6", **kw)
    want = reference(x, enc, bias, "relu6", **kw)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[:2]).all() and not np.isnan(got[2]).any()


# ---------------------------------------------------------------------------------------
# int8: per-image quantization, then an exact integer conv

# (kernel, stride, padding, dilation, groups, batch, in, out, height, width)
INT8_CASES = [
    pytest.param((1, 1, 0, 1, 1, 3, 8, 5, 5, 7), id="1x1"),
    pytest.param((1, 2, 0, 1, 1, 1, 5, 6, 7, 5), id="1x1-s2-odd-in"),
    pytest.param((3, 1, 1, 1, 1, 1, 5, 7, 9, 7), id="3x3-p1-odd-in"),
    pytest.param((3, 1, 0, 1, 1, 3, 4, 13, 8, 11), id="3x3-p0"),
    pytest.param((3, 2, 1, 1, 1, 3, 3, 6, 9, 9), id="3x3-s2-p1"),
    pytest.param((3, 2, "same", 1, 1, 1, 4, 4, 10, 7), id="3x3-s2-same"),
    pytest.param((3, 1, "same", 2, 1, 1, 2, 4, 9, 8), id="3x3-d2-same"),
    pytest.param((3, 2, 2, 2, 2, 1, 6, 4, 11, 9), id="3x3-s2-d2-g2"),
    pytest.param((5, 1, 2, 1, 2, 3, 6, 6, 7, 9), id="5x5-g2-odd-cg"),
    pytest.param((5, 2, "same", 1, 1, 1, 3, 3, 11, 13), id="5x5-s2-same"),
    pytest.param((3, 1, 1, 1, 4, 3, 4, 8, 7, 9), id="depthwise-x2"),
    pytest.param((3, 1, 1, 1, 1, 1, 3, 20, 3, 41), id="wide-rows"),
    pytest.param((3, 1, 1, 1, 1, 1, 3, 4, 1, 1), id="3x3-on-1x1"),
]

INT8_OPTS = [
    pytest.param({}, id="dynamic"),
    pytest.param({"activation_scale": 0.01}, id="static-saturating"),
]


@pytest.mark.parametrize("opts", INT8_OPTS)
@pytest.mark.parametrize("case", INT8_CASES)
def test_int8_conv_is_bit_exact(variant, case, opts):
    x, weight, bias, kw = make(case, seed=11, density=0.8)
    enc = kernels.encode(weight, "int8", **opts)
    for activation, b in ((None, None), ("relu", bias), ("relu6", bias)):
        got = kernels.conv2d(x, enc, b, activation=activation, **kw)
        want = reference(x, enc, b, activation, **kw)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def _unit_scale_int8(rng, shape):
    """An int8 weight whose every row has max |q| = 127, so its scale is exactly 1."""
    q = rng.integers(-127, 128, size=shape).astype(np.float32)
    q.reshape(shape[0], -1)[:, 0] = 127
    return q


@pytest.mark.parametrize("case", [INT8_CASES[i] for i in (0, 3, 4, 7, 8, 10)])
def test_int8_integer_accumulators_are_exact(variant, case):
    """Integer inputs with max |x| = 127 per image and unit weight scales: s_n = 1 and
    scale[o] = 1, so the output is the int32 accumulator itself (|acc| < 2^24)."""
    k, s, p, d, g, n, c, o, h, w = case
    rng = np.random.default_rng(12)
    x = rng.integers(-127, 128, size=(n, c, h, w)).astype(np.float32)
    x[:, 0, 0, 0] = -127
    weight = _unit_scale_int8(rng, (o, c // g, k, k))
    enc = kernels.encode(weight, "int8")
    assert np.all(enc.scale == 1) and np.array_equal(enc.decode(), weight)
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    got = kernels.conv2d(x, enc, **kw)
    geo = conv.geometry(x.shape, enc.shape, s, p, d, g)
    acc = conv.int8_accumulators(x.astype(np.int8), weight.astype(np.int8), geo)
    np.testing.assert_array_equal(got, acc.astype(np.float32))
    if torch is not None:  # the accumulators against an independent integer conv
        np.testing.assert_array_equal(acc, torch_conv(x, weight, None, **kw).astype(np.int64))


def test_int8_extreme_products_do_not_saturate(variant):
    """Every product is 127 * -127: int16 pair sums (vpmaddubsw-style) would saturate at
    -32768; the accumulators are exact int32."""
    x = np.full((2, 64, 6, 7), 127.0, np.float32)
    weight = np.full((3, 64, 3, 3), -127.0, np.float32)
    enc = kernels.encode(weight, "int8")
    assert np.all(enc.scale == 1)
    got = kernels.conv2d(x, enc)
    np.testing.assert_array_equal(got, np.full((2, 3, 4, 5), -127.0 * 127 * 64 * 9, np.float32))


@pytest.mark.parametrize("opts", INT8_OPTS)
def test_int8_rounding_ties_are_exact(variant, opts):
    """Activations at and one ulp around (n + 1/2)·s: round half to even of the float32
    quotient x / s on every backend (the C kernel estimates x / s by a product first)."""
    rng = np.random.default_rng(17)
    s = np.float32(opts.get("activation_scale", 3.0 / 127))
    halves = (rng.integers(-130, 130, size=(2, 4, 9, 10)) + 0.5) * np.float64(s)
    x = halves.astype(np.float32)
    x[:, 1] = np.nextafter(x[:, 1], np.float32(np.inf))
    x[:, 2] = np.nextafter(x[:, 2], np.float32(-np.inf))
    x[:, :, 0, 0] = 3.0  # dynamic: max |x| = 3, so s = 3 / 127 as above
    x = np.clip(x, -3, 3)
    weight = _unit_scale_int8(rng, (5, 4, 3, 3))
    enc = kernels.encode(weight, "int8", **opts)
    kw = dict(stride=1, padding=1, dilation=1, groups=1)
    np.testing.assert_array_equal(kernels.conv2d(x, enc, **kw), reference(x, enc, None, **kw))


def test_int8_quantizes_each_image_once():
    """The reference's quantization: one scale per image, max |x| over all its channels."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x[1, 2, 3, 4] = 50.0
    xq, s, bad = conv.quantize_images(x, None)
    amax = np.abs(x).reshape(2, -1).max(axis=1)
    np.testing.assert_array_equal(s, (amax / np.float32(127)).astype(np.float32))
    np.testing.assert_array_equal(xq, np.clip(np.rint(x / s[:, None, None, None]), -127, 127))
    assert not bad.any() and xq[1, 2, 3, 4] == 127 and np.abs(xq[1]).max() == 127


@pytest.mark.parametrize("opts", INT8_OPTS)
@pytest.mark.parametrize("case", [INT8_CASES[i] for i in (2, 8, 10)])
def test_int8_zero_and_non_finite_images(variant, case, opts):
    """A zero image gives y = act(bias) (scale 0, never NaN); an image holding NaN or
    Inf gives NaN everywhere; the other images are unaffected."""
    x, weight, bias, kw = make(case[:5] + (4,) + case[6:], seed=14)
    x[1] = 0
    x[2, 0, 0, 0] = np.nan
    x[3, -1, -1, -1] = -np.inf
    enc = kernels.encode(weight, "int8", **opts)
    got = kernels.conv2d(x, enc, bias, activation="relu", **kw)
    np.testing.assert_array_equal(got, reference(x, enc, bias, "relu", **kw))
    np.testing.assert_array_equal(got[1], np.broadcast_to(np.maximum(bias, 0)[:, None, None],
                                                          got[1].shape))  # fmt: skip
    assert np.isnan(got[2:]).all() and np.isfinite(got[:2]).all()
    alone = kernels.conv2d(x[:1], enc, bias, activation="relu", **kw)
    np.testing.assert_array_equal(alone, got[:1])


@pytest.mark.parametrize("opts", INT8_OPTS)
def test_int8_nan_in_an_unread_corner_still_makes_the_image_nan(variant, opts):
    """3x3 stride 3 on 8x8 reads rows and columns 0..5 only; a NaN at (7, 7) still
    counts: the image's outputs are NaN (the rule is per image, not per patch)."""
    x, weight, bias, kw = make((3, 3, 0, 1, 1, 2, 3, 4, 8, 8), seed=18)
    x[0, 2, 7, 7] = np.nan
    enc = kernels.encode(weight, "int8", **opts)
    got = kernels.conv2d(x, enc, bias, **kw)
    np.testing.assert_array_equal(got, reference(x, enc, bias, **kw))
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()


@needs_torch
@pytest.mark.parametrize("case", [INT8_CASES[i] for i in (3, 8)])
def test_int8_is_close_to_the_float_conv(case):
    """Per-image int8 activations x int8 weights stay near the float conv of the decoded
    weights: |error| <= (sum |w| over a patch) * s_n / 2 per output."""
    x, weight, bias, kw = make(case, seed=15)
    enc = kernels.encode(weight, "int8")
    got = kernels.conv2d(x, enc, bias, **kw)
    want = torch_conv(x, enc.decode(), bias, **kw)
    s = np.abs(x).reshape(x.shape[0], -1).max(axis=1) / 127
    wsum = np.abs(enc.decode()).reshape(enc.shape[0], -1).sum(axis=1)
    bound = s[:, None, None, None] * wsum[None, :, None, None] / 2 + 1e-5
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_int8_thread_count_does_not_change_results(backend):
    if backend not in kernels.available_backends():
        pytest.skip(f"backend {backend} is not available here")
    x, weight, bias, kw = make((3, 1, 1, 1, 1, 2, 16, 32, 23, 21), seed=16)  # parallel sizes
    enc = kernels.encode(weight, "int8")
    with kernels.using(backend=backend, threads=1):
        one = kernels.conv2d(x, enc, bias, **kw)
    with kernels.using(backend=backend, threads=2):
        two = kernels.conv2d(x, enc, bias, **kw)
    np.testing.assert_array_equal(one, two)


# ---------------------------------------------------------------------------------------
# plans, output sizes and what serves each row


def test_plan_runs_what_conv2d_runs_for_any_batch(variant):
    x, weight, bias, kw = make(CASES[7].values[0], seed=20)
    enc = kernels.encode(weight, "int8")
    plan = conv.plan_conv2d(enc, (None,) + x.shape[1:], bias, activation="relu", **kw)
    assert plan.out_shape[0] is None and plan.out_shape[1:] == plan.geometry.out_shape()[1:]
    for n in (1, 3):
        xs = np.ascontiguousarray(np.repeat(x, 3, axis=0)[:n])
        want = kernels.conv2d(xs, enc, bias, activation="relu", **kw)
        np.testing.assert_array_equal(plan(xs), want)
        out = np.empty_like(want)
        assert plan(xs, out=out) is out
        np.testing.assert_array_equal(out, want)


def test_plan_follows_backend_and_isa_changes():
    x, weight, bias, kw = make(CASES[2].values[0], seed=21)
    enc = kernels.encode(weight, "int8")
    plan = conv.plan_conv2d(enc, x.shape, bias, **kw)
    want = reference(x, enc, bias, **kw)
    for backend in kernels.available_backends():
        isas = kernels.supported_isas() if backend == "c" else [None]
        for isa in isas:
            with kernels.using(backend=backend, isa=isa):
                np.testing.assert_array_equal(plan(x), want)
                assert plan.backend == backend


def test_plan_checks_its_input_cheaply():
    x, weight, bias, kw = make(CASES[2].values[0], seed=22)
    plan = conv.plan_conv2d(weight, x.shape, bias, **kw)
    with pytest.raises(ValueError, match="float32"):
        plan(x.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        plan(np.asfortranarray(x))
    with pytest.raises(ValueError, match="expects x of shape"):
        plan(np.ascontiguousarray(x[:, :, :-1]))
    with pytest.raises(ValueError, match="expects x of shape"):
        plan(np.concatenate([x, x]))  # the plan was made for a fixed batch
    with pytest.raises(ValueError, match=r"out must have shape"):
        plan(x, out=np.empty((1, 1, 1, 1), np.float32))


def test_plan_validates_as_conv2d_does():
    w = np.zeros((6, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="expects 2 input channels per group"):
        conv.plan_conv2d(w, (None, 4, 5, 5))
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        conv.plan_conv2d(w, (1, 4, 5, 5), np.zeros(5, np.float32), groups=2)
    with pytest.raises(ValueError, match="activation"):
        conv.plan_conv2d(w, (1, 4, 5, 5), groups=2, activation="gelu")
    with pytest.raises(ValueError, match="NCHW"):
        conv.plan_conv2d(w, (4, 5, 5), groups=2)


@pytest.mark.parametrize("case", CASES)
def test_conv_output_shape_is_the_shape_conv2d_returns(case):
    x, weight, _, kw = make(case)
    want = kernels.conv2d(x, weight, **kw).shape
    assert conv.conv_output_shape(x.shape, weight.shape, **kw) == want
    assert conv.conv_output_shape((None,) + x.shape[1:], weight.shape, **kw) == (None,) + want[1:]


def test_every_c_slot_a_row_names_is_in_the_c_table():
    if "c" not in kernels.available_backends():
        pytest.skip("C kernel library not built")
    info = kernels.cpu_info()
    for name in registry.names():
        for op, regimes in registry.get(name).c_slots.items():
            for slot in regimes.values():
                assert slot in info["c_kernels"] or slot.startswith("pk_"), (name, op, slot)
        for op in registry.OPS:
            detail = info["serving_detail"][name][op]
            assert info["serving"][name][op] == list(detail.values())[-1]


def test_csr_batch_one_is_reported_on_its_slice_kernel():
    if "c" not in kernels.available_backends():
        pytest.skip("C kernel library not built")
    info = kernels.cpu_info()
    linear = info["serving_detail"]["csr"]["linear"]
    assert linear["batch 1"] == f"c:{info['c_kernels']['linear_csr_slices']}"
    assert linear["batch > 1"] == f"c:{info['c_kernels']['linear_csr']}"
