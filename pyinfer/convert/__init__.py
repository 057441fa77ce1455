"""The converter: trained models in, runtime models out.

``from_onnx`` imports an ONNX model and ``from_torch`` a PyTorch module (through the
dynamo ONNX exporter) as dense :class:`pyinfer.Model` objects; ``compress`` turns a
model's layers into compressed encodings by a recipe and ``compare`` reports what that
gained and lost. Importing this package
needs NumPy only; onnx and torch are imported when a model is converted
(``pip install ".[convert]"``).
"""

from pyinfer.convert.onnx_import import OnnxImportError, from_onnx
from pyinfer.convert.torch_import import from_torch

# compress and compare stay in their modules (pyinfer.compress, pyinfer.compare): a
# function of the same name here would hide its module.
__all__ = ["OnnxImportError", "from_onnx", "from_torch"]
