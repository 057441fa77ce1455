"""Opens the C kernel library with cffi, once, and checks its version.

Through the compiled binding built beside it for this Python when there is one (cffi's
API mode: a call costs about a microsecond less, which a small layer notices), else in
ABI mode. The cdef is the public header itself (the part between its cdef markers).
Public modules never build an FFI: they call :func:`library`.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from kernels._version import __version__
from kernels.build_lib import BINDING_NAME, HEADER_NAME, LIB_NAME, cdef_of
from kernels.encodings.base import derived

_PACKAGE = Path(__file__).resolve().parent.parent
_lock = threading.Lock()
_state: dict = {}


class KernelLibraryError(RuntimeError):
    """The C library exists but cannot be used (wrong version, unreadable header)."""


def _paths() -> tuple[Path, Path]:
    override = os.environ.get("PYINFER_LIB")
    lib = Path(override) if override else _PACKAGE / "_lib" / LIB_NAME
    header = lib.parent / HEADER_NAME
    if not header.exists():  # a source checkout built in place
        header = _PACKAGE.parent / "csrc" / "include" / HEADER_NAME
    return lib, header


def _cdef(header: Path) -> str:
    try:
        return cdef_of(header)
    except ValueError as exc:
        raise KernelLibraryError(str(exc)) from None


def _binding(lib_path: Path):
    """``(ffi, lib)`` of the compiled binding beside the package's library, or None
    (another library named by PYINFER_LIB, or none built for this Python)."""
    if os.environ.get("PYINFER_LIB"):
        return None
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = lib_path.parent / (BINDING_NAME + suffix)
        if path.exists():
            spec = importlib.util.spec_from_file_location(BINDING_NAME, path)
            try:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except ImportError:
                return None  # e.g. built against another library: ABI mode still works
            return module.ffi, module.lib
    return None


def _open():
    if os.environ.get("PYINFER_NO_C"):
        return None, "disabled by PYINFER_NO_C"
    lib_path, header = _paths()
    if not lib_path.exists():
        return None, f"{lib_path} not found (no C compiler at install time?)"
    bound = _binding(lib_path)
    if bound is not None:
        _state["mode"] = "compiled"
        return _checked(*bound, lib_path)
    _state["mode"] = "abi"
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(_cdef(header))
    try:
        # never unloaded: at exit, the thread pool's workers may still be running and
        # would crash in its unmapped code
        lib = ffi.dlopen(str(lib_path), ffi.RTLD_NOW | getattr(ffi, "RTLD_NODELETE", 0))
    except OSError as exc:
        return None, f"cannot open {lib_path}: {exc}"
    return _checked(ffi, lib, lib_path)


def _checked(ffi, lib, lib_path: Path):
    built_for = ffi.string(lib.pk_version()).decode()
    if built_for != __version__:
        raise KernelLibraryError(
            f"C kernel library {lib_path} was built for pyinfer {built_for}, but this is "
            f"pyinfer {__version__}; rebuild it (pip install . or python kernels/build_lib.py)"
        )
    return (ffi, lib), None


def library():
    """``(ffi, lib)`` of the C kernel library, or None when it is not available.

    Warns once when the library is missing; raises :class:`KernelLibraryError` when
    it exists but does not match this package.
    """
    if "handle" not in _state:
        with _lock:
            if "handle" not in _state:
                handle, why = _open()
                _state["handle"], _state["why"] = handle, why
                if handle is None and not os.environ.get("PYINFER_NO_C"):
                    warnings.warn(
                        f"pyinfer: C kernels unavailable ({why}); using Numba/NumPy kernels",
                        RuntimeWarning,
                        stacklevel=3,
                    )
    return _state["handle"]


def binding_mode() -> str | None:
    """How the library was opened: ``"compiled"`` (the cffi binding built beside it for
    this Python, API mode), ``"abi"`` (cffi's ABI mode), or None (it was not)."""
    return _state.get("mode") if library() is not None else None


def unavailable_reason() -> str | None:
    """Why :func:`library` returned None (None when it is available)."""
    library()
    return _state.get("why")


_ERRORS = {
    -1: (ValueError, "invalid argument"),
    -2: (OverflowError, "size too large for exact accumulation"),
    -3: (MemoryError, "out of memory for kernel scratch"),
}


def check(status: int, what: str) -> None:
    """Turn a PK_ERR_* status into the matching Python exception."""
    if status != 0:
        exc, text = _ERRORS.get(status, (RuntimeError, f"status {status}"))
        raise exc(f"{what}: {text}")


def ptr(ffi, ctype: str, array: np.ndarray | None):
    """A C pointer to ``array``'s data (NULL for None); the caller keeps ``array`` alive.

    NOTE: ``ffi.from_buffer`` with a pre-parsed type costs about 1 us per array, casting
    ``array.ctypes.data`` about 10: it matters for small calls.
    """
    if array is None:
        return ffi.NULL
    return ffi.from_buffer(_ctype(ffi, ctype), array)


def weight_pointers(w, fields: tuple[tuple[str, str], ...]) -> tuple:
    """C pointers to the arrays ``fields`` (``(name, ctype)`` pairs) of weight ``w``.

    Made once per weight and kept with it: its arrays are frozen, and the pointers keep
    them alive.
    """
    cache = derived(w)
    pointers = cache.get(fields)
    if pointers is None:
        ffi = library()[0]
        pointers = cache[fields] = tuple(ptr(ffi, c, getattr(w, name)) for name, c in fields)
    return pointers


@functools.cache
def _ctype(ffi, ctype: str):
    return ffi.typeof(ctype)


ACTIVATION_CODES = {None: 0, "relu": 1, "relu6": 2}


def call_xy(fn, args: tuple, what: str, batch: bool = True):
    """``run(x, y)``: ``fn(x, [x.shape[0],] *args, y)`` for float32 C-contiguous x and y,
    raising on a bad status. The weight-side ``args`` are converted once, here: a model
    step binds its kernel once and then pays only for x and y per call."""
    ffi = library()[0]
    from_buffer, fp = ffi.from_buffer, _ctype(ffi, "float *")
    if batch:

        def run(x, y):
            status = fn(from_buffer(fp, x), x.shape[0], *args, from_buffer(fp, y))
            if status:
                check(status, what)

    else:

        def run(x, y):
            status = fn(from_buffer(fp, x), *args, from_buffer(fp, y))
            if status:
                check(status, what)

    return run


def bound_linear(bind):
    """The registry's ``linear(x, w, bias, activation, out)`` made from
    ``bind(w, bias, activation) -> run(x, out)``, which it keeps as ``linear.bind``: the
    runtime binds once per model step (``kernels.api.bind_linear``), a one-off call binds
    and runs."""

    def linear(x, w, bias, activation, out) -> None:
        bind(w, bias, activation)(x, out)

    linear.bind = bind
    linear.__doc__ = bind.__doc__
    linear.__module__ = bind.__module__
    return linear
