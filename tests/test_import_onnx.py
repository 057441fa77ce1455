"""pyinfer.from_onnx and pyinfer.from_torch against the ONNX reference evaluator and ONNX
Runtime on the same file: an MLP, a CNN (BatchNorm, ReLU6, depthwise, residual, pooling,
Gemm) exported from PyTorch and built by hand, and a TransformerEncoder with free batch and
sequence sizes; plus the errors for what cannot be imported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[convert]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import pyinfer  # noqa: E402
from pyinfer.convert import OnnxImportError  # noqa: E402

RNG = np.random.default_rng(0)
RTOL = 1e-4


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def oracles(model_or_path):
    """Run functions giving the expected outputs: the ONNX reference evaluator, and ONNX
    Runtime when it is installed."""
    proto = onnx.load(model_or_path) if isinstance(model_or_path, str) else model_or_path
    ref = ReferenceEvaluator(proto)
    runs = [lambda feeds: ref.run(None, feeds)]
    try:
        import onnxruntime as ort
    except ImportError:
        return runs
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    runs.append(lambda feeds: sess.run(None, feeds))
    return runs


def assert_matches(model, proto, feeds):
    """``model`` agrees with every oracle within RTOL (relative to the output's scale)."""
    got = model.run(feeds)
    got = [got[name] for name in model.output_names]
    for run in oracles(proto):
        want = run(feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            scale = max(float(np.abs(w).max()), 1e-6)
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=RTOL * scale)


# ------------------------------------------------------------------ hand-built graphs


def cnn_proto(opset: int = 17) -> onnx.ModelProto:
    """Conv -> BN -> Clip(0, 6) -> depthwise Conv -> BN -> Clip -> residual Add ->
    MaxPool -> GlobalAveragePool -> Flatten -> Gemm, batch free."""
    c = 8

    def bn(prefix):
        return [
            numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}.g"),
            numpy_helper.from_array(randn(c, scale=0.1), f"{prefix}.b"),
            numpy_helper.from_array(randn(c, scale=0.1), f"{prefix}.mean"),
            numpy_helper.from_array(RNG.uniform(0.5, 2.0, c).astype(np.float32), f"{prefix}.var"),
        ]

    inits = [
        numpy_helper.from_array(randn(c, 3, 3, 3, scale=0.3), "conv1.weight"),
        numpy_helper.from_array(randn(c, 1, 3, 3, scale=0.3), "dw.weight"),
        numpy_helper.from_array(randn(c, scale=0.1), "dw.bias"),
        numpy_helper.from_array(randn(10, c, scale=0.3), "fc.weight"),
        numpy_helper.from_array(randn(10, scale=0.1), "fc.bias"),
        numpy_helper.from_array(np.float32(0), "zero"),
        numpy_helper.from_array(np.float32(6), "six"),
        *bn("bn1"),
        *bn("bn2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "bn1.g", "bn1.b", "bn1.mean", "bn1.var"], ["b1"], "bn1"
        ),
        helper.make_node("Clip", ["b1", "zero", "six"], ["r1"], "relu6_1"),
        helper.make_node(
            "Conv", ["r1", "dw.weight", "dw.bias"], ["c2"], "dw", pads=[1, 1, 1, 1], group=c
        ),
        helper.make_node(
            "BatchNormalization", ["c2", "bn2.g", "bn2.b", "bn2.mean", "bn2.var"], ["b2"], "bn2"
        ),
        helper.make_node("Clip", ["b2", "zero", "six"], ["r2"], "relu6_2"),
        helper.make_node("Add", ["r1", "r2"], ["res"], "residual"),
        helper.make_node("MaxPool", ["res"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def test_hand_built_cnn_matches_and_folds_batchnorm():
    proto = cnn_proto()
    model = pyinfer.from_onnx(proto)
    ops = [n.op for n in model.nodes]
    assert "BatchNormalization" not in ops and ops.count("Conv2d") == 2
    assert ops == ["Conv2d", "Relu6", "Conv2d", "Relu6", "Add"] + [
        "MaxPool2d",
        "GlobalAvgPool",
        "Flatten",
        "Linear",
    ]
    names = {n.name for n in model.nodes if n.op in ("Conv2d", "Linear")}
    assert names == {"conv1", "dw", "fc"}
    assert model.nodes[2].attrs["groups"] == 8
    for batch in (1, 5):
        assert_matches(model, proto, {"x": randn(batch, 3, 8, 8)})


def test_batchnorm_alone_is_kept_as_scale_and_shift():
    c = 4
    params = [RNG.uniform(0.5, 1.5, c), randn(c), randn(c), RNG.uniform(0.5, 2, c)]
    names = ["g", "b", "m", "v"]
    inits = [numpy_helper.from_array(np.float32(p), n) for p, n in zip(params, names)]
    graph = helper.make_graph(
        [helper.make_node("BatchNormalization", ["x", *names], ["y"], "bn")],
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, c, 5, 5])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model = pyinfer.from_onnx(proto)
    assert [n.op for n in model.nodes] == ["Mul", "Add"]
    assert_matches(model, proto, {"x": randn(2, c, 5, 5)})


def test_path_and_model_proto_give_the_same_model(tmp_path):
    proto = cnn_proto()
    path = tmp_path / "cnn.onnx"
    onnx.save(proto, path)
    x = randn(3, 3, 8, 8)
    from_path = pyinfer.from_onnx(str(path))
    np.testing.assert_array_equal(from_path(x), pyinfer.from_onnx(proto)(x))
    assert_matches(from_path, str(path), {"x": x})


def test_imported_model_round_trips_through_a_file(tmp_path):
    model = pyinfer.from_onnx(cnn_proto())
    pyinfer.save(model, tmp_path / "cnn.pinf")
    loaded = pyinfer.load(tmp_path / "cnn.pinf")
    x = randn(2, 3, 8, 8)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert [n.name for n in loaded.nodes] == [n.name for n in model.nodes]


@pytest.mark.parametrize("gelu_order", ["x*(1+erf)*0.5", "(x*0.5)*(1+erf)"])
def test_decomposed_layernorm_and_gelu_fold_into_one_op(gelu_order):
    """The spelled-out forms some exporters write: ReduceMean/Sub/Pow/Sqrt/Div and
    x * 0.5 * (1 + erf(x / sqrt 2)) become LayerNorm and Gelu."""
    d = 16
    inits = [
        numpy_helper.from_array(np.float32(v), n)
        for v, n in [(2.0, "two"), (1e-5, "eps"), (np.sqrt(2.0), "sqrt2"), (1.0, "one")]
    ]
    inits += [
        numpy_helper.from_array(np.float32(0.5), "half"),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, d).astype(np.float32), "gamma"),
        numpy_helper.from_array(randn(d), "beta"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x", "last"], ["mu"], "mean"),
        helper.make_node("Sub", ["x", "mu"], ["xc"], "center"),
        helper.make_node("Pow", ["xc", "two"], ["sq"], "square"),
        helper.make_node("ReduceMean", ["sq", "last"], ["var"], "var"),
        helper.make_node("Add", ["var", "eps"], ["ve"], "add_eps"),
        helper.make_node("Sqrt", ["ve"], ["std"], "std"),
        helper.make_node("Div", ["xc", "std"], ["xn"], "normalize"),
        helper.make_node("Mul", ["xn", "gamma"], ["xs"], "scale"),
        helper.make_node("Add", ["xs", "beta"], ["ln"], "shift"),
        helper.make_node("Div", ["ln", "sqrt2"], ["z"], "gelu_div"),
        helper.make_node("Erf", ["z"], ["e"], "gelu_erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], "gelu_add"),
    ]
    if gelu_order == "x*(1+erf)*0.5":
        nodes += [
            helper.make_node("Mul", ["ln", "e1"], ["g"], "gelu_mul"),
            helper.make_node("Mul", ["g", "half"], ["y"], "gelu_half"),
        ]
    else:
        nodes += [
            helper.make_node("Mul", ["half", "ln"], ["g"], "gelu_half"),
            helper.make_node("Mul", ["g", "e1"], ["y"], "gelu_mul"),
        ]
    graph = helper.make_graph(
        nodes,
        "ln_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model = pyinfer.from_onnx(proto)
    assert [n.op for n in model.nodes] == ["LayerNorm", "Gelu"]
    for shape in [(2, 3, d), (1, 7, d)]:
        assert_matches(model, proto, {"x": randn(*shape, scale=3.0)})


def test_elementwise_reduction_and_shape_ops_match():
    """Each op the importer maps one to one, on a [batch, 4, 6] input with a free batch."""
    c = {
        "pos": np.float32(0.5),
        "vec": randn(6),
        "lo": np.float32(-1.0),
        "hi": np.float32(2.0),
        "ax1": np.array([1], np.int64),
        "ax_last": np.array([-1], np.int64),
        "starts": np.array([1, 0], np.int64),
        "ends": np.array([3, 100], np.int64),
        "axes": np.array([1, 2], np.int64),
        "steps": np.array([1, 2], np.int64),
        "pads": np.array([0, 1, 0, 0, 2, 1], np.int64),
        "shape": np.array([2, 1, 1, 1], np.int64),
        "flat": np.array([0, -1], np.int64),
    }
    nodes = [
        ("Abs", ["x"], {}),
        ("Neg", ["x"], {}),
        ("Exp", ["x"], {}),
        ("Erf", ["x"], {}),
        ("Sigmoid", ["x"], {}),
        ("HardSigmoid", ["x"], {"alpha": 0.3}),
        ("Tanh", ["x"], {}),
        ("Sqrt", ["p"], {}),
        ("Log", ["p"], {}),
        ("Reciprocal", ["p"], {}),
        ("Sub", ["x", "vec"], {}),
        ("Div", ["x", "p"], {}),
        ("Pow", ["p", "pos"], {}),
        ("Max", ["x", "vec"], {}),
        ("Min", ["x", "vec"], {}),
        ("Clip", ["x", "lo", "hi"], {}),
        ("Relu", ["x"], {}),
        ("ReduceMean", ["x", "ax1"], {"keepdims": 0}),
        ("ReduceSum", ["x", "ax_last"], {}),
        ("ReduceMax", ["x", "ax1"], {}),
        ("Softmax", ["x"], {"axis": 1}),
        ("Transpose", ["x"], {"perm": [0, 2, 1]}),
        ("Slice", ["x", "starts", "ends", "axes", "steps"], {}),
        ("Pad", ["x", "pads"], {}),
        ("Unsqueeze", ["x", "ax1"], {}),
        ("Reshape", ["x", "flat"], {}),
        ("Flatten", ["x"], {"axis": 2}),
        ("Concat", ["x", "x"], {"axis": -1}),
        ("Expand", ["x", "shape"], {}),
    ]
    onnx_nodes = [
        helper.make_node("Abs", ["x"], ["ax"], "abs_for_p"),
        helper.make_node("Add", ["ax", "pos"], ["p"], "positive"),
    ]
    outputs = []
    for k, (op, ins, attrs) in enumerate(nodes):
        onnx_nodes.append(helper.make_node(op, ins, [f"y{k}"], f"{op.lower()}_{k}", **attrs))
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        onnx_nodes,
        "ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])],
        outputs,
        [numpy_helper.from_array(v, k) for k, v in c.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model = pyinfer.from_onnx(proto)
    assert len(model.nodes) == len(onnx_nodes)  # one runtime op each
    for batch in (1, 2):
        assert_matches(model, proto, {"x": randn(batch, 4, 6, scale=2.0)})


def test_split_and_outputs_keep_their_onnx_names():
    graph = helper.make_graph(
        [
            helper.make_node("Split", ["x", "sizes"], ["a", "b"], "split", axis=-1),
            helper.make_node("Identity", ["a"], ["first"], "identity"),
            helper.make_node("Relu", ["b"], ["second"], "relu"),
        ],
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6])],
        [
            helper.make_tensor_value_info("first", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("second", TensorProto.FLOAT, None),
        ],
        [numpy_helper.from_array(np.array([2, 4], np.int64), "sizes")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model = pyinfer.from_onnx(proto)
    assert model.output_names == ["first", "second"]
    assert_matches(model, proto, {"x": randn(2, 3, 6)})


def test_reshape_whose_size_only_a_run_knows():
    """[batch, 6] -> [-1, 4]: 6 * batch / 4 is no whole size before a run."""
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], "reshape"),
            helper.make_node("Relu", ["r"], ["y"], "relu"),
        ],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = pyinfer.from_onnx(proto)
    assert model.nodes[0].attrs["shape"] == (-1, 4)
    for batch in (2, 6):
        assert_matches(model, proto, {"x": randn(batch, 6)})


def test_hard_swish_spelled_out_becomes_one_op():
    graph = helper.make_graph(
        [
            helper.make_node("HardSigmoid", ["x"], ["hs"], "hs", alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", ["x", "hs"], ["y"], "mul"),
        ],
        "hardswish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = pyinfer.from_onnx(proto)
    assert [n.op for n in model.nodes] == ["HardSwish"]
    assert_matches(model, proto, {"x": randn(4, 5, scale=4.0)})


def test_embeddings_with_positions_up_to_the_sequence_length():
    """BERT-style input: token and position embeddings, the positions a Range up to the
    sequence length read from the ids' shape (Shape -> Gather -> Range -> Unsqueeze)."""
    vocab, max_len, d = 50, 16, 8
    inits = [
        numpy_helper.from_array(randn(vocab, d), "tok.weight"),
        numpy_helper.from_array(randn(max_len, d), "pos.weight"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "first"),
        numpy_helper.from_array(randn(d, d), "w"),
        numpy_helper.from_array(np.ones(d, np.float32), "gamma"),
    ]
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"], "shape"),
        helper.make_node("Gather", ["shape", "one"], ["seq"], "seq_len"),
        helper.make_node("Range", ["zero", "seq", "one"], ["positions"], "arange"),
        helper.make_node("Unsqueeze", ["positions", "first"], ["pos_ids"], "unsqueeze"),
        helper.make_node("Gather", ["tok.weight", "ids"], ["tok"], "tok_embedding"),
        helper.make_node("Gather", ["pos.weight", "pos_ids"], ["pos"], "pos_embedding"),
        helper.make_node("Add", ["tok", "pos"], ["h"], "add"),
        helper.make_node("LayerNormalization", ["h", "gamma"], ["ln"], "ln", axis=-1),
        helper.make_node("MatMul", ["ln", "w"], ["y"], "proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = pyinfer.from_onnx(proto)
    assert model.inputs[0].dtype == "int64"
    for shape in [(2, 5), (1, 16), (3, 1)]:
        assert_matches(model, proto, {"ids": RNG.integers(0, vocab, shape)})


def mask_proto(int_op: str = "Sub") -> onnx.ModelProto:
    """Masks made at run time from int64 ids and a bool flag input: a padding mask
    (Equal -> Not -> And -> Where of a constant expanded to the ids' sizes), an HF-style
    additive mask (Unsqueeze -> Cast -> Sub -> Mul) and integer arithmetic on the ids,
    all added to scores computed from the ids' embeddings."""
    d = 4
    inits = [
        numpy_helper.from_array(randn(20, d), "table"),
        numpy_helper.from_array(np.array(0, np.int64), "pad_id"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(-1e4, np.float32), "big"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
        numpy_helper.from_array(np.array(3, np.int64), "three"),
        numpy_helper.from_array(np.array(1, np.int64), "one_i"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], "embed"),
        helper.make_node("Transpose", ["emb"], ["emb_t"], "emb_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["emb", "emb_t"], ["scores"], "scores"),  # [b, s, s]
        helper.make_node("Equal", ["ids", "pad_id"], ["is_pad"], "is_pad"),
        helper.make_node("Not", ["is_pad"], ["not_pad"], "not_pad"),
        helper.make_node("And", ["not_pad", "keep"], ["valid"], "valid"),
        helper.make_node("Shape", ["valid"], ["valid_shape"], "valid_shape"),
        helper.make_node("Expand", ["zero", "valid_shape"], ["zeros"], "zeros_like"),
        helper.make_node("Where", ["valid", "zeros", "big"], ["pad_bias"], "pad_bias"),
        helper.make_node("Unsqueeze", ["pad_bias", "axis1"], ["pad_bias3"], "pad_bias3"),
        helper.make_node("Cast", ["valid"], ["valid_i"], "valid_i", to=TensorProto.INT64),
        helper.make_node(int_op, ["valid_i", "one_i"], ["shifted"], "int_arith"),
        helper.make_node("Mul", ["shifted", "three"], ["tripled"], "tripled"),
        helper.make_node("Unsqueeze", ["tripled", "axis1"], ["tripled3"], "tripled3"),
        helper.make_node("Cast", ["tripled3"], ["m"], "to_float", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "m"], ["inv"], "inv"),
        helper.make_node("Mul", ["inv", "big"], ["hf_bias"], "hf_bias"),
        helper.make_node("Add", ["scores", "pad_bias3"], ["s1"], "add_pad"),
        helper.make_node("Add", ["s1", "hf_bias"], ["s2"], "add_hf"),
        helper.make_node("Softmax", ["s2"], ["y"], "softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "masks",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("keep", TensorProto.BOOL, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", "seq"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_masks_computed_from_int_and_bool_inputs_at_run_time(tmp_path):
    proto = mask_proto()
    model = pyinfer.from_onnx(proto)
    assert [s.dtype for s in model.inputs] == ["int64", "bool"]
    ops = {n.op for n in model.nodes}
    assert {"Equal", "Not", "And", "Where", "Cast", "Expand", "Sub"} <= ops
    for b, s in [(1, 1), (2, 5), (3, 8)]:
        ids = RNG.integers(0, 20, (b, s))
        ids[:, 0] = 1  # one key at least is valid in every row
        keep = RNG.random((b, s)) < 0.8
        keep[:, 0] = True
        assert_matches(model, proto, {"ids": ids, "keep": keep})
    pyinfer.save(model, tmp_path / "masks.pinf")
    feeds = {"ids": RNG.integers(1, 20, (2, 6)), "keep": np.ones((2, 6), bool)}
    loaded = pyinfer.load(tmp_path / "masks.pinf")
    np.testing.assert_array_equal(loaded.run(feeds)["y"], model.run(feeds)["y"])


def test_constants_sized_at_run_time():
    """HF BERT's token type ids: zeros of the ids' shape (ConstantOfShape), or a stored
    buffer cut to the sequence length and expanded to the batch (Slice -> Expand)."""
    d = 4
    buffer = (np.arange(16) % 3 == 1).astype(np.int64)[None]  # [1, 16], not positions
    inits = [
        numpy_helper.from_array(randn(30, d), "words"),
        numpy_helper.from_array(randn(2, d), "types"),
        numpy_helper.from_array(buffer, "type_buffer"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"], "shape"),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["zeros"],
            "zeros",
            value=numpy_helper.from_array(np.array([0], np.int64)),
        ),
        helper.make_node("Gather", ["shape", "one"], ["seq"], "seq"),
        helper.make_node("Slice", ["type_buffer", "zero", "seq", "one"], ["cut"], "cut"),
        helper.make_node("Expand", ["cut", "shape"], ["buffered"], "buffered"),
        helper.make_node("Gather", ["words", "ids"], ["w"], "w"),
        helper.make_node("Gather", ["types", "zeros"], ["t0"], "t0"),
        helper.make_node("Gather", ["types", "buffered"], ["t1"], "t1"),
        helper.make_node("Add", ["w", "t0"], ["h"], "h"),
        helper.make_node("Add", ["h", "t1"], ["y"], "y"),
    ]
    graph = helper.make_graph(
        nodes,
        "types",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = pyinfer.from_onnx(proto)
    assert model.dtypes["zeros"] == np.int64 and model.dtypes["buffered"] == np.int64
    for shape in [(1, 1), (2, 5), (3, 16)]:
        assert_matches(model, proto, {"ids": RNG.integers(0, 30, shape)})


@pytest.mark.parametrize("bounds", [["lo"], ["", "hi"], ["lo", "hi"]])
def test_clip_with_one_bound_or_both(bounds):
    """A missing bound is no bound (torch.clamp(min=...) exports Clip with min only)."""
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", *bounds], ["y"], "clip")],
        "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
        [
            numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
            numpy_helper.from_array(np.array(0.25, np.float32), "hi"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert_matches(pyinfer.from_onnx(proto), proto, {"x": randn(3, 5)})


def test_integer_ops_the_runtime_lacks_fail_naming_the_node():
    with pytest.raises(OnnxImportError, match=r"node 'int_arith' \(Div\): input .* float32"):
        pyinfer.from_onnx(mask_proto("Div"))


# ------------------------------------------------------------------ errors


def unsupported_proto() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Hardmax", ["x"], ["h1"], "hardmax_a"),
        helper.make_node("Relu", ["h1"], ["r"], "relu"),
        helper.make_node("Hardmax", ["r"], ["h2"], "hardmax_b"),
        helper.make_node("CumSum", ["h2", "axis"], ["c"], "cumsum"),
        helper.make_node("FusedMatMul", ["c", "c"], ["y"], "fused", domain="com.microsoft"),
    ]
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(np.array(1, np.int64), "axis")],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )


def test_unsupported_ops_fail_at_once_listing_every_type_and_node(monkeypatch):
    from pyinfer.convert import onnx_import

    def no_work(*args):
        raise AssertionError("a node was imported before the op check")

    monkeypatch.setattr(onnx_import._Importer, "_import_node", no_work)
    with pytest.raises(OnnxImportError) as err:
        pyinfer.from_onnx(unsupported_proto())
    msg = str(err.value)
    assert "3 op type(s)" in msg
    assert "Hardmax (nodes: hardmax_a, hardmax_b)" in msg
    assert "CumSum (nodes: cumsum)" in msg
    assert "com.microsoft::FusedMatMul (nodes: fused)" in msg
    assert "Relu" not in msg


def test_constant_subgraphs_fold_even_with_ops_the_runtime_lacks():
    """CumSum on initializers is evaluated at import: only run-time ops must exist."""
    w = randn(4, 3)
    graph = helper.make_graph(
        [
            helper.make_node("CumSum", ["w", "axis"], ["wc"], "cumsum"),
            helper.make_node("MatMul", ["x", "wc"], ["y"], "mm"),
        ],
        "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array(0, np.int64), "axis"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = pyinfer.from_onnx(proto)
    assert [n.op for n in model.nodes] == ["Linear"]
    assert_matches(model, proto, {"x": randn(3, 4)})


def test_old_opsets_and_bad_inputs_are_refused(tmp_path):
    proto = cnn_proto()
    proto.opset_import[0].version = 9
    with pytest.raises(OnnxImportError, match="opset 9 is outside.*version_converter"):
        pyinfer.from_onnx(proto)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        pyinfer.from_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff not protobuf")
    with pytest.raises(OnnxImportError, match="not a readable ONNX file"):
        pyinfer.from_onnx(tmp_path / "junk.onnx")
    with pytest.raises(TypeError, match="path or an onnx.ModelProto"):
        pyinfer.from_onnx(42)


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ImportError, match=r'pip install "\.\[convert\]"'):
        pyinfer.from_onnx("model.onnx")


def test_importing_pyinfer_stays_numpy_only():
    code = (
        "import sys, pyinfer; pyinfer.from_onnx; pyinfer.from_torch; "
        "print(sorted(m for m in ('onnx', 'torch', 'onnxruntime', 'onnxscript') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ from PyTorch


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch", reason="torch is not installed; export untested")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed; export untested")
    torch.manual_seed(0)
    return torch


def export(torch, module, x, dynamic_shapes, path):
    program = torch.onnx.export(
        module.eval(), (x,), dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes
    )
    program.save(str(path))
    return str(path)


def torch_cnn(torch):
    nn = torch.nn

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.bn2 = nn.BatchNorm2d(8)
            self.pool = nn.AvgPool2d(2)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            h = nn.functional.relu6(self.bn1(self.conv1(x)))
            h = h + nn.functional.relu6(self.bn2(self.dw(h)))
            return self.fc(self.pool(h).mean((2, 3)))

    model = CNN()
    for bn in (model.bn1, model.bn2):  # non-trivial statistics
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def test_mlp_from_torch_matches_eager_and_names_layers(torch):
    nn = torch.nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 32)
            self.fc2 = nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    mlp = MLP()
    model = pyinfer.from_torch(mlp, torch.randn(2, 16))
    assert [(n.name, n.op) for n in model.nodes] == [
        ("fc1", "Linear"),
        ("relu", "Relu"),
        ("fc2", "Linear"),
    ]
    for batch in (1, 9):
        x = randn(batch, 16)
        want = mlp(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(model(x), want, rtol=RTOL, atol=RTOL)


def test_cnn_exported_from_torch_matches(torch, tmp_path):
    cnn = torch_cnn(torch)
    path = export(
        torch, cnn, torch.randn(2, 3, 8, 8), ({0: torch.export.Dim("batch")},), tmp_path / "c.onnx"
    )
    model = pyinfer.from_onnx(path)
    assert {n.name for n in model.nodes if n.op == "Conv2d"} == {"conv1", "dw"}
    for batch in (1, 4):
        assert_matches(model, path, {model.inputs[0].name: randn(batch, 3, 8, 8)})


def test_transformer_encoder_with_free_batch_and_sequence(torch, tmp_path):
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    for p in encoder.parameters():  # layers start as copies: make them differ
        torch.nn.init.normal_(p, std=0.2)
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},)
    path = export(torch, encoder, torch.randn(2, 7, 64), dims, tmp_path / "enc.onnx")
    model = pyinfer.from_onnx(path)
    assert model.inputs[0].shape == (None, None, 64)
    name = model.inputs[0].name
    for shape in [(2, 7, 64), (3, 5, 64), (1, 11, 64)]:
        assert_matches(model, path, {name: randn(*shape)})
    pyinfer.save(model, tmp_path / "enc.pinf")
    x = randn(2, 9, 64)
    np.testing.assert_array_equal(pyinfer.load(tmp_path / "enc.pinf")(x), model(x))
