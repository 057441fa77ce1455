"""The ``.pinf`` container: safetensors-compatible bytes, read memory-mapped and checked.

Layout (the safetensors layout, so any safetensors reader lists and reads the tensors)::

    8 bytes    little-endian u64: N, the length of the JSON header
    N bytes    UTF-8 JSON: tensor name -> {"dtype", "shape", "data_offsets"}, plus
               "__metadata__" (str -> str): format, format_version, graph, weights, sha256
    data       the tensors' raw little-endian bytes, each starting 64-byte aligned

The header is padded with spaces so the data section starts at a multiple of 64, and
since safetensors forbids holes, the gaps that align each tensor are themselves small
``U8`` tensors named ``__padding__.<i>`` (readers of pyinfer models ignore them).
``sha256`` is the SHA-256 of the whole data section.

Nothing here executes code from a file: JSON and raw numbers only, every size and
offset checked against the file's length before any array is made.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap as _mmap
import os
import stat
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

try:
    import fcntl
except ImportError:  # not on Windows: no stale-temporary cleanup there
    fcntl = None

#: The format this code writes and the newest it reads.
FORMAT_VERSION = 1
#: Value of ``__metadata__["format"]`` in every pyinfer file.
FORMAT_NAME = "pinf"
#: Alignment of every tensor (from the start of the file).
ALIGNMENT = 64
#: Largest JSON header accepted (the graph and encodings are small next to the weights).
MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Name prefix of the padding tensors that keep every tensor aligned.
PADDING_PREFIX = "__padding__."
#: Most dimensions a stored tensor may have.
MAX_NDIM = 8
#: Bound on itemsize x the product of a tensor's nonzero dimensions (what NumPy indexes).
MAX_TENSOR_BYTES = 2**62

#: safetensors dtype name -> NumPy dtype (little-endian). BF16 has no NumPy dtype.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_DTYPE_NAMES = {dt: name for name, dt in DTYPES.items()}


class FormatError(ValueError):
    """A ``.pinf`` file (or a graph) is malformed: says what is wrong and what was expected."""


@dataclass
class Container:
    """What a ``.pinf`` file holds, before the graph is planned.

    Attributes
    ----------
    tensors : dict of str -> ndarray
        Every stored tensor except padding, as read-only views of the file's memory map
        (or, when read with ``mmap=False``, of a private copy of the data section).
    metadata : dict of str -> str
        ``__metadata__`` as stored.
    data_offset : int
        Byte offset of the data section in the file.
    path : str
    """

    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    data_offset: int = 0
    path: str = ""
    _mmap: Any = field(default=None, repr=False)
    _data: bytes | None = field(default=None, repr=False)  # the data section, if not mapped

    @property
    def mapped(self) -> bool:
        """True when the tensors are views of the file's memory map."""
        return self._data is None

    def release_pages(self) -> None:
        """Drop the mapped pages this process has read from its resident memory (they stay
        in the page cache; a later read maps them again). Nothing to do when not mapped."""
        if self._mmap is not None and hasattr(_mmap, "MADV_DONTNEED"):
            self._mmap.madvise(_mmap.MADV_DONTNEED)

    def verify(self) -> str:
        """Recompute the SHA-256 of the data section; FormatError unless it matches.

        Returns
        -------
        str
            The checksum (hex).
        """
        stored = self.metadata.get("sha256")
        if stored is None:
            raise FormatError(f"{self.path}: no sha256 in __metadata__ to verify against")
        if self._data is not None:  # what was read, not what the file holds now
            actual = hashlib.sha256(self._data).hexdigest()
        else:
            actual = sha256_of_file(self.path, self.data_offset)
        if actual != stored:
            raise FormatError(
                f"{self.path}: checksum mismatch: the data section hashes to {actual}, "
                f"the header records {stored} (the file is corrupt)"
            )
        return actual


# --------------------------------------------------------------------------- writing


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _as_storable(name: str, a: np.ndarray) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"tensor {name!r} must be a numpy array, got {type(a).__name__}")
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dt not in _DTYPE_NAMES:
        known = ", ".join(str(d) for d in _DTYPE_NAMES)
        raise TypeError(f"tensor {name!r} has dtype {a.dtype}, which cannot be stored; use {known}")
    return np.require(a, dt, "C")  # keeps a 0-d array 0-d (ascontiguousarray would not)


