"""The ``pyinfer`` command line: one subcommand per module, imported only when used.

A subcommand module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Errors a user can fix are reported as one line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> module implementing it
COMMANDS = {
    "bench": "pyinfer.bench.cli",
    "run": "pyinfer.commands.run",
    "inspect": "pyinfer.commands.inspect",
    "convert": "pyinfer.commands.convert",
    "advise": "pyinfer.commands.advise",
    "demo": "pyinfer.commands.demo",
}


class UserError(Exception):
    """An error in the user's input: printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    from kernels import __version__

    parser = argparse.ArgumentParser(
        prog="pyinfer",
        description="Compressed neural networks that run faster on CPUs and ARM boards.",
    )
    parser.add_argument("--version", action="version", version=f"pyinfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyinfer`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except (UserError, FileNotFoundError, ValueError, TypeError) as exc:
        name = type(exc).__name__ if not isinstance(exc, UserError) else "error"
        print(f"pyinfer {args.command}: {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # ``python -m pyinfer.cli``: run the imported module, whose UserError the commands raise
    from pyinfer.cli import main as _main

    sys.exit(_main())
