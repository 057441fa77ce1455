"""Scoring beyond one process: models that pickle by path, the per-run thread budget, and
``pyinfer.BatchScorer`` on arrays, dicts, DataFrames, Dask and Ray (both on 127.0.0.1)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import pyinfer
from kernels import backends
from kernels.backend_c import ffi
from pyinfer import model as model_module
from pyinfer.format import FormatError

RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def mlp(sizes, encoding="int8"):
    """An MLP graph: relu between layers, one input ``x`` and one output ``logits``."""
    g = pyinfer.Graph()
    h = g.input("x", (None, sizes[0]))
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        h = g.linear(
            h,
            randn(n, k) / np.sqrt(k),
            randn(n),
            activation=None if last else "relu",
            encoding=encoding,
            name="logits" if last else None,
        )
    g.output(h)
    return g


@pytest.fixture(scope="module")
def int8_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("scoring") / "mlp.pinf"
    pyinfer.save(mlp([64, 48, 32, 10]), path)
    return str(path)


def test_a_loaded_model_pickles_as_a_reference_to_its_file(tmp_path):
    path = tmp_path / "big.pinf"
    pyinfer.save(mlp([3600, 3600, 8], encoding="dense"), path)
    assert os.path.getsize(path) > 50e6
    model = pyinfer.load(path)
    data = pickle.dumps(model)
    assert len(data) < 64 * 1024
    again = pickle.loads(data)
    assert again.path == os.path.abspath(path)
    assert again.source is not None  # re-opened memory-mapped, not rebuilt from bytes
    x = randn(3, 3600)
    np.testing.assert_array_equal(again(x), model(x))


def test_a_changed_or_missing_file_is_refused(tmp_path):
    path = tmp_path / "m.pinf"
    pyinfer.save(mlp([8, 4]), path)
    data = pickle.dumps(pyinfer.load(path))
    pyinfer.save(mlp([8, 4]), path)  # new weights at the same path
    with pytest.raises(FormatError, match="changed since the model was pickled"):
        pickle.loads(data)
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="same path"):
        pickle.loads(data)


def test_a_model_built_in_memory_pickles_with_its_weights(monkeypatch):
    model = mlp([16, 8, 4]).build()
    again = pickle.loads(pickle.dumps(model))
    assert again.path is None
    x = randn(5, 16)
    np.testing.assert_array_equal(again(x), model(x))
    monkeypatch.setattr(model_module, "MAX_PICKLED_BYTES", 100)
    with pytest.raises(TypeError, match=r"pyinfer\.save\(model, path\)"):
        pickle.dumps(model)


def test_each_run_follows_omp_num_threads_unless_a_count_is_set(monkeypatch):
    handle = ffi.library()
    if handle is None:
        pytest.skip("the C kernel library is not built; its thread budget is not there")
    lib = handle[1]
    model = mlp([16, 4]).build()
    x = randn(2, 16)
    saved = backends._state["threads"]
    try:
        backends.set_num_threads(0)
        for n in (1, 2, 1):
            monkeypatch.setenv("OMP_NUM_THREADS", str(n))
            model(x)
            assert lib.pk_get_num_threads() == n
        backends.set_num_threads(2)
        model(x)
        assert lib.pk_get_num_threads() == 2  # an explicit count wins over the environment
    finally:
        backends.set_num_threads(saved)


def test_scorer_takes_arrays_dicts_and_dataframes(int8_path):
    scorer = pyinfer.BatchScorer(int8_path, batch_size=7)
    x = randn(20, 64)
    want = pyinfer.load(int8_path)(x)
    np.testing.assert_array_equal(scorer(x), want)
    batch = {"x": x, "id": np.arange(20)}
    got = scorer(batch)
    np.testing.assert_array_equal(got["logits"], want)
    np.testing.assert_array_equal(got["id"], batch["id"])
    np.testing.assert_array_equal(scorer({"data": x})["logits"], want)  # Ray's column name

    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    frame = pd.DataFrame({"id": np.arange(20), "x": list(x)})
    scored = scorer(frame)
    assert list(scored.columns) == ["id", "x", "logits"]
    np.testing.assert_array_equal(np.stack(scored["logits"].to_numpy()), want)


def test_a_batch_of_the_wrong_width_names_the_input_and_shapes(int8_path):
    scorer = pyinfer.BatchScorer(int8_path)
    with pytest.raises(ValueError, match=r"input 'x' must have shape \[\?, 64\], got \[3, 60\]"):
        scorer(randn(3, 60))
    with pytest.raises(ValueError, match=r"no \['x'\] for the model's inputs"):
        scorer({"a": randn(3, 64), "b": randn(3, 64)})


def test_dask_workers_score_like_one_process(int8_path):
    pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    da = pytest.importorskip("dask.array", reason="dask is not installed")
    from distributed import Client, LocalCluster

    x = randn(1000, 64)
    want = pyinfer.BatchScorer(int8_path)(x)
    scorer = pyinfer.BatchScorer(int8_path)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with cluster, Client(cluster):
        blocks = da.from_array(x, chunks=(125, -1))
        y = blocks.map_blocks(
            scorer, chunks=(blocks.chunks[0], (10,)), meta=np.empty((0, 10), np.float32)
        )
        got = y.compute()
    np.testing.assert_array_equal(got, want)


def test_ray_workers_score_like_one_process(int8_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (optional: pyinfer[ray])")
    x = randn(1000, 64)
    want = pyinfer.BatchScorer(int8_path)(x)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        rows_with_ids = ray.data.range(len(x), override_num_blocks=2).map_batches(
            lambda batch: {"id": batch["id"], "x": x[batch["id"]]}
        )
        scored = rows_with_ids.map_batches(
            pyinfer.BatchScorer,
            fn_constructor_args=(int8_path,),
            concurrency=2,
            batch_format="numpy",
        )
        rows = scored.take_all()  # in any order: each row carries its id
    finally:
        ray.shutdown()
    got = np.empty_like(want)
    for row in rows:
        got[row["id"]] = row["logits"]
    np.testing.assert_array_equal(got, want)


def test_a_model_read_without_mmap_pickles_its_weights_not_its_path(tmp_path):
    """mmap=False holds a private copy (the file may change): it pickles by value."""
    path = tmp_path / "m.pinf"
    g = pyinfer.Graph()
    x = g.input("x", (None, 8))
    g.output(g.linear(x, np.ones((4, 8), np.float32)))
    pyinfer.save(g.build(), path)
    model = pyinfer.load(path, mmap=False)
    data = pickle.dumps(model)
    path.unlink()  # the copy does not need the file
    again = pickle.loads(data)
    x = np.ones((2, 8), np.float32)
    np.testing.assert_array_equal(again(x), model(x))