def _layout(tensors: Mapping[str, np.ndarray]) -> tuple[list[tuple[str, np.ndarray]], dict]:
    """Order tensors, insert padding tensors, and make the header entries (offsets are
    relative to the data section, which itself starts 64-byte aligned)."""
    entries: dict[str, dict] = {}
    blobs: list[tuple[str, np.ndarray]] = []
    pos = 0
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise ValueError(f"tensor name {name!r} must be a non-empty str not starting with '__'")
        a = _as_storable(name, array)
        gap = _aligned(pos) - pos
        if gap:
            pad_name = f"{PADDING_PREFIX}{len(blobs)}"
            pad = np.zeros(gap, np.uint8)
            entries[pad_name] = {"dtype": "U8", "shape": [gap], "data_offsets": [pos, pos + gap]}
            blobs.append((pad_name, pad))
            pos += gap
        entries[name] = {
            "dtype": _DTYPE_NAMES[a.dtype],
            "shape": [int(s) for s in a.shape],
            "data_offsets": [pos, pos + a.nbytes],
        }
        blobs.append((name, a))
        pos += a.nbytes
    return blobs, entries


def _bytes_of(a: np.ndarray) -> memoryview:
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")


def _write_tensor(f: BinaryIO, a: np.ndarray) -> None:
    f.write(_bytes_of(a))


def write_container(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> str:
    """Write tensors and metadata as a ``.pinf``/safetensors file, atomically.

    The bytes go to a temporary file in the destination's directory, which is flushed,
    fsync'ed and then renamed over ``path``: a reader sees the old file or the complete
    new one, never a partial write. On Linux the temporary file is unnamed
    (``O_TMPFILE``) until it is complete, so a save killed midway leaves nothing behind;
    elsewhere a save first removes the temporaries that earlier, killed saves of the
    same target left. The file's mode follows the umask. A symlink at ``path`` is
    written through (its target is replaced); a ``path`` that exists and is not a
    regular file is refused.

    Parameters
    ----------
    path : str or PathLike
    tensors : mapping of str -> ndarray
        Names must not start with ``__`` (reserved for padding and metadata).
    metadata : mapping of str -> str
        Stored in ``__metadata__``; ``format``, ``format_version`` and ``sha256`` are added.

    Returns
    -------
    str
        The SHA-256 (hex) of the data section.

    Raises
    ------
    OSError
        Naming ``path`` (not a temporary file) when it cannot be written.
    """
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"a model is saved to a file path; got {path!r}")
    blobs, entries = _layout(tensors)
    digest = hashlib.sha256()
    for _, a in blobs:
        digest.update(_bytes_of(a))
    meta = {str(k): str(v) for k, v in metadata.items()}
    meta.update(format=FORMAT_NAME, format_version=str(FORMAT_VERSION), sha256=digest.hexdigest())
    header = json.dumps({"__metadata__": meta, **entries}, separators=(",", ":")).encode()
    header += b" " * (_aligned(8 + len(header)) - 8 - len(header))

    try:
        target = _save_target(path)
        try:
            _write_file(target, header, blobs, unnamed=True)
        except _NoUnnamedFiles:
            _write_file(target, header, blobs, unnamed=False)
        _fsync_directory(os.path.dirname(target))
    except OSError as exc:
        if exc.errno is None or exc.filename == path:
            raise
        # name what the user asked for, not a temporary file or a resolved link
        raise type(exc)(exc.errno, exc.strerror, path) from None
    return meta["sha256"]


class _NoUnnamedFiles(Exception):
    """This filesystem cannot give an ``O_TMPFILE`` file a name (e.g. overlayfs)."""


#: st_dev of filesystems where linking an O_TMPFILE file failed: not tried again
_NO_UNNAMED: set[int] = set()


def _write_file(target: str, header: bytes, blobs: list, unnamed: bool) -> None:
    fd, tmp = _open_temporary(target, unnamed)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for _, a in blobs:
                _write_tensor(f, a)
            f.flush()
            os.fsync(f.fileno())
            if tmp is None:  # unnamed: give it a name only now that it is complete
                tmp = _link_unnamed(f.fileno(), target)
            os.replace(tmp, target)  # while f is open: its lock keeps tmp from cleaners
    except BaseException:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise


def _save_target(path: str) -> str:
    """The file a save replaces: symlinks resolved; refused if it is not a regular file."""
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(
            errno.EEXIST, "exists and is not a regular file; refusing to replace it", path
        )
    return target


def _temporary_prefix(target: str) -> str:
    return f".{os.path.basename(target)}."


def _file_mode() -> int:
    """0o666 less the process's umask: the mode ``open()`` would give a new file."""
    try:
        with open("/proc/self/status") as f:  # reading it does not change it (Linux)
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o22)
    os.umask(mask)
    return 0o666 & ~mask


