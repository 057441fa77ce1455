"""A small real model for converter tests: an MLP fitted to scikit-learn's 8x8 digits
(fitted once per test session with NumPy, in about a second) as a dense
``pyinfer.Model``."""

from __future__ import annotations

import functools

import numpy as np

import pyinfer

SIZES = (64, 128, 64, 10)
NAMES = ("fc1", "fc2", "head")


def fit_mlp(x: np.ndarray, y: np.ndarray, steps: int = 200, lr: float = 0.02, seed: int = 0):
    """Weights [(W [out, in], b [out]), ...] of a ReLU MLP of ``SIZES`` fitted by full-batch
    Adam on the softmax cross-entropy, in float32."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        w = rng.standard_normal((fan_out, fan_in)) * np.sqrt(2 / fan_in)
        params += [w.astype(np.float32), np.zeros(fan_out, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(SIZES[-1], dtype=np.float32)[y]
    for t in range(1, steps + 1):
        acts = [x]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i].T + params[i + 1]
            acts.append(np.maximum(z, 0) if i + 2 < len(params) else z)
        logits = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(x)
        grads = [None] * len(params)
        for i in range(len(params) - 2, -1, -2):
            grads[i] = grad.T @ acts[i // 2]
            grads[i + 1] = grad.sum(axis=0)
            if i:
                grad = (grad @ params[i]) * (acts[i // 2] > 0)
        for k, g in enumerate(grads):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            params[k] -= lr * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
    return [(params[i], params[i + 1]) for i in range(0, len(params), 2)]


@functools.lru_cache(maxsize=1)
def digits_mlp():
    """(model, x_train, x_test, y_test): MLP 64-128-64-10 (layers fc1, fc2, head), inputs
    float32 [N, 64] in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    g = pyinfer.Graph()
    h = g.input("x", (None, SIZES[0]))
    for i, (w, b) in enumerate(fit_mlp(x_train, y_train)):
        act = "relu" if i < len(NAMES) - 1 else None
        h = g.linear(h, w.astype(np.float32), b.astype(np.float32), act, name=NAMES[i])
    g.output(h)
    return g.build(), x_train, x_test, y_test.astype(np.int64)


def accuracy(model, x, y) -> float:
    """Top-1 accuracy of ``model`` on ``x``."""
    return float(np.mean(model(x).argmax(axis=1) == y))
