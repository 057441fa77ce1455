"""C kernels for ``int8`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library

_types: dict = {}


def _ctypes(ffi):
    # NOTE: ffi.from_buffer with a pre-parsed pointer type costs ~1 us per array, where
    # ffi.cast(ctype, a.ctypes.data) costs ~10 us: it matters at batch 1.
    if not _types:
        _types.update(f32=ffi.typeof("float *"), i8=ffi.typeof("int8_t *"))
    return _types


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W int8; arguments already validated by kernels.linear."""
    ffi, lib = library()
    t = _ctypes(ffi)
    status = lib.pk_linear_int8_f32(
        ffi.from_buffer(t["f32"], x),
        x.shape[0],
        w.in_features,
        ffi.from_buffer(t["i8"], w.packed),
        ffi.from_buffer(t["f32"], w.scale),
        w.out_features,
        w.activation_scale or 0.0,
        ffi.NULL if bias is None else ffi.from_buffer(t["f32"], bias),
        ACTIVATION_CODES[activation],
        ffi.from_buffer(t["f32"], out, require_writable=True),
    )
    check(status, "int8 linear")
