"""C kernels for ``int8`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library, ptr, weight_pointers

_WEIGHT = (("packed", "int8_t *"), ("scale", "float *"))


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W int8; arguments already validated by kernels.linear."""
    ffi, lib = library()
    packed, scale = weight_pointers(w, _WEIGHT)
    status = lib.pk_linear_int8_f32(
        ptr(ffi, "float *", x),
        x.shape[0],
        w.in_features,
        packed,
        scale,
        w.out_features,
        w.activation_scale or 0.0,
        ptr(ffi, "float *", bias),
        ACTIVATION_CODES[activation],
        ptr(ffi, "float *", out),
    )
    check(status, "int8 linear")
