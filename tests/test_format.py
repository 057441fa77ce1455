"""The .pinf file: round trips for every encoding, safetensors compatibility, atomic
writes, memory mapping, and validation of malformed or hostile files (hypothesis)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels
import pyinfer
from kernels import registry
from pyinfer import format as fmt
from pyinfer.format import FormatError
from tests.conftest import encoding_cases, sparse_gaussian

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def sample_graph(seed: int = 0, encodings=None) -> pyinfer.Graph:
    """A small model touching constants, params, every encoding and an int input."""
    rng = np.random.default_rng(seed)
    g = pyinfer.Graph()
    x = g.input("x", (None, 24))
    ids = g.input("ids", (None,), "int64")
    h = x
    for i, (name, opts) in enumerate(encodings or [("dense", {}), ("csr", {})]):
        w = sparse_gaussian(rng, (24, 24), 0.5)
        h = g.linear(h, w, rng.standard_normal(24), encoding=name, name=f"fc{i}", **opts)
        h = g.node("Relu", h)
    h = g.node("LayerNorm", h, rng.standard_normal(24), rng.standard_normal(24))
    emb = g.node("Gather", rng.standard_normal((10, 24)), ids, name="embed")
    y = g.node("Add", h, emb)
    g.output(y)
    return g


def sample_inputs(seed: int = 1, batch: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 24)).astype(np.float32),
        "ids": rng.integers(0, 10, batch),
    }


def all_encodings():
    return [(p.values[0], p.values[1]) for p in encoding_cases()]


@pytest.fixture(scope="module")
def saved_small(tmp_path_factory):
    """Path and bytes of a valid file with dense and csr weights (fast to load and run)."""
    path = tmp_path_factory.mktemp("pinf") / "small.pinf"
    pyinfer.save(sample_graph(), path)
    return path, path.read_bytes()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Path and bytes of a valid file holding every encoding."""
    path = tmp_path_factory.mktemp("pinf") / "model.pinf"
    pyinfer.save(sample_graph(encodings=all_encodings()), path)
    return path, path.read_bytes()


def split(blob: bytes):
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 64)
    return struct.pack("<Q", len(h)) + h + data


def write(path, blob: bytes):
    with open(path, "wb") as f:
        f.write(blob)
    return path


def loads_or_format_error(path, verify=False):
    """Load; return the model, or None when a FormatError was raised (anything else fails)."""
    try:
        return pyinfer.load(path, verify=verify)
    except FormatError as exc:
        assert str(exc)
        return None


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name, opts", encoding_cases())
def test_round_trip_every_encoding(tmp_path, name, opts):
    g = sample_graph(encodings=[(name, opts)])
    model = g.build()
    path = tmp_path / "m.pinf"
    digest = pyinfer.save(model, path)
    loaded = pyinfer.load(path, verify=True)
    inputs = sample_inputs()
    np.testing.assert_array_equal(loaded.run(inputs)["add0"], model.run(inputs)["add0"])
    w, w2 = model.weights["fc0.weight"], loaded.weights["fc0.weight"]
    assert w2.encoding == name and w2.shape == w.shape and w2.params() == w.params()
    for field, a in w.arrays().items():
        b = w2.arrays()[field]
        assert b.dtype == a.dtype and np.array_equal(b, a)
        assert not b.flags.writeable and not b.flags.owndata  # a view of the map
    assert loaded.source.metadata["sha256"] == digest


def test_values_are_zero_copy_views_of_the_map_and_positions_private(saved):
    path, _ = saved
    model = pyinfer.load(path)
    import mmap

    for name, w in model.weights.items():
        for field, a in w.arrays().items():
            base = a
            while isinstance(base, np.ndarray) and base.base is not None:
                base = base.base
            if isinstance(base, memoryview):
                base = base.obj
            if field in w.address_fields:  # copied before validation: the file cannot move it
                assert isinstance(base, np.ndarray) and base.flags.owndata, (name, field)
            else:
                assert isinstance(base, mmap.mmap), (name, field)


