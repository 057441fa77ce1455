"""The converter: import models (ONNX, PyTorch) and compress them (pruning, quantization)."""