def _open_temporary(target: str, unnamed: bool) -> tuple[int, str | None]:
    """A file descriptor to write the new file to, and its name (None: still unnamed).

    Locked with ``flock`` while open, so that a later save can tell a killed save's
    leftover (unlocked) from one in progress (locked).
    """
    directory = os.path.dirname(target)
    o_tmpfile = getattr(os, "O_TMPFILE", 0)
    if (
        unnamed
        and o_tmpfile
        and os.path.isdir("/proc/self/fd")
        and os.stat(directory).st_dev not in _NO_UNNAMED
    ):
        try:
            fd = os.open(directory, o_tmpfile | os.O_WRONLY | os.O_CLOEXEC, _file_mode())
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            _lock(fd)
            return fd, None
    _remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=directory)
    _lock(fd)
    os.fchmod(fd, _file_mode())
    return fd, tmp


def _link_unnamed(fd: int, target: str) -> str:
    """Give an ``O_TMPFILE`` file a (temporary) name beside ``target``; returns it."""
    for _ in range(100):
        tmp = os.path.join(
            os.path.dirname(target), f"{_temporary_prefix(target)}{os.urandom(6).hex()}.tmp"
        )
        try:
            os.link(f"/proc/self/fd/{fd}", tmp, follow_symlinks=True)
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP):
                raise
            _NO_UNNAMED.add(os.fstat(fd).st_dev)
            raise _NoUnnamedFiles() from None
    raise FileExistsError(errno.EEXIST, "no free temporary name", target)


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _remove_stale_temporaries(target: str) -> None:
    """Remove temporaries of ``target`` that killed saves left (nobody holds their lock)."""
    if fcntl is None:
        return
    directory, prefix = os.path.dirname(target), _temporary_prefix(target)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        stale = os.path.join(directory, name)
        try:
            fd = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a save in progress
                os.unlink(stale)
        except OSError:
            pass
        finally:
            os.close(fd)


