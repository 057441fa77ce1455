"""Structured pruning: the pruned model equals the original with the removed neurons'
(channels') outputs zeroed, through ReLU, pooling, Flatten/Reshape, Concat and residual
Adds; refusals say why. Slow set: Fashion-MNIST, 50 % of neurons/channels removed."""

from __future__ import annotations

import numpy as np
import pytest

import pyinfer
from pyinfer.convert.compare import compare
from pyinfer.convert.compress import compress
from pyinfer.convert.recipe import RecipeError, plan_layers
from pyinfer.convert.structured import prune_structured
from tests.fashion import accuracy, fashion_cnn, report, wide_fashion_mlp

RNG = np.random.default_rng(0)


def _w(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _b(n):
    return (0.1 * RNG.standard_normal(n)).astype(np.float32)


def _prune(model, recipe):
    weights = {n: node.static[1] for n, node in _layers(model).items()}
    return prune_structured(model, plan_layers(recipe, weights))


def _layers(model):
    from pyinfer.convert.measure import weighted_layers

    return weighted_layers(model)


def _top(scores, fraction):
    """Indices kept: the ``n - round(fraction·n)`` largest scores."""
    n_keep = max(1, len(scores) - round(fraction * len(scores)))
    return np.sort(np.argsort(-scores, kind="stable")[:n_keep])


def _row_norms(model, layer, criterion="l2"):
    w = _layers(model)[layer].static[1].decode()
    m = w.reshape(w.shape[0], -1).astype(np.float64)
    return (m * m).sum(1) if criterion == "l2" else np.abs(m).sum(1)


def _zeroed(model, kept: dict[str, np.ndarray]):
    """The oracle: ``model`` with every output of the layers' other neurons zeroed (rows
    of the weight and the bias), so act(0) = 0 flows on."""
    weights, constants = dict(model.weights), dict(model.constants)
    for layer, keep in kept.items():
        node = _layers(model)[layer]
        w = node.static[1].decode().copy()
        drop = np.setdiff1d(np.arange(w.shape[0]), keep)
        w[drop] = 0
        weights[node.inputs[1]] = w
        if len(node.inputs) > 2:
            b = constants[node.inputs[2]].copy()
            b[drop] = 0
            constants[node.inputs[2]] = b
    import kernels

    weights = {
        k: kernels.encode(v, "dense") if isinstance(v, np.ndarray) else v
        for k, v in weights.items()
    }
    return pyinfer.Model(model.graph, weights, constants)


def _assert_same(a, b, x):
    np.testing.assert_allclose(a(x), b(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- models


def mlp():
    g = pyinfer.Graph()
    h = g.linear(g.input("x", (None, 16)), _w(32, 16), _b(32), "relu", name="fc1")
    h = g.linear(h, _w(24, 32), _b(24), "relu", name="fc2")
    g.output(g.linear(h, _w(5, 24), _b(5), name="head"))
    return g.build()


def cnn(flatten="Flatten"):
    """conv -> relu -> maxpool -> conv -> Relu node -> Clip -> avgpool -> flatten -> fc."""
    g = pyinfer.Graph()
    h = g.conv2d(
        g.input("x", (None, 3, 12, 12)),
        _w(8, 3, 3, 3),
        _b(8),
        padding=1,
        activation="relu",
        name="conv1",
    )
    h = g.node("MaxPool2d", h, kernel_size=2, name="pool1")
    h = g.conv2d(h, _w(6, 8, 3, 3), _b(6), padding=1, name="conv2")
    h = g.node("Relu", h, name="relu2")
    h = g.node("Clip", h, min=0.0, max=6.0, name="clip2")
    h = g.node("AvgPool2d", h, kernel_size=2, name="pool2")
    if flatten == "Flatten":
        h = g.node("Flatten", h, name="flat")
    else:
        h = g.node("Reshape", h, shape=[-1, 54], name="flat")
    h = g.linear(h, _w(10, 54), _b(10), "relu", name="fc")
    g.output(g.linear(h, _w(4, 10), _b(4), name="head"))
    return g.build()


def residual(skip_from_input=False):
    """conv0 -> conv1 -> conv2, Add(conv2, conv0 or x) -> Relu -> global pool -> head."""
    g = pyinfer.Graph()
    x = g.input("x", (None, 8, 6, 6))
    h0 = g.conv2d(x, _w(8, 8, 3, 3), _b(8), padding=1, activation="relu", name="conv0")
    h = g.conv2d(h0, _w(8, 8, 3, 3), _b(8), padding=1, activation="relu", name="conv1")
    h = g.conv2d(h, _w(8, 8, 3, 3), _b(8), padding=1, name="conv2")
    h = g.node("Add", h, x if skip_from_input else h0, name="add")
    h = g.node("Relu", h, name="relu")
    h = g.node("GlobalAvgPool", h, keepdims=False, name="gap")
    g.output(g.linear(h, _w(3, 8), _b(3), name="head"))
    return g.build()


# ---------------------------------------------------------------------- exactness


def test_mlp_equals_the_original_with_the_removed_neurons_zeroed():
    model = mlp()
    recipe = {
        "layers": {
            "fc1": {"encoding": "dense", "structured": 0.5},
            "fc2": {"encoding": "dense", "structured": 0.25, "criterion": "l1"},
        }
    }
    pruned, facts = _prune(model, recipe)
    keep1 = _top(_row_norms(model, "fc1"), 0.5)
    keep2 = _top(_row_norms(model, "fc2", "l1"), 0.25)
    shapes = {n: node.static[1].shape for n, node in _layers(pruned).items()}
    assert shapes == {"fc1": (16, 16), "fc2": (18, 16), "head": (5, 18)}
    assert (facts["fc1"].kept, facts["fc1"].total) == (16, 32)
    assert (facts["fc2"].kept, facts["fc2"].criterion) == (18, "l1")
    assert "head" not in facts
    x = RNG.standard_normal((7, 16)).astype(np.float32)
    _assert_same(pruned, _zeroed(model, {"fc1": keep1, "fc2": keep2}), x)
    assert model(x).shape == (7, 5)  # the original is left as it was
    assert _layers(model)["fc1"].static[1].shape == (32, 16)


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
def test_cnn_through_relu_clip_pooling_and_flatten(flatten):
    model = cnn(flatten)
    recipe = {"default": {"encoding": "dense", "structured": 0.5}}
    pruned, facts = _prune(model, recipe)
    kept = {n: _top(_row_norms(model, n), 0.5) for n in ("conv1", "conv2", "fc")}
    shapes = {n: node.static[1].shape for n, node in _layers(pruned).items()}
    # conv2's 3 kept channels are 3 blocks of 3x3 = 27 features of the flattened 54
    assert shapes == {"conv1": (4, 3, 3, 3), "conv2": (3, 4, 3, 3), "fc": (5, 27), "head": (4, 5)}
    assert "model output 'head'" in facts["head"].refused
    x = RNG.standard_normal((3, 3, 12, 12)).astype(np.float32)
    _assert_same(pruned, _zeroed(model, kept), x)


def test_residual_add_drops_the_same_channels_on_both_branches():
    model = residual()
    pruned, facts = _prune(model, {"default": {"encoding": "dense", "structured": 0.5}})
    joint = _row_norms(model, "conv0") + _row_norms(model, "conv2")  # ranked together
    keep = _top(joint, 0.5)
    kept = {"conv0": keep, "conv2": keep, "conv1": _top(_row_norms(model, "conv1"), 0.5)}
    assert facts["conv0"].coupled == ("conv2",) and facts["conv2"].coupled == ("conv0",)
    assert facts["conv1"].coupled == () and facts["head"].refused
    shapes = {n: node.static[1].shape for n, node in _layers(pruned).items()}
    assert shapes == {
        "conv0": (4, 8, 3, 3),
        "conv1": (4, 4, 3, 3),
        "conv2": (4, 4, 3, 3),
        "head": (3, 4),
    }
    x = RNG.standard_normal((2, 8, 6, 6)).astype(np.float32)
    _assert_same(pruned, _zeroed(model, kept), x)


def test_concat_keeps_each_inputs_block():
    g = pyinfer.Graph()
    x = g.input("x", (None, 2, 5, 5))
    a = g.conv2d(x, _w(4, 2, 3, 3), _b(4), padding=1, activation="relu", name="a")
    b = g.conv2d(x, _w(6, 2, 1, 1), _b(6), activation="relu", name="b")
    h = g.node("Concat", b, a, axis=1, name="cat")
    h = g.conv2d(h, _w(5, 10, 3, 3), _b(5), name="c")
    g.output(g.node("Flatten", h, name="flat"))
    model = g.build()
    pruned, facts = _prune(model, {"layers": {"a": {"encoding": "dense", "structured": 0.5}}})
    assert _layers(pruned)["c"].static[1].shape == (5, 8, 3, 3)
    x_in = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    _assert_same(pruned, _zeroed(model, {"a": _top(_row_norms(model, "a"), 0.5)}), x_in)


def test_saved_and_loaded_pruned_model_runs_the_same(tmp_path):
    pruned, _ = _prune(cnn("Reshape"), {"default": {"encoding": "dense", "structured": 0.5}})
    path = tmp_path / "pruned.pinf"
    pyinfer.save(pruned, path)
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(pyinfer.load(path)(x), pruned(x))


def test_batchnorm_is_folded_by_the_importer_before_pruning():
    torch = pytest.importorskip("torch", reason="the BatchNorm model is built in PyTorch")
    pytest.importorskip("onnxscript", reason="from_torch exports with onnxscript")
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    model = pyinfer.from_torch(net, x)
    assert "BatchNormalization" not in {n.op for n in model.nodes}
    convs = [n for n, node in _layers(model).items() if node.op == "Conv2d"]
    pruned, facts = _prune(model, {"default": {"encoding": "dense", "structured": 0.5}})
    assert [facts[c].kept for c in convs] == [3, 2]
    kept = {c: _top(_row_norms(model, c), 0.5) for c in convs}
    _assert_same(pruned, _zeroed(model, kept), x)
    np.testing.assert_allclose(model(x), net(torch.from_numpy(x)).detach().numpy(), atol=1e-4)


# ---------------------------------------------------------------------- refusals


def test_an_add_with_the_blocks_input_refuses_with_the_reason():
    model = residual(skip_from_input=True)
    with pytest.raises(RecipeError, match="conv2.*added at 'add' to channels not removed"):
        _prune(model, {"layers": {"conv2": {"encoding": "dense", "structured": 0.5}}})
    pruned, facts = _prune(model, {"default": {"encoding": "dense", "structured": 0.5}})
    assert "added at 'add'" in facts["conv2"].refused and facts["conv2"].kept == 8
    assert facts["conv0"].refused is None and facts["conv0"].kept == 4
    shapes = {n: node.static[1].shape for n, node in _layers(pruned).items()}
    assert shapes["conv2"] == (8, 4, 3, 3)  # its inputs still shrink with conv1
    x = RNG.standard_normal((2, 8, 6, 6)).astype(np.float32)
    kept = {n: _top(_row_norms(model, n), 0.5) for n in ("conv0", "conv1")}
    _assert_same(pruned, _zeroed(model, kept), x)


def test_added_layers_must_ask_for_the_same_fraction():
    recipe = {
        "layers": {
            "conv0": {"encoding": "dense", "structured": 0.5},
            "conv2": {"encoding": "dense", "structured": 0.25},
        }
    }
    with pytest.raises(RecipeError, match="same structured fraction"):
        _prune(residual(), recipe)
    with pytest.raises(RecipeError, match="added at 'add' to channels not removed"):
        _prune(residual(), {"layers": {"conv0": {"encoding": "dense", "structured": 0.5}}})


def test_ops_it_cannot_see_through_and_the_model_output_refuse():
    g = pyinfer.Graph()
    h = g.linear(g.input("x", (None, 6)), _w(8, 6), _b(8), name="fc1")
    h = g.node("Sigmoid", h, name="sig")  # sigmoid(0) = 0.5: a zeroed neuron still speaks
    g.output(g.node("Softmax", g.linear(h, _w(3, 8), name="head"), name="prob"))
    model = g.build()
    with pytest.raises(RecipeError, match="fc1.*Sigmoid node 'sig'"):
        _prune(model, {"layers": {"fc1": {"encoding": "dense", "structured": 0.5}}})
    with pytest.raises(RecipeError, match="head.*Softmax node 'prob'"):
        _prune(model, {"layers": {"head": {"encoding": "dense", "structured": 0.5}}})
    same, facts = _prune(model, {"default": {"encoding": "dense", "structured": 0.5}})
    assert same is model and all(f.refused for f in facts.values())


def test_grouped_convolutions_refuse():
    g = pyinfer.Graph()
    h = g.conv2d(
        g.input("x", (None, 4, 5, 5)), _w(8, 4, 3, 3), _b(8), activation="relu", name="conv"
    )
    h = g.conv2d(h, _w(8, 1, 3, 3), groups=8, name="depthwise")
    g.output(g.node("Flatten", h, name="flat"))
    model = g.build()
    with pytest.raises(RecipeError, match="feeds the grouped convolution 'depthwise'"):
        _prune(model, {"layers": {"conv": {"encoding": "dense", "structured": 0.5}}})
    with pytest.raises(RecipeError, match="grouped convolution"):
        _prune(model, {"layers": {"depthwise": {"encoding": "dense", "structured": 0.5}}})


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"structured": 1.0}, "structured .* must be a number in \\[0, 1\\)"),
        ({"structured": -0.1}, "structured"),
        ({"structured": "half"}, "structured"),
        ({"structured": True}, "structured"),
        ({"structured": 0.5, "criterion": "l3"}, "criterion must be one of"),
    ],
)
def test_bad_structured_options_are_recipe_errors(settings, match):
    with pytest.raises(RecipeError, match=match):
        compress(mlp(), {"layers": {"fc1": {"encoding": "dense", **settings}}}, progress=False)


