"""C kernels for ``int4`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library, ptr, weight_pointers

_WEIGHT = (("packed", "uint8_t *"), ("scale", "float *"))


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W int4; arguments already validated by kernels.linear."""
    ffi, lib = library()
    packed, scale = weight_pointers(w, _WEIGHT)
    status = lib.pk_linear_int4_f32(
        ptr(ffi, "float *", x),
        x.shape[0],
        w.in_features,
        packed,
        scale,
        w.out_features,
        w.group_size,
        w.activation_scale or 0.0,
        ptr(ffi, "float *", bias),
        ACTIVATION_CODES[activation],
        ptr(ffi, "float *", out),
    )
    check(status, "int4 linear")
