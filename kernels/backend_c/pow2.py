"""C kernels for ``pow2`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library

_types: dict = {}


def _ctypes(ffi):
    # NOTE: ffi.from_buffer with a pre-parsed pointer type costs ~1 us per array, where
    # ffi.cast(ctype, a.ctypes.data) costs ~10 us: it matters at batch 1.
    if not _types:
        _types.update(f32=ffi.typeof("float *"), u8=ffi.typeof("uint8_t *"))
    return _types


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) for a Pow2Weight; arguments already validated."""
    ffi, lib = library()
    t = _ctypes(ffi)
    status = lib.pk_linear_pow2_f32(
        ffi.from_buffer(t["f32"], x),
        x.shape[0],
        w.in_features,
        ffi.from_buffer(t["u8"], w.codes),
        ffi.from_buffer(t["f32"], w.alpha),
        w.out_features,
        1 if w.activations == "int8" else 0,
        ffi.NULL if bias is None else ffi.from_buffer(t["f32"], bias),
        ACTIVATION_CODES[activation],
        ffi.from_buffer(t["f32"], out, require_writable=True),
    )
    check(status, "pow2 linear")
