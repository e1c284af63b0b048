"""Convolution and dense layers on the GPU: both are one GEMM, with im2col / col2im around the convolution.

The same picture as ``im2col.py``, with every step a kernel and every array on the device:

    forward   cols = im2col(x)                 (N*Ho*Wo, kh*kw*C)
              out  = cols @ w + b              one SGEMM, bias (and ReLU) in its epilogue -> (N, Ho, Wo, F)
    backward  dw   = cols^T @ dout             SGEMM 'tn' (split-K: K = N*Ho*Wo is long, dw is small)
              dcols = dout @ w^T               SGEMM 'nt'
              dx   = col2im(dcols)             adds overlapping patches back
              db   = column sums of dout

Channels-last makes the reshapes free: ``w`` (kh, kw, C, F) is already the matrix (kh*kw*C, F), and ``out`` as
(N*Ho*Wo, F) is already (N, Ho, Wo, F). A 1x1 convolution at stride 1 without padding skips im2col: ``x`` is
its own ``cols``.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32

from .cuda_gemm import gemm
from .cuda_launch import NONNEG, grid_2d, kernel
from .cuda_reduce import column_sums
from .shapes import output_size


@kernel
def im2col_kernel(x, kh, kw, sh, sw, pt, pl, Ho, Wo, cols):
    """Block (TX, TY), grid (cdiv(kh*kw*C, TX), G). Thread ``x`` of the grid owns one column of ``cols``, an offset
    (p, q, c) within the patch, decoded once; thread ``y`` walks image rows (n, i), grid-stride, and along each
    row the ``Wo`` outputs j. Consecutive threads take consecutive columns, i.e. consecutive channels: neighbouring
    reads of ``x`` and neighbouring writes of ``cols``. Integer division is slow on a GPU (and 64-bit here), so it
    is done once per column and once per row, never per element. Padding is never stored: it reads as 0."""
    N, H, W, C = x.shape
    patch = cols.shape[1]
    col = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) & NONNEG
    if col >= patch:
        return
    kwc = kw * C
    p, qc = col // kwc, col % kwc
    q, c = qc // C, qc % C
    start = (cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y) & NONNEG
    for ni in range(start, N * Ho, cuda.gridDim.y * cuda.blockDim.y):
        n, i = ni // Ho, ni % Ho
        r = i * sh + p - pt
        row = ni * Wo
        s = q - pl
        inside = r >= 0 and r < H
        for j in range(Wo):
            v = float32(0)
            if inside and s >= 0 and s < W:
                v = x[n, r, s, c]
            cols[row + j, col] = v
            s += sw


@kernel
def col2im_kernel(cols, kh, kw, sh, sw, pt, pl, Ho, Wo, dx):
    """Block (TX, TY), grid (cdiv(W*C, TX), G). Thread ``x`` owns one position (w, c) along an image row, thread
    ``y`` walks the image rows (n, h), grid-stride; each thread *gathers* from every patch that covers its pixel:
    pixel ``h`` sits at offset ``p`` of the patch of output row ``i`` when ``i*sh + p - pt == h``. Each thread
    writes only its own elements, so overlapping patches need no atomics and the sum is always taken in the same
    order. At stride 1 (most layers) no division is needed at all."""
    N, H, W, C = dx.shape
    wc = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) & NONNEG
    if wc >= W * C:
        return
    w, c = wc // C, wc % C
    start = (cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y) & NONNEG
    for nh in range(start, N * H, cuda.gridDim.y * cuda.blockDim.y):
        n, h = nh // H, nh % H
        total = float32(0)
        for p in range(kh):
            a = h + pt - p  # = i * sh, if output row i covers h at offset p
            if a < 0:
                break  # a only decreases with p
            i = a
            if sh != 1:
                if a % sh != 0:
                    continue
                i = a // sh
            if i >= Ho:
                continue
            for q in range(kw):
                b = w + pl - q
                if b < 0:
                    break
                j = b
                if sw != 1:
                    if b % sw != 0:
                        continue
                    j = b // sw
                if j < Wo:
                    total += cols[(n * Ho + i) * Wo + j, (p * kw + q) * C + c]
        dx[n, h, w, c] = total


def im2col(x, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0)):
    """Patches of ``x`` as rows.   x: (N, H, W, C) on the device -> cols: (N*Ho*Wo, kh*kw*C)"""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    cols = cuda.device_array((N * Ho * Wo, kh * kw * C), dtype=np.float32)
    im2col_kernel[grid_2d(cols.shape[1], N * Ho)](x, kh, kw, stride[0], stride[1], pad[0], pad[2], Ho, Wo, cols)
    return cols


def col2im(cols, x_shape, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0)):
    """Sum each row of ``cols`` back onto its patch.   cols: (N*Ho*Wo, kh*kw*C) -> dx: x_shape (N, H, W, C)"""
    N, H, W, C = x_shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    dx = cuda.device_array(tuple(x_shape), dtype=np.float32)
    col2im_kernel[grid_2d(W * C, N * H)](cols, kh, kw, stride[0], stride[1], pad[0], pad[2], Ho, Wo, dx)
    return dx


def _is_pointwise(kh, kw, stride, pad) -> bool:
    return (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pad)


FUSED_ACTIVATIONS = ("relu",)  # applied in the GEMM's epilogue: one kernel launch fewer per layer


def _relu(activation) -> bool:
    """Whether a fused activation is asked for: only ReLU is (``FUSED_ACTIVATIONS``)."""
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"cuda engine: fused activation must be one of {FUSED_ACTIVATIONS}; got {activation!r}")
    return activation == "relu"


def conv2d_forward(x, w, b, stride=(1, 1), pad=(0, 0, 0, 0), activation=None):
    """x: (N, H, W, C), w: (kh, kw, C, F), b: (F,) or None -> out: (N, Ho, Wo, F), cache.
    ``activation='relu'``: out = max(conv + b, 0), in the same GEMM."""
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    if _is_pointwise(kh, kw, stride, pad):
        cols = x.reshape(N * H * W, C)
    else:
        cols = im2col(x, kh, kw, stride, pad)
    out = gemm(cols, w.reshape(kh * kw * C, F), bias=b, relu=_relu(activation))
    return out.reshape(N, Ho, Wo, F), (x.shape, cols, w, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """dout: (N, Ho, Wo, F) -> dx: (N, H, W, C) (None unless ``need_dx``), dw: (kh, kw, C, F), db: (F,)"""
    x_shape, cols, w, stride, pad = cache
    kh, kw, C, F = w.shape
    dout2 = dout.reshape(dout.size // F, F)
    dw = gemm(cols, dout2, trans_a=True).reshape(kh, kw, C, F)
    if not need_dx:
        return None, dw, column_sums(dout2)
    dcols = gemm(dout2, w.reshape(kh * kw * C, F), trans_b=True)
    if _is_pointwise(kh, kw, stride, pad):
        dx = dcols.reshape(*x_shape)
    else:
        dx = col2im(dcols, x_shape, kh, kw, stride, pad)
    return dx, dw, column_sums(dout2)


def dense_forward(x, w, b, activation=None):
    """``out = x @ w + b``, the bias (and ``activation='relu'``) in the GEMM's epilogue.
    x: (N, D), w: (D, M), b: (M,) or None"""
    return gemm(x, w, bias=b, relu=_relu(activation)), (x, w)


def dense_backward(dout, cache, need_dx=True):
    """``dx = dout w^T``, ``dw = x^T dout``, ``db = sum_n dout``.   dout: (N, M) -> dx, dw, db"""
    x, w = cache
    dx = gemm(dout, w, trans_b=True) if need_dx else None
    return dx, gemm(x, dout, trans_a=True), column_sums(dout)