def _fsync_directory(directory: str) -> None:
    # The rename is durable only once the directory entry is on disk (POSIX only).
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- reading


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` that turns every failure (syntax, nesting depth, huge numbers,
    duplicate keys, NaN literals) into a FormatError naming ``what``."""

    def no_constants(name: str):
        raise FormatError(f"{what}: {name} is not valid JSON")

    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constants)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except RecursionError:
        raise FormatError(f"{what}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise FormatError(f"{what} is not valid UTF-8 JSON: {exc}") from None


def is_int(v: Any) -> bool:
    """True for a JSON integer (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entry(name: str, entry: Any, data_size: int) -> tuple[np.dtype, tuple, int, int]:
    where = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(
            f"{where}: expected an object with exactly dtype, shape and data_offsets, "
            f"got {entry!r:.200}"
        )
    dtype = DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        raise FormatError(
            f"{where}: unsupported dtype {entry['dtype']!r:.50}; expected one of {sorted(DTYPES)}"
        )
    shape = entry["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(is_int(s) and s >= 0 for s in shape)
    ):
        raise FormatError(
            f"{where}: shape must be a list of at most {MAX_NDIM} non-negative integers, "
            f"got {shape!r:.200}"
        )
    offsets = entry["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets):
        raise FormatError(f"{where}: data_offsets must be [begin, end], got {offsets!r:.200}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise FormatError(
            f"{where}: data_offsets [{begin}, {end}] lie outside the data section of "
            f"{data_size} bytes (is the file truncated?)"
        )
    nbytes = elements = dtype.itemsize
    for s in shape:  # Python ints: no overflow, and nothing is allocated
        nbytes *= s
        elements *= max(s, 1)
    if nbytes != end - begin:
        raise FormatError(
            f"{where}: dtype {entry['dtype']} x shape {shape} is {nbytes} bytes "
            f"but data_offsets [{begin}, {end}] hold {end - begin}"
        )
    if elements > MAX_TENSOR_BYTES:  # e.g. shape [0, 2**63]: no bytes, yet no array either
        raise FormatError(
            f"{where}: shape {shape} has a dimension or size beyond what an array can "
            f"index ({MAX_TENSOR_BYTES} bytes)"
        )
    return dtype, tuple(shape), begin, end


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file (a FIFO would block,
    a device could be endless) with a FormatError naming the path, before reading a byte."""
    path = os.fspath(path)

    def refuse(mode: int) -> FormatError:
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        return FormatError(f"{path}: is {kind}, not a .pinf file")

    st = os.stat(path)  # FileNotFoundError / PermissionError name the path themselves
    if not stat.S_ISREG(st.st_mode):
        raise refuse(st.st_mode)
    # O_NONBLOCK: should the path become a FIFO after the stat, opening it does not block
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_container(path: str | os.PathLike, mmap: bool = True) -> Container:
    """Memory-map (or read) a ``.pinf`` file and check its container layer.

    Checks that it is a regular file, the header length bound, the JSON, every tensor's
    dtype, shape, offsets and alignment (inside the file, not overlapping, dtype x
    shape = byte length, file fully covered), the format name and version. With
    ``mmap=True`` tensors are zero-copy read-only views of the map and no tensor bytes
    are read; with ``mmap=False`` the data section is read into private memory.

    Raises
    ------
    FormatError
        Naming the tensor or field that is wrong and what was expected.
    """
    path = os.fspath(path)
    with open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise FormatError(
                f"{path}: file is {size} bytes; a .pinf file starts with an 8-byte header length"
            )
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise FormatError(
                f"{path}: header length {header_len} exceeds the "
                + (
                    f"file ({size - 8} bytes after the length field; truncated?)"
                    if header_len > size - 8
                    else f"limit of {MAX_HEADER_BYTES} bytes"
                )
            )
        header_bytes = f.read(header_len)
        if len(header_bytes) != header_len:
            raise FormatError(f"{path}: file shrank while reading the header")
        try:
            header_text = header_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: header is not valid UTF-8: {exc}") from None
        header = parse_json(header_text, f"{path}: header")
        if not isinstance(header, dict):
            raise FormatError(f"{path}: header must be a JSON object, got {type(header).__name__}")
        data_offset = 8 + header_len
        data_size = size - data_offset
        metadata = header.pop("__metadata__", {})
        check_metadata(path, metadata)

        spans = []
        layout = {}
        for name, entry in header.items():
            dtype, shape, begin, end = _check_entry(name, entry, data_size)
            if not name.startswith(PADDING_PREFIX) and (data_offset + begin) % ALIGNMENT:
                raise FormatError(
                    f"tensor {name!r}: starts at byte {data_offset + begin} of the file, "
                    f"which is not {ALIGNMENT}-byte aligned as the format requires"
                )
            layout[name] = (dtype, shape, begin, end)
            spans.append((begin, end, name))
        spans.sort()
        covered = 0
        for begin, end, name in spans:
            if begin < covered:
                raise FormatError(
                    f"tensor {name!r}: data_offsets [{begin}, {end}] overlap the previous "
                    f"tensor, which ends at {covered}"
                )
            covered = end
        if covered != data_size:
            raise FormatError(
                f"{path}: the tensors cover {covered} bytes of the {data_size}-byte data "
                f"section; expected the data section to end with the last tensor"
            )
        if mmap:
            buffer = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
            base, data = data_offset, None
        else:
            # bytes: immutable, so the arrays below are read-only and never copied again
            data = f.read(data_size)
            if len(data) != data_size:
                raise FormatError(f"{path}: file shrank while reading the data section")
            buffer, base = data, 0

    tensors = {}
    for name, (dtype, shape, begin, end) in layout.items():
        if name.startswith(PADDING_PREFIX):
            continue
        count = (end - begin) // dtype.itemsize
        a = np.frombuffer(buffer, dtype=dtype, count=count, offset=base + begin)
        tensors[name] = a.reshape(shape)  # read-only: an ACCESS_READ map, or bytes
    return Container(tensors, metadata, data_offset, path, buffer if mmap else None, data)


def check_metadata(path: str, metadata: Any) -> None:
    """``__metadata__``: str -> str, a pyinfer file, of a version this code reads."""
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError(f"{path}: __metadata__ must be an object of string values")
    if metadata.get("format") != FORMAT_NAME:
        raise FormatError(
            f"{path}: not a pyinfer model: __metadata__.format is "
            f"{metadata.get('format')!r:.50}, expected {FORMAT_NAME!r} "
            "(a plain safetensors file holds tensors but no graph)"
        )
    version = metadata.get("format_version", "")
    # isascii: str.isdigit also takes "²", "١" and "𝟏"
    if not (version.isascii() and version.isdigit()) or len(version) > 6:
        raise FormatError(
            f"{path}: __metadata__.format_version must be a positive integer, got {version!r:.50}"
        )
    if int(version) > FORMAT_VERSION:
        raise FormatError(
            f"{path}: this file needs pinf format version {int(version)}; this pyinfer "
            f"reads versions up to {FORMAT_VERSION}: upgrade pyinfer"
        )
    if int(version) < 1:
        raise FormatError(f"{path}: format_version {version} does not exist (versions start at 1)")


def sha256_of_file(path: str, offset: int, chunk: int = 1 << 22) -> str:
    """SHA-256 (hex) of the file's bytes from ``offset`` to the end."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            block = f.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()
