"""Convolution as one matrix product: NumPy im2col / col2im.

im2col copies every ``kh x kw x C`` patch of the (padded) input into one row of a matrix, so that the
convolution becomes a single GEMM that BLAS runs near the machine's peak:

    cols (N*Ho*Wo, kh*kw*C)  @  w.reshape(kh*kw*C, F)  ->  out (N*Ho*Wo, F)  ->  reshape (N, Ho, Wo, F)

Channels-last makes both reshapes free: a patch row is ``kh`` runs of ``kw*C`` contiguous numbers, and the
kernel ``(kh, kw, C, F)`` is already the matrix ``(kh*kw*C, F)``. The price is memory: ``cols`` holds every input
value up to ``kh*kw`` times (9x for a 3x3 kernel at stride 1).

The backward pass is the same picture read the other way: ``dw = cols^T @ dout``, ``dcols = dout @ w^T``, and
col2im adds each row of ``dcols`` back onto the patch it came from (patches overlap, so it must add).
Same signatures as ``reference.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .reference import pad_images
from .shapes import output_size

__all__ = [
    "im2col",
    "im2col_taps",
    "col2im",
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "dense_forward",
    "dense_backward",
]


def im2col(x, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0), out=None):
    """Patches of ``x`` as rows.   x: (N, H, W, C) -> cols: (N*Ho*Wo, kh*kw*C)

    A strided *view* (N, Ho, Wo, kh, kw, C) of the padded input points at every patch without copying;
    the reshape to 2-D is where the copy happens (into ``out`` if given: a C-contiguous array of cols's size).
    """
    N, H, W, C = x.shape
    sh, sw = stride
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    xp = np.ascontiguousarray(pad_images(x, pad))
    sN, sH, sW, sC = xp.strides
    patches = as_strided(xp, (N, Ho, Wo, kh, kw, C), (sN, sH * sh, sW * sw, sH, sW, sC), writeable=False)
    if out is None:
        return patches.reshape(N * Ho * Wo, kh * kw * C)
    np.copyto(out.reshape(patches.shape), patches)
    return out.reshape(N * Ho * Wo, kh * kw * C)


def im2col_taps(x, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0), out=None):
    """The transpose of im2col, built one kernel tap at a time.   x: (N, H, W, C) -> (kh*kw*C, N*Ho*Wo)

    Row (p, q, c) holds what tap (p, q) of channel c sees at every output position: one strided slice of the
    padded input. So this is kh*kw*C big copies, where im2col makes N*Ho*Wo*kh*kw small ones (of C numbers each):
    the better way when C is 1 or 3. ``out``: where to write it, as for ``im2col``.
    """
    N, H, W, C = x.shape
    sh, sw = stride
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    xp = pad_images(x, pad)
    taps = np.empty((kh, kw, C, N, Ho, Wo), dtype=x.dtype) if out is None else out.reshape(kh, kw, C, N, Ho, Wo)
    for p in range(kh):
        for q in range(kw):
            taps[p, q] = xp[:, p : p + sh * Ho : sh, q : q + sw * Wo : sw, :].transpose(3, 0, 1, 2)
    return taps.reshape(kh * kw * C, N * Ho * Wo)


def col2im(cols, x_shape, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0)):
    """Add each row of ``cols`` back onto its patch.   cols: (N*Ho*Wo, kh*kw*C) -> dx: x_shape (N, H, W, C)

    One vectorised add per kernel position (p, q): all outputs' contributions to the input pixels at offset
    (p, q) of their window land on a strided slice of the padded gradient.
    """
    N, H, W, C = x_shape
    sh, sw = stride
    pt, pb, pl, pr = pad
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    dxp = np.zeros((N, H + pt + pb, W + pl + pr, C), dtype=cols.dtype)
    cols6 = cols.reshape(N, Ho, Wo, kh, kw, C)
    for p in range(kh):
        for q in range(kw):
            dxp[:, p : p + sh * Ho : sh, q : q + sw * Wo : sw, :] += cols6[:, :, :, p, q, :]
    return dxp[:, pt : pt + H, pl : pl + W, :]


def conv2d_forward(x, w, b, stride=(1, 1), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C), w: (kh, kw, C, F), b: (F,) or None -> out: (N, Ho, Wo, F), cache

    The whole batch in one im2col and one GEMM; ``cpu.py`` does the same in cache-sized blocks of images.
    """
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad)
    out = cols @ w.reshape(-1, F)
    if b is not None:
        out += b
    return out.reshape(N, Ho, Wo, F), (x.shape, w, cols, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """dout: (N, Ho, Wo, F) -> dx: (N, H, W, C), dw: (kh, kw, C, F), db: (F,)

    ``need_dx=False`` (the first layer: nobody needs the gradient of the images) returns ``dx = None`` and saves
    a GEMM and the col2im.
    """
    x_shape, w, cols, stride, pad = cache
    kh, kw, _, F = w.shape
    d2 = dout.reshape(-1, F)
    db = d2.sum(axis=0)
    dw = (cols.T @ d2).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = d2 @ w.reshape(-1, F).T
    return np.ascontiguousarray(col2im(dcols, x_shape, kh, kw, stride, pad)), dw, db


def maxpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """Max pooling through the same strided view: argmax over each window's ``ph*pw`` values.

    x: (N, H, W, C) -> out: (N, Ho, Wo, C); the cache keeps the winner's flat index in the padded plane.
    """
    N, H, W, C = x.shape
    ph, pw = pool
    sh, sw = stride
    Ho, Wo = output_size(H, W, ph, pw, stride, pad)
    xp = np.ascontiguousarray(pad_images(x, pad, value=-np.inf))
    Wp = xp.shape[2]
    sN, sH, sW, sC = xp.strides
    win = as_strided(xp, (N, Ho, Wo, ph, pw, C), (sN, sH * sh, sW * sw, sH, sW, sC), writeable=False)
    win = win.reshape(N, Ho, Wo, ph * pw, C)
    k = win.argmax(axis=3)  # first maximum in row-major window order, as the reference
    out = np.take_along_axis(win, k[:, :, :, None, :], axis=3)[:, :, :, 0, :]
    p, q = np.divmod(k, pw)
    rows = np.arange(Ho)[None, :, None, None] * sh + p
    colsi = np.arange(Wo)[None, None, :, None] * sw + q
    return np.ascontiguousarray(out), (x.shape, xp.shape, rows * Wp + colsi, pad)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C); ``np.add.at`` so overlapping windows add up."""
    x_shape, xp_shape, argmax, pad = cache
    N, Hp, Wp, C = xp_shape
    pt, _, pl, _ = pad
    dxp = np.zeros((N, Hp * Wp, C), dtype=dout.dtype)
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, None, None, :]
    np.add.at(dxp, (n, argmax, c), dout)
    dxp = dxp.reshape(xp_shape)
    return np.ascontiguousarray(dxp[:, pt : pt + x_shape[1], pl : pl + x_shape[2], :])


def dense_forward(x, w, b):
    """x: (N, D), w: (D, M), b: (M,) or None -> out: (N, M)"""
    out = x @ w
    if b is not None:
        out += b
    return out, (x, w)


def dense_backward(dout, cache, need_dx=True):
    """dout: (N, M) -> dx: (N, D) (None unless ``need_dx``), dw: (D, M), db: (M,)"""
    x, w = cache
    return (dout @ w.T if need_dx else None), x.T @ dout, dout.sum(axis=0)


def _window_counts(H, W, pool, stride, pad):
    """How many real (unpadded) inputs each output window covers: (1, Ho, Wo, 1)."""
    ones = np.ones((1, H, W, 1))
    return avgpool2d_sum(ones, pool, stride, pad)


def avgpool2d_sum(x, pool, stride, pad):
    """Sum of each window (zero padding): x (N, H, W, C) -> (N, Ho, Wo, C)."""
    N, H, W, C = x.shape
    ph, pw = pool
    Ho, Wo = output_size(H, W, ph, pw, stride, pad)
    xp = np.ascontiguousarray(pad_images(x, pad))
    sN, sH, sW, sC = xp.strides
    win = as_strided(xp, (N, Ho, Wo, ph, pw, C), (sN, sH * stride[0], sW * stride[1], sH, sW, sC), writeable=False)
    return win.sum(axis=(3, 4))


def avgpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """Window sums divided by the number of real inputs in each window (Keras leaves padding out).

    x: (N, H, W, C) -> out: (N, Ho, Wo, C)
    """
    counts = _window_counts(x.shape[1], x.shape[2], pool, stride, pad).astype(x.dtype)
    return avgpool2d_sum(x, pool, stride, pad) / counts, (x.shape, pool, stride, pad, counts)


def avgpool2d_backward(dout, cache):
    """Each output's gradient, divided by its count, is added to every input of its window (col2im-style).

    dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)
    """
    x_shape, (ph, pw), (sh, sw), pad, counts = cache
    N, H, W, C = x_shape
    pt, pb, pl, pr = pad
    _, Ho, Wo, _ = dout.shape
    share = dout / counts
    dxp = np.zeros((N, H + pt + pb, W + pl + pr, C), dtype=dout.dtype)
    for p in range(ph):
        for q in range(pw):
            dxp[:, p : p + sh * Ho : sh, q : q + sw * Wo : sw, :] += share
    return np.ascontiguousarray(dxp[:, pt : pt + H, pl : pl + W, :])
