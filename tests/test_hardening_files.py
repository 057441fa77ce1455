"""A .pinf file that changes after load, paths that are not regular files, hostile
attributes, saves that behave like a careful tool, and inspect in bounded memory."""

from __future__ import annotations

import functools
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels
import pyinfer
from pyinfer import format as fmt
from pyinfer.cli import main
from pyinfer.format import FormatError
from tests.conftest import sparse_gaussian

BATCHES = (1, 2, 64)


def csr_mlp(seed: int = 0) -> pyinfer.Graph:
    """x [n, 64] -> csr linear (in = 64, uint16 indices) -> relu -> dense linear."""
    rng = np.random.default_rng(seed)
    g = pyinfer.Graph()
    x = g.input("x", (None, 64))
    h = g.linear(x, sparse_gaussian(rng, (48, 64), 0.3), rng.standard_normal(48),
                 encoding="csr", name="fc")  # fmt: skip
    g.output(g.linear(g.node("Relu", h), rng.standard_normal((8, 48)), name="head"))
    return g


def tensor_span(path, name: str) -> tuple[np.dtype, int, int]:
    """(dtype, first byte, end byte) of tensor ``name`` in the file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        entry = json.loads(f.read(n))[name]
    begin, end = entry["data_offsets"]
    return fmt.DTYPES[entry["dtype"]], 8 + n + begin, 8 + n + end


def rewrite_in_place(path, offset: int, data: bytes) -> None:
    """Write into the file's own inode (what the model's memory map shares)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def outputs_per_backend(model, batches=BATCHES) -> dict:
    rng = np.random.default_rng(7)
    xs = {b: rng.standard_normal((b, 64)).astype(np.float32) for b in batches}
    out = {}
    for backend in kernels.available_backends():
        with kernels.using(backend=backend):
            for b, x in xs.items():
                out[backend, b] = model(x)
    return out


