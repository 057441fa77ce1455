"""``pyinfer run`` and ``pyinfer inspect``: output, files written, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pyinfer
from pyinfer.cli import main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    g = pyinfer.Graph()
    x = g.input("x", (None, 20))
    w = rng.standard_normal((16, 20)).astype(np.float32)
    w[rng.random(w.shape) < 0.75] = 0
    h = g.node("Relu", g.linear(x, w, rng.standard_normal(16), encoding="csr", name="fc1"))
    g.output(g.node("Softmax", g.linear(h, rng.standard_normal((4, 16)), name="fc2")))
    path = tmp_path_factory.mktemp("cli") / "m.pinf"
    pyinfer.save(g, path)
    return path


def test_run_prints_latency_and_writes_the_output(model_path, tmp_path, capsys):
    x = np.random.default_rng(1).standard_normal((3, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    code = main(["run", str(model_path), "--input", str(tmp_path / "x.npy"), "-o", str(out),
                 "--repeat", "5"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "latency over 5 run(s): median" in text and "p90" in text
    np.testing.assert_array_equal(np.load(out), pyinfer.load(model_path)(x))


def test_run_named_inputs_and_npz(tmp_path, capsys):
    g = pyinfer.Graph()
    a, b = g.input("a", (None, 3)), g.input("b", (None, 3))
    g.output(g.node("Add", a, b), g.node("Mul", a, b))
    path = tmp_path / "two.pinf"
    pyinfer.save(g, path)
    np.save(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    np.savez(tmp_path / "b.npz", b=np.full((2, 3), 3, np.float32))
    out = tmp_path / "out.npz"
    args = ["run", str(path), "-i", f"a={tmp_path / 'a.npy'}", "-i", str(tmp_path / "b.npz")]
    assert main([*args, "-o", str(out)]) == 0
    with np.load(out) as saved:
        assert saved["add0"][0, 0] == 4 and saved["mul0"][0, 0] == 3
    assert main([*args, "-o", str(tmp_path / "one.npy")]) == 2  # two outputs need .npz
    assert "write them to a .npz" in capsys.readouterr().err


def test_inspect_lists_layers_totals_and_checksum(model_path, capsys):
    assert main(["inspect", str(model_path), "--verify"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    fc1 = next(line for line in lines if line.startswith("fc1"))
    assert "Linear" in fc1 and "csr" in fc1 and "[16,20]" in fc1 and "%" in fc1
    assert any(line.startswith("fc2") and "dense" in line for line in lines)
    assert "total: 4 layers (2 weighted)" in text
    digest = pyinfer.load(model_path).source.metadata["sha256"]
    assert f"sha256: {digest} (verified)" in text


def corrupt(path, tmp_path, where):
    blob = bytearray(path.read_bytes())
    blob[where] ^= 0x55
    bad = tmp_path / "bad.pinf"
    bad.write_bytes(bytes(blob))
    return bad


def test_verify_catches_a_flipped_data_byte(model_path, tmp_path, capsys):
    bad = corrupt(model_path, tmp_path, -1)  # last byte: a float of fc2's bias
    assert main(["inspect", str(bad)]) == 0  # structurally fine
    capsys.readouterr()
    assert main(["inspect", str(bad), "--verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyinfer inspect: FormatError:") and "checksum mismatch" in err
    assert "\n" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "{missing}"], "FileNotFoundError"),
        (["inspect", "{dir}"], "is a directory"),
        (["run", "{model}", "-i", "{pickle}"], "cannot read input"),
        (["run", "{model}", "-i", "{wrong}"], "must have shape [?, 20], got [2, 5]"),
        (["run", "{model}", "-i", "{ints}"], "must hold floats"),
        (["run", "{model}", "-i", "{x}", "--repeat", "0"], "--repeat must be at least 1"),
        (["run", "{garbage}", "-i", "{x}"], "FormatError"),
    ],
)
def test_errors_are_one_line(model_path, tmp_path, capsys, args, message):
    objects = np.empty(2, dtype=object)
    np.save(tmp_path / "p.npy", objects, allow_pickle=True)  # a file that would unpickle
    np.save(tmp_path / "w.npy", np.ones((2, 5), np.float32))
    np.save(tmp_path / "i.npy", np.ones((2, 20), np.int64))
    np.save(tmp_path / "x.npy", np.ones((2, 20), np.float32))
    (tmp_path / "g.pinf").write_bytes(b"\x10" + b"\x00" * 7 + b"not json at all!")
    names = {
        "missing": tmp_path / "nope.pinf",
        "dir": tmp_path,
        "model": model_path,
        "pickle": tmp_path / "p.npy",
        "wrong": tmp_path / "w.npy",
        "ints": tmp_path / "i.npy",
        "x": tmp_path / "x.npy",
        "garbage": tmp_path / "g.pinf",
    }
    code = main([a.format(**names) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "\n" not in err and "Traceback" not in err


def test_command_line_without_traceback(model_path, tmp_path):
    bad = corrupt(model_path, tmp_path, 20)  # inside the JSON header
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfer.cli", "inspect", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "FormatError" in proc.stderr
