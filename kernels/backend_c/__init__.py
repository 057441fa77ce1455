"""The ``c`` backend: thin wrappers over the C kernel library (see ``ffi.py``)."""
