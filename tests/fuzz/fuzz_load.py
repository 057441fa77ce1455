"""Fuzz ``pyinfer.load`` (and a call of what loads), for a bounded time.

Every input is a whole ``.pinf`` file; a second mode writes the input's bytes into the
data section of a file *after* it was loaded, then calls the model (what must change
numbers only, never an address). Anything but a ``FormatError`` at load, or a crash, is a
finding.

With atheris installed this is a coverage-guided harness (seeded with valid files of
every encoding)::

    python tests/fuzz/fuzz_load.py --seconds 100

Without atheris (``pip install atheris`` needs a wheel or clang) the same targets run
under a plain random-mutation loop over the seeds: byte flips, truncations, splices and
edits of the JSON header. ``--plain`` forces that loop.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

try:
    import atheris
except ImportError:
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["pyinfer"]):
        import pyinfer
        from pyinfer.format import FormatError
else:
    import pyinfer
    from pyinfer.format import FormatError


def seed_models() -> list[pyinfer.Model]:
    """Small valid models: every encoding on a linear layer, and a grouped conv."""
    import kernels
    from kernels import registry

    rng = np.random.default_rng(0)
    models = []
    for name in registry.names():
        g = pyinfer.Graph()
        x = g.input("x", (None, 16))
        w = rng.standard_normal((8, 16)).astype(np.float32)
        w[rng.random(w.shape) < 0.5] = 0
        g.output(g.linear(x, kernels.encode(w, name), rng.standard_normal(8), name="fc"))
        models.append(g.build())
    g = pyinfer.Graph()
    x = g.input("x", (None, 4, 6, 6))
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    g.output(g.conv2d(x, w, stride=2, padding=1, groups=2, encoding="int8", name="conv"))
    models.append(g.build())
    return models


def input_for(model: pyinfer.Model, batch: int) -> np.ndarray | None:
    """A float32 input for a single-input model whose sizes are known, else None."""
    if len(model.inputs) != 1:
        return None
    spec = model.inputs[0]
    shape = spec.shape
    if spec.dtype != "float32" or shape is None or any(d is None for d in shape[1:]):
        return None
    if np.prod(shape[1:]) > 4096:
        return None
    return np.ones((batch, *shape[1:]), np.float32)


def call(model: pyinfer.Model) -> None:
    """Run the model at batch 1 and 2 where it takes a plain float input."""
    for batch in (1, 2):
        x = input_for(model, batch)
        if x is None:
            return
        try:
            with np.errstate(all="ignore"):
                model(x)
        except (ValueError, TypeError):
            pass  # a clear error about the input or a node; a crash would not get here


class Target:
    """The fuzzed functions, writing each input to one scratch file."""

    def __init__(self, seeds: list[bytes]):
        self.seeds = seeds
        self.dir = tempfile.mkdtemp(prefix="pinf-fuzz-")
        self.path = os.path.join(self.dir, "m.pinf")
        self.runs = 0

    def load(self, blob: bytes) -> None:
        """A whole file: loads (and runs) or raises FormatError."""
        self.runs += 1
        with open(self.path, "wb") as f:
            f.write(blob)
        try:
            model = pyinfer.load(self.path)
        except FormatError:
            return
        call(model)

    def edit_after_load(self, blob: bytes) -> None:
        """A valid file, loaded, then rewritten in place with ``blob``: no crash."""
        self.runs += 1
        if len(blob) < 3:
            return
        seed = self.seeds[blob[0] % len(self.seeds)]
        with open(self.path, "wb") as f:
            f.write(seed)
        model = pyinfer.load(self.path)
        start = model.source.data_offset
        pos = start + int.from_bytes(blob[1:3], "little") % max(1, len(seed) - start)
        with open(self.path, "r+b") as f:  # the same inode the model maps
            f.seek(pos)
            f.write(blob[3 : 3 + len(seed) - pos])
        call(model)

    def one_input(self, blob: bytes) -> None:
        """atheris entry: the first byte picks the target."""
        if not blob:
            return
        if blob[0] & 1:
            self.edit_after_load(blob[1:])
        else:
            self.load(blob[1:])


# ----------------------------------------------------------------- plain random mutation


def mutate(rng: random.Random, blob: bytes, seeds: list[bytes]) -> bytes:
    """One random mutation of a file: flips, truncation, splice, or a header edit."""
    kind = rng.randrange(5)
    b = bytearray(blob)
    if kind == 0 and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= rng.randint(1, 255)
    elif kind == 1:
        del b[rng.randrange(len(b) + 1) :]
    elif kind == 2:
        other = rng.choice(seeds)
        cut = rng.randrange(len(other) + 1)
        b[rng.randrange(len(b) + 1) :] = other[cut:]
    elif kind == 3:
        return header_edit(rng, blob)
    else:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = rng.randbytes(rng.randint(1, 16))
    return bytes(b)


def header_edit(rng: random.Random, blob: bytes) -> bytes:
    """Replace one JSON value of the header (or of the graph) with a hostile one."""
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + n])
        graph = json.loads(header["__metadata__"]["graph"])
    except (ValueError, KeyError, TypeError, struct.error):
        return blob
    hostile = rng.choice(
        [0, -1, 2**20 + 1, 2**31, 2**63, -(2**63), 1.5, None, "", "²", [], [0, 2**63], {}]
    )
    where = rng.randrange(3)
    if where == 0:
        name = rng.choice([k for k in header if k != "__metadata__"])
        header[name][rng.choice(["dtype", "shape", "data_offsets"])] = hostile
    elif where == 1 and graph.get("nodes"):
        node = rng.choice(graph["nodes"])
        key = rng.choice(["stride", "padding", "dilation", "groups", "activation"])
        node.setdefault("attrs", {})[key] = hostile
    else:
        header["__metadata__"][rng.choice(["format_version", "weights"])] = str(hostile)
    header["__metadata__"]["graph"] = json.dumps(graph)
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 64)
    return struct.pack("<Q", len(h)) + h + blob[8 + n :]


def plain_loop(target: Target, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        blob = rng.choice(target.seeds)
        for _ in range(rng.randint(1, 3)):
            blob = mutate(rng, blob, target.seeds)
        if rng.random() < 0.25:
            target.edit_after_load(rng.randbytes(3) + rng.randbytes(rng.randint(1, 64)))
        else:
            target.load(blob)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="time budget")
    parser.add_argument("--plain", action="store_true", help="random mutation, no atheris")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plain loop")
    args, rest = parser.parse_known_args(argv)
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(seed_models()):
            path = os.path.join(tmp, f"seed{i}.pinf")
            pyinfer.save(model, path)
            with open(path, "rb") as f:
                seeds.append(f.read())
    target = Target(seeds)
    if atheris is None or args.plain:
        print(f"fuzz_load: plain random mutation for {args.seconds:.0f} s")
        plain_loop(target, args.seconds, args.seed)
        print(f"fuzz_load: {target.runs} runs, no finding")
        return 0
    corpus = tempfile.mkdtemp(prefix="pinf-corpus-")
    # whole-file seeds only: an edit-mode input covers a valid load too, and would make
    # libFuzzer drop the valid files it should mutate (it finds edit mode by itself)
    for i, blob in enumerate(seeds):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(b"\0" + blob)
    sys.argv = [sys.argv[0], f"-max_total_time={int(args.seconds)}", "-rss_limit_mb=4096",
                *rest, corpus]  # fmt: skip
    atheris.Setup(sys.argv, target.one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
