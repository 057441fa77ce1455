"""C kernels for ``int4`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import (
    ACTIVATION_CODES,
    bound_linear,
    call_xy,
    library,
    ptr,
    weight_pointers,
)

_WEIGHT = (("packed", "uint8_t *"), ("scale", "float *"))


def bind_linear(w, bias, activation):
    """``run(x, out)``: y = act(x @ Wᵀ + bias) with W int4; arguments already validated
    by kernels.linear."""
    ffi, lib = library()
    packed, scale = weight_pointers(w, _WEIGHT)
    args = (w.in_features, packed, scale, w.out_features, w.group_size,
            w.activation_scale or 0.0, ptr(ffi, "float *", bias),
            ACTIVATION_CODES[activation])  # fmt: skip
    return call_xy(lib.pk_linear_int4_f32, args, "int4 linear")


linear = bound_linear(bind_linear)
