"""C kernels for ``csr`` weights.

Batch 1 runs on the rows regrouped into slices of ``SLICE`` (SELL-8, see
``pk_linear_csr_slices_f32``), built once per weight by ``kernels.api.prepare`` (the
runtime calls it when it builds a model) or else on its first batch-1 call: a
~100-nonzero CSR row spends about as long on its loop set-up, tail and reduction as on
its nonzeros, and a slice pays them once for eight rows.
"""

from __future__ import annotations

import numpy as np

from kernels.backend_c.ffi import (
    ACTIVATION_CODES,
    bound_linear,
    call_xy,
    library,
    ptr,
    weight_pointers,
)
from kernels.encodings.base import derived

_WEIGHT = (("indptr", "int32_t *"), ("indices", "char *"), ("values", "float *"))

#: Rows per slice: one AVX2 vector of lanes.
SLICE = 8
#: Rows are sorted by nonzero count within windows of this many, so that a slice's rows
#: have about equal lengths (random 90 % sparse rows: 3 % padding, unsorted 13 %). A
#: window is the 8 slices the C kernel never splits between threads, so each thread
#: writes whole cache lines of y.
SORT_WINDOW = 64
#: Nonzeros placed per step of :func:`row_slices` (its working memory: ~32 bytes each).
SCATTER_BLOCK = 1 << 18


def row_slices(
    indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, in_features: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The SELL-8 layout of a CSR matrix, as ``pk_linear_csr_slices_f32`` reads it.

    Returns
    -------
    slice_ptr : ndarray of int64, shape [slices + 1]
        First entry of each slice (a multiple of 8).
    slice_rows : ndarray of int32, shape [slices * 8]
        Output row of each lane, -1 for none.
    slice_indices : ndarray of uint16 (``in_features < 65536``) or int32
        Column of each entry; padding entries hold ``in_features``.
    slice_values : ndarray of float32
        Value of each entry; padding entries hold 0.
    """
    rows = len(indptr) - 1
    lengths = np.diff(indptr).astype(np.int64)
    # longest first within each window; stable, so the layout depends on the matrix only
    order = np.lexsort((-lengths, np.arange(rows) // SORT_WINDOW)).astype(np.int32)
    slices = -(-rows // SLICE)
    slice_rows = np.full(slices * SLICE, -1, np.int32)
    slice_rows[:rows] = order
    lane_lengths = np.zeros(slices * SLICE, np.int64)
    lane_lengths[:rows] = lengths[order]
    slice_ptr = np.zeros(slices + 1, np.int64)
    np.cumsum(lane_lengths.reshape(slices, SLICE).max(axis=1) * SLICE, out=slice_ptr[1:])
    index_dtype = np.uint16 if in_features < 65536 else np.int32
    slice_indices = np.full(slice_ptr[-1], in_features, index_dtype)
    slice_values = np.zeros(slice_ptr[-1], np.float32)
    lane = np.empty(rows, np.int64)
    lane[order] = np.arange(rows)
    # Scattered a block of whole sort windows at a time (rows stay in their window), so
    # the int64 temporaries per nonzero are bounded by the block, not the matrix.
    start = 0
    while start < rows:
        stop = int(np.searchsorted(indptr, indptr[start] + SCATTER_BLOCK, side="right"))
        stop = min(max(-(-stop // SORT_WINDOW), start // SORT_WINDOW + 1) * SORT_WINDOW, rows)
        p0, p1 = int(indptr[start]), int(indptr[stop])
        # nonzero p of row r (lane `lane` of the layout) is step p - indptr[r] of its lane
        row_of = np.repeat(np.arange(start, stop), lengths[start:stop])
        where = np.arange(p0, p1, dtype=np.int64)
        where -= indptr[row_of]
        where *= SLICE
        lanes = lane[row_of]
        where += slice_ptr[lanes // SLICE]
        where += lanes % SLICE
        slice_indices[where] = indices[p0:p1]
        slice_values[where] = values[p0:p1]
        start = stop
    return slice_ptr, slice_rows, slice_indices, slice_values


def _slice_pointers(w) -> tuple:
    """``row_slices`` of ``w`` as C pointers (with the arrays they keep alive)."""
    cache = derived(w)
    if "slices" not in cache:
        ffi = library()[0]
        arrays = row_slices(w.indptr, w.indices, w.values, w.in_features)
        ctypes = ("int64_t *", "int32_t *", "char *", "float *")
        pointers = tuple(ptr(ffi, c, a) for c, a in zip(ctypes, arrays, strict=True))
        cache["slices"] = (len(arrays[0]) - 1, arrays[2].itemsize, pointers)
    return cache["slices"]


def prepare(w) -> None:
    """Build the batch-1 slices of ``w`` now (``kernels.api.prepare``), not on a first call."""
    _slice_pointers(w)


def bind_linear(w, bias, activation):
    """``run(x, out)``: y = act(x @ Wᵀ + bias) with W in CSR; arguments already validated
    by kernels.linear. Batch 1 runs on the slices (built on its first batch-1 call unless
    ``prepare`` built them)."""
    ffi, lib = library()
    epilogue = (ptr(ffi, "float *", bias), ACTIVATION_CODES[activation])
    indptr, indices, values = weight_pointers(w, _WEIGHT)
    args = (w.in_features, indptr, indices, w.indices.itemsize, values, w.out_features)
    batched = call_xy(lib.pk_linear_csr_f32, (*args, *epilogue), "csr linear")
    one = []  # the batch-1 call, bound on first use

    def run(x, y):
        if x.shape[0] != 1:
            return batched(x, y)
        if not one:
            slices, index_bytes, pointers = _slice_pointers(w)
            args = (w.in_features, slices, *pointers[:3], index_bytes, pointers[3],
                    w.out_features, *epilogue)  # fmt: skip
            one.append(call_xy(lib.pk_linear_csr_slices_f32, args, "csr linear", batch=False))
        return one[0](x, y)

    return run


linear = bound_linear(bind_linear)
