"""C kernels for ``csr`` weights."""

from __future__ import annotations

from kernels.backend_c.ffi import ACTIVATION_CODES, check, library


def linear(x, w, bias, activation, out) -> None:
    """y = act(x @ Wᵀ + bias) with W in CSR; arguments already validated by kernels.linear."""
    ffi, lib = library()
    # ffi.from_buffer is several times cheaper than casting ndarray.ctypes.data; the
    # arrays stay alive (and C-contiguous) for the duration of the call
    status = lib.pk_linear_csr_f32(
        ffi.from_buffer("float[]", x),
        x.shape[0],
        w.in_features,
        ffi.from_buffer("int32_t[]", w.indptr),
        ffi.from_buffer("char[]", w.indices),
        w.indices.itemsize,
        ffi.from_buffer("float[]", w.values),
        w.out_features,
        ffi.NULL if bias is None else ffi.from_buffer("float[]", bias),
        ACTIVATION_CODES[activation],
        ffi.from_buffer("float[]", out, require_writable=True),
    )
    check(status, "csr linear")
