"""How each ONNX op runs on run-time tensors: one handler per op type, mapping a node onto
runtime ops (``pyinfer.ops``) through the importer (:mod:`pyinfer.convert.onnx_import`).

A handler ``handler(imp, node, inputs, attrs) -> outputs`` receives the node's inputs as
constants (arrays), sizes (object arrays of ints and Dims) or :class:`Tensor` values, and
returns one value per ONNX output. Shapes are tracked with sizes known only at run time
(:class:`Dim`), so reshapes get static targets where the sizes allow.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pyinfer.convert.onnx_import import (
    _BIG,
    _CAST_TYPES,
    _TYPE_CODES,
    Arange,
    OnnxImportError,
    Tensor,
    _axes_input,
    _decode,
)
from pyinfer.convert.symbolic import Dim, NotStatic, Size, is_symbolic, prod

# ---------------------------------------------------------------------- shapes


def _broadcast(a: tuple, b: tuple) -> tuple:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if isinstance(x, int) and x == 1:
            out.append(y)
        elif isinstance(y, int) and y == 1:
            out.append(x)
        elif x == y:
            out.append(x)
        elif isinstance(x, Dim) or isinstance(y, Dim):
            out.append(x if isinstance(y, int) else y)  # the run checks they agree
        else:
            raise OnnxImportError(f"shapes {a} and {b} do not broadcast")
    return tuple(reversed(out))


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise OnnxImportError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


# ---------------------------------------------------------------------- reshapes


def _reshape(imp, t: Tensor, target: list, hint: str) -> Tensor:
    """Reshape ``t`` to ``target`` (ints and Dims, no 0/-1 markers; None for the one size
    only the run can infer): a static Reshape when at most one size needs the run (as -1)
    and the rest are constants or the input's own sizes at the same position (as 0); else
    a DynamicReshape reading them."""
    target = list(target)
    if any(isinstance(d, int) and d == 0 for d in target):
        raise OnnxImportError("reshape to a size-0 dimension is not supported")
    attr: list[int] = []
    dynamic: list[int] = [i for i, d in enumerate(target) if d is None]  # first: the -1
    if len(dynamic) > 1:
        raise OnnxImportError(f"reshape target {target} has more than one unknown size")
    for i, d in enumerate(target):
        if isinstance(d, int):
            attr.append(d)
        elif i < t.rank and t.shape[i] == d:
            attr.append(0)
        else:
            attr.append(0)
            if d is not None:
                dynamic.append(i)
    if len(dynamic) <= 1:
        if dynamic:
            attr[dynamic[0]] = -1
        y = imp.emit("Reshape", [t], (), hint, {"shape": attr})
    else:
        y = _dynamic_reshape(imp, t, target, attr, dynamic, hint)
    y.shape = tuple(imp.symbol_for(y, i) if d is None else d for i, d in enumerate(target))
    return y


def _dynamic_reshape(imp, t: Tensor, target: list, attr: list, dynamic: list, hint: str):
    """A DynamicReshape: ``dynamic[0]`` inferred (-1), the other sizes of ``dynamic`` and
    the input's own sizes (0 in ``attr``) read at run time."""
    attr[dynamic[0]] = -1
    refs = [t.name]
    dims: list[int] = []
    for i, a in enumerate(attr):
        if a == 0 and i not in dynamic:  # the input's own size
            dims += [i, 1, 1, 0, i]
    for i in dynamic[1:]:
        dims += [i] + _size_source(imp, target[i], refs)
    attr = [1 if a == 0 else a for a in attr]
    return imp.emit("DynamicReshape", refs, (), hint, {"shape": attr, "dims": dims})


def _size_source(imp, d: Dim, refs: list[str]) -> list[int]:
    """``[coefficient, count, input, axis, ...]`` reading ``d`` at run time; the tensors
    carrying its symbols are appended to ``refs`` (a node's inputs) as needed."""
    mono = d.monomial()
    if mono is None or mono[0] < 1:
        raise NotStatic(f"the size {d} cannot be read from tensor sizes at run time")
    coef, syms = mono
    out = [coef, len(syms)]
    for s in syms:
        if s not in imp.symbols:
            raise NotStatic(
                f"the size {s} is read at run time, but no float tensor computed so far has it"
            )
        src, axis = imp.symbols[s]
        if src not in refs:
            refs.append(src)
        out += [refs.index(src), axis]
    return out


def _resolve_target(in_shape: tuple, raw: np.ndarray, allowzero: bool) -> list:
    """ONNX Reshape's target (0 copies, one -1 inferred) as sizes."""
    target = list(np.asarray(raw).reshape(-1))
    out: list = []
    for i, d in enumerate(target):
        if not isinstance(d, Dim):
            d = int(d)
            if d == 0 and not allowzero:
                d = in_shape[i]
        out.append(d)
    if -1 in [d for d in out if isinstance(d, int)]:
        i = next(k for k, d in enumerate(out) if isinstance(d, int) and d == -1)
        known = prod(d for k, d in enumerate(out) if k != i)
        try:
            out[i] = prod(in_shape) // known
        except NotStatic:
            out[i] = None  # inferred by the run
    return out


