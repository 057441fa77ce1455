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


@pytest.mark.parametrize("kwargs", [{}, {"test_program": True, "target": "aarch64"}])
def test_emulated_avx512_is_only_a_test_program(tmp_path, kwargs):
    with pytest.raises(ValueError, match="emulate_avx512"):
        build_lib.build(ROOT, tmp_path, emulate_avx512=True, **kwargs)
    assert not any(tmp_path.iterdir())
