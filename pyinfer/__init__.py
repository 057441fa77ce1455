"""pyinfer: compressed neural networks that run faster on CPUs and ARM boards.

The runtime loads ``.pinf`` files and runs them on the kernels of the ``kernels``
package; the converter (``pyinfer.convert``) produces them.
"""

from kernels._version import __version__
from pyinfer.convert import from_onnx, from_torch
from pyinfer.convert.compare import Report, compare
from pyinfer.convert.compress import compress
from pyinfer.convert.finetune import Distill, FineTune
from pyinfer.files import load, save
from pyinfer.format import FormatError
from pyinfer.graph import Graph
from pyinfer.model import Model
from pyinfer.scoring import BatchScorer

__all__ = [
    "BatchScorer",
    "Distill",
    "FineTune",
    "FormatError",
    "Graph",
    "Model",
    "Report",
    "__version__",
    "compare",
    "compress",
    "from_onnx",
    "from_torch",
    "load",
    "save",
]
