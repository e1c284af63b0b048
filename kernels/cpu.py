"""The default CPU engine: Numba-compiled col2im and pooling, NumPy im2col, BLAS for the matrix products.

Same signatures and the same maths as ``reference.py`` and ``im2col.py``; what changes is how the loops run:

* ``@njit`` compiles each loop nest to machine code (``cache=True`` keeps the compiled code on disk, so a second
  process does not compile again);
* ``prange`` marks the outermost loop that may be split over the cores: each iteration writes its own rows
  (pooling forward) or its own image (col2im, pooling backward), so no two threads ever add to the same element
  and no locks are needed. By default the loops run on one thread and the cores go to BLAS (see ``PARALLEL``);
* in col2im and pooling, padding is never materialised: an index that falls in the padding is skipped.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

from . import activations as act
from . import im2col as gemm
from .shapes import output_size

# Who gets the cores: BLAS's threads (the GEMMs, most of the arithmetic) or Numba's (the loops around them)?
# Both pools keep their threads spinning for a while after each call, so when both run with every core they fight:
# on 2 cores a training step of the MNIST model took 91 ms with both pools at 2 threads, 33 ms with BLAS at 2 and
# these loops on one thread (34 ms the other way round). So by default the loops here run on one thread;
# MINICNN_NUMBA_PARALLEL=1 (read at import) makes them parallel, for machines where that measures faster.
PARALLEL = os.environ.get("MINICNN_NUMBA_PARALLEL", "0") == "1"
if PARALLEL and "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"  # its idle threads sleep; OpenMP's spin (10x slower steps seen)

__all__ = [
    "im2col",
    "col2im",
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "dense_forward",
    "dense_backward",
    "activation_forward",
    "activation_backward",
]


# ---------------------------------------------------------------------------------------------------- im2col
@njit(cache=True, parallel=PARALLEL)
def _col2im(cols, kh, kw, sh, sw, pt, pl, Ho, Wo, dx):
    N, H, W, C = dx.shape
    for n in prange(N):  # one image per iteration: overlapping patches of one image stay in one thread
        for i in range(Ho):
            for j in range(Wo):
                row = (n * Ho + i) * Wo + j
                k = 0
                for p in range(kh):
                    r = i * sh + p - pt
                    for q in range(kw):
                        s = j * sw + q - pl
                        if 0 <= r < H and 0 <= s < W:
                            for c in range(C):
                                dx[n, r, s, c] += cols[row, k + c]
                        k += C


# im2col is a copy through a strided view, which NumPy already does at memory speed (measured 2-4x faster than a
# Numba loop here); col2im has to add, which NumPy can only do one kernel position at a time, so Numba wins there.
im2col = gemm.im2col


def col2im(cols, x_shape, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0)):
    """cols: (N*Ho*Wo, kh*kw*C) -> dx: x_shape, each row added back onto its patch."""
    N, H, W, C = x_shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    dx = np.zeros(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), kh, kw, stride[0], stride[1], pad[0], pad[2], Ho, Wo, dx)
    return dx


# ---------------------------------------------------------------------------------------------------- convolution
def conv2d_forward(x, w, b, stride=(1, 1), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C), w: (kh, kw, C, F), b: (F,) or None -> out: (N, Ho, Wo, F), cache. im2col + one GEMM."""
    return gemm.conv2d_forward(x, w, b, stride, pad, im2col=im2col)


def conv2d_backward(dout, cache, need_dx=True):
    """dout: (N, Ho, Wo, F) -> dx: (N, H, W, C) (None unless ``need_dx``), dw: (kh, kw, C, F), db: (F,)"""
    x_shape, w, cols, stride, pad = cache
    kh, kw, _, F = w.shape
    d2 = dout.reshape(-1, F)
    # dw = cols^T @ dout, computed as (dout^T @ cols)^T: BLAS runs this orientation faster here.
    dw = np.ascontiguousarray((d2.T @ cols).T).reshape(w.shape)
    dx = col2im(d2 @ w.reshape(-1, F).T, x_shape, kh, kw, stride, pad) if need_dx else None
    return dx, dw, d2.sum(axis=0)


# ---------------------------------------------------------------------------------------------------- pooling
@njit(cache=True, parallel=PARALLEL)
def _maxpool_forward(x, ph, pw, sh, sw, pt, pl, out, argmax):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    best = np.empty((N * Ho, C), x.dtype)  # one private row per iteration, so threads never share one
    where = np.empty((N * Ho, C), argmax.dtype)
    for ni in prange(N * Ho):
        n, i = ni // Ho, ni % Ho
        b, k = best[ni], where[ni]
        r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, H)
        for j in range(Wo):
            s0, s1 = max(j * sw - pl, 0), min(j * sw - pl + pw, W)
            # The window's first element starts as the winner; a strict '>' then keeps the first maximum (in
            # row-major window order) on ties. Written as selects over a contiguous channel run, it vectorises.
            b[:] = x[n, r0, s0]
            k[:] = r0 * W + s0
            for r in range(r0, r1):
                for s in range(s0, s1):
                    v = x[n, r, s]
                    at = r * W + s
                    for c in range(C):
                        better = v[c] > b[c]
                        b[c] = v[c] if better else b[c]
                        k[c] = at if better else k[c]
            out[n, i, j] = b
            argmax[n, i, j] = k


