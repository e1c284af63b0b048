"""The backward pass of a convolution when most of dout is zero: skip the zeros.

Behind a max pooling, the gradient that reaches a convolution's output is zero everywhere but at each window's
winner: with 2x2 windows at most one number in four is nonzero, and the ReLU in between zeroes more (the MNIST
model's 11x11 layer: 13-16% nonzero while it trains). ``reference.conv2d_backward`` visits every
g = dout[n, i, j, f] and sends it back along the kh*kw*C edges it came by:

    dw[..., f]            += g * patch(n, i, j)       the input patch: kh*kw*C numbers, im2col's row
    dx at patch(n, i, j)  += g * w[..., f]

A zero g sends nothing back. im2col + GEMM (``cpu._conv_dw_dx``) multiplies by the zeros all the same; this
kernel does the reference's loops, but per output pixel it first gathers the nonzero g and their filters, then

* dw: adds g * patch to the row of dw (held as dw^T, (F, kh*kw*C)) of each nonzero filter;
* dx: sums the pixel's share, acc = sum over its nonzero g of g * w[..., f], four filters at a time (one load
  and store of acc per four multiply-adds), and adds acc into the patch's place in dx.

Its arithmetic is the GEMMs' times the density; its rate is lower than BLAS's (the rows it adds are a few
hundred numbers, gathered), so it pays below about a quarter nonzero: ``cpu.SPARSE_MAX_DENSITY``. On the MNIST
model's 11x11 layer at batch 64 (its dout taken from training, 13% nonzero), one thread, alternating: 4.2-5.1 ms
against 7.8-9.7 for im2col + GEMM + col2im. The model's training steps on MNIST batches, alternating: 14.3
against 17.1 ms on one thread (19.3 against 22.8 in another run), 13.4 against 15.6 on two (1.12x in another).

Two things kept its loops in SIMD: every index into ``acc`` and ``dx`` is a loop counter from 0 (Numba checks a
computed index for a negative value, and that check made the loop that adds acc into dx scalar: 1 ms more), and
a sum of four products written ``acc + g0 * v0 + ...`` from the left is four fused multiply-adds in a row. Only
``fastmath``'s contraction is asked for: all of it would let the compiler assume no NaN, and a NaN g must count as
nonzero, so that it reaches dw and dx as it does through the GEMMs.

The patch and dx's place of it follow ``pad`` and ``stride`` as im2col does: a tap that falls in the padding reads
a zero and writes nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import buffers


def nonzero_fraction(a) -> float:
    """The share of a's elements that are not zero (-0.0 is zero; NaN is not)."""
    if a.size >= 1 << 31:  # past what the int32 count holds
        return np.count_nonzero(a) / a.size
    return _count_nonzero(a.ravel()) / max(a.size, 1)


@njit(cache=True, nogil=True)
def _count_nonzero(flat):
    """Counted in int32, which SIMD adds 8 at a time: 0.09 ms for R's 11x11 dout at batch 64, where
    np.count_nonzero on float32 took 0.39."""
    k = np.int32(0)
    for i in range(flat.size):
        k += np.int32(flat[i] != 0)
    return k


def conv2d_dw_dx(x, dout, w, stride=(1, 1), pad=(0, 0, 0, 0), need_dx=True):
    """x: (N, H, W, C), dout: (N, Ho, Wo, F), w: (kh, kw, C, F) -> dw: (kh, kw, C, F), dx: (N, H, W, C) or
    None unless ``need_dx``. All of one float dtype, x and dout C-contiguous."""
    kh, kw, C, F = w.shape
    wt = np.ascontiguousarray(w.transpose(3, 0, 1, 2))  # (F, kh, kw, C): filter f's weights in one row
    dwt = np.zeros_like(wt)
    N, H, W, _ = x.shape
    dx = buffers.zeros(x.shape, x.dtype) if need_dx else np.zeros((0, 0, 0, 0), x.dtype)
    dx_rows = dx.reshape((N, H, W * C) if need_dx else (0, 0, 0))  # an image row of dx, W*C long
    _dw_dx(x, dout, wt, stride[0], stride[1], pad[0], pad[2], need_dx, dwt, dx_rows)
    return np.ascontiguousarray(dwt.transpose(1, 2, 3, 0)), (dx if need_dx else None)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _dw_dx(x, dout, wt, sh, sw, pt, pl, need_dx, dwt, dx):
    """dwt (F, kh, kw, C) += the sum over nonzero g of g * patch; dx (N, H, W*C) += g * wt[f] at the patch."""
    N, H, W, C = x.shape
    _, Ho, Wo, F = dout.shape
    kh, kw = wt.shape[1], wt.shape[2]
    R, K = kw * C, kh * kw * C  # a row of the patch, the whole patch
    xr = x.reshape(N, H, W * C)
    w2, dw2 = wt.reshape(F, K), dwt.reshape(F, K)
    patch = np.empty(K, x.dtype)
    acc = np.empty(K, x.dtype)
    fs = np.empty(F, np.int64)  # the pixel's nonzero g and their filters
    gs = np.empty(F, x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                k = 0
                for f in range(F):  # gather without a branch: write every g, move on only past a nonzero
                    g = dout[n, i, j, f]
                    fs[k] = f
                    gs[k] = g
                    k += g != 0
                if k == 0:
                    continue
                # the taps q0 <= q < q1 of each kernel row fall inside the map; the rest are padding
                h0, w0 = i * sh - pt, j * sw - pl
                q0, q1 = max(0, -w0), min(kw, W - w0)
                a, b = (w0 + q0) * C, (w0 + q1) * C  # those taps' span of an image row of xr
                patch[:] = 0
                for p in range(kh):
                    h = h0 + p
                    if 0 <= h < H and q0 < q1:
                        patch[p * R + q0 * C : p * R + q1 * C] = xr[n, h, a:b]
                for t in range(k):  # dw: each nonzero filter's row gets g * patch
                    g, row = gs[t], dw2[fs[t]]
                    for c in range(K):
                        row[c] += g * patch[c]
                if not need_dx:
                    continue
                acc[:] = 0  # dx: acc = sum of g * w[f], four filters a pass
                t = 0
                while t + 4 <= k:
                    g0, g1, g2, g3 = gs[t], gs[t + 1], gs[t + 2], gs[t + 3]
                    v0, v1, v2, v3 = w2[fs[t]], w2[fs[t + 1]], w2[fs[t + 2]], w2[fs[t + 3]]
                    for c in range(K):
                        acc[c] = acc[c] + g0 * v0[c] + g1 * v1[c] + g2 * v2[c] + g3 * v3[c]  # 4 fused multiply-adds
                    t += 4
                while t < k:
                    g0, v0 = gs[t], w2[fs[t]]
                    for c in range(K):
                        acc[c] += g0 * v0[c]
                    t += 1
                for p in range(kh):
                    h = h0 + p
                    if 0 <= h < H and q0 < q1:
                        d, src = dx[n, h, a:b], acc[p * R + q0 * C : p * R + q1 * C]
                        for c in range(b - a):
                            d[c] += src[c]
