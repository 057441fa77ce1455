"""Shared test parameters: every backend and every ISA level this machine can run."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels import registry


def variants() -> list:
    """(backend, isa) pairs to test: numpy, numba, and C at each supported ISA level.

    Levels the build has but this CPU lacks appear as skipped cases that say so.
    """
    params = [pytest.param(("numpy", None), id="numpy")]
    backends = kernels.available_backends()
    params.append(
        pytest.param(
            ("numba", None),
            id="numba",
            marks=pytest.mark.skipif("numba" not in backends, reason="numba is not installed"),
        )
    )
    if "c" not in backends:
        params.append(
            pytest.param(
                ("c", None), id="c", marks=pytest.mark.skip(reason="C kernel library not built")
            )
        )
        return params
    supported = kernels.supported_isas()
    for isa in kernels.backends.isa_levels():
        params.append(
            pytest.param(
                ("c", isa),
                id=f"c-{isa}",
                marks=pytest.mark.skipif(
                    isa not in supported, reason=f"this CPU (or build) lacks {isa}"
                ),
            )
        )
    return params


@pytest.fixture(params=variants())
def variant(request):
    """Run the test body under one (backend, isa) pair."""
    backend, isa = request.param
    with kernels.using(backend=backend, isa=isa):
        yield request.param


def encoding_cases() -> list:
    """(encoding name, options) for every registry row and each of its test option sets."""
    cases = []
    for name in registry.names():
        for opts in registry.get(name).test_options:
            label = name + "".join(f"-{k}={v}" for k, v in opts.items())
            cases.append(pytest.param(name, opts, id=label))
    return cases


def sparse_gaussian(rng: np.random.Generator, shape, density: float = 0.3) -> np.ndarray:
    """float32 Gaussian weights with a fraction ``1 - density`` of exact zeros."""
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0
    return w


def pytest_sessionstart(session):
    """With PYINFER_REQUIRE_C set (CI), a missing C library is an error, not a skip."""
    import os

    if os.environ.get("PYINFER_REQUIRE_C") and "c" not in kernels.available_backends():
        from kernels.backend_c import ffi

        raise pytest.UsageError(f"PYINFER_REQUIRE_C is set but {ffi.unavailable_reason()}")
