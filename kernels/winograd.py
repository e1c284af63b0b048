"""Winograd convolution F(2x2, 3x3): a 3x3, stride-1 convolution with 2.25x fewer multiplications.

From Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). A 3x3 convolution makes
each 2x2 block of outputs from a 4x4 tile of the input (tiles overlap by 2). Done directly that is 4 outputs x 9
taps = 36 multiply-adds per pair of channels. Winograd's minimal filtering does it in 16:

    Y = A^T [ (G g G^T) * (B^T d B) ] A          g: 3x3 kernel, d: 4x4 input tile, *: elementwise, Y: 2x2

with the small constant matrices B, G, A below (the transforms are additions and subtractions, and halves in G).
Summed over the input channels, the 16 elementwise products of a tile become 16 matrix products, one for each
position xi of the 4x4 tile, across all tiles at once:

    M[xi] = V[xi] @ U[xi]        V: (tiles, C) input tiles, transformed; U: (C, F) kernel, transformed; M: (tiles, F)

So the arithmetic stays in BLAS GEMMs, with 2.25x fewer multiply-adds than im2col's single GEMM, and the input
is copied 4x (16 numbers for 4 outputs), not 9x. What it costs: the 16 GEMMs are only C deep, which BLAS runs
at a lower rate than im2col's 9C, so the win shows from C = 32 up (see ``cpu.WINOGRAD_MIN_CHANNELS``); and sums of
differences round a little differently (float32 outputs agree with the direct convolution to about 1e-6
relative; the result is the same convolution, so its gradient is the same too).

The backward pass: dx of a stride-1 convolution is a convolution of dout (with the kernel rotated), so
``conv3x3`` serves for it too; dw runs the same formula backwards (``conv3x3_dw_reference``), again as 16 GEMMs.

``conv3x3_reference`` and ``conv3x3_dw_reference`` say all this in NumPy with ``einsum``, a few lines each;
``conv3x3`` and ``conv3x3_dw`` are the compiled, blocked versions the CPU engine runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

from . import buffers

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)  # input tile: B^T d B
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)  # kernel: G g G^T
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)  # output tile: A^T m A

# The blocked version transforms, multiplies and transforms back a block of images at a time, whose V takes about
# BLOCK_BYTES, so that V and M are still in the cache when the next step reads them. Whole training steps of the
# CIFAR model, interleaved, in samples/s: on one thread 2 MiB blocks 417, 8 MiB 386, 64 MiB (no blocks) 357; on
# two threads, where bigger GEMMs split better, 347, 377 and 348.
BLOCK_BYTES = 2 << 20


def _images_per_block(th: int, tw: int, C: int, itemsize: int) -> int:
    """How many images' V, (16, th*tw, C) each, fit in about BLOCK_BYTES (at least one)."""
    return max(1, BLOCK_BYTES // (16 * th * tw * C * itemsize))


def tiles(Ho: int, Wo: int) -> tuple[int, int]:
    """Tile rows and columns covering an Ho x Wo output with 2x2 blocks (the last ones may hang over the edge)."""
    return (Ho + 1) // 2, (Wo + 1) // 2


def transform_kernel(w: np.ndarray) -> np.ndarray:
    """w: (3, 3, C, F) -> U: (16, C, F), U[4a + b] = (G g G^T)[a, b] for every channel pair."""
    U = np.einsum("ap,pqcf,bq->abcf", G, w, G)
    return U.reshape(16, w.shape[2], w.shape[3]).astype(w.dtype, copy=False)


def _transformed_tiles_reference(x, pt, pl, th, tw):
    """V: (4, 4, N, th, tw, C), B^T d B for every 4x4 tile d of x (at steps of 2, from (-pt, -pl)) and channel."""
    N, H, W, C = x.shape
    # pad so that every tile, even one hanging over the bottom or right edge, is a full 4x4 window
    xp = np.zeros((N, 2 * th + 2, 2 * tw + 2, C), x.dtype)
    xp[:, pt : pt + H, pl : pl + W] = x
    d = sliding_window_view(xp, (4, 4), axis=(1, 2))[:, ::2, ::2]  # (N, th, tw, C, 4, 4): the tiles
    return np.einsum("ai,ntscij,bj->abntsc", BT, d, BT)


def conv3x3_reference(x, w, b=None, pad=(1, 1, 1, 1)):
    """x: (N, H, W, C), w: (3, 3, C, F), b: (F,) or None -> (N, Ho, Wo, F), stride 1, in NumPy: the formula above."""
    N, H, W, C = x.shape
    pt, pb, pl, pr = pad
    Ho, Wo = H + pt + pb - 2, W + pl + pr - 2
    th, tw = tiles(Ho, Wo)
    V = _transformed_tiles_reference(x, pt, pl, th, tw)
    M = np.einsum("abntsc,abcf->abntsf", V, transform_kernel(w).reshape(4, 4, C, -1))  # 16 products, sum over c
    Y = np.einsum("ia,abntsf,jb->ntisjf", AT, M, AT)  # A^T m A: (N, th, 2, tw, 2, F)
    out = Y.reshape(N, 2 * th, 2 * tw, -1)[:, :Ho, :Wo].astype(x.dtype)
    return out if b is None else out + b


def conv3x3_dw_reference(x, dout, pad=(1, 1, 1, 1)):
    """dw: (3, 3, C, F) of the convolution above, from x: (N, H, W, C) and dout: (N, Ho, Wo, F), in NumPy.

    The forward formula is linear in g, so its gradient runs it backwards, tile by tile: dY's 2x2 block goes
    through A the other way, Z = A dY A^T, meets the tile's transformed input V elementwise, and the sum over
    tiles comes back through G: dw = G^T [sum over tiles of V * Z] G. The sum over tiles and images is 16
    matrix products again, V[xi]^T @ Z[xi], (C, tiles) @ (tiles, F), deep ones this time.
    """
    N, H, W, C = x.shape
    Ho, Wo, F = dout.shape[1], dout.shape[2], dout.shape[3]
    th, tw = tiles(Ho, Wo)
    V = _transformed_tiles_reference(x, pad[0], pad[2], th, tw)
    dy = np.zeros((N, 2 * th, 2 * tw, F), dout.dtype)  # outputs past the edge have no gradient
    dy[:, :Ho, :Wo] = dout
    Z = np.einsum("ia,ntisjf,jb->abntsf", AT, dy.reshape(N, th, 2, tw, 2, F), AT)  # A dY A^T
    P = np.einsum("abntsc,abntsf->abcf", V, Z)
    return np.einsum("ap,abcf,bq->pqcf", G, P, G).astype(x.dtype)


@njit(cache=True, nogil=True)
def _pad_into(x, pt, pl, xp):
    """xp[n, r, s] = x[n, r - pt, s - pl], and zeros outside x."""
    N, H, W, C = x.shape
    for n in range(N):
        for r in range(xp.shape[1]):
            for s in range(xp.shape[2]):
                dst = xp[n, r, s]
                if 0 <= r - pt < H and 0 <= s - pl < W:
                    src = x[n, r - pt, s - pl]
                    for c in range(C):
                        dst[c] = src[c]
                else:
                    dst[:] = 0


@njit(cache=True, nogil=True)
def _input_transform(xp, th, tw, V):
    """V[4a + b, t] = (B^T d B)[a, b] for each tile t (row-major over images, tile rows, tile columns), every
    channel at once; d is the 4x4 window at (2i, 2j) of the padded block xp."""
    C = xp.shape[3]
    tmp = np.empty((4, 4, C), xp.dtype)  # B^T d: the row transform
    t = 0
    for n in range(xp.shape[0]):
        for i in range(th):
            for j in range(tw):
                r, s = 2 * i, 2 * j
                for q in range(4):
                    d0, d1, d2, d3 = xp[n, r, s + q], xp[n, r + 1, s + q], xp[n, r + 2, s + q], xp[n, r + 3, s + q]
                    t0, t1, t2, t3 = tmp[0, q], tmp[1, q], tmp[2, q], tmp[3, q]
                    for c in range(C):
                        t0[c] = d0[c] - d2[c]
                        t1[c] = d1[c] + d2[c]
                        t2[c] = d2[c] - d1[c]
                        t3[c] = d1[c] - d3[c]
                for a in range(4):  # then the column transform, (B^T d) B, straight into V
                    e0, e1, e2, e3 = tmp[a, 0], tmp[a, 1], tmp[a, 2], tmp[a, 3]
                    v0, v1, v2, v3 = V[4 * a, t], V[4 * a + 1, t], V[4 * a + 2, t], V[4 * a + 3, t]
                    for c in range(C):
                        v0[c] = e0[c] - e2[c]
                        v1[c] = e1[c] + e2[c]
                        v2[c] = e2[c] - e1[c]
                        v3[c] = e1[c] - e3[c]
                t += 1


@njit(cache=True, nogil=True)
def _output_transform(M, th, tw, b, relu, out):
    """out[n, 2i:2i+2, 2j:2j+2] = A^T m A (+ b, then max(., 0) if ``relu``) for each tile; b may be empty. Rows and
    columns of a tile past out's edge are dropped.

    Indexed element by element, not through (F,) views of M and out as the other transforms are: here that measured
    1.5-2x faster (a block of the CIFAR model's 32x32x32 layer: 0.12-0.15 against 0.24 ms)."""
    N, Ho, Wo, F = out.shape
    has_bias = b.size > 0
    tmp = np.empty((2, 4, F), M.dtype)  # A^T m: the row transform
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                for q in range(4):
                    for f in range(F):
                        m1, m2 = M[4 + q, t, f], M[8 + q, t, f]
                        tmp[0, q, f] = M[q, t, f] + m1 + m2
                        tmp[1, q, f] = m1 - m2 - M[12 + q, t, f]
                for a in range(2):
                    r = 2 * i + a
                    if r >= Ho:
                        continue
                    for p in range(2):  # then the column transform, (A^T m) A
                        s = 2 * j + p
                        if s >= Wo:
                            continue
                        for f in range(F):
                            if p == 0:
                                v = tmp[a, 0, f] + tmp[a, 1, f] + tmp[a, 2, f]
                            else:
                                v = tmp[a, 1, f] - tmp[a, 2, f] - tmp[a, 3, f]
                            if has_bias:
                                v += b[f]
                            out[n, r, s, f] = (v if v > 0 else 0) if relu else v
                t += 1


@njit(cache=True, nogil=True)
def _dout_transform(dout, th, tw, Z):
    """Z[4a + b, t] = (A dY A^T)[a, b] for each tile t, dY the tile's 2x2 block of dout (zeros past the edge)."""
    N, Ho, Wo, F = dout.shape
    zero = np.zeros(F, dout.dtype)
    tmp = np.empty((4, 2, F), dout.dtype)  # A dY: the row transform
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                for p in range(2):
                    s = 2 * j + p
                    y0 = dout[n, 2 * i, s] if s < Wo else zero
                    y1 = dout[n, 2 * i + 1, s] if s < Wo and 2 * i + 1 < Ho else zero
                    t0, t1, t2, t3 = tmp[0, p], tmp[1, p], tmp[2, p], tmp[3, p]
                    for f in range(F):
                        t0[f] = y0[f]
                        t1[f] = y0[f] + y1[f]
                        t2[f] = y0[f] - y1[f]
                        t3[f] = -y1[f]
                for a in range(4):  # then the column transform, (A dY) A^T, straight into Z
                    e0, e1 = tmp[a, 0], tmp[a, 1]
                    z0, z1, z2, z3 = Z[4 * a, t], Z[4 * a + 1, t], Z[4 * a + 2, t], Z[4 * a + 3, t]
                    for f in range(F):
                        z0[f] = e0[f]
                        z1[f] = e0[f] + e1[f]
                        z2[f] = e0[f] - e1[f]
                        z3[f] = -e1[f]
                t += 1


def conv3x3(x, w, b=None, pad=(1, 1, 1, 1), relu=False):
    """x: (N, H, W, C), w: (3, 3, C, F), b: (F,) or None -> out: (N, Ho, Wo, F), stride 1, in a pooled buffer.

    A block of images at a time: pad it, transform its tiles into V, 16 GEMMs into M, transform back into ``out``
    adding the bias (and ReLU if ``relu``) on the way.
    """
    dtype = np.result_type(x.dtype, w.dtype)
    x, w = np.ascontiguousarray(x, dtype), np.asarray(w, dtype)
    N, H, W, C = x.shape
    F = w.shape[3]
    pt, pb, pl, pr = pad
    Ho, Wo = H + pt + pb - 2, W + pl + pr - 2
    th, tw = tiles(Ho, Wo)
    U = transform_kernel(w)
    bias = np.zeros(0, dtype) if b is None else np.asarray(b, dtype)
    out = buffers.empty((N, Ho, Wo, F), dtype)
    step = _images_per_block(th, tw, C, x.itemsize)
    n = min(step, N)
    xp = buffers.empty((n, 2 * th + 2, 2 * tw + 2, C), dtype)
    V = buffers.empty((16, n * th * tw, C), dtype)
    M = buffers.empty((16, n * th * tw, F), dtype)
    for s in range(0, N, step):
        e = min(s + step, N)
        T = (e - s) * th * tw
        _pad_into(x[s:e], pt, pl, xp[: e - s])
        _input_transform(xp[: e - s], th, tw, V[:, :T])
        np.matmul(V[:, :T], U, out=M[:, :T])
        _output_transform(M[:, :T], th, tw, bias, relu, out[s:e])
    return out


def conv3x3_dw(x, dout, pad=(1, 1, 1, 1)):
    """dw: (3, 3, C, F) from x: (N, H, W, C) and dout: (N, Ho, Wo, F), as ``conv3x3_dw_reference``, blocked.

    Per block of images: V from x as in the forward pass, Z from dout, P += V^T @ Z (16 GEMMs); then
    dw = G^T P G once.
    """
    dtype = np.result_type(x.dtype, dout.dtype)
    x, dout = np.ascontiguousarray(x, dtype), np.ascontiguousarray(dout, dtype)
    N, H, W, C = x.shape
    Ho, Wo, F = dout.shape[1], dout.shape[2], dout.shape[3]
    th, tw = tiles(Ho, Wo)
    step = _images_per_block(th, tw, C, x.itemsize)
    n = min(step, N)
    xp = buffers.empty((n, 2 * th + 2, 2 * tw + 2, C), dtype)
    V = buffers.empty((16, n * th * tw, C), dtype)
    Z = buffers.empty((16, n * th * tw, F), dtype)
    P = np.zeros((16, C, F), dtype)
    for s in range(0, N, step):
        e = min(s + step, N)
        T = (e - s) * th * tw
        _pad_into(x[s:e], pad[0], pad[2], xp[: e - s])
        _input_transform(xp[: e - s], th, tw, V[:, :T])
        _dout_transform(dout[s:e], th, tw, Z[:, :T])
        P += np.matmul(V[:, :T].transpose(0, 2, 1), Z[:, :T])
    return np.einsum("ap,abcf,bq->pqcf", G, P.reshape(4, 4, C, F), G).astype(dtype, copy=False)
