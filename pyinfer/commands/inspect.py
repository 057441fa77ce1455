"""``pyinfer inspect``: what a .pinf file holds, layer by layer, and its checksum."""

from __future__ import annotations

import argparse

HELP = "show a .pinf model's layers (op, encoding, shape, sparsity, bytes), totals, checksum"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pyinfer inspect``."""
    parser.add_argument("model", help="the .pinf file")
    parser.add_argument(
        "--verify", action="store_true", help="recompute the SHA-256 of the data section"
    )


def _shape(shape) -> str:
    if shape is None:
        return "?"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args: argparse.Namespace) -> int:
    """Print the table; with --verify, fail (exit 2) unless the checksum matches."""
    import os

    from pyinfer.cli import UserError
    from pyinfer.files import load_to_describe

    try:
        model = load_to_describe(args.model)  # bounded memory, whatever the file's size
    except PermissionError as exc:
        raise UserError(str(exc)) from None
    meta = model.source.metadata
    print(
        f"{args.model}: pinf format {meta['format_version']}, {meta.get('producer', '?')}, "
        f"{_size(os.path.getsize(args.model))}"
    )
    ins = ", ".join(f"{s.name} {_shape(s.shape)} {s.dtype}" for s in model.inputs)
    print(f"inputs: {ins}")
    print(f"outputs: {', '.join(model.output_names)}")
    rows = model.layers(release_pages=True)
    header = ("layer", "op", "encoding", "weight", "output", "sparsity", "bytes")
    table = [header]
    for r in rows:
        table.append(
            (
                r["name"],
                r["op"],
                r["encoding"] or "-",
                _shape(r["weight_shape"]) if r["weight_shape"] else "-",
                _shape(r["output_shape"]),
                f"{r['sparsity']:.1%}" if r["sparsity"] is not None else "-",
                _size(r["bytes"]) if r["bytes"] else "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    stored = sum(r["bytes"] for r in rows)
    dense = sum(r["dense_bytes"] for r in rows)
    weighted = sum(1 for r in rows if r["encoding"])
    ratio = f", compression {dense / stored:.2f}x" if stored else ""
    print(
        f"total: {len(rows)} layers ({weighted} weighted), {_size(stored)} of weights and "
        f"parameters (float32 dense: {_size(dense)}{ratio})"
    )
    if args.verify:
        print(f"sha256: {model.source.verify()} (verified)")
    else:
        print(f"sha256: {meta.get('sha256', '?')} (stored; --verify recomputes it)")
    return 0