def edit_header(path, change) -> None:
    """Apply ``change(header)`` to the file's JSON header, keeping the data aligned."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    change(header)
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 64)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob[8 + n :])


def edit_graph(path, change) -> None:
    def apply(header):
        graph = json.loads(header["__metadata__"]["graph"])
        change(graph)
        header["__metadata__"]["graph"] = json.dumps(graph)

    edit_header(path, apply)


# ------------------------------------------------------------- files that change after load


@pytest.mark.parametrize("bad_index", [100, 65535])
def test_editing_csr_indices_after_load_moves_no_kernel(tmp_path, bad_index):
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(), path)
    model = pyinfer.load(path)
    before = outputs_per_backend(model)
    dtype, begin, end = tensor_span(path, "fc.weight.indices")
    assert dtype == np.uint16  # in = 64
    count = (end - begin) // 2
    rewrite_in_place(path, begin, np.full(count, bad_index, np.uint16).tobytes())
    after = outputs_per_backend(model)  # no crash, no out-of-bounds read
    for key, y in before.items():
        np.testing.assert_array_equal(after[key], y, err_msg=str(key))


def test_editing_csr_row_pointers_after_load_moves_no_kernel(tmp_path):
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(), path)
    model = pyinfer.load(path)
    before = outputs_per_backend(model)
    _, begin, end = tensor_span(path, "fc.weight.indptr")
    rewrite_in_place(path, begin, np.full((end - begin) // 4, 2**30, np.int32).tobytes())
    after = outputs_per_backend(model)
    for key, y in before.items():
        np.testing.assert_array_equal(after[key], y, err_msg=str(key))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_fuzz_post_load_edits_of_the_data_section(tmp_path, data):
    """Any bytes written anywhere in the data section after load change at most numbers."""
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(seed=3), path)
    model = pyinfer.load(path)
    size = os.path.getsize(path)
    data_offset = model.source.data_offset
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(data_offset, size - 1))
        blob = data.draw(st.binary(min_size=1, max_size=64))
        rewrite_in_place(path, pos, blob[: size - pos])
    with np.errstate(all="ignore"):
        outputs_per_backend(model, batches=(1, 2))  # no crash: values, never addresses


def test_load_without_mmap_reads_private_memory(tmp_path):
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(), path)
    model = pyinfer.load(path, mmap=False, verify=True)
    assert not model.source.mapped
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    want = model(x)
    os.truncate(path, 0)  # a mapped model would die of SIGBUS here
    np.testing.assert_array_equal(model(x), want)
    assert model.source.verify() == model.source.metadata["sha256"]  # what was read


def test_load_without_mmap_applies_the_same_validation(tmp_path):
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(), path)
    _, begin, _ = tensor_span(path, "fc.weight.indices")
    rewrite_in_place(path, begin, np.uint16(64).tobytes())  # column 64 of a 64-wide input
    for mmap in (True, False):
        with pytest.raises(FormatError, match="column indices must lie in"):
            pyinfer.load(path, mmap=mmap)


def test_run_no_mmap(tmp_path, capsys):
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(), path)
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    code = main(["run", str(path), "--no-mmap", "-i", str(tmp_path / "x.npy"), "-o", str(out)])
    assert code == 0
    np.testing.assert_array_equal(np.load(out), pyinfer.load(path)(x))


def test_load_documents_sigbus_and_mmap_false():
    assert "SIGBUS" in pyinfer.load.__doc__ and "mmap=False" in pyinfer.load.__doc__


# ------------------------------------------------------------- paths that are not files


def load_in_thread(path, timeout: float = 20.0):
    """pyinfer.load(path) in a thread; the exception it raised (fails if it blocks)."""
    result = []

    def target():
        try:
            pyinfer.load(path)
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():  # unblock the reader so the thread ends, then fail
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail(f"pyinfer.load({path}) blocked")
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.pinf"
    os.mkfifo(fifo)
    exc = load_in_thread(fifo)
    assert isinstance(exc, FormatError) and "FIFO" in str(exc) and str(fifo) in str(exc)


def test_directory_is_refused_with_format_error(tmp_path):
    with pytest.raises(FormatError, match="is a directory"):
        pyinfer.load(tmp_path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_is_refused_with_format_error():
    with pytest.raises(FormatError, match="/dev/zero: is a device"):
        pyinfer.load("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
@pytest.mark.parametrize("command", ["inspect", "run"])
def test_cli_refuses_a_fifo_in_one_line(tmp_path, command):
    fifo = tmp_path / "m.pinf"
    os.mkfifo(fifo)
    np.save(tmp_path / "x.npy", np.zeros((1, 64), np.float32))
    args = [command, str(fifo)] + (["-i", str(tmp_path / "x.npy")] if command == "run" else [])
    proc = subprocess.run([sys.executable, "-m", "pyinfer.cli", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert "FormatError" in proc.stderr and "FIFO" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------- hostile headers and attributes


@pytest.mark.parametrize("version", ["²", "١", "𝟏", "1 ", "+1"])
def test_format_version_is_ascii_digits_only(tmp_path, version):
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(), path)
    edit_header(path, lambda h: h["__metadata__"].update(format_version=version))
    with pytest.raises(FormatError, match="format_version must be a positive integer"):
        pyinfer.load(path)


def test_zero_byte_tensor_with_a_huge_dimension_is_named(tmp_path):
    path = tmp_path / "m.pinf"
    pyinfer.save(csr_mlp(), path)

    # a zero-byte tensor at the end of the data section: offsets need no other change
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    size = len(blob) - 8 - n
    edit_header(path, lambda h: h.update(
        zz={"dtype": "F32", "shape": [0, 2**63], "data_offsets": [size, size]}))  # fmt: skip
    with pytest.raises(FormatError, match="tensor 'zz'.*beyond what an array can index"):
        pyinfer.load(path)


def test_unaligned_tensor_is_refused(tmp_path):
    path = tmp_path / "m.pinf"
    g = pyinfer.Graph()
    x = g.input("x", (None, 3))
    g.output(g.linear(x, np.ones((2, 3), np.float32), np.ones(2, np.float32), name="fc"))
    pyinfer.save(g, path)

    # insert 4 bytes before the bias (the last tensor) and grow the padding before it:
    # in range, no overlap, the file covered, but the bias is no longer aligned
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header, body = json.loads(blob[8 : 8 + n]), blob[8 + n :]
    begin, end = header["fc.bias"]["data_offsets"]
    assert end == len(body), "the bias is expected to be the last tensor"
    (pad,) = [e for k, e in header.items() if k != "__metadata__" and e["data_offsets"][1] == begin]
    pad["data_offsets"][1] += 4
    pad["shape"] = [pad["shape"][0] + 4]
    header["fc.bias"]["data_offsets"] = [begin + 4, end + 4]
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 64)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + body[:begin] + bytes(4) + body[begin:])
    with pytest.raises(FormatError, match="fc.bias.*not 64-byte aligned"):
        pyinfer.load(path)


def conv_file(tmp_path, h=8) -> str:
    g = pyinfer.Graph()
    x = g.input("x", (None, 4, h, h))
    g.output(g.conv2d(x, np.ones((4, 2, 3, 3), np.float32), groups=2, name="c0"))
    path = tmp_path / "c.pinf"
    pyinfer.save(g, path)
    return path


def set_conv_attrs(path, **attrs) -> None:
    edit_graph(path, lambda graph: graph["nodes"][0]["attrs"].update(attrs))


@pytest.mark.parametrize("groups", [0, -3])
def test_conv_groups_below_one_is_a_format_error(tmp_path, groups):
    path = conv_file(tmp_path)
    set_conv_attrs(path, groups=groups)
    with pytest.raises(FormatError, match="node 'c0'.*'groups' must be at least 1"):
        pyinfer.load(path)


def test_inspect_reports_groups_zero_in_one_line(tmp_path):
    path = conv_file(tmp_path)
    set_conv_attrs(path, groups=0)
    proc = subprocess.run([sys.executable, "-m", "pyinfer.cli", "inspect", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "groups" in proc.stderr and "Traceback" not in proc.stderr


def test_conv_kernel_larger_than_any_input_is_refused_at_load(tmp_path):
    g = pyinfer.Graph()
    x = g.input("x", (None, 1, None, None))  # sizes known only at run time
    g.output(g.conv2d(x, np.ones((1, 1, 4096, 1), np.float32), name="c0"))
    path = tmp_path / "c.pinf"
    pyinfer.save(g, path)
    set_conv_attrs(path, dilation=[1 << 20, 1])
    with pytest.raises(FormatError, match="node 'c0'.*more than any input"):
        pyinfer.load(path)


CONV_ATTR = st.sampled_from(["stride", "padding", "dilation", "groups"])
ATTR_VALUE = (
    st.integers(-3, 2**21)
    | st.lists(st.integers(-3, 2**21), min_size=0, max_size=3)
    | st.sampled_from([0, 1, 2**20, 2**20 + 1, 2**63, -(2**63), 1.5, None, "2", True])
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(attrs=st.dictionaries(CONV_ATTR, ATTR_VALUE, min_size=1, max_size=4))
def test_fuzz_conv_attribute_bounds(tmp_path, attrs):
    """Any conv attributes load or raise FormatError; what loads runs or raises ValueError."""
    path = conv_file(tmp_path)
    set_conv_attrs(path, **attrs)
    try:
        model = pyinfer.load(path)
    except FormatError:
        return
    x = np.ones((1, 4, 8, 8), np.float32)
    shape = model.nodes[0].out_shape
    if shape is not None and all(d is not None for d in shape[1:]) and np.prod(shape[1:]) > 1e6:
        return  # a large but legitimate output (huge padding): not run here
    model(x)


# ------------------------------------------------------------- saving like a careful tool


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_file_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        pyinfer.save(csr_mlp(), tmp_path / "m.pinf")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.pinf").st_mode) == mode


def test_save_writes_through_a_symlink(tmp_path):
    real = tmp_path / "store" / "real.pinf"
    real.parent.mkdir()
    pyinfer.save(csr_mlp(seed=0), real)
    link = tmp_path / "m.pinf"
    link.symlink_to(real)
    pyinfer.save(csr_mlp(seed=1), link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    x = np.ones((1, 64), np.float32)
    np.testing.assert_array_equal(pyinfer.load(real)(x), csr_mlp(seed=1).build()(x))
    assert sorted(os.listdir(real.parent)) == ["real.pinf"]


def test_save_refuses_a_target_that_is_not_a_regular_file(tmp_path):
    (tmp_path / "d.pinf").mkdir()
    with pytest.raises(FileExistsError, match="not a regular file.*d.pinf"):
        pyinfer.save(csr_mlp(), tmp_path / "d.pinf")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "f.pinf")
        with pytest.raises(FileExistsError, match="not a regular file"):
            pyinfer.save(csr_mlp(), tmp_path / "f.pinf")
        assert stat.S_ISFIFO(os.lstat(tmp_path / "f.pinf").st_mode)  # left as it was


def test_save_errors_name_the_users_path(tmp_path):
    target = tmp_path / "missing" / "m.pinf"
    with pytest.raises(FileNotFoundError) as info:
        pyinfer.save(csr_mlp(), target)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)


def test_save_to_an_empty_path_is_a_clear_error():
    with pytest.raises(ValueError, match="saved to a file path; got ''"):
        pyinfer.save(csr_mlp(), "")


KILLED_SAVE = textwrap.dedent(
    """
    import os, sys, time
    import pyinfer
    from pyinfer import format as fmt
    from tests.test_hardening_files import csr_mlp

    write = fmt._write_tensor

    def slow(f, a):
        write(f, a)
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

    fmt._write_tensor = slow
    pyinfer.save(csr_mlp(), sys.argv[1])
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_save_leaves_nothing_after_the_next_save(tmp_path):
    path = tmp_path / "m.pinf"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], cwd=root,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    pyinfer.save(csr_mlp(), path)
    assert os.listdir(tmp_path) == ["m.pinf"]


