"""The readable twins: every kernel written as plain loops over NumPy arrays.

These are slow on purpose. Each one states the maths of its layer as directly as Python allows, and is the oracle
that the fast kernels (``im2col.py``, ``cpu.py``, ``cuda.py``) are tested against. Every fast kernel has the same
signature as its twin here, and the same contract: ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients``, where ``cache`` is whatever that implementation needs to go back.

Layout is channels-last, as in Keras:

* images ``x``: ``(N, H, W, C)``;
* a convolution kernel ``w``: ``(kh, kw, C, F)``, its bias ``b``: ``(F,)``;
* a dense kernel ``w``: ``(D, M)``, its bias ``b``: ``(M,)``;
* ``stride = (sh, sw)`` and ``pad = (top, bottom, left, right)`` (see ``shapes.padding_amounts``).
"""

from __future__ import annotations

import numpy as np

from .shapes import output_size


def pad_images(x: np.ndarray, pad: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of ``x`` (N, H, W, C) by ``pad = (top, bottom, left, right)``."""
    pt, pb, pl, pr = pad
    if not any(pad):
        return x
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


# ---------------------------------------------------------------------------------------------------- convolution
def conv2d_forward(x, w, b, stride=(1, 1), pad=(0, 0, 0, 0)):
    """Cross-correlation, as every deep-learning framework computes "convolution".

    ``out[n, i, j, f] = b[f] + sum_{p, q, c} xpad[n, i*sh + p, j*sw + q, c] * w[p, q, c, f]``

    x: (N, H, W, C), w: (kh, kw, C, F), b: (F,) or None -> out: (N, Ho, Wo, F)
    """
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    sh, sw = stride
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    xp = pad_images(x, pad)
    out = np.zeros((N, Ho, Wo, F), dtype=x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for f in range(F):
                    total = 0.0
                    for p in range(kh):
                        for q in range(kw):
                            for c in range(C):
                                total += xp[n, i * sh + p, j * sw + q, c] * w[p, q, c, f]
                    out[n, i, j, f] = total + (b[f] if b is not None else 0.0)
    return out, (x, w, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of ``conv2d_forward``: each output touched ``kh*kw*C`` inputs and weights; send ``dout`` back
    along the same edges.

    ``dw[p, q, c, f] = sum_{n, i, j} xpad[n, i*sh+p, j*sw+q, c] * dout[n, i, j, f]``
    ``dxpad[n, i*sh+p, j*sw+q, c] += w[p, q, c, f] * dout[n, i, j, f]``
    ``db[f] = sum_{n, i, j} dout[n, i, j, f]``

    dout: (N, Ho, Wo, F) -> dx: (N, H, W, C), dw: (kh, kw, C, F), db: (F,)
    """
    x, w, stride, pad = cache
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    sh, sw = stride
    pt, pb, pl, pr = pad
    _, Ho, Wo, _ = dout.shape
    xp = pad_images(x, pad)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    db = np.zeros(F, dtype=dout.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for f in range(F):
                    g = dout[n, i, j, f]
                    db[f] += g
                    for p in range(kh):
                        for q in range(kw):
                            for c in range(C):
                                dw[p, q, c, f] += xp[n, i * sh + p, j * sw + q, c] * g
                                dxp[n, i * sh + p, j * sw + q, c] += w[p, q, c, f] * g
    dx = np.ascontiguousarray(dxp[:, pt : pt + H, pl : pl + W, :]) if need_dx else None
    return dx, dw, db


# ---------------------------------------------------------------------------------------------------- pooling
def maxpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """Largest value of each window, per channel. Padding counts as -inf, so it is never chosen.

    The cache keeps, for every output, the flat index (into the padded H*W plane) of the element that won:
    the first maximum in row-major order, so that ties send their gradient to one element only.

    x: (N, H, W, C) -> out: (N, Ho, Wo, C)
    """
    N, H, W, C = x.shape
    ph, pw = pool
    sh, sw = stride
    Ho, Wo = output_size(H, W, ph, pw, stride, pad)
    xp = pad_images(x, pad, value=-np.inf)
    Wp = xp.shape[2]
    out = np.empty((N, Ho, Wo, C), dtype=x.dtype)
    argmax = np.empty((N, Ho, Wo, C), dtype=np.int64)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    best, best_at = -np.inf, -1
                    for p in range(ph):
                        for q in range(pw):
                            v = xp[n, i * sh + p, j * sw + q, c]
                            if v > best or best_at < 0:
                                best, best_at = v, (i * sh + p) * Wp + (j * sw + q)
                    out[n, i, j, c] = best
                    argmax[n, i, j, c] = best_at
    return out, (x.shape, xp.shape, argmax, pad)


def maxpool2d_backward(dout, cache):
    """Each output's gradient goes to the one input that won its window; overlapping windows add up.

    dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)
    """
    x_shape, xp_shape, argmax, pad = cache
    N, Ho, Wo, C = dout.shape
    Wp = xp_shape[2]
    pt, _, pl, _ = pad
    dxp = np.zeros(xp_shape, dtype=dout.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    r, s = divmod(int(argmax[n, i, j, c]), Wp)
                    dxp[n, r, s, c] += dout[n, i, j, c]
    return np.ascontiguousarray(dxp[:, pt : pt + x_shape[1], pl : pl + x_shape[2], :])


def avgpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """Mean of each window, per channel. As in Keras, padded positions are left out of the count.

    x: (N, H, W, C) -> out: (N, Ho, Wo, C)
    """
    N, H, W, C = x.shape
    ph, pw = pool
    sh, sw = stride
    pt, _, pl, _ = pad
    Ho, Wo = output_size(H, W, ph, pw, stride, pad)
    out = np.zeros((N, Ho, Wo, C), dtype=x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, H)
                c0, c1 = max(j * sw - pl, 0), min(j * sw - pl + pw, W)
                for c in range(C):
                    total = 0.0
                    for r in range(r0, r1):
                        for s in range(c0, c1):
                            total += x[n, r, s, c]
                    out[n, i, j, c] = total / ((r1 - r0) * (c1 - c0))
    return out, (x.shape, pool, stride, pad)


def avgpool2d_backward(dout, cache):
    """Each output's gradient is shared equally by the inputs it averaged.

    dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)
    """
    x_shape, (ph, pw), (sh, sw), (pt, _, pl, _) = cache
    N, H, W, C = x_shape
    _, Ho, Wo, _ = dout.shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, H)
                c0, c1 = max(j * sw - pl, 0), min(j * sw - pl + pw, W)
                share = 1.0 / ((r1 - r0) * (c1 - c0))
                for c in range(C):
                    for r in range(r0, r1):
                        for s in range(c0, c1):
                            dx[n, r, s, c] += dout[n, i, j, c] * share
    return dx


# ---------------------------------------------------------------------------------------------------- dense
def dense_forward(x, w, b):
    """``out[n, m] = b[m] + sum_d x[n, d] * w[d, m]``.   x: (N, D), w: (D, M), b: (M,) or None -> out: (N, M)"""
    N, D = x.shape
    M = w.shape[1]
    out = np.zeros((N, M), dtype=x.dtype)
    for n in range(N):
        for m in range(M):
            total = 0.0
            for d in range(D):
                total += x[n, d] * w[d, m]
            out[n, m] = total + (b[m] if b is not None else 0.0)
    return out, (x, w)


def dense_backward(dout, cache, need_dx=True):
    """``dx = dout w^T``, ``dw = x^T dout``, ``db = sum_n dout``, written out.

    dout: (N, M) -> dx: (N, D), dw: (D, M), db: (M,)
    """
    x, w = cache
    N, D = x.shape
    M = w.shape[1]
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    db = np.zeros(M, dtype=dout.dtype)
    for n in range(N):
        for m in range(M):
            g = dout[n, m]
            db[m] += g
            for d in range(D):
                dx[n, d] += w[d, m] * g
                dw[d, m] += x[n, d] * g
    return (dx if need_dx else None), dw, db