def test_safetensors_reads_every_tensor(saved):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors missing")
    from safetensors import safe_open

    path, _ = saved
    theirs = safetensors_numpy.load_file(str(path))
    container = fmt.read_container(path)
    real = {k: v for k, v in theirs.items() if not k.startswith(fmt.PADDING_PREFIX)}
    assert set(real) == set(container.tensors)
    for name, a in real.items():
        b = container.tensors[name]
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == "pinf" and meta["format_version"] == str(fmt.FORMAT_VERSION)
    assert json.loads(meta["graph"])["outputs"] == ["add0"]


def test_tensors_are_aligned_and_checksum_covers_data(saved):
    path, blob = saved
    header, data = split(blob)
    data_start = len(blob) - len(data)
    assert data_start % fmt.ALIGNMENT == 0
    for name, entry in header.items():
        if name != "__metadata__" and not name.startswith(fmt.PADDING_PREFIX):
            assert (data_start + entry["data_offsets"][0]) % fmt.ALIGNMENT == 0, name
    import hashlib

    assert header["__metadata__"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_plain_safetensors_file_is_not_a_model(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors missing")
    path = str(tmp_path / "plain.safetensors")
    safetensors_numpy.save_file({"a": np.ones(3, np.float32)}, path)
    with pytest.raises(FormatError, match="not a pyinfer model"):
        pyinfer.load(path)


# ------------------------------------------------------------------ atomic writes


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pinf"
    calls = []

    def failing(f, a):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"partial")
            raise OSError("disk full")
        f.write(fmt._bytes_of(a))

    monkeypatch.setattr(fmt, "_write_tensor", failing)
    with pytest.raises(OSError, match="disk full"):
        pyinfer.save(sample_graph(), path)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pinf"
    pyinfer.save(sample_graph(seed=0), path)
    before = path.read_bytes()

    def failing(f, a):
        raise KeyboardInterrupt  # even an interrupt mid-write leaves no half file

    monkeypatch.setattr(fmt, "_write_tensor", failing)
    with pytest.raises(KeyboardInterrupt):
        pyinfer.save(sample_graph(seed=1), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pinf"]


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "m.pinf"
    pyinfer.save(sample_graph(seed=0), path)
    pyinfer.save(sample_graph(seed=5), path)
    model = pyinfer.load(path, verify=True)
    ref = sample_graph(seed=5).build()
    np.testing.assert_array_equal(
        model.run(sample_inputs())["add0"], ref.run(sample_inputs())["add0"]
    )
    assert os.listdir(tmp_path) == ["m.pinf"]


def test_save_over_the_file_a_model_was_loaded_from(tmp_path):
    path = tmp_path / "m.pinf"
    pyinfer.save(sample_graph(), path)
    model = pyinfer.load(path)  # its weights are views of the old file's map
    want = model.run(sample_inputs())["add0"]
    pyinfer.save(model, path)  # rename replaces the name; the old inode stays mapped
    np.testing.assert_array_equal(model.run(sample_inputs())["add0"], want)
    np.testing.assert_array_equal(
        pyinfer.load(path, verify=True).run(sample_inputs())["add0"], want
    )


# ------------------------------------------------------------------ memory mapping


def _mapped_kb(path: str, field: str) -> int:
    """Sum of a /proc/self/smaps field over the mappings of ``path``."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                inside = parts[-1] == path
            elif inside and parts[0] == field + ":":
                total += int(parts[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_load_reads_lazily_and_processes_share_pages(tmp_path):
    path = str(tmp_path / "big.pinf")
    g = pyinfer.Graph()
    x = g.input("x", (None, 2048))
    w = np.random.default_rng(0).standard_normal((4096, 2048)).astype(np.float32)  # 32 MiB
    g.output(g.linear(x, w))
    pyinfer.save(g, path)
    del g, w
    child = textwrap.dedent(
        f"""
        import numpy as np, pyinfer, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.test_format import _mapped_kb
        m = pyinfer.load({path!r})
        before = _mapped_kb({path!r}, "Rss")
        m(np.ones((1, 2048), np.float32))
        print(before, _mapped_kb({path!r}, "Shared_Clean"), _mapped_kb({path!r}, "Private_Dirty"))
        """
    )
    model = pyinfer.load(path)
    assert _mapped_kb(path, "Rss") < 4096  # loading touched (almost) none of the 32 MiB
    model(np.ones((1, 2048), np.float32))  # touches every weight page
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, check=True
    ).stdout.split()
    rss_after_load, shared, dirty = map(int, out)
    assert rss_after_load < 4096
    assert shared > 30 * 1024  # the child's weight pages are shared with this process
    assert dirty == 0


# ------------------------------------------------------------------ validation


def test_future_version_is_refused_naming_it(saved, tmp_path):
    _, blob = saved
    header, data = split(blob)
    header["__metadata__"]["format_version"] = "7"
    path = write(tmp_path / "m.pinf", join(header, data))
    with pytest.raises(FormatError, match="needs pinf format version 7.*up to 1"):
        pyinfer.load(path)


def mutate_header(saved, tmp_path, change):
    _, blob = saved
    header, data = split(blob)
    change(header)
    return write(tmp_path / "m.pinf", join(header, data))


def _graph(h):
    return json.loads(h["__metadata__"]["graph"])


def _set_graph(h, graph):
    h["__metadata__"]["graph"] = json.dumps(graph)


def _edit_graph(fn):
    def change(h):
        graph = _graph(h)
        fn(graph)
        _set_graph(h, graph)

    return change


def _first_real(h):
    return next(k for k in h if k != "__metadata__" and not k.startswith("__"))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h[_first_real(h)].update(dtype="Q9"), "unsupported dtype"),
        (lambda h: h[_first_real(h)].update(shape=[1 << 40, 1 << 40]), "bytes but data_offsets"),
        (lambda h: h[_first_real(h)].update(shape=[-1]), "non-negative"),
        (lambda h: h[_first_real(h)].update(data_offsets=[0, 1 << 60]), "outside the data"),
        (lambda h: h[_first_real(h)].update(data_offsets=[5, 1]), "outside the data"),
        (lambda h: h[_first_real(h)].update(extra=1), "exactly dtype"),
        (lambda h: h["__metadata__"].update(format_version="x"), "positive integer"),
        (lambda h: h["__metadata__"].update(format_version=1), "string values"),
        (lambda h: h["__metadata__"].pop("graph"), "no 'graph'"),
        (lambda h: h["__metadata__"].update(graph="{"), "graph is not valid"),
        (lambda h: h["__metadata__"].update(weights="[1]"), "weights must be"),
        (
            _edit_graph(lambda g: g["nodes"].__setitem__(0, {**g["nodes"][0], "op": "Bogus"})),
            "unknown op 'Bogus'",
        ),
        (_edit_graph(lambda g: g["nodes"].reverse()), "topological order"),
        (
            _edit_graph(lambda g: g["nodes"][0]["inputs"].__setitem__(0, g["nodes"][1]["name"])),
            "topological order",
        ),
        (
            _edit_graph(lambda g: g["nodes"][0]["attrs"].update(activation="tanh")),
            "attribute 'activation' must be one of",
        ),
        (_edit_graph(lambda g: g["nodes"][0]["attrs"].update(alpha=2)), "unknown attribute"),
        (_edit_graph(lambda g: g["nodes"][1]["inputs"].append("x")), "takes 1 inputs"),
        (_edit_graph(lambda g: g["outputs"].append("nowhere")), "graph output 'nowhere'"),
        (_edit_graph(lambda g: g["inputs"][0].update(shape=[None, 25])), "expects 24"),
        (_edit_graph(lambda g: g["inputs"][0].update(dtype="float16")), "dtype must be one of"),
        (
            _edit_graph(lambda g: g["nodes"][0]["inputs"].__setitem__(1, "fc0.bias")),
            "must be an encoded weight",
        ),
    ],
)
def test_malformed_header_is_named(saved, tmp_path, change, message):
    with pytest.raises(FormatError, match=message):
        pyinfer.load(mutate_header(saved, tmp_path, change))


def test_overlapping_tensors_are_refused(saved, tmp_path):
    def overlap(h):
        names = [k for k in h if k != "__metadata__" and not k.startswith("__")]
        a, b = h[names[0]], h[names[1]]
        # make b the same size as a and put it on top of a
        b.update(dtype=a["dtype"], shape=a["shape"], data_offsets=a["data_offsets"])

    with pytest.raises(FormatError, match="overlap|cover"):
        pyinfer.load(mutate_header(saved, tmp_path, overlap))


def test_broken_encoding_invariants_name_the_weight(tmp_path):
    g = pyinfer.Graph()
    x = g.input("x", (None, 8))
    w = np.eye(8, dtype=np.float32)
    g.output(g.linear(x, w, encoding="csr", name="fc"))
    path = tmp_path / "m.pinf"
    pyinfer.save(g, path)
    blob = bytearray(path.read_bytes())
    header, data = split(bytes(blob))
    start = len(blob) - len(data)
    begin = header["fc.weight.indices"]["data_offsets"][0]
    blob[start + begin : start + begin + 2] = struct.pack("<H", 9)  # column 9 >= in = 8
    write(path, bytes(blob))
    with pytest.raises(FormatError, match=r"weight 'fc.weight' \(csr\).*column indices"):
        pyinfer.load(path)
    with pytest.raises(FormatError, match="checksum mismatch"):
        pyinfer.load(path, verify=True)


@pytest.mark.skipif("int8" not in registry.names(), reason="no int8 encoding registered")
def test_non_finite_scale_is_refused(tmp_path):
    g = pyinfer.Graph()
    g.output(g.linear(g.input("x", (None, 8)), np.eye(8, dtype=np.float32), encoding="int8"))
    path = tmp_path / "m.pinf"
    pyinfer.save(g, path)
    blob = bytearray(path.read_bytes())
    header, data = split(bytes(blob))
    begin = header["linear0.weight.scale"]["data_offsets"][0] + len(blob) - len(data)
    blob[begin : begin + 4] = np.float32(np.nan).tobytes()
    with pytest.raises(FormatError, match=r"weight 'linear0.weight' \(int8\).*finite"):
        pyinfer.load(write(path, bytes(blob)))


def test_unknown_encoding_lists_the_known_ones(saved, tmp_path):
    def change(h):
        table = json.loads(h["__metadata__"]["weights"])
        next(iter(table.values()))["encoding"] = "int3"
        h["__metadata__"]["weights"] = json.dumps(table)

    with pytest.raises(FormatError, match="unknown encoding 'int3'.*dense"):
        pyinfer.load(mutate_header(saved, tmp_path, change))


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "8-byte header length"),
        (struct.pack("<Q", 1 << 62) + b"{}", "exceeds the file"),
        (struct.pack("<Q", 2) + b"[]", "must be a JSON object"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "UTF-8"),
        (struct.pack("<Q", 20000) + b"[" * 20000, "JSON"),
        (struct.pack("<Q", 13) + b'{"a":1,"a":1}', "duplicate"),
    ],
)
def test_garbage_files(tmp_path, blob, message):
    with pytest.raises(FormatError, match=message):
        pyinfer.load(write(tmp_path / "bad.pinf", blob))


def test_header_length_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_HEADER_BYTES", 16)
    blob = join({"__metadata__": {"format": "pinf", "format_version": "1"}}, b"")
    with pytest.raises(FormatError, match="limit of 16 bytes"):
        pyinfer.load(write(tmp_path / "m.pinf", blob))


# ------------------------------------------------------------------ fuzzing


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10**9))
def test_fuzz_truncation(saved, tmp_path, cut):
    _, blob = saved
    path = write(tmp_path / "t.pinf", blob[: cut % len(blob)])
    assert loads_or_format_error(path) is None


@FUZZ
@given(data=st.data())
def test_fuzz_flipped_header_bytes(saved, tmp_path, data):
    _, blob = saved
    (n,) = struct.unpack("<Q", blob[:8])
    b = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, 8 + n - 1))
        b[pos] ^= data.draw(st.integers(1, 255))
    loads_or_format_error(write(tmp_path / "h.pinf", bytes(b)))


@FUZZ
@given(data=st.data())
def test_fuzz_flipped_data_bytes(saved, tmp_path, data):
    _, blob = saved
    (n,) = struct.unpack("<Q", blob[:8])
    b = bytearray(blob)
    pos = data.draw(st.integers(8 + n, len(blob) - 1))
    b[pos] ^= data.draw(st.integers(1, 255))
    path = write(tmp_path / "d.pinf", bytes(b))
    loads_or_format_error(path)  # loads (the flip kept every invariant) or FormatError
    assert loads_or_format_error(path, verify=True) is None  # the checksum catches it


JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
BIG = st.integers(-5, 2**64)
LIES = {
    "dtype": st.sampled_from([*fmt.DTYPES, "BF16", 3, None]),
    "shape": st.lists(BIG, max_size=9) | JSON_VALUE,
    "data_offsets": st.lists(BIG, min_size=2, max_size=2) | JSON_VALUE,
}
ATTRS = st.dictionaries(
    st.sampled_from(["activation", "axis", "eps", "shape", "perm", "kernel_size", "x"]),
    JSON_VALUE,
    max_size=3,
)


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_fuzz_lying_offsets_and_shapes(saved_small, tmp_path, data):
    _, blob = saved_small
    header, body = split(blob)
    names = [k for k in header if k != "__metadata__"]
    for _ in range(data.draw(st.integers(1, 3))):
        entry = header[data.draw(st.sampled_from(names))]
        key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[key] = data.draw(LIES[key])
    path = write(tmp_path / "o.pinf", join(header, body))
    size = os.path.getsize(path)
    tracemalloc.start()
    try:
        loads_or_format_error(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size + (1 << 20)  # no allocation sized by a lying header


@FUZZ
@given(data=st.data())
def test_fuzz_graph_and_weight_tables(saved_small, tmp_path, data):
    _, blob = saved_small
    header, body = split(blob)
    graph = _graph(header)
    table = json.loads(header["__metadata__"]["weights"])
    target = data.draw(st.sampled_from(["node", "attr", "input", "weights", "graph"]))
    if target == "node":
        node = data.draw(st.sampled_from(graph["nodes"]))
        node[data.draw(st.sampled_from(["op", "inputs", "outputs", "attrs", "name"]))] = data.draw(
            JSON_VALUE
        )
    elif target == "attr":
        node = data.draw(st.sampled_from(graph["nodes"]))
        node["attrs"] = data.draw(ATTRS)
    elif target == "input":
        node = data.draw(st.sampled_from(graph["nodes"]))
        pool = [n["name"] for n in graph["nodes"]] + ["x", "ids", *table, "zz"]
        node["inputs"] = data.draw(st.lists(st.sampled_from(pool), max_size=4))
    elif target == "weights":
        entry = table[data.draw(st.sampled_from(sorted(table)))]
        entry[data.draw(st.sampled_from(["encoding", "shape", "params", "tensors"]))] = data.draw(
            JSON_VALUE
        )
    else:
        graph[data.draw(st.sampled_from(["inputs", "outputs", "nodes"]))] = data.draw(JSON_VALUE)
    header["__metadata__"]["graph"] = json.dumps(graph)
    header["__metadata__"]["weights"] = json.dumps(table)
    model = loads_or_format_error(write(tmp_path / "g.pinf", join(header, body)))
    if model is not None and [s.name for s in model.inputs] == ["x", "ids"]:
        try:
            model.run(sample_inputs())
        except (ValueError, TypeError) as exc:  # a clear error naming the node, no crash
            assert "node" in str(exc)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=300))
def test_fuzz_random_bytes(tmp_path, blob):
    assert loads_or_format_error(write(tmp_path / "r.pinf", blob)) is None


def test_no_pickle_in_the_package():
    root = os.path.dirname(pyinfer.__file__)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f)).read()
                assert "import pickle" not in text and "allow_pickle=True" not in text, f


def test_registry_rows_all_round_trip_through_from_arrays():
    # the format stores exactly arrays() + params(); every row must rebuild from them
    rng = np.random.default_rng(3)
    for name, opts in all_encodings():
        w = kernels.encode(sparse_gaussian(rng, (5, 40)), name, **opts)
        again = registry.get(name).weight_type.from_arrays(w.shape, w.arrays(), w.params())
        np.testing.assert_array_equal(again.decode(), w.decode())


def test_a_zero_dimensional_tensor_keeps_its_shape(tmp_path):
    """A scalar (e.g. an imported constant) comes back 0-d, not as shape (1,)."""
    path = tmp_path / "scalar.pinf"
    fmt.write_container(path, {"s": np.array(2.5, np.float32)}, {})
    back = fmt.read_container(path).tensors["s"]
    assert back.shape == () and back == np.float32(2.5)
