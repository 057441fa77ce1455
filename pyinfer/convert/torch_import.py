"""``pyinfer.from_torch``: a PyTorch module, ``torch.export`` program or ``.pt2`` file as a
dense :class:`pyinfer.Model`.

The model is exported with ``torch.onnx.export(..., dynamo=True)`` (the TorchScript
exporter bakes sequence lengths into transformers), then imported by
:func:`pyinfer.from_onnx`. A module is exported with the batch axis free, and the
sequence axis too for ``[batch, seq, features]`` inputs and ``[batch, seq]`` token ids;
an ``ExportedProgram`` (from ``torch.export.export``, or read from a ``.pt2`` file that
``torch.export.save`` wrote) keeps the dynamic dims it was exported with.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(
            f'converting PyTorch models needs {name}: pip install ".[convert,torch]"'
        ) from None


#: The exporter's logger that warns, on every export without torchvision, that it skips
#: torchvision's ops: noise for every model this package imports.
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


@contextlib.contextmanager
def _silenced(logger_name: str):
    """Drop the records of one logger for a while (``torch.export.load`` logs a whole
    traceback as a warning before it raises its own error on a file it cannot read)."""
    logger = logging.getLogger(logger_name)
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was_disabled


def load_pt2(path: str | os.PathLike) -> Any:
    """Read the ``torch.export.ExportedProgram`` that ``torch.export.save`` wrote.

    ``torch.export.load`` unpickles parts of the file: read only files you trust.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pt2`` file.

    Returns
    -------
    torch.export.ExportedProgram

    Raises
    ------
    ImportError
        If torch is missing.
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not an exported program that this torch can read (one line).
    """
    torch = _require("torch")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with _silenced("torch.export"):
            return torch.export.load(path)
    except Exception as exc:  # a zip error, a schema mismatch, a missing record, ...
        reason = _first_sentence(str(exc)) or type(exc).__name__
        raise ValueError(
            f"{path}: not a torch.export program that torch {torch.__version__} can read "
            f"(torch.export.save writes one): {reason}"
        ) from None


def _first_sentence(message: str) -> str:
    """The first sentence of an error message (torch's go on to point at the log records
    that :func:`load_pt2` drops)."""
    first_line = message.strip().split("\n", 1)[0]
    return first_line.split(". ", 1)[0].rstrip(".")


def from_torch(module: Any, example_input: Any = None, dynamic: bool = True) -> Any:
    """Export a PyTorch model to ONNX and import it: a dense :class:`pyinfer.Model`.

    Parameters
    ----------
    module : torch.nn.Module, torch.export.ExportedProgram, str or os.PathLike
        The model: a module (exported in eval mode, its training flag restored
        afterwards), a program from ``torch.export.export`` (export it from a module in
        eval mode), or the path of a ``.pt2`` file that ``torch.export.save`` wrote
        (unpickled in part by ``torch.export.load``: only files you trust).
    example_input : torch.Tensor or numpy.ndarray, optional
        One input of the shape the module takes (float32, or integer ids). Needed for a
        module; a program carries its own, so leave it out there.
    dynamic : bool, default True
        For a module: keep the batch axis free, and the sequence axis of a float
        ``[batch, seq, features]`` input or of integer ``[batch, seq]`` token ids, so the
        model runs at any batch size and sequence length; False fixes every size. A
        program keeps the dynamic dims it was exported with (``dynamic_shapes`` of
        ``torch.export.export``); False is refused there.

    Returns
    -------
    pyinfer.Model

    Raises
    ------
    ImportError
        If torch, onnx or onnxscript is missing.
    TypeError
        If ``module`` is none of the above, a module comes without ``example_input``
        or a program with one.
    ValueError
        If a ``.pt2`` file cannot be read, or ``dynamic=False`` comes with a program.
    pyinfer.convert.OnnxImportError
        If the exported graph uses ops the runtime lacks (listed).

    Examples
    --------
    >>> model = pyinfer.from_torch(net, torch.randn(1, 1, 28, 28))  # doctest: +SKIP
    >>> batch = torch.export.Dim("batch")  # doctest: +SKIP
    >>> program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))  # doctest: +SKIP
    >>> model = pyinfer.from_torch(program)  # doctest: +SKIP
    >>> model = pyinfer.from_torch("net.pt2")  # doctest: +SKIP
    """
    torch = _require("torch")
    _require("onnx")
    _require("onnxscript")
    from pyinfer.convert.onnx_import import from_onnx

    if isinstance(module, (str, os.PathLike)):
        module = load_pt2(module)
    if isinstance(module, torch.export.ExportedProgram):
        onnx_program = _export_program(torch, module, example_input, dynamic)
    elif isinstance(module, torch.nn.Module):
        onnx_program = _export_module(torch, module, example_input, dynamic)
    else:
        raise TypeError(
            "from_torch takes a torch.nn.Module, a torch.export.ExportedProgram or the path "
            f"of a .pt2 file, got {type(module).__name__}"
        )
    return from_onnx(onnx_program.model_proto)


def _export_program(torch, program, example_input, dynamic: bool):
    """``torch.onnx.export`` of an ``ExportedProgram``, as it is: its symbolic dims stay
    symbolic in the ONNX graph."""
    if example_input is not None:
        raise TypeError(
            "from_torch: an ExportedProgram carries its own example inputs; leave example_input out"
        )
    if not dynamic:
        raise ValueError(
            "from_torch: an ExportedProgram keeps the dims it was exported with; "
            "export it without dynamic_shapes for fixed sizes"
        )
    with torch.no_grad(), _silenced(_REGISTRATION_LOGGER):
        return torch.onnx.export(program, (), dynamo=True, external_data=False, verbose=False)


def _export_module(torch, module, example_input, dynamic: bool):
    """``torch.onnx.export`` of a module in eval mode, batch (and sequence) axes free."""
    if example_input is None:
        raise TypeError("from_torch: a torch.nn.Module needs an example_input")
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
        with torch.no_grad(), _silenced(_REGISTRATION_LOGGER):
            return torch.onnx.export(
                module,
                (x,),
                dynamo=True,
                external_data=False,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
    finally:
        module.train(was_training)