# ---------------------------------------------------------------------- handlers


def _const(v) -> np.ndarray | None:
    """``v`` as a plain constant array, or None when it is a tensor or sizes."""
    if v is None or isinstance(v, Tensor) or is_symbolic(v):
        return None
    return np.asarray(v)


def _fusable_producer(imp, t: Tensor, ops: tuple) -> dict | None:
    """The runtime node producing ``t`` if a per-channel affine map may fold into it."""
    node = imp.producer.get(t.name)
    if node is None or node["op"] not in ops or node["attrs"].get("activation"):
        return None
    if imp.uses[t.name] != 1 or t.name in imp.graph_outputs:
        return None
    return node


def _channel_vector(c: np.ndarray, t: Tensor, op: str) -> np.ndarray | None:
    """``c`` as one value per output channel of ``t`` (Linear: last axis; Conv2d: axis 1)
    when broadcasting ``c`` against ``t`` means exactly that; else None."""
    c = np.asarray(c)
    if c.dtype.kind != "f" or c.ndim > t.rank:
        return None
    n = t.shape[-1] if op == "Linear" else t.shape[1]
    if not isinstance(n, int):
        return None
    shape = (1,) * (t.rank - c.ndim) + c.shape
    axis = t.rank - 1 if op == "Linear" else 1
    if any(s != 1 for i, s in enumerate(shape) if i != axis):
        return None
    if shape[axis] not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,)).astype(np.float64)


def _fold_affine(imp, t: Tensor, scale, shift, out_hint: str) -> Tensor | None:
    """Fold ``t * scale + shift`` (per output channel) into the Linear/Conv2d making
    ``t``; returns the renamed tensor, or None when it does not fold."""
    node = _fusable_producer(imp, t, ("Linear", "Conv2d"))
    if node is None:
        return None
    op = node["op"]
    n = t.shape[-1] if op == "Linear" else t.shape[1]
    s = None if scale is None else _channel_vector(scale, t, op)
    b = None if shift is None else _channel_vector(shift, t, op)
    if (scale is not None and s is None) or (shift is not None and b is None):
        return None
    if op == "Linear" and t.rank < 1:
        return None
    wname = node["inputs"][1]
    w = imp.weights[wname].astype(np.float64)
    bias_name = node["inputs"][2] if len(node["inputs"]) > 2 else None
    bias = imp.constants[bias_name].astype(np.float64) if bias_name else np.zeros(n)
    if s is not None:
        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        bias = bias * s
    if b is not None:
        bias = bias + b
    imp.weights[wname] = w.astype(np.float32)
    if bias_name is None:
        bias_name = imp.fresh(f"{node['name']}.bias", onnx_name=True)
        node["inputs"].append(bias_name)
    imp.constants[bias_name] = bias.astype(np.float32)
    return imp.rename_output(t, out_hint)


def _linear(imp, node, x: Tensor, w: np.ndarray, bias, weight_name) -> Tensor:
    """Linear layer y = x @ w.T + bias, w [out, in] float."""
    if x.rank < 1 or (isinstance(x.shape[-1], int) and x.shape[-1] != w.shape[1]):
        raise OnnxImportError(f"input shape {x.shape} does not fit the weight {w.shape}")
    layer = imp.layer_name(node, weight_name)
    wname = imp.fresh(f"{layer}.weight", onnx_name=True)
    imp.weights[wname] = np.ascontiguousarray(w, dtype=np.float32)
    inputs: list = [x, wname]
    if bias is not None:
        inputs.append(imp.constant(np.asarray(bias, np.float32).reshape(-1), f"{layer}.bias"))
    return imp.emit("Linear", inputs, (*x.shape[:-1], w.shape[0]), node.output[0], {}, name=layer)