# ---------------------------------------------------------------------- compress


def test_compress_prunes_first_then_encodes_and_records_what_it_kept():
    model = mlp()
    out = compress(
        model, {"default": {"encoding": "int8", "structured": 0.5}}, force=True, progress=False
    )
    fc1 = out.compression.layer("fc1")
    assert fc1.encoding == "int8" and fc1.shape == (16, 16)
    assert (fc1.structured.kept, fc1.structured.total) == (16, 32)
    assert fc1.bytes_before == 32 * 16 * 4  # the original layer's
    head = out.compression.layer("head")
    assert head.encoding == "int8" and head.structured.refused
    assert out.compression.to_dict()["layers"][0]["structured"]["kept"] == 16
    x = RNG.standard_normal((50, 16)).astype(np.float32)
    summary = compare(model, out, x, timing=False, progress=False)
    assert summary.layers[0]["kept"] == [16, 32] and summary.layers[0]["rel_l2"] is None
    assert "kept 16/32" in summary.table()


def test_compress_without_structured_leaves_the_layers_whole():
    model = mlp()
    out = compress(model, "int8", force=True, progress=False)
    assert all(d.structured is None for d in out.compression.layers)
    assert out.compression.layer("fc1").shape == (32, 16)


# ---------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.slow
@pytest.mark.parametrize("which", ["wide mlp", "cnn"])
def test_fashion_mnist_half_the_neurons_removed_one_shot(which):
    """One-shot numbers (fine-tuning recovers the accuracy); speed reported, not asserted."""
    model, x, labels = wide_fashion_mlp() if which == "wide mlp" else fashion_cnn()
    base = accuracy(model, x, labels)
    assert base > 0.8
    pruned = compress(model, {"default": {"encoding": "dense", "structured": 0.5}}, progress=False)
    kept = {d.layer: (d.structured.kept, d.structured.total) for d in pruned.compression.layers}
    assert all(k == t // 2 for layer, (k, t) in kept.items() if layer != "head")
    report(model, {f"{which} structured 50%": pruned}, x, labels)
    assert accuracy(pruned, x, labels) > 0.3  # one shot: far from chance, not yet recovered
