"""Shared test parameters: every backend and every ISA level this machine can run, the
encodings and option sets from the registry, and how a ``linear`` result is judged."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels import registry
from tests import oracle


def variants(with_numpy: bool = True) -> list:
    """(backend, isa) pairs to test: numpy, numba, and C at each supported ISA level.

    Levels the build has but this CPU lacks appear as skipped cases that say so.
    ``with_numpy=False`` leaves out the numpy backend, whose kernels are the references.
    """
    params = [pytest.param(("numpy", None), id="numpy")] if with_numpy else []
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


def _run_under(pair: tuple):
    backend, isa = pair
    with kernels.using(backend=backend, isa=isa):
        yield pair


@pytest.fixture(params=variants())
def variant(request):
    """Run the test body under one (backend, isa) pair."""
    yield from _run_under(request.param)


@pytest.fixture(params=variants(with_numpy=False))
def fast_variant(request):
    """Run the test body under one (backend, isa) pair other than the numpy references."""
    yield from _run_under(request.param)


def encoding_cases() -> list:
    """(encoding name, options) for every registry row and each of its test option sets."""
    cases = []
    for name in registry.names():
        for opts in registry.get(name).test_options:
            label = name + "".join(f"-{k}={v}" for k, v in opts.items())
            cases.append(pytest.param(name, opts, id=label))
    return cases


def bit_exact(w) -> bool:
    """Does every backend give the reference's bits for ``w``? Rows marked ``exact`` do on
    their integer-activation paths (float activations are held to ``rtol``)."""
    return registry.get(w.encoding).exact and oracle.activation_treatment(w)[0] != "float"


def assert_linear_correct(got, x, w, bias=None, activation=None) -> None:
    """Judge ``got = kernels.linear(x, w, bias, activation)`` under the current backend.

    The numpy backend runs the references: it is held to the independent oracle
    (``tests/oracle.py``). Every other backend is held to the reference: bit for bit
    where :func:`bit_exact`, otherwise within the row's ``rtol``.
    """
    x = np.asarray(x, np.float32)
    squeeze = x.ndim == 1
    x2 = x[None, :] if squeeze else x
    if kernels.get_backend() == "numpy":
        want = oracle.linear(x2, w, bias, activation)
        oracle.assert_close(got, want[0] if squeeze else want)
        return
    want = registry.get(w.encoding).reference_linear(x2, w, bias, activation)
    want = want[0] if squeeze else want
    if bit_exact(w):
        np.testing.assert_array_equal(got, want)
    else:
        oracle.assert_close(got, want, rtol=registry.get(w.encoding).rtol)


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
