"""pyinfer's kernel library: matmul and conv for compressed weight encodings.

``encode`` a dense weight into an encoding from the registry, then call ``linear`` (or
``conv2d``); the call dispatches on the weight's encoding to the fastest backend
available (C with runtime ISA dispatch, Numba, or the NumPy reference). Importing this
package compiles and loads nothing.
"""

from kernels._version import __version__
from kernels.api import encode, linear, matmul
from kernels.backends import (
    available_backends,
    cpu_info,
    get_backend,
    get_num_threads,
    set_backend,
    set_isa,
    set_num_threads,
    supported_isas,
    using,
)
from kernels.conv import conv2d
from kernels.encodings.base import EncodedWeight
from kernels.registry import ENCODINGS, Encoding

__all__ = [
    "ENCODINGS",
    "EncodedWeight",
    "Encoding",
    "__version__",
    "available_backends",
    "conv2d",
    "cpu_info",
    "encode",
    "get_backend",
    "get_num_threads",
    "linear",
    "matmul",
    "set_backend",
    "set_isa",
    "set_num_threads",
    "supported_isas",
    "using",
]
