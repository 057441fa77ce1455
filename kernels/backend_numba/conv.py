"""Numba building blocks of conv2d, the same names, signatures and contracts as
kernels/backend_c/conv.py: padding, im2col/im2row, the offset GEMM, the CSR offset
kernel, depthwise, int8 and XNOR-popcount binary. Weight packings may differ: each
backend's ``pack_*`` makes what its kernel reads."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels.backend_numba.binary import popcount64
from kernels.backend_numba.common import ACTIVATION_CODES, activate, bias_or_empty
from kernels.backends import apply_numba_threads

TILE = 64

#: The binary kernel takes any number of words per patch.
MAX_BINARY_WORDS = None


@njit(cache=True, nogil=True, parallel=True)
def _pad(x, top, left, out):
    """out = 0 around, x inside (out [n, c, hp, wp])."""
    n, c, h, w = x.shape
    for pl in prange(n * c):
        i, j = pl // c, pl % c
        out[i, j, :, :] = 0
        out[i, j, top : top + h, left : left + w] = x[i, j]


def pad(x, top, bottom, left, right, out) -> None:
    """out[n, c] = x[n, c] framed by zeros."""
    _pad(x, top, left, out)


@njit(cache=True, nogil=True, parallel=True)
def _im2col(x, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, cols):
    """cols[n, (c, ky, kx), oh·wo + ow] = x[n, c, oh·sh + ky·dh − pt, ow·sw + kx·dw − pl]."""
    n, c, h, w = x.shape
    taps = kh * kw
    for r in prange(n * c * taps):
        i, ch, t = r // (c * taps), (r // taps) % c, r % taps
        ky, kx = t // kw, t % kw
        for oh in range(ho):
            ih = oh * sh + ky * dh - pt
            for ow in range(wo):
                iw = ow * sw + kx * dw - pl
                v = np.float32(0.0)
                if 0 <= ih < h and 0 <= iw < w:
                    v = x[i, ch, ih, iw]
                cols[i, ch * taps + t, oh * wo + ow] = v


def im2col(x, kh, kw, stride, dilation, pad_top, pad_left, out_h, out_w, out) -> None:
    """out [n, C·kh·kw, out_h·out_w]: patches as columns."""
    _im2col(x, kh, kw, *stride, *dilation, pad_top, pad_left, out_h, out_w, out)


@njit(cache=True, nogil=True, parallel=True)
def _im2row(x, c0, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, rows):
    """rows[(n, oh, ow), (c, ky, kx)] for channels c0 .. c0 + cg."""
    n, c, h, w = x.shape
    for t in prange(n * ho):
        i, oh = t // ho, t % ho
        for ow in range(wo):
            r = t * wo + ow
            k = 0
            for ch in range(c0, c0 + cg):
                for ky in range(kh):
                    ih = oh * sh + ky * dh - pt
                    for kx in range(kw):
                        iw = ow * sw + kx * dw - pl
                        v = np.float32(0.0)
                        if 0 <= ih < h and 0 <= iw < w:
                            v = x[i, ch, ih, iw]
                        rows[r, k] = v
                        k += 1


def im2row(x, c0, cg, kh, kw, stride, dilation, pad_top, pad_left, out_h, out_w, out) -> None:
    """out [n·out_h·out_w, cg·kh·kw]: one patch per row."""
    _im2row(x, c0, cg, kh, kw, *stride, *dilation, pad_top, pad_left, out_h, out_w, out)


@njit(cache=True, nogil=True, parallel=True)
def _gemm(x, images, x_image, x_row, offsets, groups, w, og, out_h, out_w, bias, act, y):
    """y[n, g·og + o, oh, ow] = act(bias + Σ_k w[g·og + o, k] · x[base + off[g·kg + k] + ow]),
    base = n·x_image + oh·x_row."""
    kg = w.shape[1]
    tiles = (out_w + TILE - 1) // TILE
    for t in prange(images * groups * out_h * tiles):
        tl, oh = t % tiles, (t // tiles) % out_h
        g, n = (t // (tiles * out_h)) % groups, t // (tiles * out_h * groups)
        ow0 = tl * TILE
        cols = min(TILE, out_w - ow0)
        base = n * x_image + oh * x_row + ow0
        acc = np.empty(TILE, np.float32)
        for o in range(g * og, (g + 1) * og):
            acc[:] = 0
            for k in range(kg):
                wv = w[o, k]
                b = base + offsets[g * kg + k]
                for j in range(cols):
                    acc[j] += wv * x[b + j]
            add = bias[o] if bias.shape[0] else np.float32(0.0)
            for j in range(cols):
                y[n, o, oh, ow0 + j] = activate(acc[j] + add, act)


def pack_gemm_weight(matrix: np.ndarray, groups: int) -> np.ndarray:
    """The Numba offset GEMM reads W [groups·og, kg] as it is."""
    return matrix


def gemm(x, images, x_image, x_row, offsets, groups, w, og, out_h, out_w, bias, activation, y):
    """Offset GEMM: w float32 [groups·og, kg], offsets int64 [groups·kg]."""
    apply_numba_threads()
    yv = y.reshape(images, groups * og, out_h, out_w)
    _gemm(x.reshape(-1), images, x_image, x_row, offsets, groups, w, og, out_h, out_w,
          bias_or_empty(bias), ACTIVATION_CODES[activation], yv)  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def _csr(x, images, x_image, x_row, indptr, offsets, values, out_h, out_w, bias, act, y):
    """y[n, o, oh, ow] = act(bias[o] + Σ_p values[p] · x[base + offsets[p] + ow]),
    base = n·x_image + oh·x_row."""
    out_c = indptr.shape[0] - 1
    tiles = (out_w + TILE - 1) // TILE
    for t in prange(images * out_h * tiles):
        tl, oh, n = t % tiles, (t // tiles) % out_h, t // (tiles * out_h)
        ow0 = tl * TILE
        cols = min(TILE, out_w - ow0)
        base = n * x_image + oh * x_row + ow0
        acc = np.empty(TILE, np.float32)
        for o in range(out_c):
            acc[:] = 0
            for p in range(indptr[o], indptr[o + 1]):
                v = values[p]
                b = base + offsets[p]
                for j in range(cols):
                    acc[j] += v * x[b + j]
            add = bias[o] if bias.shape[0] else np.float32(0.0)
            for j in range(cols):
                y[n, o, oh, ow0 + j] = activate(acc[j] + add, act)


def csr(x, images, x_image, x_row, indptr, offsets, values, out_h, out_w, bias, activation, y):
    """CSR conv: one int64 offset per nonzero."""
    out_c = indptr.shape[0] - 1
    yv = y.reshape(images, out_c, out_h, out_w)
    apply_numba_threads()
    _csr(x.reshape(-1), images, x_image, x_row, indptr, offsets, values, out_h, out_w,
         bias_or_empty(bias), ACTIVATION_CODES[activation], yv)  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def _depthwise(x, w, sh, sw, dh, dw, pt, pl, out_h, out_w, bias, act, y):
    """y[n, o, oh, ow] = act(bias[o] + Σ w[o, ky, kx] · x[n, o // mult, ih, iw]) with
    ih = oh·sh + ky·dh − pt, iw = ow·sw + kx·dw − pl, zero outside."""
    n, c, h, wd = x.shape
    out_c, kh, kw = w.shape
    mult = out_c // c
    for pl_ in prange(n * out_c):
        i, o = pl_ // out_c, pl_ % out_c
        ch = o // mult
        add = bias[o] if bias.shape[0] else np.float32(0.0)
        for oh in range(out_h):
            for ow in range(out_w):
                acc = np.float32(0.0)
                for ky in range(kh):
                    ih = oh * sh + ky * dh - pt
                    if ih < 0 or ih >= h:
                        continue
                    for kx in range(kw):
                        iw = ow * sw + kx * dw - pl
                        if 0 <= iw < wd:
                            acc += w[o, ky, kx] * x[i, ch, ih, iw]
                y[i, o, oh, ow] = activate(acc + add, act)


def depthwise(x, w, stride, dilation, pad_top, pad_left, out_h, out_w, bias, activation, y):
    """Depthwise conv (in/groups == 1): w float32 [out, kh, kw]."""
    apply_numba_threads()
    _depthwise(x, w, *stride, *dilation, pad_top, pad_left, out_h, out_w, bias_or_empty(bias),
               ACTIVATION_CODES[activation], y)  # fmt: skip


@njit(cache=True, nogil=True)
def _image_scale(xn, act_scale):
    """(s, bad) of one image: max |x| / 127 (or the static scale); bad if NaN/Inf."""
    amax = np.float32(0.0)
    for v in xn.ravel():
        a = abs(v)
        if not a <= np.float32(3.4028234663852886e38):
            return np.float32(0.0), True
        if a > amax:
            amax = a
    if act_scale > 0:
        return np.float32(act_scale), False
    return amax / np.float32(127.0), False


@njit(cache=True, nogil=True, parallel=True)
def _conv_int8(x, groups, q, scale, act_scale, sh, sw, dh, dw, pt, pl, out_h, out_w, bias, act,
               y):  # fmt: skip
    """int8 conv: per image, xq = clip(rint(x / s), -127, 127) zero-padded, acc exact
    (int32), y = act(f32(acc) · (s · scale[o]) + bias[o]); NaN/Inf in an image: NaN."""
    n, c, h, wd = x.shape
    out_c, cg, kh, kw = q.shape
    og = out_c // groups
    hp = (out_h - 1) * sh + (kh - 1) * dh + 1
    wp = (out_w - 1) * sw + (kw - 1) * dw + 1
    xq = np.zeros((c, hp, wp), np.int32)
    for i in range(n):
        s, bad = _image_scale(x[i], act_scale)
        if bad:
            y[i] = np.nan
            continue
        xq[:] = 0
        if s > 0:
            for ch in prange(c):
                for ih in range(max(0, -pt), min(h, hp - pt)):
                    for iw in range(max(0, -pl), min(wd, wp - pl)):
                        r = np.rint(x[i, ch, ih, iw] / s)
                        r = min(max(r, np.float32(-127.0)), np.float32(127.0))
                        xq[ch, ih + pt, iw + pl] = np.int32(r)
        for o in prange(out_c):
            g = o // og
            acc = np.zeros((out_h, out_w), np.int32)
            for cc in range(cg):
                plane = xq[g * cg + cc]
                for ky in range(kh):
                    for kx in range(kw):
                        wv = np.int32(q[o, cc, ky, kx])
                        if wv == 0:
                            continue
                        for oh in range(out_h):
                            row = plane[oh * sh + ky * dh]
                            for ow in range(out_w):
                                acc[oh, ow] += wv * row[ow * sw + kx * dw]
            mul = s * scale[o]
            add = bias[o] if bias.shape[0] else np.float32(0.0)
            for oh in range(out_h):
                for ow in range(out_w):
                    v = np.float32(acc[oh, ow]) * mul
                    if bias.shape[0]:
                        v = v + add
                    y[i, o, oh, ow] = activate(v, act)


def pack_int8_weight(q: np.ndarray, groups: int) -> np.ndarray:
    """The Numba int8 conv reads q int8 [out, cg, kh, kw] as it is."""
    return q


def conv_int8(x, groups, w, scale, act_scale, kh, kw, stride, dilation, pad_top, pad_left,
              out_h, out_w, bias, activation, y) -> None:  # fmt: skip
    """int8 conv for any groups: w int8 [out, cg, kh, kw] (pack_int8_weight), scale [out]."""
    apply_numba_threads()
    _conv_int8(x, groups, w, scale, np.float32(act_scale), *stride, *dilation, pad_top,
               pad_left, out_h, out_w, bias_or_empty(bias), ACTIVATION_CODES[activation],
               y)  # fmt: skip


def depthwise_int8(x, wq, scale, act_scale, stride, dilation, pad_top, pad_left, out_h, out_w,
                   bias, activation, y):  # fmt: skip
    """Depthwise conv with int8 weights wq [out, kh, kw]: the int8 conv, one group per
    input channel."""
    o, kh, kw = wq.shape
    conv_int8(x, x.shape[1], wq.reshape(o, 1, kh, kw), scale, act_scale, kh, kw, stride,
              dilation, pad_top, pad_left, out_h, out_w, bias, activation, y)  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def _binary_signs(x, groups, cw, bits, sums):
    """Sign bits of x channels-last per group, bits[n, g, h, w, cw] (bit c % 64 of word
    c // 64 set where x >= 0), and Σ_c |x| per pixel and group in float64, channel order."""
    n, c, h, wd = x.shape
    cg = c // groups
    for t in prange(n * groups * h):
        i, g, r = t // (groups * h), (t // h) % groups, t % h
        for col in range(wd):
            acc = 0.0
            for ci in range(cg):
                v = x[i, g * cg + ci, r, col]
                if v >= 0:
                    bits[i, g, r, col, ci >> 6] |= np.uint64(1) << np.uint64(ci & 63)
                acc += abs(np.float64(v))
            sums[i, g, r, col] = acc


@njit(cache=True, nogil=True, parallel=True)
def _binary(bits, sums, cg, wbits, alpha, kh, kw, sh, sw, dh, dw, pt, pl, bias, act, y):
    """y[n, o, oh, ow] = act((α[o]·β)·f32(d) + bias[o]); d = Σ over in-bounds taps of
    cg − 2·popcount(x bits XOR w bits) (a padded tap adds 0: Larq's rule), β = Σ |x| over
    the in-bounds taps, in tap order, / (cg·kh·kw)."""
    n, groups, h, wd, cw = bits.shape
    out_c = wbits.shape[0]
    og = out_c // groups
    out_h, out_w = y.shape[2], y.shape[3]
    kg = cg * kh * kw
    for t in prange(n * groups * out_h):
        i, g, oh = t // (groups * out_h), (t // out_h) % groups, t % out_h
        for ow in range(out_w):
            s = 0.0
            for ky in range(kh):
                ih = oh * sh + ky * dh - pt
                for kx in range(kw):
                    iw = ow * sw + kx * dw - pl
                    if 0 <= ih < h and 0 <= iw < wd:
                        s += sums[i, g, ih, iw]
            beta = np.float32(s / kg)
            for o in range(g * og, (g + 1) * og):
                d = 0
                for ky in range(kh):
                    ih = oh * sh + ky * dh - pt
                    if ih < 0 or ih >= h:
                        continue
                    for kx in range(kw):
                        iw = ow * sw + kx * dw - pl
                        if 0 <= iw < wd:
                            xw, ww = bits[i, g, ih, iw], wbits[o, ky * kw + kx]
                            differ = 0
                            for k in range(cw):
                                differ += popcount64(xw[k] ^ ww[k])
                            d += cg - 2 * differ
                v = (alpha[o] * beta) * np.float32(d)
                if bias.shape[0]:
                    v += bias[o]
                y[i, o, oh, ow] = activate(v, act)


def binary(x, groups, wbits, alpha, kh, kw, stride, dilation, pad_top, pad_left, out_h, out_w,
           bias, activation, y):  # fmt: skip
    """Binary weights x binary activations; wbits uint64 [out, kh·kw, ceil(cg/64)] as the C
    kernel takes them (see kernels/backend_c/conv.py)."""
    apply_numba_threads()
    n, c, h, wd = x.shape
    cg = c // groups
    bits = np.zeros((n, groups, h, wd, wbits.shape[2]), np.uint64)
    sums = np.empty((n, groups, h, wd), np.float64)
    _binary_signs(x, groups, wbits.shape[2], bits, sums)
    _binary(bits, sums, cg, wbits, alpha, kh, kw, *stride, *dilation, pad_top, pad_left,
            bias_or_empty(bias), ACTIVATION_CODES[activation], y)  # fmt: skip
