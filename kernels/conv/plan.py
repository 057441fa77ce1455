"""conv2d planned once: geometry, backend, lowering, packed weights and offsets are
decided per (weight, input shape, conv parameters); a call only runs."""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels import backends, registry
from kernels.api import _as_float32, check_activation, check_bias, check_out
from kernels.conv.compact import compact
from kernels.conv.shapes import Geometry, as_conv_weight, geometry
from kernels.encodings.base import EncodedWeight, derived

_FLOAT32 = np.dtype(np.float32)

#: Plans kept per weight by :func:`conv2d` (a new input shape or bias makes one more).
MAX_CACHED_PLANS = 32


class Conv2dPlan:
    """One conv2d, validated and lowered: ``plan(x, out=None) -> y``.

    Made by :func:`plan_conv2d`. Attributes: ``weight`` (the encoded weight),
    ``geometry`` (its :class:`Geometry`; ``n`` None when any batch goes), ``out_shape``
    (``(n, out, ho, wo)``), ``bias`` (float32 [out] or None), ``activation``,
    ``backend`` and ``lowering`` (the name of what runs under the current settings).
    A settings change (``kernels.set_backend``, ``set_isa``, ``set_num_threads``,
    ``using``) is noticed on the next call, which lowers again.
    """

    def __init__(self, weight: EncodedWeight, geo: Geometry, bias, activation) -> None:
        self.weight = weight
        self.geometry = geo
        self.bias = bias
        self.activation = activation
        self.out_shape = geo.out_shape()
        self._chw = (geo.c, geo.h, geo.w)
        self._generation = -1
        self._run = None
        self.backend = ""
        self.lowering = ""
        self._lower()

    def _lower(self) -> None:
        generation = backends.generation[0]
        w, geo = self.weight, self.geometry
        backend = backends.conv_backend()
        # Larq's padding rule (binary activations) tells padding from a zero input, so
        # those run as they are (their C and Numba kernels' memory follows input and
        # output anyway); anything else with spread-out taps runs compacted (compact.py)
        compacted = None if getattr(w, "activations", None) == "binary" else compact(geo)
        run_geo = geo if compacted is None else compacted[0]
        if backend == "numpy":
            reference = registry.conv_reference(w.encoding)
            bias, activation = self.bias, self.activation

            def run(x, y):
                y[...] = reference(x, w, bias, run_geo, activation)

            lowering = reference.__name__
        else:
            if backend == "c":
                from kernels.backend_c import conv as ops
            else:
                from kernels.backend_numba import conv as ops
            lower = registry.conv_lowering(w.encoding, backend)
            run = lower(w, run_geo, self.bias, self.activation, ops)
            if run is None:
                lower = registry.resolve_spec(registry.DEFAULT_CONV_LOWERING)
                run = lower(w, run_geo, self.bias, self.activation, ops)
            lowering = getattr(run, "lowering", lower.__name__)
        if compacted is not None:
            run, lowering = _on_compacted(run, compacted[1]), f"compacted {lowering}"
        self._run, self.lowering = run, lowering
        self.backend = backend
        self._generation = generation

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """y = activation(conv2d(x, w) + bias) for x float32 C-contiguous [n, c, h, w].

        ``out``: optional float32 C-contiguous buffer of the output shape, returned.
        Raises ValueError naming a mismatch of x's type, dtype, layout or shape.
        """
        if type(x) is not np.ndarray or x.dtype is not _FLOAT32:
            raise ValueError(
                f"conv2d plan input must be a float32 ndarray, got {type(x).__name__} "
                f"of dtype {getattr(x, 'dtype', None)}"
            )
        if not x.flags.c_contiguous:
            raise ValueError("conv2d plan input must be C-contiguous")
        shape = x.shape
        n = self.out_shape[0]
        if shape[1:] != self._chw or (n is not None and shape[0] != n) or len(shape) != 4:
            raise ValueError(
                f"conv2d plan expects x of shape {(n if n is not None else 'N',) + self._chw}, "
                f"got {shape}"
            )
        if self._generation != backends.generation[0]:
            self._lower()
        o = self.out_shape
        y_shape = (shape[0], o[1], o[2], o[3])
        y = np.empty(y_shape, np.float32) if out is None else check_out(out, y_shape, (x,))
        if y.size:
            self._run(x, y)
        return y

    def __repr__(self) -> str:
        return (
            f"<Conv2dPlan {self.weight.encoding} {self.weight.shape} out_shape={self.out_shape} "
            f"backend={self.backend} lowering={self.lowering}>"
        )


