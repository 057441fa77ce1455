"""The rows of the encoding registry: importing this package registers each of them.

Adding an encoding, on the Python side:

1. ``kernels/encodings/<name>.py``: the weight class (an ``EncodedWeight`` dataclass whose
   array fields are what files store; ``decode_matrix``; ``slice_rows`` only if its
   arrays are not all per output row), the NumPy codec and ``reference_linear``, and
   ``register(Encoding(...))`` naming its kernels (``"linear/c"``, ``"linear/numba"``,
   optionally ``"conv2d/<backend>"`` lowerings), ``reference_conv2d`` if its conv
   semantics are not those of its linear on patch rows, and ``c_slots``.
2. Its fast kernels where it has them: ``kernels/backend_c/<name>.py`` (the cffi call),
   ``kernels/backend_numba/<name>.py``; a conv lowering of its own in
   :mod:`kernels.conv.lowerings` only if patch rows through its linear kernel are not
   good enough.

Everything else -- ``kernels.encode``/``linear``/``conv2d`` dispatch, grouped conv, the
file format, the runtime, ``cpu_info`` and the tests iterating the rows -- reads the row.
A row needs no kernels at all: the NumPy reference serves every backend.
"""

import importlib
import pkgutil

# Every module of this package is imported, in name order; those that call ``register``
# are the rows (``base`` and ``quant`` hold shared code and register nothing), so a new
# encoding is one new file here and no list to edit.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
