"""C kernels for ``pow2`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import (
    ACTIVATION_CODES,
    bound_linear,
    call_xy,
    library,
    ptr,
    weight_pointers,
)

_WEIGHT = (("codes", "uint8_t *"), ("alpha", "float *"))


def bind_linear(w, bias, activation):
    """``run(x, out)``: y = act(x @ Wᵀ + bias) for a Pow2Weight; arguments already
    validated."""
    ffi, lib = library()
    codes, alpha = weight_pointers(w, _WEIGHT)
    args = (w.in_features, codes, alpha, w.out_features, 1 if w.activations == "int8" else 0,
            ptr(ffi, "float *", bias), ACTIVATION_CODES[activation])  # fmt: skip
    return call_xy(lib.pk_linear_pow2_f32, args, "pow2 linear")


linear = bound_linear(bind_linear)