def _matmul_shape(a: tuple, b: tuple) -> tuple:
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    out = (*_broadcast(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _h_matmul(imp, node, ins, attrs):
    a, b = ins
    wb = _const(b)
    if isinstance(a, Tensor) and wb is not None and wb.ndim == 2 and wb.dtype.kind == "f":
        return [_linear(imp, node, a, wb.T, None, node.input[1])]
    ta, tb = imp.as_tensor(a, "MatMul"), imp.as_tensor(b, "MatMul")
    return [imp.emit("MatMul", [ta, tb], _matmul_shape(ta.shape, tb.shape), node.output[0])]


def _h_gemm(imp, node, ins, attrs):
    a, b = ins[:2]
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    ta = imp.as_tensor(a, "Gemm")
    if attrs.get("transA"):
        ta = imp.emit("Transpose", [ta], ta.shape[::-1], f"{node.output[0]}_a", {"perm": [1, 0]})
    wb = _const(b)
    if wb is None:  # weights computed at run time: a plain MatMul
        tb = imp.as_tensor(b, "Gemm")
        if attrs.get("transB"):
            tb = imp.emit(
                "Transpose", [tb], tb.shape[::-1], f"{node.output[0]}_b", {"perm": [1, 0]}
            )
        y = imp.emit("MatMul", [ta, tb], _matmul_shape(ta.shape, tb.shape), node.output[0])
        if alpha != 1.0:
            y = imp.emit("Mul", [y, np.float32(alpha)], y.shape, node.output[0])
        if c is not None:
            cc = _const(c)
            y = imp.emit("Add", [y, cc * beta if cc is not None else c], y.shape, node.output[0])
        return [y]
    w = (wb if attrs.get("transB") else wb.T).astype(np.float64) * alpha
    n = w.shape[0]
    bias, extra = None, None
    cc = _const(c)
    if cc is not None:
        cc = cc.astype(np.float64) * beta
        if cc.size in (1, n) and cc.ndim <= 2 and (cc.ndim < 2 or cc.shape[0] == 1):
            bias = np.broadcast_to(cc.reshape(-1), (n,))
        else:
            extra = cc
    elif c is not None:
        extra = c
    y = _linear(imp, node, ta, w, bias, node.input[1])
    if extra is not None:
        y = imp.emit("Add", [y, extra], y.shape, node.output[0])
    return [y]


def _conv_size(d: Size, k: int, s: int, p0: int, p1: int, dil: int, make_symbol) -> Size:
    span = dil * (k - 1) + 1
    if isinstance(d, int):
        return (d + p0 + p1 - span) // s + 1
    if s == 1:
        return d + (p0 + p1 - span + 1)
    return make_symbol()


def _same_pads(size: Size, k: int, s: int, dil: int, upper: bool) -> tuple[int, int]:
    if not isinstance(size, int):
        raise OnnxImportError("auto_pad SAME needs spatial sizes known before a run")
    out = -(-size // s)
    total = max(0, (out - 1) * s + dil * (k - 1) + 1 - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def _spatial_pads(attrs, shape: tuple, kernel: tuple, strides, dilations) -> list[tuple]:
    """Per spatial axis (begin, end) padding, from pads or auto_pad."""
    n = len(kernel)
    auto = _decode(attrs.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return [
            _same_pads(shape[2 + i], kernel[i], strides[i], dilations[i], auto == "SAME_UPPER")
            for i in range(n)
        ]
    if auto == "VALID":
        return [(0, 0)] * n
    pads = list(attrs.get("pads", [0] * (2 * n)))
    return [(pads[i], pads[i + n]) for i in range(n)]


def _pad_tensor(imp, t: Tensor, pads: list[tuple], hint: str, value: float = 0.0) -> Tensor:
    """Explicit Pad of the spatial axes (for asymmetric padding)."""
    begins = [0, 0] + [p[0] for p in pads]
    ends = [0, 0] + [p[1] for p in pads]
    shape = t.shape[:2] + tuple(d + b + e for d, b, e in zip(t.shape[2:], begins[2:], ends[2:]))
    return imp.emit("Pad", [t], shape, hint, {"pads": begins + ends, "value": value})


def _h_conv(imp, node, ins, attrs):
    x, w, b = (list(ins) + [None])[:3]
    x = imp.as_tensor(x, "Conv")
    wc = _const(w)
    if wc is None:
        raise OnnxImportError("Conv with weights computed at run time is not supported")
    bc = _const(b)
    if b is not None and bc is None:
        raise OnnxImportError("Conv with a bias computed at run time is not supported")
    if x.rank == 3:  # Conv1d: a Conv2d on [N, C, 1, L]
        return [_conv1d(imp, node, x, wc, bc, attrs)]
    if x.rank != 4:
        raise OnnxImportError(f"only 1-D and 2-D convolutions are supported, input {x.shape}")
    kernel = tuple(wc.shape[2:])
    strides = list(attrs.get("strides", [1, 1]))
    dil = list(attrs.get("dilations", [1, 1]))
    group = attrs.get("group", 1)
    pads = _spatial_pads(attrs, x.shape, kernel, strides, dil)
    hint = node.output[0]
    if any(p0 != p1 for p0, p1 in pads):
        x = _pad_tensor(imp, x, pads, f"{hint}_pad")
        pads = [(0, 0), (0, 0)]
    layer = imp.layer_name(node, node.input[1])
    wname = imp.fresh(f"{layer}.weight", onnx_name=True)
    imp.weights[wname] = np.ascontiguousarray(wc, dtype=np.float32)
    inputs: list = [x, wname]
    if bc is not None:
        inputs.append(imp.constant(bc.reshape(-1), f"{layer}.bias"))
    conv_attrs = {
        "stride": strides,
        "padding": [pads[0][0], pads[1][0]],
        "dilation": dil,
        "groups": group,
    }
    y = imp.emit("Conv2d", inputs, (), hint, conv_attrs, name=layer)
    hw = tuple(
        _conv_size(
            x.shape[2 + i], kernel[i], strides[i], *pads[i], dil[i],
            lambda i=i: imp.symbol_for(y, 2 + i),
        )
        for i in range(2)
    )  # fmt: skip
    y.shape = (x.shape[0], wc.shape[0], *hw)
    return [y]


def _conv1d(imp, node, x: Tensor, w: np.ndarray, b, attrs) -> Tensor:
    a2 = dict(attrs)
    for key, fill in (("strides", 1), ("dilations", 1), ("kernel_shape", 1)):
        if key in attrs:
            a2[key] = [fill, *attrs[key]]
    if "pads" in attrs:
        a2["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
    x4 = imp.emit(
        "Unsqueeze",
        [x],
        (x.shape[0], x.shape[1], 1, x.shape[2]),
        f"{node.output[0]}_2d",
        {"axes": [2]},
    )
    ins = [x4, w[:, :, None, :], b]
    (y4,) = _h_conv(imp, node, ins, a2)
    return imp.emit(
        "Squeeze", [y4], (y4.shape[0], y4.shape[1], y4.shape[3]), node.output[0], {"axes": [2]}
    )


def _h_batchnorm(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "BatchNormalization")
    params = [_const(v) for v in ins[1:5]]
    if any(p is None for p in params):
        raise OnnxImportError("BatchNormalization needs constant scale, bias, mean and var")
    if attrs.get("training_mode"):
        raise OnnxImportError("BatchNormalization in training mode is not supported")
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
    shift = beta - mean * scale
    view = (-1,) + (1,) * (x.rank - 2)  # channels on axis 1, as broadcasting sees them
    folded = _per_channel_fold(imp, x, scale.reshape(view), shift.reshape(view), node.output[0])
    if folded is not None:
        return [folded]
    y = imp.emit("Mul", [x, scale.reshape(view)], x.shape, f"{node.output[0]}_scale")
    return [imp.emit("Add", [y, shift.reshape(view)], x.shape, node.output[0])]


def _per_channel_fold(imp, x: Tensor, scale, shift, hint) -> Tensor | None:
    """BatchNorm's channel axis is 1: folds into a Conv2d, or a Linear on [N, C]."""
    node = imp.producer.get(x.name)
    if node is None or (node["op"] == "Linear" and x.rank != 2):
        return None
    return _fold_affine(imp, x, scale, shift, hint)


def _binary(op):
    def handler(imp, node, ins, attrs):
        a, b = ins
        ca, cb = _const(a), _const(b)
        if op in ("Add", "Mul", "Sub", "Div"):
            # per-channel constants after a Linear or Conv2d fold into it
            t, c = (a, cb) if isinstance(a, Tensor) else (b, ca)
            if c is not None and isinstance(t, Tensor) and c.dtype.kind == "f":
                scale = shift = None
                if op == "Add":
                    shift = c
                elif op == "Sub" and t is a:
                    shift = -c.astype(np.float64)
                elif op == "Mul":
                    scale = c
                elif op == "Div" and t is a:
                    scale = 1.0 / c.astype(np.float64)
                if scale is not None or shift is not None:
                    folded = _fold_affine(imp, t, scale, shift, node.output[0])
                    if folded is not None:
                        return [folded]
        ta, tb = imp.as_tensor(a, op), imp.as_tensor(b, op)
        # the runtime op's dtype rule decides (integer Add/Sub/Mul, float32 Div/Pow)
        return [imp.emit(op, [ta, tb], _broadcast(ta.shape, tb.shape), node.output[0])]

    return handler


def _h_where(imp, node, ins, attrs):
    cond, a, b = (imp.as_tensor(v, "Where") for v in ins)
    shape = _broadcast(_broadcast(cond.shape, a.shape), b.shape)
    return [imp.emit("Where", [cond, a, b], shape, node.output[0])]


def _unary(op):
    def handler(imp, node, ins, attrs):
        x = imp.as_tensor(ins[0], op)
        return [imp.emit(op, [x], x.shape, node.output[0])]

    return handler


def _alias(imp, node, t):
    """``node``'s output is ``t`` itself: its uses count as uses of ``t``."""
    if isinstance(t, Tensor):
        imp.uses[t.name] += imp.uses[node.output[0]]
        if node.output[0] in imp.graph_outputs:
            imp.graph_outputs.add(t.name)
    return [t]


def _h_identity(imp, node, ins, attrs):
    if node.op_type == "Dropout" and len(ins) > 2 and ins[2] is not None:
        mode = _const(ins[2])
        if mode is None or bool(mode):
            raise OnnxImportError("Dropout in training mode is not supported")
    return _alias(imp, node, ins[0])


def _h_cast(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Cast")
    to = _CAST_TYPES.get(attrs["to"])
    if to is None:
        raise OnnxImportError(
            f"Cast of a run-time tensor to {imp.onnx.TensorProto.DataType.Name(attrs['to'])} "
            f"is not supported; the runtime computes in {sorted(set(_CAST_TYPES.values()))}"
        )
    if to == x.dtype:  # float16/double math runs in float32 here
        return _alias(imp, node, x)
    return [imp.emit("Cast", [x], x.shape, node.output[0], {"to": to})]


def _h_castlike(imp, node, ins, attrs):
    src, like = ins
    like_dtype = str(like.dtype)
    if isinstance(src, Tensor):
        code = _TYPE_CODES.get(like_dtype, 1 if np.dtype(like_dtype).kind == "f" else 0)
        return _h_cast(imp, node, [src], {"to": code})
    a = np.asarray(src)
    if is_symbolic(a):
        if like_dtype == "float32":
            raise NotStatic("sizes known only at run time cast to float")
        return [a]
    return [a.astype(like_dtype)]


def _h_clip(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Clip")
    if imp.opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        bounds = [_const(v) if v is not None else None for v in (list(ins) + [None, None])[1:3]]
        if any(v is None and i is not None for v, i in zip(bounds, (list(ins) + [None] * 2)[1:3])):
            raise OnnxImportError("Clip bounds computed at run time are not supported")
        low, high = (None if v is None else float(v) for v in bounds)
    hint = node.output[0]
    if low == 0 and high == 6:
        return [imp.emit("Relu6", [x], x.shape, hint)]
    if low == 0 and high is None:
        return [imp.emit("Relu", [x], x.shape, hint)]
    bounds = {k: v for k, v in (("min", low), ("max", high)) if v is not None}  # None: absent
    return [imp.emit("Clip", [x], x.shape, hint, bounds)]


def _h_hard_sigmoid(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "HardSigmoid")
    a = {"alpha": float(attrs.get("alpha", 0.2)), "beta": float(attrs.get("beta", 0.5))}
    return [imp.emit("HardSigmoid", [x], x.shape, node.output[0], a)]


def _h_gelu(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Gelu")
    approx = _decode(attrs.get("approximate", "none"))
    return [imp.emit("Gelu", [x], x.shape, node.output[0], {"approximate": approx})]


def _h_softmax(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Softmax")
    default = -1 if imp.opset >= 13 else 1
    axis = _axis(attrs.get("axis", default), x.rank)
    if imp.opset < 13 and axis != x.rank - 1:
        # opset < 13 normalises over all axes from axis on, as one flattened axis
        flat = _reshape(
            imp, x, [prod(x.shape[:axis]), prod(x.shape[axis:])], f"{node.output[0]}_2d"
        )
        y = imp.emit("Softmax", [flat], flat.shape, f"{node.output[0]}_flat", {"axis": -1})
        return [_reshape(imp, y, list(x.shape), node.output[0])]
    return [imp.emit("Softmax", [x], x.shape, node.output[0], {"axis": axis})]


def _h_layernorm(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "LayerNormalization")
    axis = _axis(attrs.get("axis", -1), x.rank)
    norm = x.shape[axis:]
    if not all(isinstance(d, int) for d in norm):
        raise OnnxImportError(f"LayerNormalization over axes of unknown size {norm}")
    params = []
    for v in ins[1:3]:
        if v is None:
            params.append(None)
            continue
        c = _const(v)
        if c is None:
            raise OnnxImportError("LayerNormalization scale and bias must be constants")
        if c.size == prod(norm):
            c = c.reshape(norm)
        params.append(imp.constant(np.broadcast_to(c, norm), f"{node.output[0]}.param"))
    if len(node.output) > 1 and any(node.output[1:]):
        raise OnnxImportError("LayerNormalization's Mean and InvStdDev outputs are not supported")
    inputs = [x] + [p for p in params if p is not None]
    if params[0] is None and params[1] is not None:
        ones = np.ones(x.shape[axis:], np.float32)
        inputs = [x, imp.constant(ones, f"{node.output[0]}.scale"), params[1]]
    eps = float(attrs.get("epsilon", 1e-5))
    return [imp.emit("LayerNorm", inputs, x.shape, node.output[0], {"axis": axis, "eps": eps})]


def _h_reduce(imp, node, ins, attrs):
    op = node.op_type
    x = imp.as_tensor(ins[0], op)
    # axes moved from an attribute to an input: ReduceSum in 13, the others in 18
    if len(ins) > 1 and ins[1] is not None:
        c = _const(ins[1])
        if c is None:
            raise OnnxImportError(f"{op} axes computed at run time are not supported")
        axes = [int(a) for a in c.reshape(-1)]
    else:
        axes = list(attrs.get("axes", []))
    if not axes and attrs.get("noop_with_empty_axes"):
        return [x]
    keep = bool(attrs.get("keepdims", 1))
    axes = sorted({_axis(a, x.rank) for a in axes}) or list(range(x.rank))
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
    if op == "ReduceMean" and x.rank == 4 and axes == [2, 3]:
        return [imp.emit("GlobalAvgPool", [x], shape, node.output[0], {"keepdims": keep})]
    return [imp.emit(op, [x], shape, node.output[0], {"axes": axes, "keepdims": keep})]


def _h_global_pool(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], node.op_type)
    if x.rank != 4:
        raise OnnxImportError(f"{node.op_type} takes NCHW input, got shape {x.shape}")
    shape = (x.shape[0], x.shape[1], 1, 1)
    if node.op_type == "GlobalAveragePool":
        return [imp.emit("GlobalAvgPool", [x], shape, node.output[0], {"keepdims": True})]
    return [imp.emit("ReduceMax", [x], shape, node.output[0], {"axes": [2, 3], "keepdims": True})]


def _h_pool(imp, node, ins, attrs):
    op = node.op_type
    x = imp.as_tensor(ins[0], op)
    if x.rank != 4:
        raise OnnxImportError(f"only 2-D pooling is supported, input {x.shape}")
    kernel = tuple(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1, 1]))
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise OnnxImportError("dilated pooling is not supported")
    pads = _spatial_pads(attrs, x.shape, kernel, strides, [1, 1])
    if attrs.get("ceil_mode"):
        for i in range(2):
            d = x.shape[2 + i]
            span = d + sum(pads[i]) - kernel[i]
            if not isinstance(d, int) or span % strides[i]:
                raise OnnxImportError("ceil_mode=1 pooling is not supported")
    include_pad = bool(attrs.get("count_include_pad", 0))
    hint = node.output[0]
    symmetric = all(p0 == p1 and p0 <= k // 2 for (p0, p1), k in zip(pads, kernel))
    if not symmetric:
        if op == "AveragePool" and not include_pad:
            raise OnnxImportError("asymmetric padding with count_include_pad=0 is not supported")
        x = _pad_tensor(imp, x, pads, f"{hint}_pad", -np.inf if op == "MaxPool" else 0.0)
        pads = [(0, 0), (0, 0)]
    pool_attrs = {
        "kernel_size": list(kernel),
        "stride": strides,
        "padding": [pads[0][0], pads[1][0]],
    }
    if op == "MaxPool":
        if len(node.output) > 1 and node.output[1]:
            raise OnnxImportError("MaxPool's Indices output is not supported")
        y = imp.emit("MaxPool2d", [x], (), hint, pool_attrs)
    else:
        pool_attrs["count_include_pad"] = include_pad
        y = imp.emit("AvgPool2d", [x], (), hint, pool_attrs)
    hw = tuple(
        _conv_size(
            x.shape[2 + i], kernel[i], strides[i], *pads[i], 1,
            lambda i=i: imp.symbol_for(y, 2 + i),
        )
        for i in range(2)
    )  # fmt: skip
    y.shape = (*x.shape[:2], *hw)
    return [y]


def _h_flatten(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Flatten")
    axis = attrs.get("axis", 1)
    axis = axis + x.rank if axis < 0 else axis
    if axis == 1 and x.rank >= 2:
        return [
            imp.emit(
                "Flatten",
                [x],
                (x.shape[0], prod(x.shape[1:])),
                node.output[0],
                {"start_dim": 1, "end_dim": -1},
            )
        ]
    return [_reshape(imp, x, [prod(x.shape[:axis]), prod(x.shape[axis:])], node.output[0])]


def _h_reshape(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Reshape")
    if isinstance(ins[1], Tensor):
        raise OnnxImportError("Reshape to a shape computed from tensor data is not supported")
    target = _resolve_target(x.shape, ins[1], bool(attrs.get("allowzero", 0)))
    return [_reshape(imp, x, target, node.output[0])]


def _h_squeeze(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Squeeze")
    axes = _axes_input(ins, attrs)
    if not axes:
        axes = [i for i, d in enumerate(x.shape) if isinstance(d, int) and d == 1]
    axes = sorted({_axis(a, x.rank) for a in axes})
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [imp.emit("Squeeze", [x], shape, node.output[0], {"axes": axes})]


def _h_unsqueeze(imp, node, ins, attrs):
    axes = _axes_input(ins, attrs)
    if isinstance(ins[0], Arange):  # positions [seq] -> [1, seq]
        a = ins[0]
        rank = len(a.shape) + len(axes)
        if sorted(_axis(i, rank) for i in axes) != list(range(len(axes))):
            raise NotStatic("positions known only at run time unsqueezed after their axis")
        return [Arange(a.start, a.stop, a.step, a.lead + len(axes))]
    x = imp.as_tensor(ins[0], "Unsqueeze")
    rank = x.rank + len(axes)
    axes = sorted({_axis(a, rank) for a in axes})
    dims = iter(x.shape)
    shape = tuple(1 if i in axes else next(dims) for i in range(rank))
    return [imp.emit("Unsqueeze", [x], shape, node.output[0], {"axes": axes})]


def _h_transpose(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Transpose")
    perm = list(attrs.get("perm", range(x.rank - 1, -1, -1)))
    return [
        imp.emit("Transpose", [x], tuple(x.shape[p] for p in perm), node.output[0], {"perm": perm})
    ]


def _h_concat(imp, node, ins, attrs):
    if any(is_symbolic(v) for v in ins if v is not None):
        raise NotStatic("Concat of tensors and sizes known only at run time")
    ts = [imp.as_tensor(v, "Concat") for v in ins if v is not None]
    axis = _axis(attrs["axis"], ts[0].rank)
    shape = list(ts[0].shape)
    shape[axis] = sum((t.shape[axis] for t in ts[1:]), ts[0].shape[axis])
    return [imp.emit("Concat", ts, tuple(shape), node.output[0], {"axis": axis})]


def _h_gather(imp, node, ins, attrs):
    data, idx = ins
    if isinstance(idx, Tensor) and idx.dtype not in ("int64", "int32"):
        raise OnnxImportError(f"Gather indices must be integers, got a {idx.dtype} tensor")
    if is_symbolic(idx):
        raise NotStatic("Gather at indices known only at run time")
    d = imp.as_tensor(data, "Gather")
    axis = _axis(attrs.get("axis", 0), d.rank)
    if isinstance(idx, Arange):
        return [_gather_positions(imp, node, d, idx, axis)]
    if isinstance(idx, Tensor):
        ishape, iname = idx.shape, idx
    elif np.ndim(idx) == 0:  # one index: a slice and a squeeze, views both
        i = int(idx)
        end = i + 1 if i != -1 else _BIG
        shape = (*d.shape[:axis], 1, *d.shape[axis + 1 :])
        sl = {"starts": [i], "ends": [end], "axes": [axis], "steps": [1]}
        part = imp.emit("Slice", [d], shape, f"{node.output[0]}_slice", sl)
        shape = (*d.shape[:axis], *d.shape[axis + 1 :])
        return [imp.emit("Squeeze", [part], shape, node.output[0], {"axes": [axis]})]
    else:
        ic = np.asarray(idx).astype(np.int64)
        ishape, iname = ic.shape, imp.constant(ic, "indices")
    shape = (*d.shape[:axis], *ishape, *d.shape[axis + 1 :])
    return [imp.emit("Gather", [d, iname], shape, node.output[0], {"axis": axis})]


def _gather_positions(imp, node, d: Tensor, idx: Arange, axis: int) -> Tensor:
    """Rows ``start..stop`` of ``d`` (a slice whose end is read at run time), with the
    positions' leading axes of size 1."""
    refs = [d.name]
    dims = [0] + _size_source(imp, idx.stop, refs)
    sl = {"starts": [idx.start], "ends": [_BIG], "axes": [axis], "steps": [1], "dims": dims}
    rows = idx.stop - idx.start
    shape = (*d.shape[:axis], rows, *d.shape[axis + 1 :])
    hint = node.output[0]
    if not idx.lead:
        return imp.emit("Slice", refs, shape, hint, sl)
    part = imp.emit("Slice", refs, shape, f"{hint}_rows", sl)
    lead = list(range(axis, axis + idx.lead))
    shape = (*d.shape[:axis], *(1,) * idx.lead, rows, *d.shape[axis + 1 :])
    return imp.emit("Unsqueeze", [part], shape, hint, {"axes": lead})


def _h_slice(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Slice")
    if imp.opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        vals = [ins[i] if len(ins) > i else None for i in range(1, 5)]
        if any(isinstance(v, Tensor) for v in vals):
            raise OnnxImportError("Slice bounds computed at run time are not supported")
        starts, ends, axes, steps = (
            None if v is None else list(np.asarray(v, dtype=object).reshape(-1)) for v in vals
        )
    axes = [_axis(int(a), x.rank) for a in (axes or range(len(starts)))]
    steps = [int(s) for s in (steps or [1] * len(starts))]
    shape = list(x.shape)
    out_ends = []
    refs, dims = [x.name], []  # ends read from tensor sizes at run time
    for k, (s, e, a, st) in enumerate(zip(starts, ends, axes, steps)):
        if isinstance(s, Dim):
            raise NotStatic("Slice starting at a size known only at run time")
        if isinstance(e, Dim) and e != x.shape[a]:
            if st != 1 or int(s) < 0:
                raise NotStatic(f"Slice ending at {e} (known only at run time) with step {st}")
            # a buffer cut to the sequence length: the exporter checked e <= the size
            dims += [k] + _size_source(imp, e, refs)
            out_ends.append(_BIG)
            shape[a] = e - int(s)
            continue
        if isinstance(e, Dim):
            e = _BIG
        e = int(max(min(int(e), _BIG), -_BIG))
        out_ends.append(e)
        d = x.shape[a]
        if isinstance(d, int):
            shape[a] = len(range(d)[slice(int(s), e, st)])
        elif int(s) == 0 and e >= _BIG and st == 1:
            shape[a] = d
        else:
            shape[a] = None
    sl = {"starts": [int(s) for s in starts], "ends": out_ends, "axes": axes, "steps": steps}
    if dims:
        sl["dims"] = dims
    y = imp.emit("Slice", refs, (), node.output[0], sl)
    y.shape = tuple(imp.symbol_for(y, i) if d is None else d for i, d in enumerate(shape))
    return [y]


def _h_constant_of_shape(imp, node, ins, attrs):
    """A constant filling sizes known only at run time (token type ids of zeros): the
    value broadcast by Expand."""
    value = attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else imp.onnx.numpy_helper.to_array(value)
    return _h_expand(imp, node, [value.reshape(1), ins[0]], {})


def _h_split(imp, node, ins, attrs):
    """Split along an axis: one Slice (a view) per output."""
    x = imp.as_tensor(ins[0], "Split")
    axis = _axis(attrs.get("axis", 0), x.rank)
    n = len(node.output)
    if len(ins) > 1 and ins[1] is not None:
        sizes = _const(ins[1])
        if sizes is None:
            raise OnnxImportError("Split sizes computed at run time are not supported")
        sizes = [int(v) for v in sizes.reshape(-1)]
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:
        total = x.shape[axis]
        if not isinstance(total, int):
            raise NotStatic(f"an even Split of an axis of size {total} known only at run time")
        n = attrs.get("num_outputs", n)
        step = -(-total // n)
        sizes = [min(step, total - k * step) for k in range(n)]
    outs, start = [], 0
    for name, size in zip(node.output, sizes):
        shape = x.shape[:axis] + (size,) + x.shape[axis + 1 :]
        sl = {"starts": [start], "ends": [start + size], "axes": [axis], "steps": [1]}
        outs.append(imp.emit("Slice", [x], shape, name or f"{node.output[0]}_part", sl))
        start += size
    return outs


def _h_expand(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Expand")
    if isinstance(ins[1], Tensor):
        raise OnnxImportError("Expand to a shape computed from tensor data is not supported")
    target = list(np.asarray(ins[1], dtype=object).reshape(-1))
    out = _broadcast(x.shape, tuple(target))
    lead = len(target) - x.rank
    attr, dims, refs = [], [], [x.name]
    for i, d in enumerate(target):
        j = i - lead
        if isinstance(d, Dim):
            if j >= 0 and x.shape[j] == d:
                attr.append(1)  # the input's own size is kept by broadcasting
            else:
                attr.append(1)
                dims += [i] + _size_source(imp, d, refs)
        else:
            attr.append(int(d))
    return [imp.emit("Expand", refs, out, node.output[0], {"shape": attr, "dims": dims})]


def _h_pad(imp, node, ins, attrs):
    x = imp.as_tensor(ins[0], "Pad")
    mode = _decode(attrs.get("mode", "constant"))
    if mode not in ("constant", "reflect", "edge"):
        raise OnnxImportError(f"Pad mode {mode!r} is not supported")
    pads = _const(ins[1]) if len(ins) > 1 else np.asarray(attrs.get("pads"))
    if pads is None:
        raise OnnxImportError("Pad widths computed at run time are not supported")
    pads = [int(p) for p in pads.reshape(-1)]
    value = 0.0
    if len(ins) > 2 and ins[2] is not None:
        v = _const(ins[2])
        if v is None:
            raise OnnxImportError("a Pad value computed at run time is not supported")
        value = float(v.reshape(-1)[0]) if v.size else 0.0
    if len(ins) > 3 and ins[3] is not None:
        axes = [_axis(int(a), x.rank) for a in _const(ins[3]).reshape(-1)]
        full = [0] * (2 * x.rank)
        for k, a in enumerate(axes):
            full[a], full[a + x.rank] = pads[k], pads[k + len(axes)]
        pads = full
    if any(p < 0 for p in pads):
        raise OnnxImportError("negative Pad widths (cropping) are not supported")
    r = x.rank
    shape = tuple(d + pads[i] + pads[i + r] for i, d in enumerate(x.shape))
    return [
        imp.emit("Pad", [x], shape, node.output[0], {"pads": pads, "mode": mode, "value": value})
    ]


#: ONNX op type -> handler mapping it onto runtime ops, for nodes with run-time inputs.
HANDLERS: dict[str, Callable] = {
    "MatMul": _h_matmul,
    "Gemm": _h_gemm,
    "Conv": _h_conv,
    "BatchNormalization": _h_batchnorm,
    **{
        op: _binary(op)
        for op in (
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Pow",
            "Max",
            "Min",
            "Equal",
            "Less",
            "Greater",
            "LessOrEqual",
            "GreaterOrEqual",
            "And",
            "Or",
            "Xor",
        )
    },  # fmt: skip
    "Where": _h_where,
    "Not": _unary("Not"),
    **{
        op: _unary(op)
        for op in (
            "Relu",
            "Sigmoid",
            "Tanh",
            "HardSwish",
            "Erf",
            "Sqrt",
            "Exp",
            "Log",
            "Neg",
            "Abs",
            "Reciprocal",
        )
    },  # fmt: skip
    "Identity": _h_identity,
    "Dropout": _h_identity,
    "Cast": _h_cast,
    "CastLike": _h_castlike,
    "Clip": _h_clip,
    "Gelu": _h_gelu,
    "HardSigmoid": _h_hard_sigmoid,
    "Softmax": _h_softmax,
    "LayerNormalization": _h_layernorm,
    "ReduceMean": _h_reduce,
    "ReduceSum": _h_reduce,
    "ReduceMax": _h_reduce,
    "GlobalAveragePool": _h_global_pool,
    "GlobalMaxPool": _h_global_pool,
    "MaxPool": _h_pool,
    "AveragePool": _h_pool,
    "Flatten": _h_flatten,
    "Reshape": _h_reshape,
    "Squeeze": _h_squeeze,
    "Unsqueeze": _h_unsqueeze,
    "Transpose": _h_transpose,
    "Concat": _h_concat,
    "Gather": _h_gather,
    "Slice": _h_slice,
    "Expand": _h_expand,
    "ConstantOfShape": _h_constant_of_shape,
    "Split": _h_split,
    "Pad": _h_pad,
}
