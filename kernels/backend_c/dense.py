"""C kernels for ``dense`` weights, and the batched matmul of two activations.

Batch 1 reads the rows of W [out, in] as they are stored (``dense_dot``, four rows at a
time: as fast as a GEMV on packed panels). Larger batches run on W packed once
(``pk_dense_pack_f32``: panels of 16 output rows interleaved along k) on the weight's
first such call and kept with it. Not at ``kernels.api.prepare``: packing there would
read every page of a memory-mapped model at load and double its memory, where a
batch-1 model needs no packed copy. A plain ndarray passed to ``kernels.linear`` lives
for one call only, so it is never packed whole: up to 8 rows run as dot products,
more pack panel by panel inside the call.
"""

from __future__ import annotations

import numpy as np

from kernels.backend_c.ffi import ACTIVATION_CODES, bound_linear, call_xy, check, library, ptr
from kernels.encodings.base import derived


def _packed(w):
    """A C pointer to ``w`` packed for ``pk_linear_dense_f32`` (made once, kept with the
    weight, as is the array under ``"packed"``)."""
    cache = derived(w)
    pointer = cache.get("packed_ptr")
    if pointer is None:
        ffi, lib = library()
        packed = np.empty(max(lib.pk_dense_packed_floats(w.out_features, w.in_features), 1),
                          np.float32)  # fmt: skip
        status = lib.pk_dense_pack_f32(
            ptr(ffi, "float *", w.data), w.out_features, w.in_features,
            ptr(ffi, "float *", packed),
        )  # fmt: skip
        check(status, "dense pack")
        packed.flags.writeable = False
        cache["packed"] = packed
        pointer = cache["packed_ptr"] = ptr(ffi, "float *", packed)
    return pointer


def bind_linear(w, bias, activation):
    """``run(x, out)``: y = act(x @ Wᵀ + bias); arguments already validated by
    kernels.linear. Batch 1 (and a transient W) reads W as stored; larger batches run on
    W packed on the first such call."""
    ffi, lib = library()
    epilogue = (ptr(ffi, "float *", bias), ACTIVATION_CODES[activation])
    k, n, data = w.in_features, w.out_features, ptr(ffi, "float *", w.data)
    from_buffer, fp = ffi.from_buffer, ffi.typeof("float *")
    batched = []  # the packed-panel call, bound on first use

    def run(x, y):
        if w.transient or x.shape[0] == 1:  # W as B = Wᵀ [in, out]: row stride 1, column in
            status = lib.pk_matmul_f32(from_buffer(fp, x), ffi.NULL, data, ffi.NULL, 1, k, 1,
                                       x.shape[0], k, n, *epilogue, from_buffer(fp, y))  # fmt: skip
            if status:
                check(status, "dense linear")
            return
        if not batched:
            args = (k, _packed(w), n, *epilogue)
            batched.append(call_xy(lib.pk_linear_dense_f32, args, "dense linear"))
        batched[0](x, y)

    return run


linear = bound_linear(bind_linear)


def _batch_offsets(t: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
    """Element offset of each batch item of ``t`` broadcast to ``batch`` (row-major order)."""
    view = np.broadcast_to(t, (*batch, *t.shape[-2:]))  # broadcast axes get stride 0
    offsets = np.zeros(batch, np.int64)
    for axis, stride in enumerate(view.strides[:-2]):
        index = np.arange(batch[axis], dtype=np.int64) * (stride // 4)
        offsets += index.reshape((-1,) + (1,) * (len(batch) - axis - 1))
    return offsets.ravel()


def _address(ffi, t: np.ndarray):
    """A ``float *`` to ``t``'s first element, contiguous or not."""
    if t.flags.c_contiguous:
        return ptr(ffi, "float *", t)
    return ffi.cast("float *", t.__array_interface__["data"][0])


def matmul(a: np.ndarray, b: np.ndarray, batch: tuple[int, ...], out: np.ndarray) -> None:
    """out = a @ b for float32 a [..., m, k], b [..., k, n] (batch axes broadcast to
    ``batch``), out C-contiguous [*batch, m, n]; shapes already checked by kernels.matmul."""
    if out.size == 0:
        return
    ffi, lib = library()
    m, k = a.shape[-2:]
    n = b.shape[-1]
    a = np.ascontiguousarray(a)  # rows of k floats
    if min(b.strides) < 0 or any(s % 4 for s in b.strides):
        b = np.ascontiguousarray(b)  # the kernel reads b through non-negative strides
    a_offsets = _batch_offsets(a, batch)
    b_offsets = _batch_offsets(b, batch)
    status = lib.pk_matmul_f32(
        _address(ffi, a), ptr(ffi, "int64_t *", a_offsets), _address(ffi, b),
        ptr(ffi, "int64_t *", b_offsets), b.strides[-2] // 4, b.strides[-1] // 4,
        len(a_offsets), m, k, n, ffi.NULL, 0, ptr(ffi, "float *", out),
    )  # fmt: skip
    check(status, "matmul")
