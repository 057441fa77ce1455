"""``conv2d`` for every encoding: sizes (:mod:`.shapes`), NumPy references
(:mod:`.reference`), the planner (:mod:`.plan`) and the lowerings onto the C and Numba
kernels (:mod:`.lowerings`).

``conv2d(x, w, ...)`` takes NCHW float32 input and a weight [out, in/groups, kh, kw]
(dense, or encoded by ``kernels.encode``, which stores it as the matrix
[out, in/groups·kh·kw] with columns ordered (c, ky, kx), as PyTorch flattens it).
``plan_conv2d(w, x_shape, ...)`` validates and lowers once; the plan runs each call.
"""

from kernels.conv.plan import Conv2dPlan, conv2d, plan_conv2d
from kernels.conv.reference import (
    conv2d_reference,
    int8_accumulators,
    int8_reference,
    quantize_images,
)
from kernels.conv.shapes import Geometry, as_conv_weight, conv_output_shape, geometry

__all__ = [
    "Conv2dPlan",
    "Geometry",
    "as_conv_weight",
    "conv2d",
    "conv2d_reference",
    "conv_output_shape",
    "geometry",
    "int8_accumulators",
    "int8_reference",
    "plan_conv2d",
    "quantize_images",
]
