"""``pyinfer convert``: .pinf (and .onnx where the importer is there) in, .pinf and a
report out; one-line errors before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pyinfer
from pyinfer.cli import main

pytest.importorskip("sklearn", reason="the digits data comes from scikit-learn")
from tests.digits import accuracy, digits_mlp  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return digits_mlp()


@pytest.fixture
def files(digits, tmp_path):
    model, _, x_test, y_test = digits
    src = tmp_path / "dense.pinf"
    pyinfer.save(model, src)
    data = tmp_path / "data.npz"
    np.savez(data, x=x_test, labels=y_test)
    return src, data


def _convert(*args) -> int:
    return main(["convert", *map(str, args), "--no-progress"])


def test_convert_writes_model_report_and_table(digits, files, tmp_path, capsys):
    model, _, x_test, y_test = digits
    src, data = files
    out, report = tmp_path / "int8.pinf", tmp_path / "report.json"
    rc = _convert(src, "-o", out, "--recipe", "int8", "--data", data, "--report", report, "--force")
    assert rc == 0
    converted = pyinfer.load(out)
    assert {w.encoding for w in converted.weights.values()} == {"int8"}
    assert abs(accuracy(converted, x_test, y_test) - accuracy(model, x_test, y_test)) <= 0.005
    printed = capsys.readouterr().out
    assert "dense -> int8" in printed and "accuracy on 450 samples" in printed
    saved = json.loads(report.read_text())
    assert [r["layer"] for r in saved["layers"]] == ["fc1", "fc2", "head"]
    assert saved["total"]["accuracy_after"] == pytest.approx(accuracy(converted, x_test, y_test))
    assert saved["record"]["force"] is True


def test_convert_with_a_yaml_recipe_and_calibration(files, tmp_path, capsys):
    pytest.importorskip("yaml")
    src, data = files
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "default: {encoding: int8, calibration: minmax}\n"
        "layers:\n  fc2: {encoding: csr, sparsity: 0.5}\n  head: dense\n"
    )
    out = tmp_path / "mixed.pinf"
    assert _convert(src, "-o", out, "--recipe", recipe, "--data", data, "--force") == 0
    w = pyinfer.load(out).weights
    assert (w["fc1.weight"].encoding, w["fc2.weight"].encoding) == ("int8", "csr")
    assert w["fc1.weight"].activation_scale > 0
    assert w["head.weight"].encoding == "dense"


def test_convert_plot(files, tmp_path):
    pytest.importorskip("matplotlib")
    src, data = files
    png = tmp_path / "r.png"
    assert _convert(src, "-o", tmp_path / "o.pinf", "--recipe", "int4", "--plot", png) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def test_missing_model_file(tmp_path, capsys):
    assert _convert(tmp_path / "none.pinf", "-o", tmp_path / "o.pinf", "--recipe", "int8") == 2
    assert "none.pinf: no such file" in _error(capsys)


def test_missing_data_file(files, tmp_path, capsys):
    src, _ = files
    rc = _convert(src, "-o", tmp_path / "o.pinf", "--recipe", "int8", "--data", tmp_path / "d.npz")
    assert rc == 2 and "d.npz: no such file" in _error(capsys)


def test_unknown_layer_lists_the_layers_and_writes_nothing(files, tmp_path, capsys):
    src, _ = files
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"layers": {"fc3": "int8"}}))
    out = tmp_path / "o.pinf"
    assert _convert(src, "-o", out, "--recipe", recipe) == 2
    err = _error(capsys)
    assert "'fc3'" in err and "the layers are: fc1, fc2, head" in err
    assert not out.exists()


def test_wrong_shape_data(files, tmp_path, capsys):
    src, _ = files
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((5, 8, 8), np.float32))
    assert _convert(src, "-o", tmp_path / "o.pinf", "--recipe", "int8", "--data", data) == 2
    assert "must have shape [?, 64]" in _error(capsys)


def test_unknown_encoding_and_bad_extension(files, tmp_path, capsys):
    src, _ = files
    assert _convert(src, "-o", tmp_path / "o.pinf", "--recipe", "int3") == 2
    assert "neither an encoding" in _error(capsys)
    other = tmp_path / "model.bin"
    other.write_bytes(b"0")
    assert _convert(other, "-o", tmp_path / "o.pinf", "--recipe", "int8") == 2
    assert "expected a .onnx, .pt2 or .pinf model" in _error(capsys)


@pytest.mark.parametrize("where", ["compressing", "writing"])
def test_ctrl_c_leaves_no_file(files, tmp_path, monkeypatch, where):
    import pyinfer.format
    from pyinfer.convert import compress as compress_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "compressing":
        monkeypatch.setattr(compress_module, "compress", interrupted)
    else:  # in the middle of writing the tensors
        write = pyinfer.format._write_tensor
        calls = []

        def write_then_interrupt(*args):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            write(*args)

        monkeypatch.setattr(pyinfer.format, "_write_tensor", write_then_interrupt)
    src, data = files
    out = tmp_path / "o.pinf"
    assert _convert(src, "-o", out, "--recipe", "int8", "--force") == 130
    assert sorted(tmp_path.iterdir()) == sorted([src, data])  # no output, no temporary


def test_convert_onnx_input(tmp_path):
    pytest.importorskip("pyinfer.convert.onnx_import", reason="the ONNX importer is not there")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path)
    out = tmp_path / "m.pinf"
    assert _convert(path, "-o", out, "--recipe", "int8", "--force") == 0
    x = rng.standard_normal((4, 8)).astype(np.float32)
    y = pyinfer.load(out)(x)
    np.testing.assert_allclose(y, x @ w.T + b, rtol=0.05, atol=0.05)


def _pt2_mlp(tmp_path):
    """A small MLP saved by ``torch.export.save`` with a free batch axis, and the MLP."""
    torch = pytest.importorskip("torch", reason="torch is not installed; .pt2 untested")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed; .pt2 untested")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    batch = torch.export.Dim("batch")
    program = torch.export.export(net.eval(), (torch.randn(2, 8),), dynamic_shapes=({0: batch},))
    path = tmp_path / "mlp.pt2"
    torch.export.save(program, path)
    return path, net


def test_convert_pt2_input(tmp_path, capsys):
    import torch

    src, net = _pt2_mlp(tmp_path)
    out = tmp_path / "mlp.pinf"
    assert _convert(src, "-o", out, "--recipe", "int8", "--force") == 0
    assert "dense -> int8" in capsys.readouterr().out
    converted = pyinfer.load(out)
    assert converted.inputs[0].shape == (None, 8)
    assert {w.encoding for w in converted.weights.values()} == {"int8"}
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(converted(x), want, rtol=0.05, atol=0.05)


def test_unreadable_pt2(tmp_path, capsys):
    pytest.importorskip("torch", reason="torch is not installed; .pt2 untested")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    out = tmp_path / "o.pinf"
    assert _convert(bad, "-o", out, "--recipe", "int8") == 2
    err = _error(capsys)
    assert "bad.pt2: not a torch.export program" in err and "File is not a zip file" in err
    assert not out.exists()


def test_pt2_without_torch_names_the_extras(tmp_path, monkeypatch, capsys):
    import sys

    src = tmp_path / "model.pt2"
    src.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    assert _convert(src, "-o", tmp_path / "o.pinf", "--recipe", "int8") == 2
    assert 'needs torch: pip install ".[convert,torch]"' in _error(capsys)
