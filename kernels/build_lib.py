"""Compile csrc/ into the kernel shared library (or a sanitized C test program).

One ISA per source file: the suffix of the file name (``_avx2.c``, ``_avx512vnni.c``,
``_neondot.c`` ...) picks its compiler flags, and files for another architecture are
skipped. This module imports nothing outside the standard library so that ``setup.py``
can load it by path before NumPy is installed, and ``pyinfer build`` can cross-compile.

Run ``python kernels/build_lib.py --help`` for the command line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LIB_NAME = "libpyinfer_kernels.so"
HEADER_NAME = "pyinfer_kernels.h"
#: The compiled cffi binding of the library for the building Python (API mode; a call
#: through it costs a fraction of an ABI-mode call). Optional: without it the library
#: is opened in ABI mode.
BINDING_NAME = "_pyinfer_binding"

#: Compiler flags per ISA suffix, per target architecture. A suffix missing from a
#: target's table means "not built for that target".
ISA_FLAGS: dict[str, dict[str, list[str]]] = {
    "x86_64": {
        "avx2": ["-mavx2", "-mfma", "-mf16c", "-mbmi2", "-mpopcnt"],
        "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl"],
        "avx512vnni": [
            "-mavx2",
            "-mfma",
            "-mavx512f",
            "-mavx512bw",
            "-mavx512dq",
            "-mavx512vl",
            "-mavx512vnni",
        ],
        "avx512vpopcnt": [
            "-mavx2",
            "-mfma",
            "-mavx512f",
            "-mavx512bw",
            "-mavx512dq",
            "-mavx512vl",
            "-mavx512vpopcntdq",
            "-mpopcnt",
        ],
    },
    "aarch64": {
        "neon": ["-march=armv8-a"],
        "neondot": ["-march=armv8.2-a+dotprod"],
    },
    "armv7": {
        "neon": ["-march=armv7-a", "-mfpu=neon", "-mfloat-abi=hard"],
    },
}

#: Default compiler per target (Debian cross toolchains).
TARGET_CC = {
    "x86_64": "gcc",
    "aarch64": "aarch64-linux-gnu-gcc",
    "armv7": "arm-linux-gnueabihf-gcc",
}

#: Header that maps the AVX-512 intrinsics onto SIMDe's portable ones (test builds only).
EMULATION_HEADER = "tests/emulate_avx512.h"

BASE_FLAGS = ["-std=c99", "-fPIC", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter"]
_ISA_SUFFIX = re.compile(r"_([a-z0-9]+)\.c$")


#: Where the package loads its library from (never an emulated one).
_PACKAGE_LIB = Path(__file__).resolve().parent / "_lib"


def host_target() -> str:
    """Name of the target that matches this machine (``x86_64``, ``aarch64``, ``armv7``)."""
    machine = os.uname().machine.lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    if machine.startswith("armv7") or machine.startswith("armv8l"):
        return "armv7"
    return machine


def version_of_package(root: Path) -> str:
    """Read ``__version__`` from kernels/_version.py without importing the package."""
    text = (root / "kernels" / "_version.py").read_text()
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if not match:
        raise RuntimeError("kernels/_version.py has no __version__")
    return match.group(1)


def sources(csrc: Path, target: str) -> list[tuple[Path, str | None]]:
    """Library sources for ``target`` with the ISA each is written for (None: portable C)."""
    isa_table = ISA_FLAGS.get(target, {})
    all_isas = {isa for table in ISA_FLAGS.values() for isa in table}
    chosen = []
    for path in sorted(csrc.rglob("*.c")):
        if "tests" in path.relative_to(csrc).parts:
            continue
        match = _ISA_SUFFIX.search(path.name)
        isa = match.group(1) if match and match.group(1) in all_isas else None
        if isa is not None and isa not in isa_table:
            continue  # written for another architecture
        chosen.append((path, isa))
    return chosen


def build(
    root: Path,
    out_dir: Path,
    *,
    target: str | None = None,
    cc: str | None = None,
    sanitize: bool = False,
    test_program: bool = False,
    emulate_avx512: bool = False,
    verbose: bool = False,
) -> Path:
    """Compile ``root/csrc`` for ``target`` into ``out_dir``.

    Returns the path of the shared library (or of the C test program when
    ``test_program`` is true; that links ``csrc/tests/*.c`` with the library sources).
    The public header is copied beside the library: it is the cffi cdef.

    ``emulate_avx512`` (x86_64, tests only) compiles the AVX-512 sources with the AVX2
    flags on SIMDe's portable intrinsics (``libsimde-dev``) and makes the dispatch report
    AVX-512, so their logic is tested on a CPU without it: the C test program, or a
    library for the Python tests (``PYINFER_LIB``) that may not replace the package's own.
    """
    root = Path(root)
    csrc = root / "csrc"
    target = target or host_target()
    if target not in ISA_FLAGS:
        raise ValueError(f"unknown target {target!r}; expected one of {sorted(ISA_FLAGS)}")
    if emulate_avx512 and target != "x86_64":
        raise ValueError(f"emulate_avx512 is for x86_64, not {target!r}")
    if emulate_avx512 and not test_program and Path(out_dir).resolve() == _PACKAGE_LIB:
        raise ValueError(f"emulate_avx512: an emulated library may not replace {_PACKAGE_LIB}")
    cc = cc or os.environ.get("CC") or TARGET_CC[target]
    if target != host_target() and cc == "gcc":
        cc = TARGET_CC[target]
    cc_argv = cc.split()  # allows "zig cc -target aarch64-linux-gnu"
    if shutil.which(cc_argv[0]) is None:
        raise FileNotFoundError(f"C compiler {cc_argv[0]!r} not found")

    srcs = sources(csrc, target)
    have = sorted({isa for _, isa in srcs if isa})
    common = [*BASE_FLAGS, f"-I{csrc / 'include'}", f"-I{csrc}"]
    common += [f'-DPK_VERSION_STRING="{version_of_package(root)}"']
    common += [f"-DPK_HAVE_{isa.upper()}=1" for isa in have]
    if sanitize:
        common += [
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
        ]
    else:
        common += ["-O3", "-DNDEBUG"]
    if target == "armv7":
        common += ["-march=armv7-a", "-mfpu=neon", "-mfloat-abi=hard"]
    isa_flags = dict(ISA_FLAGS[target])
    if emulate_avx512:
        common.append("-DPK_EMULATE_AVX512=1")
        emulated = [*ISA_FLAGS[target]["avx2"], "-include", str(csrc / EMULATION_HEADER)]
        isa_flags.update({isa: emulated for isa in isa_flags if isa.startswith("avx512")})

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyinfer-build-") as tmp:
        jobs = []
        for i, (src, isa) in enumerate(srcs):
            obj = Path(tmp) / f"{i:03d}_{src.stem}.o"
            flags = common + (isa_flags[isa] if isa else [])
            jobs.append((src, obj, flags))
        if test_program:
            for i, src in enumerate(sorted((csrc / "tests").glob("*.c"))):
                jobs.append((src, Path(tmp) / f"t{i:03d}_{src.stem}.o", common))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(lambda job: _compile(cc_argv, *job), jobs))
        objs = [str(obj) for _, obj, _ in jobs]
        link = [*cc_argv, *objs, "-lm", "-pthread"]
        if sanitize:
            link.append("-fsanitize=address,undefined")
        if test_program:
            out = out_dir / "pyinfer_kernels_test"
            link += ["-o", str(out)]
        else:
            out = out_dir / LIB_NAME
            link += ["-shared", "-o", str(out) + ".tmp"]
        if verbose:
            print(" ".join(link))
        result = subprocess.run(link, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"linking failed:\n{' '.join(link)}\n{result.stderr}")
    if not test_program:
        os.replace(str(out) + ".tmp", out)  # never leave a half-written library
        shutil.copyfile(csrc / "include" / HEADER_NAME, out_dir / HEADER_NAME)
        for old in out_dir.glob(BINDING_NAME + ".*"):
            old.unlink()  # a binding of an earlier library must not outlive it
        if target == host_target() and not sanitize and not emulate_avx512:
            try:
                build_binding(out_dir, verbose=verbose)
            except Exception as exc:  # noqa: BLE001 - the ABI-mode path still works
                print(f"pyinfer: no compiled binding ({exc}); cffi ABI mode", file=sys.stderr)
    return out


def cdef_of(header: Path) -> str:
    """The part of the public header between its cdef markers: what cffi declares."""
    text = Path(header).read_text()
    begin, end = text.find("/* cdef-begin */"), text.find("/* cdef-end */")
    if begin < 0 or end < begin:
        raise ValueError(f"{header} has no cdef markers")
    return text[begin + len("/* cdef-begin */") : end]


def build_binding(lib_dir: Path, verbose: bool = False) -> Path:
    """Compile the cffi binding (API mode) of ``lib_dir``'s library for this Python,
    beside it; it finds the library through its run path (``$ORIGIN``)."""
    import cffi  # the binding needs cffi at build time (pyproject's build requirements)

    lib_dir = Path(lib_dir).resolve()  # cffi compiles in a folder of its own
    ffi = cffi.FFI()
    ffi.cdef(cdef_of(lib_dir / HEADER_NAME))
    ffi.set_source(
        BINDING_NAME,
        f'#include "{HEADER_NAME}"',
        include_dirs=[str(lib_dir)],
        library_dirs=[str(lib_dir)],
        libraries=[LIB_NAME.removeprefix("lib").removesuffix(".so")],
        extra_link_args=["-Wl,-rpath,$ORIGIN"],
    )
    with tempfile.TemporaryDirectory(prefix="pyinfer-binding-") as tmp:
        built = Path(ffi.compile(tmpdir=tmp, verbose=verbose))
        target = lib_dir / built.name
        shutil.copyfile(built, str(target) + ".tmp")
        os.replace(str(target) + ".tmp", target)
    return target


def _compile(cc_argv: list[str], src: Path, obj: Path, flags: list[str]) -> None:
    cmd = [*cc_argv, *flags, "-c", str(src), "-o", str(obj)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {src.name} failed:\n{' '.join(cmd)}\n{result.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the pyinfer C kernel library.")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="source tree holding csrc/ (default: this checkout)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: kernels/_lib in the source tree)",
    )
    parser.add_argument(
        "--target",
        choices=sorted(ISA_FLAGS),
        default=None,
        help="target architecture (default: this machine)",
    )
    parser.add_argument("--cc", default=None, help="C compiler command (default: per target)")
    parser.add_argument("--sanitize", action="store_true", help="AddressSanitizer + UBSan")
    parser.add_argument(
        "--test-program",
        action="store_true",
        help="build the C test program (csrc/tests) instead of the library",
    )
    parser.add_argument(
        "--emulate-avx512",
        action="store_true",
        help="tests only: the AVX-512 kernels on SIMDe's portable intrinsics "
        "(the C test program, or with --out a library for PYINFER_LIB)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    out_dir = args.out or args.root / "kernels" / "_lib"
    path = build(
        args.root,
        out_dir,
        target=args.target,
        cc=args.cc,
        sanitize=args.sanitize,
        test_program=args.test_program,
        emulate_avx512=args.emulate_avx512,
        verbose=args.verbose,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
