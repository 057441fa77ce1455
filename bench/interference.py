"""How much a pyinfer kernel call slows down right after another library's call in the
same process (NumPy's BLAS, torch, ONNX Runtime): their idle worker threads and ours
compete for the cores. Prints medians in ms of the call alone and right after the other
library's matmul, and their ratio.

Run it in a fresh process per setting, e.g.::

    python bench/interference.py --after numpy
    python bench/interference.py --import-torch --after numpy
"""

from __future__ import annotations

import argparse
import functools
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--after",
        choices=["numpy", "torch", "onnxruntime", "sweep"],
        default="numpy",
        help="the library whose 1024x1024 matmul runs before each timed call; 'sweep' "
        "copies as many bytes as that matmul touches on one thread, without its threads: "
        "what evicting the caches alone costs",
    )
    parser.add_argument(
        "--import-torch", action="store_true", help="import torch before anything else"
    )
    parser.add_argument("--encodings", nargs="+", default=["int8", "csr"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--size", type=int, default=1024, help="weights are size x size")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per case")
    parser.add_argument("--threads", type=int, default=0, help="kernels.set_num_threads")
    args = parser.parse_args(argv)
    if args.import_torch:
        import torch  # noqa: F401  (loads its OpenMP runtime first, as a torch user's process does)
    import numpy as np

    import kernels

    kernels.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = args.size
    other = _other_call(args.after, rng.standard_normal((n, n)).astype(np.float32))
    print(
        f"# after: {args.after}; torch imported first: {args.import_torch}; "
        f"threads: {kernels.get_num_threads()}; medians of {args.repeat} calls, ms"
    )
    print("| encoding | batch | alone | after | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in args.encodings:
        w = rng.standard_normal((n, n)).astype(np.float32)
        if name == "csr":
            w[rng.random(w.shape) < 0.9] = 0.0
        enc = kernels.encode(w, name)
        for batch in args.batches:
            x = rng.standard_normal((batch, n)).astype(np.float32)
            out = np.empty((batch, n), np.float32)
            call = functools.partial(kernels.linear, x, enc, out=out)
            alone = _median(call, None, args.repeat)
            after = _median(call, other, args.repeat)
            print(f"| {name} | {batch} | {alone:.4f} | {after:.4f} | {after / alone:.2f} |")
    return 0


def _other_call(library: str, a):
    """A zero-argument call of ``library``'s matmul on ``a`` (square float32)."""
    import numpy as np

    if library == "numpy":
        return lambda: a @ a
    if library == "sweep":
        src = np.concatenate([a, a, a])
        dst = np.empty_like(src)
        return lambda: np.copyto(dst, src)
    if library == "torch":
        import torch

        t = torch.from_numpy(a)
        return lambda: torch.nn.functional.linear(t, t)
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(a.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(a.shape))],
        [onnx.numpy_helper.from_array(a, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return lambda: sess.run(None, {"x": a})


def _median(call, before, repeat: int) -> float:
    """Median ms of ``call``, each time right after ``before()`` when given."""
    for _ in range(10):  # warm up
        if before is not None:
            before()
        call()
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000.0 * times[len(times) // 2]


if __name__ == "__main__":
    sys.exit(main())
