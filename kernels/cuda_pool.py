"""Max and average pooling on the GPU, forward and backward, channels-last, any pool, stride and padding.

Every kernel has one thread per element it *writes*:

* forward: one thread per output ``(n, i, j, c)``; it reads its window. Consecutive threads are consecutive
  channels of one pixel, so a warp's reads are neighbouring words.
* backward: one thread per input ``(n, h, w, c)``; it *gathers* from each window that covers it (pixel ``h`` is
  at offset ``p`` of window ``i`` when ``i*sh + p - pt == h``). Overlapping windows (stride < pool) then need no
  atomic adds, and the sum is taken in the same order on every run. Where the windows tile the input (stride =
  pool, no padding: ``MaxPooling2D(2)``), max pooling's backward has one thread per *window* instead, which
  writes its whole window: the same elements once each, with far less index arithmetic.

Max pooling, in every training step, walks rows as im2col does (``grid_2d``: a thread per position along a row,
rows in a loop), so that its indices are decoded per row rather than per element; average pooling keeps the
plainer grid-stride loop over flat indices.

Max pooling records, per output, the offset ``p*pw + q`` of the winning element in its window: the first
maximum in row-major order, padding never chosen (it counts as -inf), as in ``reference.py``. Average pooling
divides by the number of real (unpadded) elements in the window, as Keras does.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32

from .cuda_launch import NONNEG, grid_1d, grid_2d, kernel
from .shapes import output_size


@kernel
def maxpool_forward_kernel(x, ph, pw, sh, sw, pt, pl, out, argmax):
    """Block (TX, TY), grid (cdiv(Wo*C, TX), G). Thread ``x`` owns a position (j, c) along an output row, thread
    ``y`` walks the output rows (n, i), grid-stride; each reads its window. Indices are decoded once per thread
    and once per row, never per element (integer division is slow on a GPU)."""
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    jc = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) & NONNEG
    if jc >= Wo * C:
        return
    j, c = jc // C, jc % C
    start = (cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y) & NONNEG
    for ni in range(start, N * Ho, cuda.gridDim.y * cuda.blockDim.y):
        n, i = ni // Ho, ni % Ho
        best = float32(0)
        best_at = -1
        for p in range(ph):
            r = i * sh + p - pt
            if r < 0 or r >= H:
                continue
            for q in range(pw):
                s = j * sw + q - pl
                if s < 0 or s >= W:
                    continue
                v = x[n, r, s, c]
                if best_at < 0 or v > best:
                    best, best_at = v, p * pw + q
        out[n, i, j, c] = best
        argmax[n, i, j, c] = best_at


@cuda.jit(device=True)
def covering(h, pt, ph, sh, Ho):
    """The windows ``lo .. hi - 1`` whose span ``[i*sh - pt, i*sh - pt + ph)`` holds position ``h``."""
    first = h + pt - ph + 1  # the lowest window start that still reaches h is i*sh >= first
    lo = 0 if first <= 0 else (first + sh - 1) // sh
    hi = min(Ho, (h + pt) // sh + 1) if h + pt >= 0 else 0
    return lo, hi


@kernel
def maxpool_backward_kernel(dout, argmax, ph, pw, sh, sw, pt, pl, dx):
    """Block (TX, TY), grid (cdiv(W*C, TX), G). Thread ``x`` owns a position (w, c) along an input row, thread
    ``y`` walks the input rows (n, h); each gathers from the windows that cover its pixel, found by two divisions
    per row and per column (``covering``) rather than by testing every offset of every window."""
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = dout.shape
    wc = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) & NONNEG
    if wc >= W * C:
        return
    w, c = wc // C, wc % C
    j_lo, j_hi = covering(w, pl, pw, sw, Wo)
    start = (cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y) & NONNEG
    for nh in range(start, N * H, cuda.gridDim.y * cuda.blockDim.y):
        n, h = nh // H, nh % H
        i_lo, i_hi = covering(h, pt, ph, sh, Ho)
        total = float32(0)
        for i in range(i_lo, i_hi):
            p = h + pt - i * sh  # this pixel's offset in window i
            for j in range(j_lo, j_hi):
                if argmax[n, i, j, c] == p * pw + (w + pl - j * sw):  # this pixel won that window
                    total += dout[n, i, j, c]
        dx[n, h, w, c] = total


@kernel
def maxpool_tiled_backward_kernel(dout, argmax, ph, pw, dx):
    """Windows that tile the input (stride = pool, no padding: every pixel in at most one window), laid out as
    the forward kernel: thread ``x`` owns a position (j, c) along an output row, thread ``y`` walks the output
    rows (n, i), and each thread writes its whole window of ``dx``: the gradient where the maximum was, 0 elsewhere.
    Every element is written once, with no search for the windows that cover it: a quarter of the threads of the
    gather kernel, and two divisions per output row rather than four per input row. The last window of a row
    (and of a column) also writes the zeros of the pixels past the last whole window."""
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = dout.shape
    jc = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) & NONNEG
    if jc >= Wo * C:
        return
    j, c = jc // C, jc % C
    s0 = j * pw
    s1 = W if j == Wo - 1 else s0 + pw
    start = (cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y) & NONNEG
    for ni in range(start, N * Ho, cuda.gridDim.y * cuda.blockDim.y):
        n, i = ni // Ho, ni % Ho
        r0 = i * ph
        r1 = H if i == Ho - 1 else r0 + ph
        winner = argmax[n, i, j, c]
        g = dout[n, i, j, c]
        for r in range(r0, r1):
            for s in range(s0, s1):
                p, q = r - r0, s - s0
                dx[n, r, s, c] = g if p < ph and q < pw and p * pw + q == winner else float32(0)


@cuda.jit(device=True)
def window_count(i, j, ph, pw, sh, sw, pt, pl, H, W):
    """Real (unpadded) elements in window ``(i, j)``: the divisor of average pooling."""
    r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, H)
    s0, s1 = max(j * sw - pl, 0), min(j * sw - pl + pw, W)
    return (r1 - r0) * (s1 - s0)


@kernel
def avgpool_forward_kernel(x, ph, pw, sh, sw, pt, pl, out):
    """One thread per output element ``(n, i, j, c)`` (grid-stride over the flat index): the mean of the real
    elements of its window. Consecutive threads take consecutive channels of one pixel: neighbouring reads."""
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        c, t = e % C, e // C
        j, t = t % Wo, t // Wo
        i, n = t % Ho, t // Ho
        total = float32(0)
        for r in range(max(i * sh - pt, 0), min(i * sh - pt + ph, H)):
            for s in range(max(j * sw - pl, 0), min(j * sw - pl + pw, W)):
                total += x[n, r, s, c]
        out[n, i, j, c] = total / float32(window_count(i, j, ph, pw, sh, sw, pt, pl, H, W))


@kernel
def avgpool_backward_kernel(dout, ph, pw, sh, sw, pt, pl, dx):
    """One thread per input element ``(n, h, w, c)`` (grid-stride): it gathers ``dout / count`` from every window
    that covers it, so overlapping windows need no atomics."""
    N, H, W, C = dx.shape
    _, Ho, Wo, _ = dout.shape
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c, t = e % C, e // C
        w, t = t % W, t // W
        h, n = t % H, t // H
        total = float32(0)
        for p in range(ph):
            a = h + pt - p
            if a < 0 or a % sh != 0 or a // sh >= Ho:
                continue
            i = a // sh
            for q in range(pw):
                b = w + pl - q
                if b < 0 or b % sw != 0 or b // sw >= Wo:
                    continue
                j = b // sw
                total += dout[n, i, j, c] / float32(window_count(i, j, ph, pw, sh, sw, pt, pl, H, W))
        dx[n, h, w, c] = total


def _out_shape(x_shape, pool, stride, pad):
    N, H, W, C = x_shape
    Ho, Wo = output_size(H, W, pool[0], pool[1], stride, pad)
    return N, Ho, Wo, C


def maxpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C) -> out: (N, Ho, Wo, C), cache (with the int32 argmax offsets)"""
    out = cuda.device_array(_out_shape(x.shape, pool, stride, pad), dtype=np.float32)
    argmax = cuda.device_array(out.shape, dtype=np.int32)
    N, Ho, Wo, C = out.shape
    maxpool_forward_kernel[grid_2d(Wo * C, N * Ho)](x, *pool, *stride, pad[0], pad[2], out, argmax)
    return out, (x.shape, argmax, pool, stride, pad)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)"""
    x_shape, argmax, pool, stride, pad = cache
    dx = cuda.device_array(x_shape, dtype=np.float32)
    N, H, W, C = x_shape
    _, Ho, Wo, _ = dout.shape
    if tuple(pool) == tuple(stride) and not any(pad) and Ho and Wo:  # windows that tile the input: MaxPooling2D(2)
        maxpool_tiled_backward_kernel[grid_2d(Wo * C, N * Ho)](dout, argmax, *pool, dx)
    else:
        maxpool_backward_kernel[grid_2d(W * C, N * H)](dout, argmax, *pool, *stride, pad[0], pad[2], dx)
    return dx


def avgpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C) -> out: (N, Ho, Wo, C), cache"""
    out = cuda.device_array(_out_shape(x.shape, pool, stride, pad), dtype=np.float32)
    avgpool_forward_kernel[grid_1d(out.size)](x, *pool, *stride, pad[0], pad[2], out)
    return out, (x.shape, pool, stride, pad)


def avgpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)"""
    x_shape, pool, stride, pad = cache
    dx = cuda.device_array(x_shape, dtype=np.float32)
    avgpool_backward_kernel[grid_1d(dx.size)](dout, *pool, *stride, pad[0], pad[2], dx)
    return dx
