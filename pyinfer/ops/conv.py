"""Conv2d over any encoding (NCHW, weight [out, in/groups, kh, kw]).

The step runs a ``kernels.conv.plan_conv2d`` plan made at build time: attributes, shapes,
backend, lowering and weight packing are settled once, so a call only runs the kernel.
Output sizes come from ``kernels.conv.conv_output_shape``, the one place that knows them.

What a file may set, checked at load (anything else is a ``FormatError`` naming the node):
stride and dilation are integers (or pairs) in [1, 2^20], padding in [0, 2^20], groups
>= 1 dividing the output channels (and the input's, where known), and a dilated kernel
may not span more pixels than any padded input can have (``MAX_DIM`` + 2·padding); with
static input sizes, the kernel must fit the padded input. Within those bounds every conv
makes sense for some input, so nothing more is refused: a stride larger than the padded
input gives a one-pixel-wide output, and padding wider than the kernel gives outputs
that read only padding (the bias). The bound of 2^20 keeps every index within int64
arithmetic; memory is bounded elsewhere: every lowering's work and memory follow the
input and output sizes it computes (``kernels.conv.compact``), so only a large *output*
(huge padding at stride 1) costs memory, as the file asks.
"""

from __future__ import annotations

import numpy as np

import kernels
from kernels.conv import conv_output_shape, plan_conv2d
from pyinfer.ops import Attr, Node, OpSpec, Slots, Step, bias_param, input_shape, register


def _infer_conv(node: Node):
    w = node.static[1]
    a = node.attrs
    if len(w.shape) != 4:
        raise ValueError(f"Conv2d weight must be [out, in/groups, kh, kw], got shape {w.shape}")
    o, cg = w.shape[:2]
    g = a["groups"]
    if o % g:
        raise ValueError(f"weight has {o} output channels, not divisible by groups={g}")
    _check_kernel_fits_some_input(w.shape, a)
    bias_param(node, 2, o)
    s = input_shape(node, 0, 4)
    if s is None:
        return None
    n, c, h, wd = s
    if c is not None and c != cg * g:
        raise ValueError(
            f"input {node.inputs[0]!r} has {c} channels but the weight {w.shape} with "
            f"groups={g} expects {cg * g}"
        )
    if h is None or wd is None:
        return (n, o, None, None)  # sizes known only at run time; checked there
    return conv_output_shape(
        (n, cg * g, h, wd), w.shape, a["stride"], a["padding"], a["dilation"], g
    )


def _check_kernel_fits_some_input(w_shape, a) -> None:
    """Refuse at load a dilated kernel larger than any padded input could be (sizes are
    at most ``MAX_DIM``): no input makes sense of it, whatever its size at run time."""
    from pyinfer.plan import MAX_DIM

    for axis, k in (("height", w_shape[2]), ("width", w_shape[3])):
        i = 0 if axis == "height" else 1
        extent = (k - 1) * a["dilation"][i] + 1
        if extent > MAX_DIM + 2 * a["padding"][i]:
            raise ValueError(
                f"kernel {axis} {k} with dilation {a['dilation'][i]} spans {extent} pixels, "
                f"more than any input ({MAX_DIM} + padding) can have"
            )


def _conv_step(node: Node, slots: Slots) -> Step:
    """``env[out] = conv2d(env[x])`` through a plan made here (any batch), or through
    ``kernels.conv2d`` (which plans per input size) when the input's H or W is unknown."""
    w = node.static[1]
    a = node.attrs
    bias = bias_param(node, 2, w.shape[0])
    args = (bias, a["stride"], a["padding"], a["dilation"], a["groups"], a["activation"])
    (src,) = slots.inputs
    out, dead = slots.output, slots.dead
    shape = node.in_shapes[0]
    if shape is not None and None not in shape[1:]:
        run = plan_conv2d(w, (None, *shape[1:]), *args)
    else:
        name, channels = node.name, w.shape[1] * a["groups"]

        def run(x: np.ndarray) -> np.ndarray:
            if x.ndim != 4 or x.shape[1] != channels:
                raise ValueError(
                    f"node {name!r}: input has shape {x.shape}, expected [N, {channels}, H, W]"
                )
            return kernels.conv2d(x, w, *args)

    def conv_step(env: list) -> None:
        x = env[src]
        if not x.flags.c_contiguous:  # e.g. a Transpose view
            x = np.ascontiguousarray(x)
        env[out] = run(x)
        for d in dead:
            env[d] = None

    return conv_step


register(
    OpSpec(
        "Conv2d",
        ("tensor", "weight", "param?"),
        {
            "stride": Attr("pair", (1, 1), (1,)),
            "padding": Attr("pair", (0, 0), (0,)),
            "dilation": Attr("pair", (1, 1), (1,)),
            "groups": Attr("int", 1, (1,)),
            "activation": Attr("activation", None),
        },
        infer=_infer_conv,
        build_step=_conv_step,
        fuses_activation=True,
        description="2-D convolution, NCHW, weight [out, in/groups, kh, kw]; any encoding",
    )
)
