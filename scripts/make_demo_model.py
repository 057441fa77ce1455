"""Train the models and cut the test slice that ``pyinfer demo`` ships (pyinfer/demo/).

Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (IDX files under
/usr/share/datasets/fashion-mnist/). Trains with PyTorch (CPU) and writes:

- ``fashion_mlp.pinf``: MLP 784-256-256-10 (ReLU), input ``x`` [N, 784] in [0, 1];
- ``fashion_cnn.pinf``: CNN conv 3x3 1->16, maxpool 2, conv 3x3 16->32, maxpool 2,
  linear 1568->64, linear 64->10 (ReLU), input ``x`` [N, 1, 28, 28] in [0, 1];
- ``fashion_test.npz``: the first ``--test-size`` images of the official test set
  (``images`` uint8 [N, 28, 28], ``labels`` uint8 [N]).

Pixels are divided by 255 at run time; the models carry no preprocessing. Re-run with
``python scripts/make_demo_model.py`` (about two minutes on 2 cores); the seed is fixed,
though PyTorch's CPU kernels may differ between versions in the last bits.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"
OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "pyinfer", "demo")


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(data_dir: str = DATA_DIR):
    """(train images, train labels, test images, test labels), uint8."""
    parts = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    return tuple(read_idx(os.path.join(data_dir, p)) for p in parts)


def train(net, x, y, x_test, y_test, epochs: int, lr: float, name: str):
    """Adam with a cosine learning rate, batches of 128; prints test accuracy per epoch."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        net.train()
        t0 = time.time()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - 127, 128):
            idx = order[i : i + 128]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(x_test).argmax(1) == y_test).float().mean().item()
        print(f"{name} epoch {epoch + 1}: test accuracy {acc:.4f} ({time.time() - t0:.1f} s)")
    return acc


def mlp_graph(net):
    import pyinfer

    g = pyinfer.Graph()
    h = g.input("x", (None, 784))
    layers = [("fc1", "relu"), ("fc2", "relu"), ("head", None)]
    for (name, act), lin in zip(layers, [m for m in net if hasattr(m, "weight")]):
        h = g.linear(h, _np(lin.weight), _np(lin.bias), activation=act, name=name)
    g.output(h)
    return g


def cnn_graph(net):
    import pyinfer

    conv1, conv2, fc1, head = [m for m in net if hasattr(m, "weight")]
    g = pyinfer.Graph()
    h = g.input("x", (None, 1, 28, 28))
    h = g.conv2d(h, _np(conv1.weight), _np(conv1.bias), padding=1, activation="relu", name="conv1")
    h = g.node("MaxPool2d", h, kernel_size=2, name="pool1")
    h = g.conv2d(h, _np(conv2.weight), _np(conv2.bias), padding=1, activation="relu", name="conv2")
    h = g.node("MaxPool2d", h, kernel_size=2, name="pool2")
    h = g.node("Flatten", h, name="flatten")
    h = g.linear(h, _np(fc1.weight), _np(fc1.bias), activation="relu", name="fc1")
    g.output(g.linear(h, _np(head.weight), _np(head.bias), name="head"))
    return g


def _np(t) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--out-dir", default=OUT_DIR)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--mlp-epochs", type=int, default=10)
    parser.add_argument("--cnn-epochs", type=int, default=4)
    parser.add_argument("--no-cnn", action="store_true", help="train and write the MLP only")
    args = parser.parse_args(argv)

    import torch

    import pyinfer

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the other core stays free for the rest of the machine
    xtr, ytr, xte, yte = load_fashion_mnist(args.data_dir)
    x = torch.from_numpy(xtr.astype(np.float32) / 255)
    y = torch.from_numpy(ytr.astype(np.int64))
    xt = torch.from_numpy(xte.astype(np.float32) / 255)
    yt = torch.from_numpy(yte.astype(np.int64))
    os.makedirs(args.out_dir, exist_ok=True)

    nn = torch.nn
    mlp = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    train(mlp, x.reshape(-1, 784), y, xt.reshape(-1, 784), yt, args.mlp_epochs, 1e-3, "mlp")
    model = mlp_graph(mlp).build()
    acc = float((model(xte.reshape(-1, 784).astype(np.float32) / 255).argmax(1) == yte).mean())
    print(f"mlp in pyinfer: test accuracy {acc:.4f} on {len(yte)} images")
    pyinfer.save(model, os.path.join(args.out_dir, "fashion_mlp.pinf"))

    if not args.no_cnn:
        cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
        train(cnn, x[:, None], y, xt[:, None], yt, args.cnn_epochs, 2e-3, "cnn")
        model = cnn_graph(cnn).build()
        acc = float((model(xte[:, None].astype(np.float32) / 255).argmax(1) == yte).mean())
        print(f"cnn in pyinfer: test accuracy {acc:.4f} on {len(yte)} images")
        pyinfer.save(model, os.path.join(args.out_dir, "fashion_cnn.pinf"))

    n = args.test_size
    np.savez_compressed(
        os.path.join(args.out_dir, "fashion_test.npz"), images=xte[:n], labels=yte[:n]
    )
    for f in sorted(os.listdir(args.out_dir)):
        path = os.path.join(args.out_dir, f)
        print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
