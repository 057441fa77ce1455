"""C kernels for ``binary`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library, ptr, weight_pointers

_WEIGHT = (("bits", "uint64_t *"), ("alpha", "float *"))


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) for a BinaryWeight; arguments already validated."""
    ffi, lib = library()
    bits, alpha = weight_pointers(w, _WEIGHT)
    status = lib.pk_linear_binary_f32(
        ptr(ffi, "float *", x),
        x.shape[0],
        w.in_features,
        bits,
        alpha,
        w.out_features,
        1 if w.activations == "binary" else 0,
        ptr(ffi, "float *", bias),
        ACTIVATION_CODES[activation],
        ptr(ffi, "float *", out),
    )
    check(status, "binary linear")
