"""Build hook: compile csrc/ into kernels/_lib/ (a plain C library, loaded with cffi, and
its compiled cffi binding for this Python).

Without a working C compiler the install still succeeds; the package then runs on
Numba/NumPy and says so once at run time.
"""

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - setuptools < 70
    bdist_wheel = None

ROOT = Path(__file__).resolve().parent


def _load_build_lib():
    spec = importlib.util.spec_from_file_location(
        "pyinfer_build_lib", ROOT / "kernels" / "build_lib.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithLib(build_py):
    """build_py that also compiles the C kernel library into the package."""

    def run(self):
        super().run()
        if os.environ.get("PYINFER_NO_C"):
            print("pyinfer: PYINFER_NO_C set, C kernels not built", file=sys.stderr)
            return
        editable = getattr(self, "editable_mode", False)
        out = ROOT / "kernels" / "_lib" if editable else Path(self.build_lib) / "kernels" / "_lib"
        try:
            _load_build_lib().build(ROOT, out)
        except Exception as exc:  # noqa: BLE001 - any build failure falls back to Numba/NumPy
            (out / "libpyinfer_kernels.so").unlink(missing_ok=True)  # no stale library
            print(
                f"pyinfer: C kernel library not built ({exc}); Numba/NumPy kernels will be used",
                file=sys.stderr,
            )


cmdclass = {"build_py": BuildPyWithLib}

if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):
        """One wheel per platform, any Python 3: the library loads through cffi's ABI mode,
        or through the compiled binding inside on the Python that built it."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = PlatformWheel

setup(cmdclass=cmdclass)
