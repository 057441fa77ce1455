"""The runtime: a graph of ops over encoded weights, planned once and run as a list of steps.

``Model(graph, weights, constants)`` is planned on construction (``pyinfer.plan``: checks,
fusion, buffers, one step per node). A call copies a small list of slots, writes the
inputs into it and runs the steps: one function call per layer. Graph outputs are always
fresh arrays, and nothing mutable is shared between threads (reused buffers are per
thread), so one Model may run in several threads at once. Files: ``pyinfer.files``.

Pickling (to ship a model to Dask or Ray workers): a Model loaded from a file pickles as a
reference to it (its path and the SHA-256 of its bytes) and is re-opened memory-mapped on
unpickling, so workers on one host share its pages; a file that changed is refused. A
Model built in memory, or loaded with ``mmap=False`` (a private copy, for files that may
change), pickles with its weights, up to ``MAX_PICKLED_BYTES``.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from kernels import backends
from kernels.encodings.base import EncodedWeight
from pyinfer import ops, plan
from pyinfer.format import Container, FormatError
from pyinfer.ops import linear
from pyinfer.plan import InputSpec

#: A Model built in memory pickles with its weights and constants up to this many bytes;
#: a larger one must be saved first (then it pickles as a reference to its file).
MAX_PICKLED_BYTES = 64 << 20


class Model:
    """A planned graph, ready to run.

    Parameters
    ----------
    graph : dict
        ``{"inputs": [{"name", "shape", "dtype"}], "outputs": [name, ...],
        "nodes": [{"name", "op", "inputs", "outputs", "attrs"}, ...]}`` with nodes in
        topological order. Inputs of a node name graph inputs, constants, weights or
        outputs of earlier nodes.
    weights : dict of str -> EncodedWeight
        Encoded weights, by the names nodes use.
    constants : dict of str -> ndarray
        Plain arrays (biases, LayerNorm scales, embedding tables, operands).
    prepare : bool
        Build the kernels' derived layouts of the weights (the C ``csr`` kernel's batch-1
        slices) with the model (the default), or leave them to each kernel's first call
        (a model built only to be described).

    Raises
    ------
    FormatError
        If the graph is malformed, naming the node and what was expected.
    """

    def __init__(
        self,
        graph: Mapping[str, Any],
        weights: Mapping[str, EncodedWeight] | None = None,
        constants: Mapping[str, np.ndarray] | None = None,
        *,
        source: Container | None = None,
        reuse_buffers: bool = True,
        prepare: bool = True,
    ):
        self.reuse_buffers = reuse_buffers
        self._prepare = prepare
        self.graph = graph
        self.weights = dict(weights or {})
        self.constants = dict(constants or {})
        self.source = source
        self.path: str | None = None  # the file it maps (set by pyinfer.load unless mmap=False)
        # set by pyinfer.files.load_to_describe: positions were checked in the map, not
        # copied, so a later change of the file could make a kernel read out of bounds
        self.describe_only = False
        self._file_sha256: str | None = None
        self._checked = plan.check_graph(graph, self.weights, self.constants)
        self.inputs: list[InputSpec] = self._checked.inputs
        self.nodes = self._checked.nodes
        self.output_names = self._checked.output_names
        self.shapes = self._checked.shapes
        self.dtypes = self._checked.dtypes  # value name -> NumPy dtype
        self._shared_dims = plan.shared_dims(self.inputs)
        self._build_steps()

    def _build_steps(self) -> None:
        token = linear.prepare_at_build.set(self._prepare)
        try:
            self.planned_nodes, self._compiled = plan.build_steps(
                self._checked, self.constants, self.reuse_buffers
            )
        finally:
            linear.prepare_at_build.reset(token)

    # ------------------------------------------------------------------ running

    def _execute(self, values: list[np.ndarray]) -> list[np.ndarray]:
        if self.describe_only:
            raise RuntimeError(
                "this model was loaded only to be described (pyinfer inspect); "
                "load it with pyinfer.load(path) to run it"
            )
        with backends.model_run():  # the thread budget as it is now; workers kept ready
            return self._run_steps(values)

    def _run_steps(self, values: list[np.ndarray]) -> list[np.ndarray]:
        compiled = self._compiled
        if compiled.backend != backends.get_backend():
            self._build_steps()  # kernels were resolved for another backend setting
            compiled = self._compiled
        env = compiled.template.copy()
        for slot, value in zip(compiled.input_slots, values):
            env[slot] = value
        if compiled.n_buffers:
            arena = getattr(compiled.local, "arena", None)
            if arena is None:
                arena = compiled.local.arena = [None] * compiled.n_buffers
            env[compiled.arena_slot] = arena
        done = 0
        try:
            for step in compiled.functions:
                step(env)
                done += 1
        except (ValueError, TypeError, IndexError, ArithmeticError) as exc:
            _, name, op = compiled.steps[done]
            raise type(exc)(f"node {name!r} ({op}): {exc}") from exc
        return [env[s] for s in compiled.output_slots]

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the model on named inputs.

        Parameters
        ----------
        inputs : mapping of str -> array_like
            One array per graph input; float inputs are converted to float32 (integer
            arrays for float inputs raise TypeError). Free dims (the batch) take any size.

        Returns
        -------
        dict of str -> ndarray
            Each graph output by name.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"run() takes a mapping of input name -> array, got {type(inputs).__name__}"
            )
        names = [s.name for s in self.inputs]
        if set(inputs) != set(names):
            raise ValueError(f"the model takes inputs {names}, got {sorted(inputs)}")
        values = [spec.check(inputs[spec.name]) for spec in self.inputs]
        if self._shared_dims:
            plan.check_shared_dims(self._shared_dims, self.inputs, values)
        return dict(zip(self.output_names, self._execute(values)))

    def __call__(self, x: Any) -> np.ndarray:
        """Run a model with one input and one output: ``y = model(x)``."""
        if len(self.inputs) != 1 or len(self.output_names) != 1:
            raise TypeError(
                f"model(x) needs exactly one input and one output; this model has inputs "
                f"{[s.name for s in self.inputs]} and outputs {self.output_names}: "
                "use model.run({name: array})"
            )
        values = [self.inputs[0].check(x)]
        if self._shared_dims:  # a free dim named twice in the one input
            plan.check_shared_dims(self._shared_dims, self.inputs, values)
        return self._execute(values)[0]

    # ------------------------------------------------------------------ description

    def layers(self, release_pages: bool = False) -> list[dict[str, Any]]:
        """One row per node (as stored, before fusion): name, op, encoding, weight shape,
        output shape, sparsity (fraction of zero weights), bytes (weights and params).

        Sparsity is counted on the encoded weights in bounded memory. ``release_pages``
        drops the file's pages from this process's resident memory after each weight, so
        that a tool reading a file larger than memory once (``pyinfer inspect``) does not
        hold it resident.
        """
        rows = []
        mapped = release_pages and self.source is not None
        release = self.source.release_pages if mapped else None
        for node in self.nodes:
            w = next((s for s in node.static if isinstance(s, EncodedWeight)), None)
            params = [s for s in node.static if isinstance(s, np.ndarray)]
            params += [
                self.constants[v]
                for pos, v in enumerate(node.inputs)
                if ops.OPS[node.op].role(pos) == "tensor" and v in self.constants
            ]
            param_bytes = sum(p.nbytes for p in params)
            rows.append(
                {
                    "name": node.name,
                    "op": node.op,
                    "encoding": w.encoding if w is not None else None,
                    "weight_shape": tuple(w.shape) if w is not None else None,
                    "output_shape": node.out_shape,
                    "sparsity": sparsity(w, release) if w is not None else None,
                    "bytes": (w.nbytes if w is not None else 0) + param_bytes,
                    "dense_bytes": (4 * math.prod(w.shape) if w is not None else 0) + param_bytes,
                }
            )
            if release_pages and w is not None and self.source is not None:
                self.source.release_pages()
        return rows

    # ------------------------------------------------------------------ pickling

    def file_sha256(self) -> str:
        """SHA-256 (hex) of the whole file this model was loaded from, as mapped.

        Computed on first use (it reads the file once) and kept.

        Raises
        ------
        ValueError
            If the model was not loaded from a file.
        """
        if self._file_sha256 is None:
            mapped = getattr(self.source, "_mmap", None)
            if self.path is None or mapped is None:
                raise ValueError("this model was not loaded from a file")
            self._file_sha256 = hashlib.sha256(mapped).hexdigest()
        return self._file_sha256

    def __reduce__(self):
        if self.path is not None:
            return _open_reference, (self.path, self.file_sha256())
        size = sum(w.nbytes for w in self.weights.values())
        size += sum(a.nbytes for a in self.constants.values())
        if size > MAX_PICKLED_BYTES:
            raise TypeError(  # what pickle raises for an object it cannot pickle
                f"this model was built in memory and holds {size / 2**20:.1f} MiB of weights, "
                f"more than the {MAX_PICKLED_BYTES >> 20} MiB pickled by value: save it with "
                "pyinfer.save(model, path) and use pyinfer.load(path), which pickles as a "
                "reference to the file"
            )
        return _rebuild, (self.graph, self.weights, self.constants, self.reuse_buffers)

    def __repr__(self) -> str:
        return (
            f"<Model inputs={[s.name for s in self.inputs]} outputs={self.output_names} "
            f"nodes={len(self.nodes)} weights={len(self.weights)}>"
        )


def _rebuild(graph, weights, constants, reuse_buffers: bool) -> Model:
    return Model(graph, weights, constants, reuse_buffers=reuse_buffers)


#: Models opened from pickled references in this process: (path, sha256) -> (the file's
#: identity when it was checked, Model). Tasks that each carry the same pickled model then
#: share one Model without re-hashing the file, while the file stays the same.
_opened: collections.OrderedDict = collections.OrderedDict()
_opened_lock = threading.Lock()
_OPENED_KEPT = 4


def _file_identity(path: str) -> tuple:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _open_reference(path: str, sha256: str) -> Model:
    """Unpickle a Model pickled as a reference: load ``path`` memory-mapped, and refuse it
    unless its bytes hash to ``sha256``."""
    from pyinfer.files import load

    key = (path, sha256)
    try:
        identity = _file_identity(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: a pickled pyinfer model refers to this file, which is not there: "
            "every process that unpickles the model must see its file at the same path"
        ) from None
    with _opened_lock:
        seen = _opened.get(key)
        if seen is not None and seen[0] == identity:
            _opened.move_to_end(key)
            return seen[1]
    model = load(path)
    actual = model.file_sha256()
    if actual != sha256:
        raise FormatError(
            f"{path}: the file changed since the model was pickled (its SHA-256 is now "
            f"{actual}, the pickled model was {sha256}): load the new file with "
            "pyinfer.load and pickle it again, or restore the old file"
        )
    with _opened_lock:
        _opened[key] = (identity, model)
        _opened.move_to_end(key)
        while len(_opened) > _OPENED_KEPT:
            _opened.popitem(last=False)
    return model


def sparsity(w: EncodedWeight, after_chunk=None) -> float:
    """Fraction of the weight's entries that are zero (from the encoding when it knows,
    else counted on the encoded arrays in bounded memory: ``nonzero_count``)."""
    density = getattr(w, "density", None)
    if density is not None:
        return 1.0 - float(density)
    size = math.prod(w.shape)
    return 1.0 - w.nonzero_count(after_chunk=after_chunk) / size if size else 0.0
