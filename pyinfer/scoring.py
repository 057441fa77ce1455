"""``pyinfer.BatchScorer``: a saved model as a callable class for Dask and Ray Data.

Dask ``map_blocks`` pickles the scorer to each worker (the model travels as a reference to
its file, not as its weights); Ray Data ``map_batches`` builds the class once per worker.
Either way each batch is one call: a NumPy array, a dict of arrays, or a pandas DataFrame
with a column of arrays, and the scorer returns the same kind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from kernels import backends
from pyinfer.files import load
from pyinfer.model import Model


class BatchScorer:
    """Score batches with a ``.pinf`` model: built once per worker, called per batch.

    Parameters
    ----------
    path : str or PathLike
        The model file, opened memory-mapped (processes on one host share its pages).
        Every worker must see it at the same path.
    output : str, optional
        The graph output to return. Default: the model's only output for an array batch,
        every output for a dict or DataFrame batch.
    batch_size : int, optional
        Rows per model run: a larger batch is scored in slices of this many rows, which
        bounds the memory of one run. Default: the whole batch in one run.
    threads : int, optional
        Kernel threads in each process the scorer is built or unpickled in (it calls
        ``kernels.set_num_threads``).
        Default: each call follows ``OMP_NUM_THREADS`` as it is then (Dask and Ray set it
        per worker), or uses all cores when it is not set.

    Examples
    --------
    Dask, on an array chunked along rows only:

    >>> scorer = BatchScorer("model.pinf")
    >>> y = x.map_blocks(scorer, chunks=(x.chunks[0], (10,)), dtype=np.float32)

    Ray Data, one scorer per worker:

    >>> ds.map_batches(BatchScorer, fn_constructor_args=("model.pinf",), concurrency=2)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        output: str | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
    ):
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive number of rows, got {batch_size}")
        self.path = os.path.abspath(os.fspath(path))
        self.model: Model = load(self.path)
        if output is not None and output not in self.model.output_names:
            raise ValueError(
                f"{self.path}: the model has no output {output!r}; "
                f"its outputs are {self.model.output_names}"
            )
        self.output = output
        self.batch_size = None if batch_size is None else int(batch_size)
        self.threads = threads
        self._apply_threads()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._apply_threads()  # unpickled in a worker: its process takes the thread count

    def _apply_threads(self) -> None:
        if self.threads is not None:
            backends.set_num_threads(self.threads)

    def __call__(self, batch: Any) -> Any:
        """Score one batch.

        Parameters
        ----------
        batch : ndarray, dict of str -> ndarray, or pandas.DataFrame
            An array feeds the model's only input. A dict or DataFrame feeds each input
            from the key or column of its name (a model with one input also takes a batch
            with one key or column of another name, such as Ray's ``"data"``); a
            DataFrame's column holds one array per row.

        Returns
        -------
        ndarray, dict or pandas.DataFrame
            The same kind: an array of the output; or the batch with one more key or
            column per output, named by the output (a DataFrame's holds one array per row).

        Raises
        ------
        ValueError
            If a batch does not fit the model, naming the model input and the shapes.
        """
        if isinstance(batch, np.ndarray):
            name = self._only("input", [s.name for s in self.model.inputs])
            wanted = self._only("output", [self.output] if self.output else self.model.output_names)
            return self._score({name: batch})[wanted]
        if isinstance(batch, Mapping):
            result = dict(batch)
            result.update(self._score(self._inputs_from(batch, list(batch))))
            return result
        if _is_dataframe(batch):
            if not len(batch):
                outputs = [self.output] if self.output else self.model.output_names
                return batch.assign(**{name: [] for name in outputs})
            columns = {str(c): batch[c] for c in batch.columns}
            picked = self._inputs_from(columns, list(columns))
            arrays = {name: _stack_cells(name, column) for name, column in picked.items()}
            scored = self._score(arrays)
            return batch.assign(**{name: list(y) for name, y in scored.items()})
        raise TypeError(
            "a batch must be a NumPy array, a dict of arrays or a pandas DataFrame, "
            f"got {type(batch).__name__}"
        )

    def _only(self, what: str, names: list[str]) -> str:
        if len(names) != 1:
            hint = "pass output= to choose one" if what == "output" else "pass a dict batch"
            raise TypeError(
                f"{self.path}: an array batch needs a model with one {what}; this one has "
                f"{what}s {names}: {hint}"
            )
        return names[0]

    def _inputs_from(self, batch: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
        """Each model input's values from the batch: the key of its name, or the only key."""
        names = [s.name for s in self.model.inputs]
        if len(names) == 1 and names[0] not in batch and len(keys) == 1:
            return {names[0]: batch[keys[0]]}
        missing = [n for n in names if n not in batch]
        if missing:
            raise ValueError(
                f"{self.path}: the batch has no {missing} for the model's inputs {names}; "
                f"its keys are {keys}"
            )
        return {n: batch[n] for n in names}

    def _score(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        try:
            checked = {s.name: s.check(inputs[s.name]) for s in self.model.inputs}
        except ValueError as exc:
            raise ValueError(f"{self.path}: the batch does not fit the model: {exc}") from None
        outputs = [self.output] if self.output else self.model.output_names
        rows = {a.shape[0] if a.ndim else 1 for a in checked.values()}
        if len(rows) > 1:
            raise ValueError(f"{self.path}: the model's inputs have different row counts {rows}")
        (n,) = rows
        step = self.batch_size or n
        if n <= step:
            result = self.model.run(checked)
            return {name: result[name] for name in outputs}
        parts = [
            self.model.run({name: a[i : i + step] for name, a in checked.items()})
            for i in range(0, n, step)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in outputs}

    def __repr__(self) -> str:
        return (
            f"BatchScorer({self.path!r}, output={self.output!r}, "
            f"batch_size={self.batch_size!r}, threads={self.threads!r})"
        )


def _is_dataframe(batch: Any) -> bool:
    # pandas is optional: recognise a DataFrame without importing it
    return type(batch).__name__ == "DataFrame" and type(batch).__module__.startswith("pandas")


def _stack_cells(name: str, column: Any) -> np.ndarray:
    """A DataFrame column of equal-length arrays (one per row) as one [rows, ...] array."""
    cells = column.to_numpy()
    if cells.dtype != object:
        return cells  # a column of scalars (or an extension array of tensors) as is
    try:
        return np.stack([np.asarray(c) for c in cells])
    except ValueError as exc:
        raise ValueError(f"column {name!r} must hold arrays of one shape: {exc}") from None