def _on_compacted(run, gather):
    def run_compacted(x, y):
        run(gather(x), y)

    return run_compacted


def plan_conv2d(
    w: Any,
    x_shape: tuple,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
) -> Conv2dPlan:
    """Validate and lower one conv2d once; the plan then runs it on inputs of that shape.

    Parameters
    ----------
    w : ndarray [out, in/groups, kh, kw] or EncodedWeight of that shape
    x_shape : (n, c, h, w)
        ``n`` may be None: the plan takes any batch.
    bias, stride, padding, dilation, groups, activation
        As :func:`kernels.conv2d` takes them.

    Returns
    -------
    Conv2dPlan
        ``plan(x, out=None) -> y``, with ``out_shape`` and ``geometry``.

    Raises
    ------
    ValueError, TypeError
        The messages :func:`kernels.conv2d` raises for the same arguments.
    """
    weight = as_conv_weight(w)
    geo = geometry(x_shape, weight.shape, stride, padding, dilation, groups)
    b = check_bias(bias, geo.out)
    check_activation(activation)
    if b is not None:
        if b is bias:
            b = b.copy()  # the plan keeps its own bias: later writes to the caller's stay out
        b.flags.writeable = False
    return Conv2dPlan(weight, geo, b, activation)


def conv2d(
    x: Any,
    w: Any,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
) -> np.ndarray:
    """y = activation(conv2d(x, w) + bias), dispatched on the weight's encoding.

    Planned once per (weight, input channels and size, conv parameters, bias values,
    activation) and cached with the weight; see :func:`plan_conv2d`.

    Parameters
    ----------
    x : array_like of float, shape [batch, in_channels, height, width]
        NCHW activations; converted to C-contiguous float32.
    w : ndarray [out, in/groups, kh, kw] or EncodedWeight of that shape
    bias : array_like of float, shape [out], optional
    stride, dilation : int or (int, int)
        Per (height, width); >= 1.
    padding : int, (int, int), "valid" or "same"
        Zeros added on both sides of (height, width); ``"same"`` is TensorFlow's SAME:
        output size ceil(in / stride), the odd extra pixel at the bottom/right.
    groups : int
        in_channels and out must both be divisible by it.
    activation : {None, "relu", "relu6"}
        Fused with the bias into the kernel's store loop.

    Returns
    -------
    ndarray of float32, shape [batch, out, out_height, out_width]

    Raises
    ------
    ValueError
        Wrong ranks, channels not divisible by ``groups``, weight in-channels not
        in_channels / groups, a kernel larger than the padded input, bad stride etc.
    TypeError
        Non-floating input.
    """
    weight = as_conv_weight(w)
    xa = _as_float32("x", x)
    if xa.ndim != 4:
        raise ValueError(f"x must be NCHW [batch, channels, height, width], got shape {xa.shape}")
    if not xa.flags.c_contiguous:
        xa = np.ascontiguousarray(xa)
    try:
        b = check_bias(bias, weight.out_features)
        key = (
            xa.shape[1:],
            _key(stride),
            _key(padding),
            _key(dilation),
            _key(groups),
            None if b is None else b.tobytes(),  # by value: callers may reuse the array
            activation,
        )
        hash(key)
    except (TypeError, ValueError):
        b, key = bias, None  # plan_conv2d raises, after the size checks, as it should
    plans = derived(weight).setdefault("conv2d plans", {})
    plan = plans.get(key) if key is not None else None
    if plan is None:
        plan = plan_conv2d(weight, (None,) + xa.shape[1:], b, stride, padding, dilation,
                           groups, activation)  # fmt: skip
        if key is not None:
            if len(plans) >= MAX_CACHED_PLANS:
                plans.clear()
            plans[key] = plan
    return plan(xa)


def _key(value: Any) -> Any:
    """A conv parameter as a cache key that tells 1 from True and (1, 1) from [1, 1]."""
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_key(v) for v in value))
    return (type(value), value)
