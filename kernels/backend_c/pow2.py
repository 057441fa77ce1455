"""C kernels for ``pow2`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library, ptr, weight_pointers

_WEIGHT = (("codes", "uint8_t *"), ("alpha", "float *"))


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) for a Pow2Weight; arguments already validated."""
    ffi, lib = library()
    codes, alpha = weight_pointers(w, _WEIGHT)
    status = lib.pk_linear_pow2_f32(
        ptr(ffi, "float *", x),
        x.shape[0],
        w.in_features,
        codes,
        alpha,
        w.out_features,
        1 if w.activations == "int8" else 0,
        ptr(ffi, "float *", bias),
        ACTIVATION_CODES[activation],
        ptr(ffi, "float *", out),
    )
    check(status, "pow2 linear")