def test_a_save_in_progress_keeps_its_temporary(tmp_path):
    import fcntl

    busy = tmp_path / ".m.pinf.busy.tmp"
    with open(busy, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # as a save in another process holds it
        pyinfer.save(csr_mlp(), tmp_path / "m.pinf")
        assert busy.exists()


# ------------------------------------------------------------- inspect in bounded memory


def test_inspect_counts_sparsity_in_bounded_memory(tmp_path, capsys):
    rng = np.random.default_rng(0)
    w = sparse_gaussian(rng, (2048, 4096), 0.5)  # 8 MiB as int8, 32 MiB decoded
    g = pyinfer.Graph()
    x = g.input("x", (None, 4096))
    g.output(g.linear(x, w, encoding="int8", name="fc"))
    path = tmp_path / "m.pinf"
    pyinfer.save(g, path)
    weight = pyinfer.load(path).weights["fc.weight"]
    zeros = weight.decode_matrix().size - np.count_nonzero(weight.decode_matrix())
    del weight
    tracemalloc.start()
    try:
        assert main(["inspect", str(path), "--verify"]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"{zeros / w.size:.1%}" in capsys.readouterr().out
    assert peak < 16 << 20  # half of one decoded float32 copy (the old way made two)


INSPECT_PEAK = """
import contextlib, io, sys, tracemalloc
from pyinfer.cli import main
tracemalloc.start()  # NumPy reports its allocations to tracemalloc
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["inspect", sys.argv[1], "--verify"])
print(code, tracemalloc.get_traced_memory()[1])
print(out.getvalue())
"""


@pytest.mark.slow  # about 5 s: a 64 MiB file
def test_inspect_of_one_large_int4_weight_stays_in_bounded_memory(tmp_path):
    from kernels.encodings.int4 import Int4Weight

    out, k = 4096, 32768  # 64 MiB packed, 512 MiB decoded to float32
    rng = np.random.default_rng(5)
    packed = rng.integers(0, 256, (out // 8, k // 8, 8, 4), dtype=np.uint8)
    w = Int4Weight(shape=(out, k), packed=packed, scale=np.ones((out // 8, k // 32, 8), np.float32))
    zeros = int(np.count_nonzero(packed & 0x0F == 8) + np.count_nonzero(packed >> 4 == 8))
    g = pyinfer.Graph()
    g.output(g.linear(g.input("x", (None, k)), w, name="fc"))
    path = tmp_path / "m.pinf"
    pyinfer.save(g, path)
    del w, g, packed
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", INSPECT_PEAK, str(path)], cwd=root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    code, peak = map(int, proc.stdout.split("\n", 1)[0].split())
    assert code == 0
    assert f"{zeros / (out * k):.1%}" in proc.stdout
    assert peak < 32 << 20, peak  # 1/16 of the decoded weight (decoding it took several)


# Peak RSS as VmHWM: ru_maxrss of a child also counts the parent's peak (Linux keeps the
# larger of the two across exec), which would hide the child's own.
INSPECT_RSS = """
import contextlib, io, sys
import pyinfer
if sys.argv[1:]:  # without a file: the baseline, pyinfer imported
    from pyinfer.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["inspect", sys.argv[1], "--verify"])
    assert code == 0 and "(verified)" in out.getvalue(), out.getvalue()
with open("/proc/self/status") as status:
    print(next(int(line.split()[1]) << 10 for line in status if line.startswith("VmHWM:")))
"""


def _one_large_weight(kind: str):
    """A weight of 240 MiB or more, its arrays written directly (no float32 matrix)."""
    from kernels.encodings.csr import CSRWeight
    from kernels.encodings.int4 import Int4Weight
    from kernels.encodings.int8 import Int8Weight

    if kind == "csr":  # [2560, 65536] at density 1/4: 160 MiB of values, 80 of indices
        rows, cols, per_row = 2560, 65536, 16384
        return CSRWeight(
            (rows, cols),
            np.arange(0, rows * per_row + 1, per_row, dtype=np.int32),
            np.tile(np.arange(0, cols, cols // per_row, dtype=np.uint16), rows),
            np.full(rows * per_row, 0.5, np.float32),
        )
    if kind == "int8":  # [8192, 32768]: 256 MiB of tiles
        packed = np.empty((1024, 8192, 8, 4), np.int8)
        packed[...] = np.array([0, 1, -1, 7], np.int8)
        return Int8Weight((8192, 32768), packed, np.ones(8192, np.float32))
    # int4 [28672, 32768]: 448 MiB of tiles, 112 MiB of scales (validation reads them all)
    packed = np.empty((3584, 4096, 8, 4), np.uint8)
    packed[...] = np.array([0x98, 0x08, 0xF0, 0x88], np.uint8)
    return Int4Weight((28672, 32768), packed, np.ones((3584, 1024, 8), np.float32))


def _peak_rss(*args: str) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", INSPECT_RSS, *args], cwd=root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.slow  # about 25 s: files of 240, 256 and 560 MiB
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmHWM")
@pytest.mark.parametrize("kind", ["csr", "int8", "int4"])
def test_inspect_verify_of_one_large_weight_stays_under_100_mb_of_rss(tmp_path, kind):
    """Validation reads each array a block at a time, dropping the file's pages between
    blocks, and no derived layout (the csr batch-1 copy) is built for a description."""
    w = _one_large_weight(kind)
    g = pyinfer.Graph()
    g.output(g.linear(g.input("x", (None, w.in_features)), w, name="fc"))
    path = tmp_path / f"{kind}.pinf"
    pyinfer.save(g, path)
    del w, g
    assert os.path.getsize(path) > 240 << 20
    increment = _peak_rss(str(path)) - _peak_rss()
    assert increment < 100 << 20, f"{kind}: {increment / 2**20:.0f} MiB"


def test_nonzero_count_matches_the_decoded_matrix_for_every_encoding():
    from kernels import registry

    rng = np.random.default_rng(3)
    w = sparse_gaussian(rng, (70, 96), 0.4)
    for name in registry.names():
        enc = kernels.encode(w, name)
        want = int(np.count_nonzero(enc.decode_matrix()))
        assert enc.nonzero_count() == want, name
        assert enc.nonzero_count(chunk_bytes=96 * 4 * 8) == want, name  # 8 rows a block


def test_nonzero_count_calls_after_chunk_between_chunks():
    """What lets a reader of a mapped file drop the pages read so far, chunk by chunk."""
    w = sparse_gaussian(np.random.default_rng(5), (64, 256), 0.4)
    for name in ("dense", "int8", "int4", "pow2"):
        enc = kernels.encode(w, name)
        calls = []
        got = enc.nonzero_count(chunk_bytes=1024, after_chunk=functools.partial(calls.append, 1))
        assert got == np.count_nonzero(enc.decode_matrix()), name
        assert len(calls) > 1, name


def test_validation_calls_after_chunk_between_chunks_of_a_large_array():
    """What lets a loader reading a mapped file once drop the pages validation read."""
    from kernels.encodings.binary import BinaryWeight
    from kernels.encodings.int4 import Int4Weight
    from kernels.encodings.pow2 import Pow2Weight

    w = sparse_gaussian(np.random.default_rng(6), (2048, 3000), 0.5)  # 24 MiB as float32
    weights = [kernels.encode(w, name) for name in ("int8", "csr")]  # 6 MiB of int8, indices
    packed = np.full((160, 4096, 8, 4), 0x88, np.uint8)  # int4 [1280, 32768]: 5 MiB of scales
    weights.append(Int4Weight((1280, 32768), packed, np.ones((160, 1024, 8), np.float32)))
    alpha = np.ones(4096, np.float32)
    weights.append(Pow2Weight((4096, 4096), np.zeros((4096, 2048), np.uint8), alpha))  # 8 MiB
    weights.append(BinaryWeight((4096, 10200), np.zeros((4096, 160), np.uint64), alpha))  # 5 MiB
    for enc in weights:
        calls = []
        after_chunk = functools.partial(calls.append, 1)
        type(enc).from_arrays(enc.shape, enc.arrays(), enc.params(), after_chunk)
        assert len(calls) > 1, enc.encoding
    bad = weights[0].packed.copy()
    bad[-1, -1, -1, -1] = -128  # in the last chunk: still found
    with pytest.raises(ValueError, match="-128"):
        arrays = {"packed": bad, "scale": weights[0].scale}
        type(weights[0]).from_arrays(w.shape, arrays, weights[0].params())


def test_csr_validation_checks_rows_across_chunk_boundaries():
    from kernels.encodings.csr import CSRWeight

    boundary = 1 << 18  # positions per chunk of uint16 indices
    for per_row in (512, 500):  # a row begins at the boundary, then a row spans it
        rows = 2 * boundary // per_row + 1
        indptr = np.arange(0, rows * per_row + 1, per_row, dtype=np.int32)
        indices = np.tile(np.arange(per_row, dtype=np.uint16), rows)
        values = np.ones(rows * per_row, np.float32)
        CSRWeight((rows, per_row), indptr, indices, values)
    indices[boundary] = indices[boundary - 1]  # a repeat within a row, across the boundary
    with pytest.raises(ValueError, match="strictly increasing"):
        CSRWeight((rows, per_row), indptr, indices, values)


def test_nonzero_count_is_exact_where_the_arrays_decode_to_zero_in_unusual_ways():
    from kernels.encodings.binary import BinaryWeight
    from kernels.encodings.int4 import Int4Weight
    from kernels.encodings.pow2 import Pow2Weight

    rng = np.random.default_rng(4)
    w = sparse_gaussian(rng, (21, 200), 0.5)
    i4 = kernels.encode(w, "int4", group_size=64)
    scale = i4.scale.copy()
    scale[0, 1, 3] = 0  # a zeroed group
    packed = rng.integers(0, 256, i4.packed.shape, dtype=np.uint8)  # padding nibbles too
    p2 = kernels.encode(w, "pow2")
    alpha = p2.alpha.copy()
    alpha[1] = 0
    alpha[2] = np.float32(1e-45)  # α·2^-e underflows to zero for e >= 1
    b1 = kernels.encode(w, "binary")
    weights = [
        Int4Weight(shape=i4.shape, packed=packed, scale=scale, group_size=64),
        Pow2Weight(shape=p2.shape, codes=p2.codes, alpha=alpha),
        BinaryWeight(shape=b1.shape, bits=b1.bits, alpha=alpha),
    ]
    for enc in weights:
        want = int(np.count_nonzero(enc.decode_matrix()))
        for chunk_bytes in (1, 100, 1 << 22):
            assert enc.nonzero_count(chunk_bytes=chunk_bytes) == want, enc.encoding


def _peak_bytes(build) -> int:
    tracemalloc.start()
    try:
        build()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_validating_and_counting_a_large_weight_needs_no_temporary_of_its_size():
    from kernels.encodings.csr import CSRWeight
    from kernels.encodings.dense import DenseWeight
    from kernels.encodings.int4 import Int4Weight
    from kernels.encodings.pow2 import Pow2Weight

    def frozen(a):
        a = a.copy()  # no base: read-only all the way down, as mapped from a file, so
        a.flags.writeable = False  # it is validated without a private copy
        return a

    rows, per_row = 1024, 4096  # csr: 4 Mi nonzeros, indices 8 MiB
    indices = frozen(np.tile(np.arange(0, 2 * per_row, 2, dtype=np.uint16), rows))
    indptr = frozen(np.arange(0, rows * per_row + 1, per_row, dtype=np.int32))
    values = frozen(np.ones(rows * per_row, np.float32))
    peak = _peak_bytes(lambda: CSRWeight((rows, 2 * per_row), indptr, indices, values))
    assert peak < 8 << 20, peak  # the whole-array check took 8 bytes per nonzero, twice
    codes = frozen(np.full((4096, 8192), 0x11, np.uint8))  # 32 MiB of pow2 codes
    peak = _peak_bytes(lambda: Pow2Weight((4096, 16384), codes, frozen(np.ones(4096, np.float32))))
    assert peak < 16 << 20, peak
    packed = np.zeros((2048, 4096, 8, 4), np.uint8)  # int4 [16384, 32768]: 256 MiB
    scale = np.zeros((2048, 1024, 8), np.float32)  # 64 MiB of (finite) scales
    packed.flags.writeable = scale.flags.writeable = False  # never written: no pages
    peak = _peak_bytes(lambda: Int4Weight((16384, 32768), packed, scale))
    assert peak < 8 << 20, peak  # the whole-array check made 16 MiB of booleans
    data = np.zeros((4096, 16384), np.float32)  # 256 MiB, never written: no pages
    data.flags.writeable = False
    peak = _peak_bytes(lambda: DenseWeight((4096, 16384), data).nonzero_count())
    assert peak < 12 << 20, peak  # blocks of about 4 MiB, not 1/16 of the weight


def test_fuzz_harness_runs_without_atheris():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "tests", "fuzz", "fuzz_load.py"), "--plain",
         "--seconds", "3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no finding" in proc.stdout


def test_a_model_loaded_only_to_be_described_refuses_to_run(tmp_path):
    """load_to_describe checks positions in the map without copying them: running such a
    model would trust a file that may change, so it refuses, naming what to do."""
    from pyinfer.files import load_to_describe

    g = pyinfer.Graph()
    x = g.input("x", (None, 8))
    w = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    w[:, ::2] = 0
    g.output(g.linear(x, kernels.encode(w, "csr")))
    path = tmp_path / "m.pinf"
    pyinfer.save(g.build(), path)
    described = load_to_describe(path)
    assert [row["encoding"] for row in described.layers() if row["encoding"]] == ["csr"]
    with pytest.raises(RuntimeError, match="pyinfer.load"):
        described(np.ones((1, 8), np.float32))
    assert pyinfer.load(path)(np.ones((1, 8), np.float32)).shape == (1, 4)
