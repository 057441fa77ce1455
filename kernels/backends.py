"""Which backend runs, on how many threads, with which ISA; and what serves each op."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import time
from collections.abc import Iterator

from kernels import registry

#: ``threads``: the count set by ``set_num_threads`` (0: none set). ``omp``: the value of
#: OMP_NUM_THREADS last read (``_UNSEEN``: none read since the setting changed), and
#: ``omp_threads``, the count it gave (0: none).
_UNSEEN = object()
_state = {"backend": "auto", "threads": 0, "omp": None, "omp_threads": 0}

# Each model run reads OMP_NUM_THREADS from os.environ's own mapping: os.environ.get costs
# about 1 us (a KeyError when unset), this lookup about 50 ns.
_environ = getattr(os.environ, "_data", None)
_OMP_KEY = os.environ.encodekey("OMP_NUM_THREADS") if _environ is not None else None

#: Bumped by every settings change (backend, ISA, threads): a conv plan compares it with
#: the value it was resolved under (one int check per call) and re-resolves when it moved.
generation = [0]


def _changed() -> None:
    generation[0] += 1


def _c():
    return _ffi().library()


@functools.cache
def _ffi():
    from kernels.backend_c import ffi  # on first use: importing it loads no library

    return ffi


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None and not os.environ.get("PYINFER_NO_NUMBA")


@functools.cache
def _available() -> tuple[str, ...]:
    found = []
    if _c() is not None:
        found.append("c")
    if _numba_installed():
        found.append("numba")
    found.append("numpy")
    return tuple(found)


def available_backends() -> list[str]:
    """Backends usable here, fastest first: a subset of ``["c", "numba", "numpy"]``.

    Returns
    -------
    list of str
    """
    return list(_available())


def set_backend(name: str = "auto") -> None:
    """Choose the backend for every later call.

    Parameters
    ----------
    name : {"auto", "c", "numba", "numpy"}
        ``auto`` picks the fastest available per encoding (c > numba > numpy). A named
        backend is used for every encoding that has a kernel in it; an encoding that
        has none there falls back to the next one in that order.
    """
    if name != "auto" and name not in registry.BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; expected 'auto' or one of {list(registry.BACKENDS)}"
        )
    if name != "auto" and name not in available_backends():
        raise ValueError(
            f"backend {name!r} is not available here; available: {available_backends()}"
        )
    _state["backend"] = name
    _changed()


def get_backend() -> str:
    """The backend setting (``"auto"`` or a backend name)."""
    return _state["backend"]


def resolve(op: str, encoding: str):
    """``(backend, kernel)`` that serves ``op`` on ``encoding`` under the current setting."""
    return _resolve(_state["backend"], op, encoding)


@functools.cache
def _resolve(wanted: str, op: str, encoding: str):
    usable = _available()
    for backend in _order(wanted):
        if backend in usable:
            fn = registry.kernel(op, encoding, backend)
            if fn is not None:
                return backend, fn
    raise RuntimeError(f"no backend serves {op} for encoding {encoding!r}")


def forget_dispatch() -> None:
    """Drop cached dispatch decisions (after a registry row is removed)."""
    _resolve.cache_clear()
    _changed()


def conv_backend() -> str:
    """The backend conv2d's lowerings run on: the setting, or the fastest available."""
    return _first_usable(_state["backend"])


@functools.cache
def _first_usable(wanted: str) -> str:
    usable = _available()
    return next(b for b in _order(wanted) if b in usable)


def _order(wanted: str) -> tuple[str, ...]:
    """Backends to try for a setting: all, fastest first, or the named one and slower."""
    return (
        registry.BACKENDS
        if wanted == "auto"
        else registry.BACKENDS[registry.BACKENDS.index(wanted) :]
    )


def set_num_threads(n: int) -> None:
    """Threads used by the C and Numba kernels.

    Parameters
    ----------
    n : int
        A positive count holds until changed. ``n <= 0`` sets no count: each call then
        uses ``OMP_NUM_THREADS`` as it is when the call runs (what Dask and Ray give a
        worker), or else the CPUs this process may run on (its affinity mask).

    Results do not depend on the thread count.
    """
    n = int(n)
    _state["threads"] = max(n, 0)
    _state["omp"] = _UNSEEN  # with no count set, the next call reads OMP_NUM_THREADS again
    _changed()
    lib = _c()
    if lib is not None:
        lib[1].pk_set_num_threads(_state["threads"])
    if _numba_installed() and "numba" in _loaded_modules():
        apply_numba_threads()