@njit(cache=True, parallel=PARALLEL)
def _maxpool_backward(dout, argmax, dx):
    N, Ho, Wo, C = dout.shape
    W = dx.shape[2]
    for n in prange(N):  # one image per iteration: overlapping windows add into one thread's image only
        dx[n] = 0
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    k = argmax[n, i, j, c]
                    dx[n, k // W, k % W, c] += dout[n, i, j, c]


def maxpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C) -> out: (N, Ho, Wo, C); the winner of each window is recorded once, as a flat index."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, pool[0], pool[1], stride, pad)
    out = np.empty((N, Ho, Wo, C), dtype=x.dtype)
    argmax = np.empty((N, Ho, Wo, C), dtype=np.int32)
    _maxpool_forward(np.ascontiguousarray(x), pool[0], pool[1], stride[0], stride[1], pad[0], pad[2], out, argmax)
    return out, (x.shape, argmax)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)"""
    x_shape, argmax = cache
    dx = np.empty(x_shape, dtype=dout.dtype)
    _maxpool_backward(np.ascontiguousarray(dout), argmax, dx)
    return dx


@njit(cache=True, parallel=PARALLEL)
def _avgpool_forward(x, ph, pw, sh, sw, pt, pl, out):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    for ni in prange(N * Ho):
        n, i = ni // Ho, ni % Ho
        r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, H)
        for j in range(Wo):
            s0, s1 = max(j * sw - pl, 0), min(j * sw - pl + pw, W)
            inv = 1.0 / ((r1 - r0) * (s1 - s0))  # padding is left out of the count
            for c in range(C):
                total = 0.0
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        total += x[n, r, s, c]
                out[n, i, j, c] = total * inv


@njit(cache=True, parallel=PARALLEL)
def _avgpool_backward(dout, ph, pw, sh, sw, pt, pl, dx):
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = dout.shape
    for n in prange(N):
        for i in range(Ho):
            r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, H)
            for j in range(Wo):
                s0, s1 = max(j * sw - pl, 0), min(j * sw - pl + pw, W)
                inv = 1.0 / ((r1 - r0) * (s1 - s0))
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        for c in range(C):
                            dx[n, r, s, c] += dout[n, i, j, c] * inv


def avgpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C) -> out: (N, Ho, Wo, C), the mean of the real (unpadded) inputs of each window."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, pool[0], pool[1], stride, pad)
    out = np.empty((N, Ho, Wo, C), dtype=x.dtype)
    _avgpool_forward(np.ascontiguousarray(x), pool[0], pool[1], stride[0], stride[1], pad[0], pad[2], out)
    return out, (x.shape, pool, stride, pad)


def avgpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)"""
    x_shape, pool, stride, pad = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    _avgpool_backward(np.ascontiguousarray(dout), pool[0], pool[1], stride[0], stride[1], pad[0], pad[2], dx)
    return dx


# ---------------------------------------------------------------------------------------------------- relu
@njit(cache=True, parallel=PARALLEL)
def _relu_forward(z, y):
    for k in prange(z.size):
        y[k] = z[k] if z[k] > 0 else 0


@njit(cache=True, parallel=PARALLEL)
def _relu_backward(dout, y, dx):
    for k in prange(dout.size):
        dx[k] = dout[k] if y[k] > 0 else 0


def activation_forward(name, x):
    """As ``activations.activation_forward``; ReLU, the common case, in one compiled pass (no temporaries)."""
    if name != "relu" or not x.flags.c_contiguous:
        return act.activation_forward(name, x)
    y = np.empty_like(x)
    _relu_forward(x.reshape(-1), y.reshape(-1))
    return y, y


def activation_backward(name, dout, cache):
    """As ``activations.activation_backward``; ReLU in one compiled pass: dx = dout where y > 0, else 0."""
    if name != "relu" or not (dout.flags.c_contiguous and cache.flags.c_contiguous) or dout.dtype != cache.dtype:
        return act.activation_backward(name, dout, cache)
    dx = np.empty_like(dout)
    _relu_backward(dout.reshape(-1), cache.reshape(-1), dx.reshape(-1))
    return dx


# A dense layer is one GEMM: BLAS does it best, so the NumPy versions are the fast ones too.
dense_forward = gemm.dense_forward
dense_backward = gemm.dense_backward
