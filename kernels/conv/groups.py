"""Grouped conv through a row-wise kernel: one weight per group, sliced once."""

from __future__ import annotations

import numpy as np

from kernels.encodings.base import EncodedWeight, derived


def group_weight(w: EncodedWeight, groups: int, g: int) -> tuple[EncodedWeight, slice]:
    """(weight, columns): a weight whose linear gives group g's outputs at ``columns``.

    The group's rows come from ``w.slice_rows`` (checked once against ``decode()``);
    a weight that cannot be sliced serves every group whole and the group's columns
    are picked from its output: exact, at ``groups`` times the work.
    """
    if groups == 1:
        return w, slice(None)
    cache = derived(w)
    key = ("group", groups, g)
    if key not in cache:
        og = w.out_features // groups
        cache[key] = _sliced(w, g * og, (g + 1) * og)
    return cache[key]


def _sliced(w: EncodedWeight, lo: int, hi: int) -> tuple[EncodedWeight, slice]:
    try:
        part = w.slice_rows(lo, hi)
    except (TypeError, ValueError):
        part = None
    if part is not None and np.array_equal(
        part.decode_matrix(), w.decode_matrix()[lo:hi], equal_nan=True
    ):
        return part, slice(None)
    return w, slice(lo, hi)
