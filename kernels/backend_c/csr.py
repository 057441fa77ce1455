"""C kernels for ``csr`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library, ptr, weight_pointers

_WEIGHT = (("indptr", "int32_t *"), ("indices", "char *"), ("values", "float *"))


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W in CSR; arguments already validated by kernels.linear."""
    ffi, lib = library()
    indptr, indices, values = weight_pointers(w, _WEIGHT)
    status = lib.pk_linear_csr_f32(
        ptr(ffi, "float *", x),
        x.shape[0],
        w.in_features,
        indptr,
        indices,
        w.indices.itemsize,
        values,
        w.out_features,
        ptr(ffi, "float *", bias),
        ACTIVATION_CODES[activation],
        ptr(ffi, "float *", out),
    )
    check(status, "csr linear")
