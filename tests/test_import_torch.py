"""pyinfer.from_torch on ``torch.export`` programs and ``.pt2`` files: the dims a program
was exported with stay as they are, and every wrong input is one clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import pyinfer
from pyinfer.convert.torch_import import load_pt2

RTOL = 1e-4


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch", reason="torch is not installed; export untested")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed; export untested")
    torch.manual_seed(0)
    return torch


def randn(*shape) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


def small_cnn(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    ).eval()


def eager(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_program_with_a_dynamic_batch(torch):
    cnn = small_cnn(torch)
    batch = torch.export.Dim("batch")
    program = torch.export.export(cnn, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    model = pyinfer.from_torch(program)
    assert model.inputs[0].shape == (None, 1, 8, 8)
    assert [n.op for n in model.nodes if n.op in ("Conv2d", "Linear")] == ["Conv2d", "Linear"]
    for n in (1, 5):
        x = randn(n, 1, 8, 8)
        np.testing.assert_allclose(model(x), eager(cnn, x), rtol=RTOL, atol=RTOL)


def test_pt2_file_keeps_batch_and_sequence_free(torch, tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.GELU(), torch.nn.Linear(12, 3))
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},)
    program = torch.export.export(net.eval(), (torch.randn(2, 5, 6),), dynamic_shapes=dims)
    path = tmp_path / "net.pt2"
    torch.export.save(program, path)
    model = pyinfer.from_torch(path)
    assert model.inputs[0].shape == (None, None, 6)
    for shape in [(2, 5, 6), (1, 9, 6), (4, 1, 6)]:
        x = randn(*shape)
        np.testing.assert_allclose(model(x), eager(net, x), rtol=RTOL, atol=RTOL)
    assert type(load_pt2(str(path))).__name__ == "ExportedProgram"


def test_program_without_dynamic_shapes_keeps_its_sizes(torch):
    net = torch.nn.Linear(8, 3).eval()
    program = torch.export.export(net, (torch.randn(2, 8),))
    model = pyinfer.from_torch(program)
    assert model.inputs[0].shape == (2, 8)
    x = randn(2, 8)
    np.testing.assert_allclose(model(x), eager(net, x), rtol=RTOL, atol=RTOL)


def test_module_calls_are_unchanged(torch):
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    model = pyinfer.from_torch(net, torch.randn(3, 8), dynamic=True)
    assert model.inputs[0].shape == (None, 8)
    fixed = pyinfer.from_torch(net, randn(3, 8), dynamic=False)
    assert fixed.inputs[0].shape == (3, 8)
    x = randn(3, 8)
    np.testing.assert_allclose(fixed(x), eager(net, x), rtol=RTOL, atol=RTOL)


def test_wrong_arguments(torch):
    net = torch.nn.Linear(4, 2).eval()
    program = torch.export.export(net, (torch.randn(1, 4),))
    with pytest.raises(TypeError, match="carries its own example inputs"):
        pyinfer.from_torch(program, torch.randn(1, 4))
    with pytest.raises(ValueError, match="keeps the dims it was exported with"):
        pyinfer.from_torch(program, dynamic=False)
    with pytest.raises(TypeError, match="needs an example_input"):
        pyinfer.from_torch(net)
    with pytest.raises(TypeError, match="got int"):
        pyinfer.from_torch(42)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "File is not a zip file"),
        (b"\x00garbage" * 100, "File is not a zip file"),
        (None, "deserializing"),  # a torch.save state dict: a zip, but not a program
    ],
    ids=["empty", "garbage", "state-dict"],
)
def test_unreadable_pt2_is_one_line(torch, tmp_path, content, reason):
    path = tmp_path / "bad.pt2"
    if content is None:
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="not a torch.export program") as info:
        pyinfer.from_torch(path)
    message = str(info.value)
    assert reason in message and "\n" not in message and "warnings above" not in message


def test_missing_pt2_file(torch, tmp_path):
    with pytest.raises(FileNotFoundError, match="none.pt2: no such file"):
        pyinfer.from_torch(str(tmp_path / "none.pt2"))


def test_missing_torch_names_the_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r'pip install "\.\[convert,torch\]"'):
        pyinfer.from_torch("model.pt2")
