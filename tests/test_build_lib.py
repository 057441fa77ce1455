"""The build script's choices: which sources each target gets, and what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import build_lib

ROOT = Path(__file__).resolve().parent.parent


def test_sources_follow_the_target():
    x86 = {path.name: isa for path, isa in build_lib.sources(ROOT / "csrc", "x86_64")}
    arm = {path.name: isa for path, isa in build_lib.sources(ROOT / "csrc", "aarch64")}
    assert x86["linear_csr_avx512.c"] == "avx512"
    assert x86["linear_csr_avx2.c"] == "avx2"
    assert x86["linear_csr.c"] is None
    assert "linear_csr_avx512.c" not in arm and "linear_csr_avx2.c" not in arm
    assert arm["linear_csr_scalar.c"] is None
    assert not any("tests" in name for name in x86)


def test_emulated_avx512_never_replaces_the_package_library(tmp_path):
    with pytest.raises(ValueError, match="may not replace"):
        build_lib.build(ROOT, ROOT / "kernels" / "_lib", emulate_avx512=True)
    with pytest.raises(ValueError, match="x86_64"):
        build_lib.build(ROOT, tmp_path, emulate_avx512=True, test_program=True, target="aarch64")
    assert not any(tmp_path.iterdir())


def _kernel_list() -> list[tuple[str, str, str]]:
    """(guard suffix or None, slot, function) of each PK_KERNEL line of csrc/kernels.inc."""
    rows, guard = [], None
    for line in (ROOT / "csrc" / "kernels.inc").read_text().splitlines():
        if line.startswith("#ifdef PK_HAVE_"):
            guard = line[len("#ifdef PK_HAVE_") :].strip().lower()
        elif line.startswith("#endif"):
            guard = None
        elif line.startswith("PK_KERNEL("):
            slot, _, _, function = (part.strip() for part in line[10:-1].split(","))
            rows.append((guard, slot, function))
    return rows


def test_the_kernel_list_names_functions_of_their_isa():
    """Each kernel stands under the guard of its file's ISA suffix, and a source with that
    suffix defines it; every slot has a portable kernel."""
    rows = _kernel_list()
    assert rows
    sources = build_lib.sources(ROOT / "csrc", "x86_64")
    text = {path: path.read_text() for path, _ in sources}
    for guard, slot, function in rows:
        suffix = function.rsplit("_", 1)[1]
        assert guard == (None if suffix == "scalar" else suffix), function
        assert function.startswith(f"pk_{slot}_"), function
        # defined there, or named there for a body header (#define PK_..._NAME function)
        defined_in = [path for path, isa in sources if isa == guard and function in text[path]]
        assert defined_in, f"{function}: no {guard or 'portable'} source defines it"
    slots = {slot for _, slot, _ in rows}
    portable = {slot for guard, slot, _ in rows if guard is None}
    assert slots == portable


def test_new_sources_are_picked_up(tmp_path):
    """A new file under csrc/ is built without any list to edit; its suffix picks its ISA."""
    csrc = tmp_path / "csrc"
    (csrc / "linear").mkdir(parents=True)
    for name in ("cpu.c", "linear/linear_new_scalar.c", "linear/linear_new_avx2.c"):
        (csrc / name).write_text("")
    (csrc / "tests").mkdir()
    (csrc / "tests" / "test_new.c").write_text("")
    found = {
        path.relative_to(csrc).as_posix(): isa for path, isa in build_lib.sources(csrc, "x86_64")
    }
    assert found == {
        "cpu.c": None,
        "linear/linear_new_scalar.c": None,
        "linear/linear_new_avx2.c": "avx2",
    }


needs_c = pytest.mark.skipif(
    "c" not in kernels.available_backends(), reason="C kernel library not built"
)


@needs_c
def test_the_package_library_loads_through_its_compiled_binding():
    lib_dir = Path(kernels.__file__).resolve().parent / "_lib"
    if not list(lib_dir.glob(build_lib.BINDING_NAME + ".*")):
        pytest.skip("no compiled binding was built here (cffi or Python's headers missing)")
    assert kernels.cpu_info()["c_binding"] == "compiled"


@needs_c
def test_abi_mode_gives_the_results_of_the_compiled_binding(tmp_path):
    """The same library opened in cffi's ABI mode (PYINFER_LIB names it) in a child."""
    script = """
import sys, numpy as np, kernels
rng = np.random.default_rng(4)
w = rng.standard_normal((33, 70)).astype(np.float32)
w[rng.random(w.shape) < 0.8] = 0
x = rng.standard_normal((3, 70)).astype(np.float32)
ys = [kernels.linear(x, kernels.encode(w, e), activation="relu") for e in ("int8", "csr", "dense")]
np.save(sys.argv[1], np.stack(ys))
print(kernels.cpu_info()["c_binding"])
"""
    lib = Path(kernels.__file__).resolve().parent / "_lib" / build_lib.LIB_NAME
    env = {**os.environ, "PYINFER_LIB": str(lib), "PYINFER_REQUIRE_C": "1"}
    out = tmp_path / "abi.npy"
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "abi"
    rng = np.random.default_rng(4)
    w = rng.standard_normal((33, 70)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    x = rng.standard_normal((3, 70)).astype(np.float32)
    here = [
        kernels.linear(x, kernels.encode(w, e), activation="relu") for e in ("int8", "csr", "dense")
    ]
    np.testing.assert_array_equal(np.load(out), np.stack(here))