def follow_thread_budget() -> None:
    """Re-read ``OMP_NUM_THREADS`` for the Numba kernels (the C library reads the budget
    itself at every call): a worker process of Dask or Ray is given its count there, and
    a reused Ray worker may change it.

    Costs one environment lookup when the value has not changed.
    """
    if _state["threads"]:
        return
    raw = _environ.get(_OMP_KEY) if _environ is not None else os.environ.get("OMP_NUM_THREADS")
    if raw != _state["omp"]:
        _state["omp"] = raw
        _state["omp_threads"] = omp_num_threads(None if raw is None else os.fsdecode(raw))


def omp_num_threads(value: str | None) -> int:
    """The thread count an ``OMP_NUM_THREADS`` value asks for (0: unset or unreadable).

    A list (``"4,2"``, one count per nesting level) gives its first entry.
    """
    first = (value or "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


#: The affinity count and when it was read (``time.monotonic``): re-read at most every
#: ``_AFFINITY_RECHECK`` seconds, as the C library does.
_affinity = {"count": 0, "read_at": 0.0}
_AFFINITY_RECHECK = 0.1


def _affinity_count() -> int:
    now = time.monotonic()
    if not _affinity["count"] or now - _affinity["read_at"] > _AFFINITY_RECHECK:
        try:
            count = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # no affinity masks on this platform
            count = os.cpu_count() or 1
        _affinity.update(count=count, read_at=now)
    return _affinity["count"]


def _budget() -> int:
    """The thread budget now: the count set, else OMP_NUM_THREADS, else the affinity."""
    if _state["threads"]:
        return _state["threads"]
    follow_thread_budget()
    return _state["omp_threads"] or _affinity_count()


def get_num_threads() -> int:
    """Threads the next kernel call would use: the count set by ``set_num_threads``, else
    ``OMP_NUM_THREADS`` as it is now, else the CPUs this process may run on."""
    handle = _c()
    return handle[1].pk_get_num_threads() if handle is not None else _budget()


def apply_numba_threads() -> None:
    """Numba's thread count is per thread of the caller: set it (to the thread budget,
    read now) before a Numba kernel."""
    import numba

    n = min(_budget(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


class _ModelRun:
    """The context manager :func:`model_run` returns."""

    __slots__ = ("_lib",)

    def __enter__(self) -> _ModelRun:
        if not _state["threads"]:
            follow_thread_budget()
        self._lib = lib = _c_lib()
        if lib is not None:
            lib.pk_pool_keep_ready(1)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._lib is not None:
            self._lib.pk_pool_keep_ready(0)


def _c_lib():
    """The C library's ``lib``, or None; kept once found (it is never unloaded)."""
    lib = _lib_found[0]
    if lib is None:
        handle = _c()
        lib = _lib_found[0] = handle[1] if handle is not None else None
    return lib


_lib_found = [None]


def model_run() -> _ModelRun:
    """Context manager for one model run: the kernels follow the thread budget as it is
    now, and the thread pool's idle workers stay ready between the layers while the block
    runs (after it they soon yield their cores to other libraries). Nestable; does
    nothing more without the C library.

    Returns
    -------
    context manager
    """
    return _ModelRun()


def _loaded_modules():
    import sys

    return sys.modules


def isa_levels() -> list[str]:
    """ISA levels of this architecture, lowest first (``[]`` without the C library)."""
    handle = _c()
    if handle is None:
        return []
    ffi, lib = handle
    return [ffi.string(lib.pk_isa_name(i)).decode() for i in range(lib.pk_isa_count())]


def supported_isas() -> list[str]:
    """ISA levels the build has and this CPU supports."""
    handle = _c()
    if handle is None:
        return []
    _, lib = handle
    return [name for i, name in enumerate(isa_levels()) if lib.pk_isa_supported(i)]


def set_isa(name: str | None) -> str:
    """Cap the C kernels' ISA (``None``: the best this CPU has). Returns the level used.

    The same cap is read from the environment variable ``PYINFER_ISA`` at load.
    """
    handle = _c()
    if handle is None:
        raise RuntimeError("set_isa needs the C kernel library, which is not available")
    _, lib = handle
    levels = isa_levels()
    if name is None:
        level = len(levels) - 1
    elif name in levels:
        level = levels.index(name)
    else:
        raise ValueError(f"unknown ISA {name!r} for this architecture; expected one of {levels}")
    used = levels[lib.pk_set_isa_cap(level)]
    _changed()
    return used


def current_isa() -> str | None:
    """The ISA level serving C kernels now (None without the C library)."""
    handle = _c()
    if handle is None:
        return None
    return isa_levels()[handle[1].pk_isa_level()]


@contextlib.contextmanager
def using(
    backend: str | None = None, isa: str | None = None, threads: int | None = None
) -> Iterator[None]:
    """Temporarily set backend, ISA cap and thread count (for tests and benchmarks)."""
    saved = (_state["backend"], current_isa(), _state["threads"])
    try:
        if backend is not None:
            set_backend(backend)
        if isa is not None:
            set_isa(isa)
        if threads is not None:
            set_num_threads(threads)
        yield
    finally:
        _state["backend"] = saved[0]
        _changed()
        if saved[1] is not None:
            set_isa(saved[1])
        if threads is not None:
            set_num_threads(saved[2])


def cpu_info() -> dict:
    """What this machine is and which kernel serves each encoding on it.

    Returns
    -------
    dict
        ``machine``, ``cpu_features`` (names), ``isa`` (the level in use),
        ``isa_supported``, ``backends`` (available), ``backend`` (setting), ``threads``,
        ``c_library`` (None, or why not), ``c_binding`` (``"compiled"``: cffi's API
        mode through the binding built for this Python; ``"abi"``: cffi's ABI mode; None
        without the library), ``c_kernels`` (slot -> implementation),
        ``serving_detail``: encoding -> op -> {regime: what serves it}, and
        ``serving``: encoding -> {op: what serves its general (last-listed) regime}.
        What serves is ``"c:<implementation>"`` for a C dispatch slot, or
        ``"<backend>"`` / ``"<backend>:<module:function>"`` for code with no slot.
    """
    handle = _c()
    info: dict = {
        "machine": platform.machine(),
        "backends": available_backends(),
        "backend": _state["backend"],
        "threads": get_num_threads(),
        "isa": current_isa(),
        "isa_supported": supported_isas(),
        "cpu_features": [],
        "c_binding": None if handle is None else _ffi().binding_mode(),
        "c_kernels": {},
    }
    if handle is None:
        from kernels.backend_c import ffi as ffi_module

        info["c_library"] = ffi_module.unavailable_reason()
    else:
        ffi, lib = handle
        bits = lib.pk_cpu_features()
        info["cpu_features"] = [
            name[len("PK_CPU_") :].lower()
            for name in dir(lib)
            if name.startswith("PK_CPU_") and bits & getattr(lib, name)
        ]
        for i in range(lib.pk_kernel_count()):
            info["c_kernels"][ffi.string(lib.pk_kernel_slot(i)).decode()] = ffi.string(
                lib.pk_kernel_impl(i)
            ).decode()
    detail = {name: _serving(registry.get(name), info["c_kernels"]) for name in registry.names()}
    info["serving_detail"] = detail
    info["serving"] = {
        name: {op: list(regimes.values())[-1] for op, regimes in ops.items()}
        for name, ops in detail.items()
    }
    return info


def _serving(row: registry.Encoding, c_kernels: dict) -> dict:
    """op -> {regime: what serves it} for one registry row, from its kernels and c_slots."""
    linear_backend, _ = resolve("linear", row.name)
    conv = conv_backend()
    serving = {}
    for op, backend in (("linear", linear_backend), ("conv2d", conv)):
        slots, spec_op = row.c_slots.get(op, {}), op
        if op == "conv2d" and conv != "numpy" and f"conv2d/{conv}" not in row.kernels:
            # the default lowering: patch rows (many of them) through the linear kernel
            slots = dict(list(row.c_slots.get("linear", {}).items())[-1:])
            backend, spec_op = linear_backend, "linear"
        if backend == "c" and slots:
            serving[op] = {
                regime: f"c:{c_kernels.get(slot, slot)}" for regime, slot in slots.items()
            }
        else:
            spec = row.kernels.get(f"{spec_op}/{backend}")
            serving[op] = {"any": f"{backend}:{spec}" if spec else backend}
    return serving
