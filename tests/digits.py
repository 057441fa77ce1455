"""A small real model for converter tests: an MLP fitted to scikit-learn's 8x8 digits
(fitted once per test session, in seconds) as a dense ``pyinfer.Model``."""

from __future__ import annotations

import functools
import warnings

import numpy as np

import pyinfer


@functools.lru_cache(maxsize=1)
def digits_mlp():
    """(model, x_train, x_test, y_test): MLP 64-128-64-10 (layers fc1, fc2, head), inputs
    float32 [N, 64] in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    g = pyinfer.Graph()
    h = g.input("x", (None, 64))
    names = ["fc1", "fc2", "head"]
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        act = "relu" if i < len(names) - 1 else None
        h = g.linear(h, w.T.astype(np.float32), b.astype(np.float32), act, name=names[i])
    g.output(h)
    return g.build(), x_train, x_test, y_test.astype(np.int64)


def accuracy(model, x, y) -> float:
    """Top-1 accuracy of ``model`` on ``x``."""
    return float(np.mean(model(x).argmax(axis=1) == y))
