"""The rows of the encoding registry: importing this package registers each of them.

A new encoding is a module here (weight class, NumPy codec, NumPy reference, and a
``register(Encoding(...))`` call) plus its name in ``ROWS``.
"""

import importlib

ROWS = ("dense", "csr", "int8", "int4", "binary", "pow2")

for _row in ROWS:
    importlib.import_module(f"{__name__}.{_row}")
