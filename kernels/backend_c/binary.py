"""C kernels for ``binary`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import (
    ACTIVATION_CODES,
    bound_linear,
    call_xy,
    library,
    ptr,
    weight_pointers,
)

_WEIGHT = (("bits", "uint64_t *"), ("alpha", "float *"))


def bind_linear(w, bias, activation):
    """``run(x, out)``: y = act(x @ Wᵀ + bias) for a BinaryWeight; arguments already
    validated."""
    ffi, lib = library()
    bits, alpha = weight_pointers(w, _WEIGHT)
    args = (w.in_features, bits, alpha, w.out_features, 1 if w.activations == "binary" else 0,
            ptr(ffi, "float *", bias), ACTIVATION_CODES[activation])  # fmt: skip
    return call_xy(lib.pk_linear_binary_f32, args, "binary linear")


linear = bound_linear(bind_linear)
