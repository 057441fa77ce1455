"""The runtime: every op against its PyTorch equivalent, planning (fusion, shapes), input
checks, errors naming the node, backends, and calls from several threads at once."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

import kernels
import pyinfer
from kernels import registry
from pyinfer import ops
from pyinfer.format import FormatError
from tests.conftest import encoding_cases, sparse_gaussian

RNG = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def one_op(op, x, *extra, **attrs):
    """Run a single node on x (extra inputs are constants) and return the output."""
    g = pyinfer.Graph()
    xi = g.input("x", [None, *x.shape[1:]], str(x.dtype))
    g.output(g.node(op, xi, *extra, **attrs))
    return g.build()(x)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is not installed; op semantics unchecked")


def close(got, want, rtol=1e-5, atol=1e-5):
    want = want.detach().numpy() if hasattr(want, "detach") else want
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ------------------------------------------------------------------ ops vs torch


@pytest.mark.parametrize(
    "op, attrs, fn",
    [
        ("Relu", {}, "relu"),
        ("Relu6", {}, "relu6"),
        ("Sigmoid", {}, "sigmoid"),
        ("Tanh", {}, "tanh"),
        ("Gelu", {}, "gelu"),
        ("Gelu", {"approximate": "tanh"}, "gelu_tanh"),
        ("HardSwish", {}, "hardswish"),
        ("Softmax", {"axis": -1}, "softmax-1"),
        ("Softmax", {"axis": 1}, "softmax1"),
    ],
)
def test_elementwise_ops_match_torch(torch, op, attrs, fn):
    F = torch.nn.functional
    x = randn(3, 5, 7, scale=6.0)
    x[0, 0, :3] = [-100.0, 100.0, 0.0]  # saturating sigmoid/tanh, exact zero
    t = torch.from_numpy(x)
    want = {
        "relu": F.relu,
        "relu6": F.relu6,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": F.gelu,
        "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
        "hardswish": F.hardswish,
        "softmax-1": lambda v: F.softmax(v, dim=-1),
        "softmax1": lambda v: F.softmax(v, dim=1),
    }[fn](t)
    close(one_op(op, x, **attrs), want)


def test_sigmoid_tails_keep_relative_precision(torch):
    x = np.array([[-80.0, -30.0, -10.0, 30.0]], np.float32)
    close(one_op("Sigmoid", x), torch.sigmoid(torch.from_numpy(x)), rtol=1e-5, atol=0)


def test_gelu_negative_tail(torch):
    x = np.linspace(-9, 9, 181, dtype=np.float32)[None]
    want = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    close(one_op("Gelu", x), want, rtol=2e-6, atol=1e-7)


def test_add_mul_matmul_broadcast_like_torch(torch):
    x = randn(4, 3, 5)
    b = randn(5)
    c = randn(3, 1)
    m = randn(5, 6)
    t = torch.from_numpy
    close(one_op("Add", x, b), t(x) + t(b))
    close(one_op("Mul", x, c), t(x) * t(c))
    close(one_op("MatMul", x, m), t(x) @ t(m), rtol=1e-5, atol=1e-5)
    g = pyinfer.Graph()  # two activations
    a, bb = g.input("a", (None, 3, 5)), g.input("b", (None, 5, 2))
    g.output(g.node("MatMul", a, bb))
    y = randn(4, 5, 2)
    close(g.build().run({"a": x, "b": y})["matmul0"], t(x) @ t(y))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("axis", [-1, -2])
def test_layernorm_matches_torch(torch, affine, axis):
    x = randn(2, 3, 4, 6, scale=3.0) + 5
    norm_shape = x.shape[axis:]
    params = [randn(*norm_shape), randn(*norm_shape)] if affine else []
    want = torch.nn.functional.layer_norm(
        torch.from_numpy(x), norm_shape, *(torch.from_numpy(p) for p in params), eps=1e-5
    )
    close(one_op("LayerNorm", x, *params, axis=axis, eps=1e-5), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0)), (1, 1, 0)]
)
def test_pooling_matches_torch(torch, kernel, stride, padding):
    F = torch.nn.functional
    x = randn(2, 3, 9, 8)
    t = torch.from_numpy(x)
    attrs = {"kernel_size": kernel, "padding": padding}
    if stride is not None:
        attrs["stride"] = stride
    close(one_op("MaxPool2d", x, **attrs), F.max_pool2d(t, kernel, stride, padding))
    close(one_op("AvgPool2d", x, **attrs), F.avg_pool2d(t, kernel, stride, padding))
    close(
        one_op("AvgPool2d", x, count_include_pad=False, **attrs),
        F.avg_pool2d(t, kernel, stride, padding, count_include_pad=False),
    )


def test_global_avg_pool_flatten_reshape_transpose(torch):
    x = randn(2, 3, 4, 5)
    t = torch.from_numpy(x)
    close(one_op("GlobalAvgPool", x), torch.nn.functional.adaptive_avg_pool2d(t, 1))
    close(one_op("GlobalAvgPool", x, keepdims=False), t.mean(dim=(2, 3)))
    close(one_op("Flatten", x), torch.flatten(t, 1))
    close(one_op("Flatten", x, start_dim=2), torch.flatten(t, 2))
    close(one_op("Reshape", x, shape=[0, -1, 5]), t.reshape(2, -1, 5))
    close(one_op("Transpose", x, perm=[0, 2, 3, 1]), t.permute(0, 2, 3, 1))


def test_concat_matches_torch(torch):
    x, y = randn(2, 3, 4), randn(2, 5, 4)
    close(one_op("Concat", x, y, axis=1), torch.cat([torch.from_numpy(x), torch.from_numpy(y)], 1))
    close(one_op("Concat", x, x, axis=-1), torch.cat([torch.from_numpy(x)] * 2, -1))


def test_gather_is_an_embedding(torch):
    table = randn(10, 6)
    ids = np.array([[1, 0, 9], [3, 3, 2]])
    want = torch.nn.functional.embedding(torch.from_numpy(ids), torch.from_numpy(table))
    g = pyinfer.Graph()
    i = g.input("ids", (None, 3), "int64")
    g.output(g.node("Gather", table, i))
    close(g.build()(ids), want)


def test_gather_out_of_range_names_the_node():
    g = pyinfer.Graph()
    i = g.input("ids", (None,), "int64")
    g.output(g.node("Gather", randn(4, 2), i, name="embed"))
    with pytest.raises(ValueError, match=r"node 'embed'.*\[-4, 4\)"):
        g.build()(np.array([1, 4]))


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_linear_every_encoding_matches_its_reference(name, opts):
    x = randn(5, 40)
    w = kernels.encode(sparse_gaussian(RNG, (12, 40)), name, **opts)
    b = randn(12)
    g = pyinfer.Graph()
    xi = g.input("x", (None, 40))
    g.output(g.node("Relu", g.linear(xi, w, b)))
    model = g.build()
    assert [n.op for n in model.planned_nodes] == ["Linear"]  # relu fused
    row = registry.get(name)
    want = row.reference_linear(x, w, b, "relu")
    np.testing.assert_allclose(model(x), want, rtol=row.rtol, atol=row.rtol * np.abs(want).max())


def test_linear_matches_torch_on_3d_input(torch):
    x, w, b = randn(2, 7, 16), randn(8, 16), randn(8)
    g = pyinfer.Graph()
    g.output(g.linear(g.input("x", (None, 7, 16)), w, b, encoding="csr"))
    want = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))
    close(g.build()(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "stride, padding, dilation, groups",
    [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), ((2, 1), (0, 1), 1, 1), (1, 1, 1, 2), (1, 1, 1, 4)],
)
def test_conv2d_matches_torch(torch, stride, padding, dilation, groups):
    x = randn(2, 4, 9, 7)
    w = sparse_gaussian(RNG, (8, 4 // groups, 3, 3), 0.6)
    b = randn(8)
    g = pyinfer.Graph()
    xi = g.input("x", (None, 4, 9, 7))
    y = g.conv2d(xi, w, b, stride, padding, dilation, groups, encoding="csr")
    g.output(g.node("Relu", y))
    model = g.build()
    assert [n.op for n in model.planned_nodes] == ["Conv2d"]
    want = torch.relu(
        torch.nn.functional.conv2d(
            torch.from_numpy(x),
            torch.from_numpy(w),
            torch.from_numpy(b),
            stride,
            padding,
            dilation,
            groups,
        )
    )
    close(model(x), want, rtol=1e-4, atol=1e-4)
    assert model.shapes[model.output_names[0]][1:] == tuple(want.shape[1:])


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_conv2d_every_encoding_through_a_file(tmp_path, name, opts):
    x = randn(2, 4, 6, 5)
    w = kernels.encode(sparse_gaussian(RNG, (6, 2, 3, 3), 0.5), name, **opts)
    b = randn(6)
    g = pyinfer.Graph()
    y = g.conv2d(g.input("x", (None, 4, 6, 5)), w, b, padding=1, groups=2, name="conv")
    g.output(g.node("Relu6", y))
    pyinfer.save(g, tmp_path / "c.pinf")
    model = pyinfer.load(tmp_path / "c.pinf")
    assert model.weights["conv.weight"].shape == (6, 2, 3, 3)
    want = kernels.conv2d(x, w, b, padding=1, groups=2, activation="relu6")
    np.testing.assert_array_equal(model(x), want)


def test_conv2d_step_takes_views_and_free_spatial_sizes():
    w, b = randn(6, 4, 3, 3), randn(6)
    g = pyinfer.Graph()
    x = g.input("x", (None, 5, 7, 4))  # NHWC in: the Transpose hands the conv a view
    h = g.node("Transpose", x, perm=[0, 3, 1, 2])
    g.output(g.conv2d(h, w, b, padding=1, activation="relu"))
    model = g.build()
    xv = randn(2, 5, 7, 4)
    want = kernels.conv2d(xv.transpose(0, 3, 1, 2), w, b, padding=1, activation="relu")
    np.testing.assert_array_equal(model(xv), want)

    g = pyinfer.Graph()  # H and W unknown until a call: planned per input size
    h = g.conv2d(g.input("x", (None, 4, None, None)), w, b, stride=2)
    g.output(g.node("MaxPool2d", h, kernel_size=2))
    model = g.build()
    assert model.shapes[model.output_names[0]] == (None, 6, None, None)
    for hw in [(9, 7), (12, 12)]:
        xv = randn(1, 4, *hw)
        y = kernels.conv2d(xv, w, b, stride=2)
        want = y[:, :, : y.shape[2] // 2 * 2, : y.shape[3] // 2 * 2]
        want = want.reshape(1, 6, y.shape[2] // 2, 2, y.shape[3] // 2, 2).max(axis=(3, 5))
        np.testing.assert_array_equal(model(xv), want)


def test_conv2d_sizes_are_checked_at_plan_time():
    g = pyinfer.Graph()
    g.output(g.conv2d(g.input("x", (None, 4, 2, 2)), randn(6, 4, 3, 3), name="c"))
    with pytest.raises(FormatError, match=r"node 'c' \(Conv2d\).*larger than the padded input"):
        g.build()
    g = pyinfer.Graph()
    g.output(g.node("AvgPool2d", g.input("x", (None, 4, 2, 2)), kernel_size=3, name="p"))
    with pytest.raises(FormatError, match=r"node 'p' \(AvgPool2d\).*larger than the padded"):
        g.build()


# ------------------------------------------------------------------ planning


def mlp(layers=3, width=16, encoding="dense", seed=0):
    rng = np.random.default_rng(seed)
    g = pyinfer.Graph()
    h = g.input("x", (None, width))
    for _ in range(layers):
        w = rng.standard_normal((width, width)).astype(np.float32) / 4
        h = g.node("Relu", g.linear(h, w, rng.standard_normal(width), encoding=encoding))
    g.output(h)
    return g


def test_fusion_only_when_the_relu_is_the_sole_consumer():
    g = pyinfer.Graph()
    x = g.input("x", (None, 8))
    h = g.linear(x, randn(8, 8), randn(8), name="fc")
    r = g.node("Relu6", h)
    g.output(g.node("Add", r, h))  # h is used twice: not fused
    model = g.build()
    assert [n.op for n in model.planned_nodes] == ["Linear", "Relu6", "Add"]
    xv = randn(3, 8)
    hv = xv @ model.weights["fc.weight"].decode().T + model.constants["fc.bias"]
    np.testing.assert_allclose(model(xv), np.clip(hv, 0, 6) + hv, rtol=1e-5, atol=1e-5)

    fused = mlp(3).build()
    assert [n.attrs["activation"] for n in fused.planned_nodes] == ["relu"] * 3
    assert len(fused.nodes) == 6  # the stored graph keeps its nodes


def test_fused_equals_unfused():
    g = mlp(4, encoding="csr")
    model = g.build()
    x = randn(5, 16)
    y = x
    for node in model.nodes:
        if node.op == "Linear":
            y = kernels.linear(y, node.static[1], node.static[2])
        else:
            y = np.maximum(y, 0)
    np.testing.assert_array_equal(model(x), y)


def test_shapes_are_inferred_and_checked_at_plan_time():
    g = pyinfer.Graph()
    x = g.input("x", (None, 3, 8, 8))
    h = g.conv2d(x, randn(4, 3, 3, 3), padding=1, stride=2)
    h = g.node("Flatten", g.node("MaxPool2d", h, kernel_size=2))
    g.output(g.linear(h, randn(10, 16)))
    model = g.build()
    assert model.shapes[model.output_names[0]] == (None, 10)
    bad = pyinfer.Graph()
    x = bad.input("x", (None, 3, 8, 8))
    h = bad.node("Flatten", bad.conv2d(x, randn(4, 3, 3, 3)))
    bad.output(bad.linear(h, randn(10, 16), name="head"))
    with pytest.raises(FormatError, match=r"node 'head' \(Linear\).*144 features.*expects 16"):
        bad.build()


def test_batch_is_free_and_inputs_are_checked():
    model = mlp(2).build()
    for batch in (1, 7, 64):
        assert model(randn(batch, 16)).shape == (batch, 16)
    assert model(randn(0, 16)).shape == (0, 16)
    assert model(np.ones((2, 16), np.float64)).dtype == np.float32  # floats convert
    with pytest.raises(ValueError, match=r"input 'x' must have shape \[\?, 16\], got \[2, 15\]"):
        model(randn(2, 15))
    with pytest.raises(ValueError, match="input 'x' must have shape"):
        model(randn(16))
    with pytest.raises(TypeError, match="input 'x' must hold floats"):
        model(np.ones((2, 16), np.int32))
    with pytest.raises(ValueError, match=r"takes inputs \['x'\]"):
        model.run({"y": randn(1, 16)})


def test_integer_inputs_convert_to_their_declared_dtype():
    g = pyinfer.Graph()
    ids = g.input("ids", (None, 3), "int64")
    g.output(g.node("Add", ids, np.array([1], np.int64)))
    model = g.build()
    out = model(np.array([[1, 2, 3]], np.int32))
    assert out.dtype == np.int64 and out.tolist() == [[2, 3, 4]]
    with pytest.raises(TypeError, match=r"input 'ids' must hold integers \(int64\)"):
        model(np.ones((1, 3), np.float32))
    g = pyinfer.Graph()
    small = g.input("small", (None,), "int32")
    g.output(g.node("Neg", small))
    with pytest.raises(ValueError, match=r"'small' holds values in \[0, 4294967296\]"):
        g.build()(np.array([0, 2**32], np.int64))
    g = pyinfer.Graph()
    flags = g.input("flags", (None,), "bool")
    g.output(g.node("Not", flags))
    model = g.build()
    assert model(np.array([True, False])).tolist() == [False, True]
    with pytest.raises(TypeError, match="input 'flags' must hold bools"):
        model(np.array([1, 0]))


def test_free_dims_of_one_name_must_agree():
    graph = {
        "inputs": [
            {"name": "a", "shape": [None, None], "dtype": "int64", "dim_names": ["b", "s"]},
            {"name": "m", "shape": [None, None], "dtype": "int64", "dim_names": ["b", "s"]},
            {"name": "c", "shape": [None, 2], "dtype": "int64"},  # old files: no names
        ],
        "outputs": ["y"],
        "nodes": [{"name": "y", "op": "Add", "inputs": ["a", "m"], "outputs": ["y"]}],
    }
    model = pyinfer.Model(graph)
    ones = np.ones((2, 3), np.int64)
    assert model.run({"a": ones, "m": ones, "c": np.ones((5, 2), int)})["y"].sum() == 12
    with pytest.raises(ValueError, match=r"disagree on the size 's': 'a' axis 1 is 3, 'm' axis"):
        model.run({"a": ones, "m": ones[:, :1], "c": ones[:, :2]})
    graph["inputs"][0]["dim_names"] = ["b"]
    with pytest.raises(FormatError, match="graph input 'a': dim_names must give"):
        pyinfer.Model(graph)
    graph["inputs"][0]["dim_names"] = ["b", "s"]
    graph["inputs"][2]["dim_names"] = [None, "fixed"]  # names only free dims
    with pytest.raises(FormatError, match="graph input 'c': dim_names"):
        pyinfer.Model(graph)


def mask_graph():
    """ids -> Equal(ids, 0) -> Where(-inf, 0) and an HF-style additive mask from a
    second int64 input; every intermediate dtype in play."""
    g = pyinfer.Graph()
    ids = g.input("ids", (None, None), "int64")
    mask = g.input("mask", (None, None), "int64")
    pad = g.node("Equal", ids, np.array([0], np.int64), name="pad")
    keep = g.node("Not", pad, name="keep")
    both = g.node("And", keep, g.node("Cast", mask, to="bool"), name="both")
    fill = g.node("Where", pad, np.float32([-np.inf]), np.float32([0]), name="fill")
    additive = g.node(
        "Mul",
        g.node("Sub", np.float32([1]), g.node("Cast", mask, to="float32")),
        np.float32([-1e4]),
    )
    g.output(fill, additive, g.node("Cast", both, to="int32", name="count"), keep)
    return g


def test_mask_ops_and_their_dtypes():
    model = mask_graph().build()
    ids = np.array([[3, 4, 0], [5, 0, 0]])
    mask = np.array([[1, 1, 0], [1, 0, 1]])
    fill, additive, count, keep = model.run({"ids": ids, "mask": mask}).values()
    np.testing.assert_array_equal(fill, np.where(ids == 0, -np.inf, 0).astype(np.float32))
    np.testing.assert_array_equal(additive, ((1 - mask) * -1e4).astype(np.float32))
    np.testing.assert_array_equal(count, ((ids != 0) & (mask != 0)).astype(np.int32))
    assert (fill.dtype, additive.dtype, count.dtype, keep.dtype) == (
        np.float32,
        np.float32,
        np.int32,
        np.bool_,
    )
    assert model.dtypes["pad"] == np.bool_ and model.dtypes["both"] == np.bool_


@pytest.mark.parametrize(
    "op, fn",
    [("Less", np.less), ("Greater", np.greater), ("LessOrEqual", np.less_equal),
     ("GreaterOrEqual", np.greater_equal), ("Equal", np.equal)],
)  # fmt: skip
def test_comparisons_of_ints_and_floats(op, fn):
    for x, c in [(np.array([[1, 2, 3]]), np.array([2])), (randn(2, 5), np.float32([0.1]))]:
        np.testing.assert_array_equal(one_op(op, x, c), fn(x, c))


def test_integer_arithmetic_and_shape_ops_keep_the_dtype():
    g = pyinfer.Graph()
    ids = g.input("ids", (None, 4), "int64")
    h = g.node("Sub", g.node("Mul", ids, np.array([2], np.int64)), np.array([1], np.int64))
    h = g.node("Unsqueeze", g.node("Max", h, np.array([0], np.int64)), axes=[1])
    h = g.node("Transpose", g.node("Concat", h, h, axis=1), perm=[0, 2, 1])
    h = g.node("Reshape", h, shape=[0, -1])
    h = g.node("Slice", h, starts=[1], ends=[7], axes=[1])
    g.output(g.node("Expand", g.node("Squeeze", g.node("Unsqueeze", h, axes=[0]), axes=[0]),
                    shape=[3, 1, 1]))  # fmt: skip
    x = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    y = np.maximum(x * 2 - 1, 0)[:, None]
    want = np.concatenate([y, y], 1).transpose(0, 2, 1).reshape(2, -1)[:, 1:7]
    got = g.build()(x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.broadcast_to(want, (3, 2, 6)))


def test_gather_takes_int_and_bool_data():
    table = np.array([[1, 0], [0, 1], [1, 1]], np.bool_)
    g = pyinfer.Graph()
    ids = g.input("ids", (None,), "int64")
    g.output(g.node("Gather", table, ids, axis=0))
    out = g.build()(np.array([2, 0]))
    assert out.dtype == np.bool_ and out.tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda g, i, f: g.node("Where", f, f, f, name="n"),
         r"node 'n' \(Where\): input 'f' must be bool, got float32"),
        (lambda g, i, f: g.node("Where", g.node("Equal", i, i), f, i, name="n"),
         r"node 'n' \(Where\): inputs 'f' \(float32\) and 'i' \(int64\) must have the same"),
        (lambda g, i, f: g.node("Add", i, f, name="n"),
         r"node 'n' \(Add\): inputs 'i' \(int64\) and 'f' \(float32\) must have the same"),
        (lambda g, i, f: g.node("Div", i, i, name="n"),
         r"node 'n' \(Div\): input 'i' must be float32, got int64"),
        (lambda g, i, f: g.node("Softmax", g.node("Equal", f, f, name="e"), name="n"),
         r"node 'n' \(Softmax\): input 'e' must be float32, got bool"),
        (lambda g, i, f: g.node("Not", i, name="n"), r"node 'n' \(Not\): input 'i' must be bool"),
        (lambda g, i, f: g.node("Less", g.node("Not", g.node("Equal", i, i)), f, name="n"),
         r"node 'n' \(Less\): input 'not0' must be one of float32, int64, int32, got bool"),
        (lambda g, i, f: g.node("Gather", f, f, name="n"),
         r"node 'n' \(Gather\): input 'f' must hold integers, got float32"),
        (lambda g, i, f: g.node("Reshape", np.zeros(2, np.uint8), shape=[2], name="n"),
         r"node 'n' \(Reshape\): input 'const0' must be one of .*got uint8"),
        (lambda g, i, f: g.node("Cast", i, to="float64", name="n"),
         r"node 'n' \(Cast\): attribute 'to' must be one of \['float32', 'int64'"),
    ],
)  # fmt: skip
def test_dtypes_are_checked_at_plan_time_naming_node_and_value(build, message):
    g = pyinfer.Graph()
    i, f = g.input("i", (None, 3), "int64"), g.input("f", (None, 3))
    g.output(build(g, i, f))
    with pytest.raises(FormatError, match=message):
        g.build()


def test_call_needs_one_input_and_output():
    g = pyinfer.Graph()
    a, b = g.input("a", (None, 4)), g.input("b", (None, 4))
    s = g.node("Add", a, b)
    g.output(s, g.node("Mul", a, b))
    model = g.build()
    with pytest.raises(TypeError, match="model.run"):
        model(randn(1, 4))
    out = model.run({"a": np.ones((1, 4)), "b": np.full((1, 4), 2.0)})
    assert list(out) == [s, "mul0"] and out["mul0"][0, 0] == 2


def test_graph_errors_name_the_node():
    g = pyinfer.Graph()
    x = g.input("x", (None, 4))
    g.output(g.node("Softmax", x, axis=3, name="sm"))
    with pytest.raises(FormatError, match=r"node 'sm' \(Softmax\): axis 3 is out of range"):
        g.build()
    g = pyinfer.Graph()
    x = g.input("x", (None, 4))
    g.output(g.node("Reshape", x, shape=[-1, -1], name="r"))
    with pytest.raises(FormatError, match="node 'r'.*at most one -1"):
        g.build()
    g = pyinfer.Graph()
    x = g.input("x", (None, 4))
    g.output(g.node("Transpose", x, perm=[0, 0], name="t"))
    with pytest.raises(FormatError, match="node 't'.*not a permutation"):
        g.build()
    g = pyinfer.Graph()
    x = g.input("x", (None, 4))
    with pytest.raises(ValueError, match="already used"):
        g.node("Relu", x, name="x")


def test_every_op_is_documented_and_listed():
    assert {"Linear", "Gemm", "Conv2d", "Gather", "LayerNorm", "MatMul"} <= set(ops.names())
    for name in ops.names():
        assert ops.spec(name).description, name
    with pytest.raises(ValueError, match="unknown op 'Nope'.*Add"):
        ops.spec("Nope")


def test_the_planner_reads_op_properties_from_the_spec():
    relu = ops.spec("Relu")
    ops.register(dataclasses.replace(relu, name="ClampLow", as_activation="relu"))
    ops.register(dataclasses.replace(ops.spec("Reshape"), name="ViewAs"))
    try:
        g = pyinfer.Graph()
        h = g.node("ClampLow", g.linear(g.input("x", (None, 8)), randn(8, 8), name="fc"))
        h = g.node("ViewAs", h, shape=[-1, 2, 4])
        g.output(g.node("Add", h, h))
        model = g.build()
        assert [n.op for n in model.planned_nodes] == ["Linear", "ViewAs", "Add"]
        assert model.planned_nodes[0].attrs["activation"] == "relu"
        assert model.planned_nodes[0].buffer == 0  # its view is read by Add, not returned
        x = randn(3, 8)
        hv = np.maximum(x @ model.weights["fc.weight"].decode().T, 0).reshape(-1, 2, 4)
        np.testing.assert_allclose(model(x), hv + hv, rtol=1e-5, atol=1e-6)
    finally:
        del ops.OPS["ClampLow"], ops.OPS["ViewAs"]


# ------------------------------------------------------------------ backends, threads


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_backend_setting_is_followed(backend):
    model = mlp(3, encoding="csr").build()
    x = randn(4, 16)
    want = model(x)
    with kernels.using(backend=backend):
        np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-5)
        assert model._compiled.backend == backend


def test_gemm_is_linear():
    g = mlp(2)
    for node in g.nodes:
        if node["op"] == "Linear":
            node["op"] = "Gemm"
    x = randn(3, 16)
    np.testing.assert_array_equal(g.build()(x), mlp(2).build()(x))


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_one_model_many_threads(backend):
    with kernels.using(backend=backend):
        check_threads(mlp(6, width=32, encoding="csr").build(), 60 if backend == "c" else 12)


def check_threads(model, reps):
    inputs = [randn(b, 32) for b in (1, 3, 8, 2, 5, 1, 16, 4)]
    want = [model(x) for x in inputs]
    errors = []
    barrier = threading.Barrier(4)

    def worker(k):
        try:
            barrier.wait()
            for rep in range(reps):
                i = (k + rep) % len(inputs)
                np.testing.assert_array_equal(model(inputs[i]), want[i])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_chains_ping_pong_between_two_buffers():
    model = mlp(5).build()
    assert [n.buffer for n in model.planned_nodes] == [0, 1, 0, 1, None]  # output: fresh
    fresh = pyinfer.Model(model.graph, model.weights, model.constants, reuse_buffers=False)
    assert all(n.buffer is None for n in fresh.planned_nodes)
    x = randn(3, 16)
    for batch in (3, 1, 3):  # buffers re-sized when the batch changes
        np.testing.assert_array_equal(model(x[:batch]), fresh(x[:batch]))


def test_buffers_are_not_reused_while_a_view_lives():
    rng = np.random.default_rng(5)
    g = pyinfer.Graph()
    h0 = g.linear(g.input("x", (None, 16)), rng.standard_normal((16, 16)), name="a")
    view = g.node("Reshape", h0, shape=[-1, 4, 4])  # a view of a's buffer
    h = h0
    for i in range(3):
        h = g.linear(h, rng.standard_normal((16, 16)), name=f"b{i}")
    flat = g.node("Flatten", view)
    g.output(g.node("Add", h, flat))  # a's buffer must survive until here
    model = g.build()
    fresh = pyinfer.Model(model.graph, model.weights, model.constants, reuse_buffers=False)
    ids = {n.name: n.buffer for n in model.planned_nodes}
    assert ids["a"] not in (ids["b0"], ids["b1"], ids["b2"])
    x = randn(4, 16)
    np.testing.assert_array_equal(model(x), fresh(x))
    np.testing.assert_array_equal(model(x), fresh(x))


def test_outputs_are_fresh_arrays():
    model = mlp(2).build()
    x = randn(2, 16)
    a, b = model(x), model(x)
    assert not np.shares_memory(a, b)
    a[...] = 0
    assert np.any(model(x))
