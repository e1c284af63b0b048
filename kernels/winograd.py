"""Winograd convolution F(2x2, 3x3) and F(4x4, 3x3): a 3x3, stride-1 convolution with 2.25x (or 4x) fewer
multiplications.

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
differences round a little differently (float32 outputs agree with the direct convolution to about 1e-7,
norm-relative, and 3e-7 in the worst element; the result is the same convolution, so its gradient is the same too).

The backward pass: dx of a stride-1 convolution is a convolution of dout (with the kernel rotated), so
``conv3x3`` serves for it too; dw runs the same formula backwards (``conv3x3_dw_reference``), again as 16 GEMMs.

Bigger tiles save more. F(4x4, 3x3) makes a 4x4 block of outputs from a 6x6 tile: 36 products for 16 outputs,
against 144 done directly (4x fewer; F(2x2, 3x3) saves 2.25x), and 36 GEMMs. Its transforms have more terms,
with factors 2, 4, 5 and 8 and, in G, sixths, so float32 results round more: about 8e-7 norm-relative over 64
channels (7x F(2x2, 3x3)'s), and 5-8e-6 in the worst element (20x). The engine takes whichever tile size does
fewer products per output, tiles over the map's edge counted: F(4x4, 3x3) on most maps from 7x7 up
(``cpu.winograd_tile``). Every function below takes the tile size ``m``, 2 or 4, and ``SCHEMES[m]`` holds its
matrices.

``conv3x3_reference`` and ``conv3x3_dw_reference`` say all this in NumPy with ``einsum``, a few lines each;
``conv3x3`` and ``conv3x3_dw`` are the compiled, blocked versions the CPU engine runs, and ``conv3x3_maxpool2x2``
the forward pass with a 2x2 max pooling taken inside its output transform.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import sliding_window_view

from . import buffers

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)  # input tile: B^T d B
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)  # kernel: G g G^T
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)  # output tile: A^T m A

# F(4x4, 3x3), Lavin and Gray's matrices (interpolation points 0, 1, -1, 2, -2 and infinity)
BT4 = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    np.float64,
)
G4 = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    np.float64,
)
AT4 = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)

SCHEMES = {2: (BT, G, AT), 4: (BT4, G4, AT4)}  # output tile size m -> (B^T, G, A^T); a tile is m + 2 across
# G kron G: ((m+2)^2, 9), the kernel transform G g G^T of every channel pair as one product (``transform_kernel``)
GG = {m: np.kron(G_, G_) for m, (_, G_, _) in SCHEMES.items()}

# The blocked version transforms, multiplies and transforms back a block of images at a time, whose V takes about
# BLOCK_BYTES, so that V and M are still in the cache when the next step reads them. Whole training steps of the
# CIFAR model with F(4x4, 3x3), one thread, interleaved: 512 KiB blocks 280 ms, 1 MiB 274, 2 MiB 294; two threads
# (a slice each) 163, 154 and 158; the MNIST model's inference at batch 256 on two threads (its 11x11 layer):
# 1 MiB and 512 KiB blocks 8-10% faster than 2 MiB. (With F(2x2, 3x3) alone, earlier: 2 MiB blocks against 8 and
# 64 MiB, CIFAR training 417 against 386 and 357 samples/s.)
BLOCK_BYTES = 1 << 20


def _images_per_block(th: int, tw: int, C: int, itemsize: int, m: int = 2) -> int:
    """How many images' V, ((m+2)^2, th*tw, C) each, fit in about BLOCK_BYTES (at least one)."""
    return max(1, BLOCK_BYTES // ((m + 2) ** 2 * th * tw * C * itemsize))


def tiles(Ho: int, Wo: int, m: int = 2) -> tuple[int, int]:
    """Tile rows and columns covering an Ho x Wo output with m x m blocks (the last ones may hang over the edge)."""
    return -(-Ho // m), -(-Wo // m)


def transform_kernel(w: np.ndarray, m: int = 2) -> np.ndarray:
    """w: (3, 3, C, F) -> U: ((m+2)^2, C, F), U[(m+2) a + b] = (G g G^T)[a, b] for every channel pair.

    Computed as one small product, (G kron G) @ w, ((m+2)^2, 9) @ (9, C*F): written as a three-way einsum it took
    0.4-1 ms for the MNIST model's 32->64 kernel, as long as a quarter of the convolution. In w's precision: in
    float64 and rounded back, that kernel's took 147 us against 49 (each slice of a split step transforms it)."""
    U = GG[m].astype(w.dtype) @ w.reshape(9, -1)
    return U.reshape(-1, w.shape[2], w.shape[3])


def _untransform_dw(P: np.ndarray, m: int, C: int, F: int, dtype) -> np.ndarray:
    """P: ((m+2)^2, C, F) -> dw: (3, 3, C, F) = G^T P G for every channel pair, again as one small product."""
    return (GG[m].T @ P.reshape((m + 2) ** 2, -1).astype(np.float64)).reshape(3, 3, C, F).astype(dtype)


def _transformed_tiles_reference(x, pt, pl, th, tw, m=2):
    """V: (a, a, N, th, tw, C), B^T d B for every a x a tile d of x (a = m + 2, at steps of m, from (-pt, -pl))
    and channel."""
    N, H, W, C = x.shape
    a = m + 2
    # pad so that every tile, even one hanging over the bottom or right edge, is a full a x a window
    xp = np.zeros((N, m * th + 2, m * tw + 2, C), x.dtype)
    xp[:, pt : pt + H, pl : pl + W] = x
    d = sliding_window_view(xp, (a, a), axis=(1, 2))[:, ::m, ::m]  # (N, th, tw, C, a, a): the tiles
    BT_ = SCHEMES[m][0]
    return np.einsum("ai,ntscij,bj->abntsc", BT_, d, BT_)


def conv3x3_reference(x, w, b=None, pad=(1, 1, 1, 1), m=2):
    """x: (N, H, W, C), w: (3, 3, C, F), b: (F,) or None -> (N, Ho, Wo, F), stride 1, in NumPy: the formula above,
    with m x m output tiles (2 or 4)."""
    N, H, W, C = x.shape
    pt, pb, pl, pr = pad
    Ho, Wo = H + pt + pb - 2, W + pl + pr - 2
    th, tw = tiles(Ho, Wo, m)
    AT_, a = SCHEMES[m][2], m + 2
    V = _transformed_tiles_reference(x, pt, pl, th, tw, m)
    M = np.einsum("abntsc,abcf->abntsf", V, transform_kernel(w, m).reshape(a, a, C, -1))  # a*a products, sum over c
    Y = np.einsum("ia,abntsf,jb->ntisjf", AT_, M, AT_)  # A^T m A: (N, th, m, tw, m, F)
    out = Y.reshape(N, m * th, m * tw, -1)[:, :Ho, :Wo].astype(x.dtype)
    return out if b is None else out + b


def conv3x3_dw_reference(x, dout, pad=(1, 1, 1, 1), m=2):
    """dw: (3, 3, C, F) of the convolution above, from x: (N, H, W, C) and dout: (N, Ho, Wo, F), in NumPy.

    The forward formula is linear in g, so its gradient runs it backwards, tile by tile: dY's 2x2 block goes
    through A the other way, Z = A dY A^T, meets the tile's transformed input V elementwise, and the sum over
    tiles comes back through G: dw = G^T [sum over tiles of V * Z] G. The sum over tiles and images is 16
    matrix products again, V[xi]^T @ Z[xi], (C, tiles) @ (tiles, F), deep ones this time.
    """
    N, H, W, C = x.shape
    Ho, Wo, F = dout.shape[1], dout.shape[2], dout.shape[3]
    th, tw = tiles(Ho, Wo, m)
    _, G_, AT_ = SCHEMES[m]
    V = _transformed_tiles_reference(x, pad[0], pad[2], th, tw, m)
    dy = np.zeros((N, m * th, m * tw, F), dout.dtype)  # outputs past the edge have no gradient
    dy[:, :Ho, :Wo] = dout
    Z = np.einsum("ia,ntisjf,jb->abntsf", AT_, dy.reshape(N, th, m, tw, m, F), AT_)  # A dY A^T
    P = np.einsum("abntsc,abntsf->abcf", V, Z)
    return np.einsum("ap,abcf,bq->pqcf", G_, P, G_).astype(x.dtype)


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
def _rows(M, t, tmp):
    """F(2x2, 3x3)'s row transform of tile t, tmp = A^T m: (2, 4, F). Shared by the plain and the pooling output
    transforms, so that both compute the same numbers."""
    for q in range(4):
        for f in range(tmp.shape[2]):
            m1, m2 = M[4 + q, t, f], M[8 + q, t, f]
            tmp[0, q, f] = M[q, t, f] + m1 + m2
            tmp[1, q, f] = m1 - m2 - M[12 + q, t, f]


@njit(cache=True, nogil=True)
def _output_transform(M, th, tw, b, relu, out):
    """out[n, 2i:2i+2, 2j:2j+2] = A^T m A (+ b, then max(., 0) if ``relu``) for each tile; b may be empty. Rows and
    columns of a tile past out's edge are dropped.

    Indexed element by element, not through (F,) views of M and out: that measured 1.5-2x faster (a block of the
    CIFAR model's 32x32x32 layer: 0.12-0.15 against 0.24 ms). Not so for F(4x4, 3x3)'s output transform, which
    keeps its views (element by element it took 1.8x as long)."""
    N, Ho, Wo, F = out.shape
    has_bias = b.size > 0
    tmp = np.empty((2, 4, F), M.dtype)  # A^T m: the row transform
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                _rows(M, t, tmp)
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
    """Z[4a + b, t] = (A dY A^T)[a, b] for each tile t, dY the tile's 2x2 block of dout (zeros past the edge).

    Indexed element by element, as ``_output_transform``: through (F,) views of dout, tmp and Z (and a copy of
    dout's block) it took 1.4x as long (a block of the CIFAR model's 32x32x32 layer: 0.16 against 0.115 ms)."""
    N, Ho, Wo, F = dout.shape
    zero = dout.dtype.type(0)
    tmp = np.empty((4, 2, F), dout.dtype)  # A dY: the row transform
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                r, s = 2 * i, 2 * j
                for p in range(2):
                    for f in range(F):
                        y0 = dout[n, r, s + p, f] if s + p < Wo else zero
                        y1 = dout[n, r + 1, s + p, f] if s + p < Wo and r + 1 < Ho else zero
                        tmp[0, p, f] = y0
                        tmp[1, p, f] = y0 + y1
                        tmp[2, p, f] = y0 - y1
                        tmp[3, p, f] = -y1
                for a in range(4):  # then the column transform, (A dY) A^T, straight into Z
                    for f in range(F):
                        e0, e1 = tmp[a, 0, f], tmp[a, 1, f]
                        Z[4 * a, t, f] = e0
                        Z[4 * a + 1, t, f] = e0 + e1
                        Z[4 * a + 2, t, f] = e0 - e1
                        Z[4 * a + 3, t, f] = -e1
                t += 1


# F(4x4, 3x3)'s transforms, compiled. The same loops as above with 6x6 tiles; the factors are the input's own type
# (``xp.dtype.type(4)``): a bare ``4 * d[c]`` is an int64 times a float32, which Numba computes in float64, and the
# conversions there and back made these loops 1.5-2x slower.
@njit(cache=True, nogil=True)
def _input_transform4(xp, th, tw, V):
    """V[6a + b, t] = (B^T d B)[a, b] for each 6x6 tile d at (4i, 4j) of xp, every channel at once."""
    C = xp.shape[3]
    two, four, five = xp.dtype.type(2), xp.dtype.type(4), xp.dtype.type(5)
    tmp = np.empty((6, 6, C), xp.dtype)  # B^T d: the row transform
    t = 0
    for n in range(xp.shape[0]):
        for i in range(th):
            for j in range(tw):
                r, s = 4 * i, 4 * j
                for q in range(6):
                    for c in range(C):
                        d0, d1, d2 = xp[n, r, s + q, c], xp[n, r + 1, s + q, c], xp[n, r + 2, s + q, c]
                        d3, d4, d5 = xp[n, r + 3, s + q, c], xp[n, r + 4, s + q, c], xp[n, r + 5, s + q, c]
                        tmp[0, q, c] = four * d0 - five * d2 + d4
                        tmp[1, q, c] = d3 + d4 - four * (d1 + d2)
                        tmp[2, q, c] = d4 - d3 + four * (d1 - d2)
                        tmp[3, q, c] = d4 - d2 + two * (d3 - d1)
                        tmp[4, q, c] = d4 - d2 - two * (d3 - d1)
                        tmp[5, q, c] = four * d1 - five * d3 + d5
                for a in range(6):  # then the column transform, (B^T d) B, straight into V
                    for c in range(C):
                        e0, e1, e2 = tmp[a, 0, c], tmp[a, 1, c], tmp[a, 2, c]
                        e3, e4, e5 = tmp[a, 3, c], tmp[a, 4, c], tmp[a, 5, c]
                        V[6 * a, t, c] = four * e0 - five * e2 + e4
                        V[6 * a + 1, t, c] = e3 + e4 - four * (e1 + e2)
                        V[6 * a + 2, t, c] = e4 - e3 + four * (e1 - e2)
                        V[6 * a + 3, t, c] = e4 - e2 + two * (e3 - e1)
                        V[6 * a + 4, t, c] = e4 - e2 - two * (e3 - e1)
                        V[6 * a + 5, t, c] = four * e1 - five * e3 + e5
                t += 1


@njit(cache=True, nogil=True)
def _rows4(M, t, tmp):
    """F(4x4, 3x3)'s row transform of tile t, tmp = A^T m: (4, 6, F), over (F,) views. Shared by the plain and the
    pooling output transforms, so that both compute the same numbers."""
    two, four, eight = M.dtype.type(2), M.dtype.type(4), M.dtype.type(8)
    for q in range(6):
        m0, m1, m2 = M[q, t], M[6 + q, t], M[12 + q, t]
        m3, m4, m5 = M[18 + q, t], M[24 + q, t], M[30 + q, t]
        t0, t1, t2, t3 = tmp[0, q], tmp[1, q], tmp[2, q], tmp[3, q]
        for f in range(tmp.shape[2]):
            t0[f] = m0[f] + m1[f] + m2[f] + m3[f] + m4[f]
            t1[f] = m1[f] - m2[f] + two * (m3[f] - m4[f])
            t2[f] = m1[f] + m2[f] + four * (m3[f] + m4[f])
            t3[f] = m1[f] - m2[f] + eight * (m3[f] - m4[f]) + m5[f]


@njit(cache=True, nogil=True)
def _output_transform4(M, th, tw, b, relu, out):
    """out[n, 4i:4i+4, 4j:4j+4] = A^T m A (+ b, then max(., 0) if ``relu``) for each tile; b may be empty. Rows and
    columns of a tile past out's edge are dropped."""
    N, Ho, Wo, F = out.shape
    has_bias = b.size > 0
    two, four, eight = M.dtype.type(2), M.dtype.type(4), M.dtype.type(8)
    tmp = np.empty((4, 6, F), M.dtype)  # A^T m: the row transform
    y = np.empty((4, F), M.dtype)  # one output row of the tile
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                _rows4(M, t, tmp)
                for a in range(min(4, Ho - 4 * i)):  # then the column transform, (A^T m) A
                    e0, e1, e2, e3, e4, e5 = tmp[a, 0], tmp[a, 1], tmp[a, 2], tmp[a, 3], tmp[a, 4], tmp[a, 5]
                    y0, y1, y2, y3 = y[0], y[1], y[2], y[3]
                    for f in range(F):
                        y0[f] = e0[f] + e1[f] + e2[f] + e3[f] + e4[f]
                        y1[f] = e1[f] - e2[f] + two * (e3[f] - e4[f])
                        y2[f] = e1[f] + e2[f] + four * (e3[f] + e4[f])
                        y3[f] = e1[f] - e2[f] + eight * (e3[f] - e4[f]) + e5[f]
                    for p in range(min(4, Wo - 4 * j)):
                        dst, src = out[n, 4 * i + a, 4 * j + p], y[p]
                        for f in range(F):
                            v = src[f] + b[f] if has_bias else src[f]
                            dst[f] = (v if v > 0 else 0) if relu else v
                t += 1


@njit(cache=True, nogil=True)
def _dout_transform4(dout, th, tw, Z):
    """Z[6a + b, t] = (A dY A^T)[a, b] for each tile t, dY the tile's 4x4 block of dout (zeros past the edge).

    Element by element, as ``_dout_transform``: with the block first copied into a (4, 4, F) array and the sums
    taken over (F,) views it took 3x as long (a block of the CIFAR model's 32x32x32 layer: 0.18 against 0.06 ms;
    1.6-2x on its 16x16x64 one), the largest part of that layer's dw."""
    N, Ho, Wo, F = dout.shape
    zero, two, four, eight = dout.dtype.type(0), dout.dtype.type(2), dout.dtype.type(4), dout.dtype.type(8)
    tmp = np.empty((6, 4, F), dout.dtype)  # A dY: the row transform
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                r, s = 4 * i, 4 * j
                rows, cols = min(4, Ho - r), min(4, Wo - s)
                for p in range(4):
                    for f in range(F):
                        y0 = dout[n, r, s + p, f] if p < cols else zero
                        y1 = dout[n, r + 1, s + p, f] if p < cols and rows > 1 else zero
                        y2 = dout[n, r + 2, s + p, f] if p < cols and rows > 2 else zero
                        y3 = dout[n, r + 3, s + p, f] if p < cols and rows > 3 else zero
                        tmp[0, p, f] = y0
                        tmp[1, p, f] = y0 + y1 + y2 + y3
                        tmp[2, p, f] = y0 - y1 + y2 - y3
                        tmp[3, p, f] = y0 + two * y1 + four * y2 + eight * y3
                        tmp[4, p, f] = y0 - two * y1 + four * y2 - eight * y3
                        tmp[5, p, f] = y3
                for a in range(6):  # then the column transform, (A dY) A^T, straight into Z
                    for f in range(F):
                        e0, e1, e2, e3 = tmp[a, 0, f], tmp[a, 1, f], tmp[a, 2, f], tmp[a, 3, f]
                        Z[6 * a, t, f] = e0
                        Z[6 * a + 1, t, f] = e0 + e1 + e2 + e3
                        Z[6 * a + 2, t, f] = e0 - e1 + e2 - e3
                        Z[6 * a + 3, t, f] = e0 + two * e1 + four * e2 + eight * e3
                        Z[6 * a + 4, t, f] = e0 - two * e1 + four * e2 - eight * e3
                        Z[6 * a + 5, t, f] = e3
                t += 1


# The compiled transforms of each tile size: input, output, dout.
TRANSFORMS = {
    2: (_input_transform, _output_transform, _dout_transform),
    4: (_input_transform4, _output_transform4, _dout_transform4),
}


def conv3x3(x, w, b=None, pad=(1, 1, 1, 1), relu=False, m=2):
    """x: (N, H, W, C), w: (3, 3, C, F), b: (F,) or None -> out: (N, Ho, Wo, F), stride 1, in a pooled buffer, with
    m x m output tiles (2 or 4).

    A block of images at a time: pad it, transform its tiles into V, (m+2)^2 GEMMs into M, transform back into
    ``out`` adding the bias (and ReLU if ``relu``) on the way.
    """
    dtype = np.result_type(x.dtype, w.dtype)
    N, Ho, Wo, F = _output_shape(x, w, pad)
    th, tw = tiles(Ho, Wo, m)
    output_transform = TRANSFORMS[m][1]
    bias = np.zeros(0, dtype) if b is None else np.asarray(b, dtype)
    out = buffers.empty((N, Ho, Wo, F), dtype)
    for s, e, M in _products(x, w, pad, m):
        output_transform(M, th, tw, bias, relu, out[s:e])
    return out


def _output_shape(x, w, pad) -> tuple[int, int, int, int]:
    """(N, Ho, Wo, F) of a 3x3, stride-1 convolution of x by w with ``pad`` = (top, bottom, left, right)."""
    N, H, W, _ = x.shape
    return N, H + pad[0] + pad[1] - 2, W + pad[2] + pad[3] - 2, w.shape[3]


def _products(x, w, pad, m):
    """The forward pass up to the output transform: for each block of images s:e, (s, e, M) with M = V @ U, the
    products of its tiles, ((m+2)^2, tiles, F). M lives in a buffer the next block overwrites."""
    dtype = np.result_type(x.dtype, w.dtype)
    x, w = np.ascontiguousarray(x, dtype), np.asarray(w, dtype)
    N, Ho, Wo, F = _output_shape(x, w, pad)
    C = x.shape[3]
    th, tw = tiles(Ho, Wo, m)
    input_transform = TRANSFORMS[m][0]
    U = transform_kernel(w, m)
    step = _images_per_block(th, tw, C, x.itemsize, m)
    n, a2 = min(step, N), (m + 2) ** 2
    xp = buffers.empty((n, m * th + 2, m * tw + 2, C), dtype)
    V = buffers.empty((a2, n * th * tw, C), dtype)
    M = buffers.empty((a2, n * th * tw, F), dtype)
    for s in range(0, N, step):
        e = min(s + step, N)
        T = (e - s) * th * tw
        _pad_into(x[s:e], pad[0], pad[2], xp[: e - s])
        input_transform(xp[: e - s], th, tw, V[:, :T])
        np.matmul(V[:, :T], U, out=M[:, :T])
        yield s, e, M[:, :T]


# ------------------------------------------------------------------------------------ with a 2x2 max pooling after
# A convolution that a 2x2 max pooling (stride 2) follows need not write its output: with an even tile size each
# pooling window lies inside one tile, so the output transform can take each window's maximum as it goes and write
# only that and its place, a quarter of the output. The bias and ReLU come after, on the pooled grid (as in
# ``cpu.conv2d_relu_maxpool2x2_forward``: max(z) + b = max(z + b), and ReLU commutes with max). The window's
# values are computed as the plain output transforms compute them, and compared as ``cpu._maxpool2x2_forward``
# compares them: the first maximum in row-major order wins, its flat index r * Wo + s in the output plane kept.
def conv3x3_maxpool2x2(x, w, pad=(1, 1, 1, 1), m=2):
    """x: (N, H, W, C), w: (3, 3, C, F) -> pooled: (N, Ho // 2, Wo // 2, F), the 2x2 maxima of the convolution
    (no bias), and argmax: the winners' flat indices in the (Ho, Wo) output plane, int32. m: 2 or 4."""
    dtype = np.result_type(x.dtype, w.dtype)
    N, Ho, Wo, F = _output_shape(x, w, pad)
    th, tw = tiles(Ho, Wo, m)
    pooled = buffers.empty((N, Ho // 2, Wo // 2, F), dtype)
    argmax = buffers.empty(pooled.shape, np.int32)
    transform = POOLED_OUTPUT_TRANSFORMS[m]
    for s, e, M in _products(x, w, pad, m):
        transform(M, th, tw, Wo, pooled[s:e], argmax[s:e])
    return pooled, argmax


@njit(cache=True, nogil=True)
def _max4(v0, v1, v2, v3, at, W):
    """The maximum of a 2x2 window's values (top left, top right, bottom left, bottom right) and its flat index,
    ``at`` being the top left's: the first maximum on ties."""
    best, k = v0, at
    if v1 > best:
        best, k = v1, at + 1
    if v2 > best:
        best, k = v2, at + W
    if v3 > best:
        best, k = v3, at + W + 1
    return best, k


@njit(cache=True, nogil=True)
def _output_transform_maxpool2x2(M, th, tw, Wo, pooled, argmax):
    """F(2x2, 3x3): each tile's 2x2 outputs, A^T m A, are one pooling window."""
    N, Hp, Wp, F = pooled.shape
    tmp = np.empty((2, 4, F), M.dtype)  # A^T m: the row transform
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                if i < Hp and j < Wp:
                    _rows(M, t, tmp)
                    at = 2 * i * Wo + 2 * j
                    for f in range(F):
                        v0 = tmp[0, 0, f] + tmp[0, 1, f] + tmp[0, 2, f]
                        v1 = tmp[0, 1, f] - tmp[0, 2, f] - tmp[0, 3, f]
                        v2 = tmp[1, 0, f] + tmp[1, 1, f] + tmp[1, 2, f]
                        v3 = tmp[1, 1, f] - tmp[1, 2, f] - tmp[1, 3, f]
                        pooled[n, i, j, f], argmax[n, i, j, f] = _max4(v0, v1, v2, v3, at, Wo)
                t += 1


@njit(cache=True, nogil=True)
def _output_transform4_maxpool2x2(M, th, tw, Wo, pooled, argmax):
    """F(4x4, 3x3): each tile's 4x4 outputs hold 2x2 pooling windows; those inside the pooled grid are pooled."""
    N, Hp, Wp, F = pooled.shape
    two, four, eight = M.dtype.type(2), M.dtype.type(4), M.dtype.type(8)
    tmp = np.empty((4, 6, F), M.dtype)  # A^T m: the row transform
    t = 0
    for n in range(N):
        for i in range(th):
            for j in range(tw):
                if 2 * i >= Hp or 2 * j >= Wp:  # a last tile with no window (an output of 4k + 1 rows or columns)
                    t += 1
                    continue
                _rows4(M, t, tmp)
                for a in range(2):  # the tile's two rows of windows: its output rows 2a and 2a + 1
                    pi = 2 * i + a
                    if pi >= Hp:
                        break
                    at = 2 * pi * Wo + 4 * j  # the flat index of the left window's top left
                    u0, u1, u2, u3, u4, u5 = (
                        tmp[2 * a, 0],
                        tmp[2 * a, 1],
                        tmp[2 * a, 2],
                        tmp[2 * a, 3],
                        tmp[2 * a, 4],
                        tmp[2 * a, 5],
                    )
                    d0, d1, d2, d3, d4, d5 = (
                        tmp[2 * a + 1, 0],
                        tmp[2 * a + 1, 1],
                        tmp[2 * a + 1, 2],
                        tmp[2 * a + 1, 3],
                        tmp[2 * a + 1, 4],
                        tmp[2 * a + 1, 5],
                    )
                    if 2 * j < Wp:  # the left window: the tile's columns 0 and 1
                        for f in range(F):
                            v0 = u0[f] + u1[f] + u2[f] + u3[f] + u4[f]
                            v1 = u1[f] - u2[f] + two * (u3[f] - u4[f])
                            v2 = d0[f] + d1[f] + d2[f] + d3[f] + d4[f]
                            v3 = d1[f] - d2[f] + two * (d3[f] - d4[f])
                            pooled[n, pi, 2 * j, f], argmax[n, pi, 2 * j, f] = _max4(v0, v1, v2, v3, at, Wo)
                    if 2 * j + 1 < Wp:  # the right window: columns 2 and 3
                        for f in range(F):
                            v0 = u1[f] + u2[f] + four * (u3[f] + u4[f])
                            v1 = u1[f] - u2[f] + eight * (u3[f] - u4[f]) + u5[f]
                            v2 = d1[f] + d2[f] + four * (d3[f] + d4[f])
                            v3 = d1[f] - d2[f] + eight * (d3[f] - d4[f]) + d5[f]
                            pooled[n, pi, 2 * j + 1, f], argmax[n, pi, 2 * j + 1, f] = _max4(v0, v1, v2, v3, at + 2, Wo)
                t += 1


POOLED_OUTPUT_TRANSFORMS = {2: _output_transform_maxpool2x2, 4: _output_transform4_maxpool2x2}


def conv3x3_dw(x, dout, pad=(1, 1, 1, 1), m=2):
    """dw: (3, 3, C, F) from x: (N, H, W, C) and dout: (N, Ho, Wo, F), as ``conv3x3_dw_reference``, blocked.

    Per block of images: V from x as in the forward pass, Z from dout, P += V^T @ Z ((m+2)^2 GEMMs); then
    dw = G^T P G once.
    """
    dtype = np.result_type(x.dtype, dout.dtype)
    x, dout = np.ascontiguousarray(x, dtype), np.ascontiguousarray(dout, dtype)
    N, H, W, C = x.shape
    Ho, Wo, F = dout.shape[1], dout.shape[2], dout.shape[3]
    th, tw = tiles(Ho, Wo, m)
    input_transform, _, dout_transform = TRANSFORMS[m]
    step = _images_per_block(th, tw, C, x.itemsize, m)
    n, a2 = min(step, N), (m + 2) ** 2
    xp = buffers.empty((n, m * th + 2, m * tw + 2, C), dtype)
    V = buffers.empty((a2, n * th * tw, C), dtype)
    Z = buffers.empty((a2, n * th * tw, F), dtype)
    P = np.zeros((a2, C, F), dtype)
    for s in range(0, N, step):
        e = min(s + step, N)
        T = (e - s) * th * tw
        _pad_into(x[s:e], pad[0], pad[2], xp[: e - s])
        input_transform(xp[: e - s], th, tw, V[:, :T])
        dout_transform(dout[s:e], th, tw, Z[:, :T])
        P += np.matmul(V[:, :T].transpose(0, 2, 1), Z[:, :T])
    return _untransform_dw(P, m, C, F, dtype)
