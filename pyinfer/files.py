"""Reading and writing ``.pinf`` files: weights and graph in and out of the container.

``load(path)`` reads a file (memory-mapped or read, validated; the container itself is
``pyinfer.format``) into a :class:`pyinfer.Model`; ``save(model, path)`` writes one
atomically.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from kernels import registry
from pyinfer.format import (
    Container,
    FormatError,
    is_int,
    parse_json,
    read_container,
    write_container,
)
from pyinfer.model import Model
from pyinfer.plan import MAX_DIM


def private_copy(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a`` in private memory (validated after the copy, so what was
    checked is what kernels read, whatever later happens to the file)."""
    copy = np.array(a, copy=True, order="C")
    copy.flags.writeable = False  # owns its memory and read-only: not copied again
    return copy


def _weights_from_file(container: Container, table: Any, describe_only: bool) -> tuple[dict, set]:
    if not isinstance(table, dict):
        raise FormatError("__metadata__.weights must be a JSON object")
    weights, used = {}, set()
    for name, entry in table.items():
        where = f"weight {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"encoding", "shape", "params", "tensors"}:
            raise FormatError(
                f"{where}: expected an object with encoding, shape, params and tensors"
            )
        try:
            row = registry.get(entry["encoding"]) if isinstance(entry["encoding"], str) else None
        except ValueError as exc:
            raise FormatError(f"{where}: {exc} (the file may need a newer pyinfer)") from None
        if row is None:
            raise FormatError(f"{where}: encoding must be a string")
        shape = entry["shape"]
        if (
            not isinstance(shape, list)
            or not 2 <= len(shape) <= 4
            or not all(is_int(d) and 0 <= d <= MAX_DIM for d in shape)
        ):
            raise FormatError(
                f"{where}: shape must be 2 to 4 sizes in [0, {MAX_DIM}], got {shape!r:.80}"
            )
        params, fields = entry["params"], entry["tensors"]
        if not isinstance(params, dict):
            raise FormatError(f"{where}: params must be an object")
        if not isinstance(fields, dict) or not all(isinstance(t, str) for t in fields.values()):
            raise FormatError(f"{where}: tensors must map field names to tensor names")
        arrays = {}
        for field_name, tensor in fields.items():
            if tensor not in container.tensors:
                raise FormatError(f"{where}: its {field_name} tensor {tensor!r} is not in the file")
            if tensor in used:
                raise FormatError(f"{where}: tensor {tensor!r} is used by two weights")
            used.add(tensor)
            arrays[field_name] = container.tensors[tensor]
            if field_name in row.weight_type.address_fields and not describe_only:
                arrays[field_name] = private_copy(arrays[field_name])
        after_chunk = container.release_pages if describe_only else None
        try:
            weights[name] = row.weight_type.from_arrays(shape, arrays, params, after_chunk)
        except Exception as exc:  # any complaint of the encoding's own validation
            raise FormatError(f"{where} ({row.name}): {exc}") from None
        # validation read every page of it: let the map hold at most one weight resident
        container.release_pages()
    return weights, used


def load(path: str | os.PathLike, verify: bool = False, mmap: bool = True) -> Model:
    """Load a ``.pinf`` file: memory-mapped, zero-copy, everything validated.

    Everything a kernel uses for addressing (row pointers, indices) is copied into
    private memory and validated there; the values stay in the file's memory map, so
    rewriting the file in place after load can change results but never send a kernel
    out of bounds. Truncating or removing the file's bytes while the model is in use
    kills the process with SIGBUS on the next call (that is how a memory map reports
    pages that no longer exist): when the file may change, load it with
    ``mmap=False``. Replacing the file (rename, ``pyinfer.save``) is safe either way.

    Parameters
    ----------
    path : str or PathLike
        A regular file; a directory, FIFO or device is refused before it is opened.
    verify : bool
        Also recompute the SHA-256 of the data section (reads the whole file).
    mmap : bool
        True: map the file (fast, shared between processes, zero-copy). False: read the
        data section into private memory (same validation), immune to later changes of
        the file.

    Returns
    -------
    Model

    Raises
    ------
    FormatError
        If the file is malformed or hostile, naming what is wrong.
    """
    return _load(path, verify, mmap, describe_only=False)


def load_to_describe(path: str | os.PathLike) -> Model:
    """Load a ``.pinf`` file only to describe it (``pyinfer inspect``), in bounded memory.

    Validated as by :func:`load`, but read once: validation reads each large array a
    chunk at a time and drops the file's pages between chunks, positions (row pointers,
    indices) are validated in the map instead of copied, and no kernel's derived layout
    is built. The model refuses to run (``RuntimeError``): its positions are read from
    the map, which a later change of the file would change after validation.

    Raises
    ------
    FormatError
        If the file is malformed or hostile, naming what is wrong.
    """
    return _load(path, verify=False, mmap=True, describe_only=True)


def _load(path: str | os.PathLike, verify: bool, mmap: bool, describe_only: bool) -> Model:
    container = read_container(path, mmap=mmap)
    if verify:
        container.verify()
    meta = container.metadata
    for key in ("graph", "weights"):
        if key not in meta:
            raise FormatError(f"{container.path}: __metadata__ has no {key!r}")
    graph = parse_json(meta["graph"], "__metadata__.graph")
    weights, used = _weights_from_file(
        container, parse_json(meta["weights"], "__metadata__.weights"), describe_only
    )
    # integer constants (indices, shapes) are small: private, like weights' positions
    constants = {
        n: private_copy(a) if a.dtype.kind in "iub" else a
        for n, a in container.tensors.items()
        if n not in used
    }
    model = Model(graph, weights, constants, source=container, prepare=not describe_only)
    model.describe_only = describe_only
    if container.mapped:  # a pickled model refers to its file; one read privately holds a copy
        model.path = os.path.abspath(container.path)
    return model


def save(model: Any, path: str | os.PathLike) -> str:
    """Write a model (or a ``pyinfer.Graph``) to ``path`` atomically.

    Returns
    -------
    str
        SHA-256 (hex) of the data section, also stored in the file.
    """
    if hasattr(model, "build") and not isinstance(model, Model):
        model = model.build()
    if not isinstance(model, Model):
        raise TypeError(f"save() takes a Model or Graph, got {type(model).__name__}")
    tensors: dict[str, np.ndarray] = {}
    table = {}
    for name, w in model.weights.items():
        fields = {}
        for field_name, array in w.arrays().items():
            tensor = f"{name}.{field_name}"
            if tensor in model.constants or tensor in tensors:
                raise ValueError(f"tensor name {tensor!r} of weight {name!r} is already used")
            tensors[tensor] = array
            fields[field_name] = tensor
        table[name] = {
            "encoding": w.encoding,
            "shape": [int(d) for d in w.shape],
            "params": w.params(),
            "tensors": fields,
        }
    tensors.update(model.constants)
    try:
        metadata = {
            "graph": json.dumps(model.graph, separators=(",", ":"), allow_nan=False),
            "weights": json.dumps(table, separators=(",", ":"), allow_nan=False),
        }
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the graph or a weight's params are not JSON-serialisable: {exc}"
        ) from None
    from kernels import __version__

    metadata["producer"] = f"pyinfer {__version__}"
    return write_container(path, tensors, metadata)
