"""The build script's choices: which sources each target gets, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

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
