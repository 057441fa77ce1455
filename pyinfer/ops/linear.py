"""Linear (and ONNX's Gemm) over any encoding, and MatMul of two tensors."""

from __future__ import annotations

import contextvars
import dataclasses

import numpy as np

import kernels
from kernels import backends
from kernels.api import check_activation, prepare
from kernels.encodings.base import EncodedWeight
from pyinfer.ops import (
    F32,
    Attr,
    Node,
    OpSpec,
    Slots,
    Step,
    bias_param,
    broadcast_shapes,
    fmt_shape,
    input_shape,
    register,
)


def linear_kernel(weight: EncodedWeight):
    """The registry kernel serving ``weight`` now, and whether it needs Numba threads."""
    backend, fn = backends.resolve("linear", weight.encoding)
    return fn, backend == "numba"


def _infer_linear(node: Node):
    w = node.static[1]
    if len(w.shape) != 2:
        raise ValueError(f"weight must be [out, in], got shape {w.shape}")
    bias_param(node, 2, w.out_features)
    s = input_shape(node, 0, at_least=1)
    if s is None:
        return None
    if s[-1] is not None and s[-1] != w.in_features:
        raise ValueError(
            f"input {node.inputs[0]!r} has {s[-1]} features (last axis) but the "
            f"{w.encoding} weight {w.shape} expects {w.in_features}"
        )
    return (*s[:-1], w.out_features)


#: False while a model that is only described is built: its steps leave the derived
#: layouts to each kernel's first call (``Model(prepare=False)`` sets it).
prepare_at_build: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "prepare_at_build", default=True
)


def _linear_step(node: Node, slots: Slots) -> Step:
    """The step ``env[out] = act(env[x] @ W.T + b)``.

    Built with the model: the kernel's derived layout of the weight is made here
    (``kernels.api.prepare``). The common case, a C-contiguous [batch, k] input, costs
    one kernel call and few Python operations: the output is this thread's reused
    buffer when the planner gave the node one (``node.buffer``), else a fresh array.
    Any other input shape goes through ``general``, which flattens the leading axes.
    """
    w = node.static[1]
    bias = bias_param(node, 2, w.out_features)
    activation = node.attrs["activation"]
    check_activation(activation)
    kernel, numba_threads = linear_kernel(w)
    if prepare_at_build.get():
        prepare(w)  # derived layouts (CSR batch-1 slices) now, at build, not on the first call
    # a C kernel binds its weight-side arguments once, here: a call converts only x and y
    bind = getattr(kernel, "bind", None)
    if bind is not None:
        run = bind(w, bias, activation)
    else:

        def run(x, y):
            kernel(x, w, bias, activation, y)

    k, n = w.in_features, w.out_features
    name = node.name
    (a,) = slots.inputs
    out, dead, arena_slot, buffer = slots.output, slots.dead, slots.arena, node.buffer

    def general(x: np.ndarray) -> np.ndarray:
        if x.shape[-1:] != (k,):
            raise ValueError(
                f"node {name!r}: input has shape {x.shape}, expected last axis of size {k}"
            )
        lead = x.shape[:-1]
        x = np.ascontiguousarray(x.reshape(-1, k))
        y = np.empty((x.shape[0], n), F32)
        if x.shape[0]:
            if numba_threads:
                backends.apply_numba_threads()
            run(x, y)
        return y.reshape(*lead, n)

    def linear_step(env: list) -> None:
        x = env[a]
        shape = x.shape
        if len(shape) == 2 and shape[1] == k and shape[0] and x.flags.c_contiguous:
            if buffer is None:
                y = np.empty((shape[0], n), F32)
            else:
                arena = env[arena_slot]  # the planner proved this buffer free here
                y = arena[buffer]
                if y is None or y.shape[0] != shape[0]:
                    y = arena[buffer] = np.empty((shape[0], n), F32)
            if numba_threads:
                backends.apply_numba_threads()
            run(x, y)
            env[out] = y
        else:
            env[out] = general(x)
        for d in dead:
            env[d] = None

    return linear_step


LINEAR = register(
    OpSpec(
        "Linear",
        ("tensor", "weight", "param?"),
        {"activation": Attr("activation", None)},
        infer=_infer_linear,
        build_step=_linear_step,
        fuses_activation=True,
        pooled=True,
        description="y = act(x @ W.T + b) over the last axis; W any encoding",
    )
)
# ONNX's Gemm with alpha = beta = 1, transB = 1 is the same layer.
register(dataclasses.replace(LINEAR, name="Gemm"))


def _infer_matmul(node: Node):
    a, b = node.in_shapes
    if a is None or b is None:
        return None
    if not a or not b:
        raise ValueError("MatMul inputs must have at least one dimension")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] is not None and b2[-2] is not None and a2[-1] != b2[-2]:
        raise ValueError(f"MatMul shapes {fmt_shape(a)} @ {fmt_shape(b)}: inner dims differ")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``kernels.matmul`` for float32 tensors (attention products), numpy.matmul else."""
    if a.dtype == F32 and b.dtype == F32:
        return kernels.matmul(a, b)
    return np.matmul(a, b)


register(
    OpSpec(
        "MatMul",
        ("tensor", "tensor"),
        {},
        infer=_infer_matmul,
        build=lambda node: _matmul,
        description="numpy.matmul semantics; float32 on the C dense kernels",
    )
)
