"""``pyinfer.from_torch``: a PyTorch module as a dense :class:`pyinfer.Model`.

The module is exported with ``torch.onnx.export(..., dynamo=True)`` (the TorchScript
exporter bakes sequence lengths into transformers) with the batch axis free, and the
sequence axis too for ``[batch, seq, features]`` inputs and ``[batch, seq]`` token ids,
then imported by :func:`pyinfer.from_onnx`.
"""

from __future__ import annotations

from typing import Any


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(
            f'converting PyTorch modules needs {name}: pip install ".[convert]" '
            '(and ".[torch]" for PyTorch itself)'
        ) from None


def from_torch(module: Any, example_input: Any, dynamic: bool = True) -> Any:
    """Export ``module`` to ONNX and import it: a dense :class:`pyinfer.Model`.

    Parameters
    ----------
    module : torch.nn.Module
        The model; exported in eval mode (its training flag is restored afterwards).
    example_input : torch.Tensor or numpy.ndarray
        One input of the shape the model takes (float32, or integer ids).
    dynamic : bool, default True
        Keep the batch axis free, and the sequence axis of a float ``[batch, seq,
        features]`` input or of integer ``[batch, seq]`` token ids, so the model runs at
        any batch size and sequence length; False fixes every size.

    Returns
    -------
    pyinfer.Model

    Raises
    ------
    ImportError
        If torch, onnx or onnxscript is missing.
    pyinfer.convert.OnnxImportError
        If the exported graph uses ops the runtime lacks (listed).
    """
    torch = _require("torch")
    _require("onnx")
    _require("onnxscript")
    from pyinfer.convert.onnx_import import from_onnx

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    x = example_input
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dtype == torch.float64:
        x = x.float()
    dynamic_shapes = None
    if dynamic and x.ndim >= 1:
        axes = {0: torch.export.Dim("batch")}
        if x.ndim == 3 or (x.ndim == 2 and not x.is_floating_point()):
            axes[1] = torch.export.Dim("seq")  # [batch, seq, features] or token ids
        dynamic_shapes = (axes,)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                module,
                (x,),
                dynamo=True,
                external_data=False,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
    finally:
        module.train(was_training)
    return from_onnx(program.model_proto)
