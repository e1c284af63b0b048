"""The default CPU engine: Numba-compiled im2col, col2im, pooling and ReLU, BLAS for the matrix products.

Same signatures and the same maths as ``reference.py`` and ``im2col.py``; what changes is how much is built at
once and how the loops run:

* convolution runs im2col + GEMM on blocks of images small enough for ``cols`` to stay in the cache, adds the
  bias and applies ReLU to each block as it comes out of the GEMM, and keeps ``x`` rather than ``cols`` for the
  backward pass; short patches (1 or 3 channels) build ``cols`` tap by tap, and keep them when they are small;
  wide 3x3 layers at stride 1 run Winograd's algorithm instead (``winograd.py``, 2x2 or 4x4 output tiles):
  forward, dw and, for 'same' layers, dx; where dx would go by col2im and most of dout is zero (behind a max
  pooling), dw and dx skip the zeros (``sparse.py``);
* narrow products (few output columns, or few outputs: first layers, a last Dense layer) run in pieces small
  enough for OpenBLAS's small-matrix kernels, which skip copying A and B into packed panels (``products``);
* big outputs and gradients come from a pool of reused buffers (``buffers.py``), not fresh pages every step;
* ``@njit`` compiles each loop nest to machine code (``cache=True`` keeps the compiled code on disk, so a second
  process does not compile again; ``nogil=True`` lets other threads run Python meanwhile, as the slices of
  ``minicnn.parallel`` do);
* ``prange`` marks the outermost loop that may be split over the cores: each iteration writes its own rows
  (pooling forward) or its own image (col2im, pooling backward), so no two threads ever add to the same element
  and no locks are needed. By default the loops run on one thread and the cores go to BLAS (see ``PARALLEL``);
* in im2col, col2im and pooling, padding is never materialised: an index that falls in the padding is skipped
  (or, in im2col, written as a zero).
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange, uint64

from . import activations as act
from . import buffers, sparse, winograd
from .shapes import output_size

# Who gets the cores: BLAS's threads (the GEMMs, most of the arithmetic) or Numba's (the loops around them)?
# Both pools keep their threads spinning for a while after each call, so when both run with every core they fight:
# on 2 cores a training step of the MNIST model took 91 ms with both pools at 2 threads, 33 ms with BLAS at 2 and
# these loops on one thread (34 ms the other way round). So by default the loops here run on one thread;
# MINICNN_NUMBA_PARALLEL=1 (read at import) makes them parallel, for machines where that measures faster. The
# third way, threads that each run a slice of the batch through every layer, lives above the engine: minicnn.parallel.
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
@njit(cache=True, parallel=PARALLEL, nogil=True)
def _col2im(cols, kh, kw, sh, sw, pt, pl, Ho, Wo, dx):
    N, H, W, C = dx.shape
    run = kw * C  # as in _im2col: one kernel row of a patch is kw*C contiguous numbers of dx
    dxr = dx.reshape(N, H, W * C)
    for n in prange(N):  # one image per iteration: overlapping patches of one image stay in one thread
        for i in range(Ho):
            for j in range(Wo):
                row = cols[(n * Ho + i) * Wo + j]
                s0 = j * sw - pl
                for p in range(kh):
                    r = i * sh + p - pt
                    if r < 0 or r >= H:  # a padding row: nothing to add back
                        continue
                    src = row[p * run : (p + 1) * run]
                    if 0 <= s0 and s0 + kw <= W:
                        dst = dxr[n, r, s0 * C : s0 * C + run]
                        for k in range(run):
                            dst[k] += src[k]
                    else:
                        for q in range(kw):
                            s = s0 + q
                            if 0 <= s < W:
                                for c in range(C):
                                    dxr[n, r, s * C + c] += src[q * C + c]


@njit(cache=True, nogil=True)
def _im2col(x, kh, kw, sh, sw, pt, pl, Ho, Wo, cols):
    N, H, W, C = x.shape
    run = kw * C  # one kernel row of a patch: kw pixels of C channels, contiguous in x when it lies inside
    xr = x.reshape(N, H, W * C)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                row = cols[(n * Ho + i) * Wo + j]
                s0 = j * sw - pl  # first input column of this patch
                for p in range(kh):
                    r = i * sh + p - pt
                    dst = row[p * run : (p + 1) * run]
                    if r < 0 or r >= H:  # a padding row
                        dst[:] = 0
                    elif 0 <= s0 and s0 + kw <= W:  # inside: one contiguous copy of kw*C numbers
                        src = xr[n, r, s0 * C : s0 * C + run]
                        for k in range(run):
                            dst[k] = src[k]
                    else:  # across the left or right edge: pixel by pixel, zeros in the padding
                        for q in range(kw):
                            s = s0 + q
                            for c in range(C):
                                dst[q * C + c] = xr[n, r, s * C + c] if 0 <= s < W else 0


def im2col(x, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0), out=None):
    """As ``im2col.im2col``, x: (N, H, W, C) -> cols: (N*Ho*Wo, kh*kw*C), compiled: each kernel row of a patch is
    one run of kw*C contiguous numbers, and padding is written as zeros rather than materialised (NumPy's version
    pads a copy of the input first, then copies again through a strided view: 2.5x slower on C=32 blocks)."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    cols = np.empty((N * Ho * Wo, kh * kw * C), x.dtype) if out is None else out.reshape(N * Ho * Wo, kh * kw * C)
    _im2col(np.ascontiguousarray(x), kh, kw, stride[0], stride[1], pad[0], pad[2], Ho, Wo, cols)
    return cols


@njit(cache=True, nogil=True)
def _im2col_taps(x, kh, kw, sh, sw, pt, pl, Ho, Wo, taps):
    N, H, W, C = x.shape
    xf, out = x.reshape(-1), taps.reshape(-1)
    # Flat indices, made unsigned (uint64) where they are used: a signed index gets a check for negative values
    # (Python's wraparound) at every access, which keeps the compiler from vectorising the copy (2-4x slower here).
    step = sw * C  # from one output column to the next, in x
    o = 0  # where the next row of taps starts: tap (p, q), channel c, image n, output row i; Wo numbers
    for p in range(kh):
        for q in range(kw):
            # the output columns j whose input column j*sw + q - pl lies inside the image: [j0, j1)
            j0 = min(Wo, max(0, -((q - pl) // sw)))
            j1 = max(j0, min(Wo, (W - 1 - q + pl) // sw + 1))
            for c in range(C):
                for n in range(N):
                    for i in range(Ho):
                        r = i * sh + p - pt
                        if r < 0 or r >= H:  # a padding row
                            for j in range(Wo):
                                out[uint64(o + j)] = 0
                        else:
                            src = ((n * H + r) * W + q - pl) * C + c  # x's index for j = 0 (may be in the padding)
                            for j in range(j0):
                                out[uint64(o + j)] = 0
                            if step == 1:  # one channel at stride 1: a contiguous run
                                for j in range(j0, j1):
                                    out[uint64(o + j)] = xf[uint64(src + j)]
                            else:
                                for j in range(j0, j1):
                                    out[uint64(o + j)] = xf[uint64(src + j * step)]
                            for j in range(j1, Wo):
                                out[uint64(o + j)] = 0
                        o += Wo


def im2col_taps(x, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0), out=None):
    """As ``im2col.im2col_taps``, x: (N, H, W, C) -> (kh*kw*C, N*Ho*Wo), the transpose of im2col, compiled.
    NumPy's kh*kw strided copies held the GIL for most of their time here, and the other slice's thread waited for
    them: two threads each copying the MNIST model's first layer's taps at batch 32 took 1.5-2.5x one thread's
    time. This loop nest lets go of it, and ran in 53 against 84 us (32x32x3 images, batch 64: 0.74 against 0.96
    ms)."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    shape = (kh * kw * C, N * Ho * Wo)
    taps = np.empty(shape, x.dtype) if out is None else out.reshape(shape)
    _im2col_taps(np.ascontiguousarray(x), kh, kw, stride[0], stride[1], pad[0], pad[2], Ho, Wo, taps)
    return taps


def col2im(cols, x_shape, kh, kw, stride=(1, 1), pad=(0, 0, 0, 0)):
    """cols: (N*Ho*Wo, kh*kw*C) -> dx: x_shape, each row added back onto its patch."""
    N, H, W, C = x_shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    dx = buffers.zeros(x_shape, cols.dtype)
    _col2im(np.ascontiguousarray(cols), kh, kw, stride[0], stride[1], pad[0], pad[2], Ho, Wo, dx)
    return dx


# ---------------------------------------------------------------------------------------------------- convolution
# im2col + GEMM, a block of images at a time. Done for the whole batch at once (im2col.py), ``cols`` is 9x the
# input: 144 MiB for the CIFAR model's second conv at batch 128. It spills out of every cache, so im2col writes it
# to memory, the GEMM reads it back, and it stays alive until the backward pass. A block whose ``cols`` is about
# CHUNK_BYTES stays in the L2/L3 cache between the copy and the product (measured on one thread, forward and
# backward of that layer: 2-4 MiB blocks 150 ms, 19 MiB blocks 220 ms; whole training steps, interleaved, on this
# machine's 1 MiB L2: 2 MiB blocks 3-13% faster than 4 MiB); the backward pass rebuilds each block's ``cols``
# from ``x``, which costs less than keeping it.
CHUNK_BYTES = 2 << 20


def _blocks(N: int, rows_per_image: int, row_bytes: int):
    """Image ranges [s, e) whose cols, ``rows_per_image * row_bytes`` per image, take at most about CHUNK_BYTES,
    as even as can be: R's 32->64 layer at batch 32 runs blocks of 11, 11 and 10 images rather than 15, 15 and
    a short 2, whose GEMMs run slower (forward and backward, one thread: 8.1 against 8.3 ms)."""
    per_block = max(1, CHUNK_BYTES // (rows_per_image * row_bytes))
    k = -(-N // per_block)  # as many blocks as full ones would need
    size, bigger = divmod(N, k)
    s = 0
    for i in range(k):
        e = s + size + (i < bigger)  # the bigger blocks first: the pooled buffers of one then fit the next
        yield s, e
        s = e


# A first layer sees 1 or 3 channels: its patch is only 9 or 27 numbers long, and im2col then copies a few floats
# at a time (1.4 ms for the 1.5 MB cols of the MNIST model's first layer). Up to SHORT_PATCH numbers per patch the
# engine builds the transpose instead, one row per kernel tap (``im2col_taps``, compiled; im2col.im2col_taps in
# NumPy: kh*kw big strided copies, 0.2 ms there), which BLAS reads as a transposed matrix at no cost.
SHORT_PATCH = 32


# A short patch's taps for the whole batch, when they take at most KEEP_TAPS_BYTES (the first layers of S and R at
# their training batches: 0.8 and 1.7 MB), are built once, with a row of ones under them, and kept from the forward
# pass for the backward. There dw and db come from one product: [dw; db] = [taps; ones] @ dout (db = ones @ dout,
# the column sums) rather than building the taps again and reading dout once more for db. S's training step, one
# thread, in turn (30 rounds of 50): 1.86 against 2.07 ms (10th percentiles 1.50 against 1.67); R's, 16.5 against
# 17.3 ms (10th percentiles level). The price is the kept buffer: under 2 MB a layer.
KEEP_TAPS_BYTES = 2 << 20


def _taps_and_ones(x, kh, kw, stride, pad):
    """[taps; ones]: (kh*kw*C + 1, N*Ho*Wo), the whole batch's taps (``im2col_taps``) and a last row of ones, in a
    pooled buffer."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    K, rows = kh * kw * C, N * Ho * Wo
    taps = buffers.empty((K + 1, rows), x.dtype)
    im2col_taps(x, kh, kw, stride, pad, out=taps[:K])
    taps[K] = 1
    return taps


def _cols(x, kh, kw, stride, pad):
    """cols (rows, kh*kw*C) of a block of images, in a pooled buffer: im2col, or for short patches the transposed
    view of im2col_taps."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    buf = buffers.empty((N * Ho * Wo * kh * kw * C,), x.dtype)
    if kh * kw * C <= SHORT_PATCH:
        return im2col_taps(x, kh, kw, stride, pad, out=buf).T
    return im2col(x, kh, kw, stride, pad, out=buf)


# The epilogue: bias and activation applied to a block of output rows right after its GEMM, while the block is
# still in cache, in one compiled pass, rather than two more passes over the whole output from memory. Only ReLU
# (the common case) is fused; its derivative needs only y, which is what the layer keeps.
FUSED_ACTIVATIONS = ("relu",)


@njit(cache=True, nogil=True)
def _bias_act(z, b, relu):
    """z: (rows, F) <- z + b (b: (F,), or empty for no bias), then max(., 0) if ``relu``; in place."""
    rows, F = z.shape
    has_bias = b.size > 0
    for r in range(rows):
        zr = z[r]
        for f in range(F):
            v = zr[f] + b[f] if has_bias else zr[f]
            zr[f] = (v if v > 0 else 0) if relu else v


def _check_fused(activation):
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"cpu engine: fused activation must be one of {FUSED_ACTIVATIONS}; got {activation!r}")


def _epilogue(block, b, activation):
    _check_fused(activation)
    if b is None and activation != "relu":
        return
    bias = np.zeros(0, block.dtype) if b is None else np.asarray(b, block.dtype)
    _bias_act(block, bias, activation == "relu")


# 3x3 kernels at stride 1 go through Winograd's algorithm (winograd.py) when both channel counts are at least
# WINOGRAD_MIN_CHANNELS: its GEMMs are only C deep, and BLAS runs those too slowly below 32 (forward, one thread,
# im2col against F(2x2, 3x3): C=F=16 8.4 against 10.4 ms; C=F=32 50 against 42; C=F=64 40 against 23 at 16x16).
# And when its tiles, which may hang over the map's edge, take at most WINOGRAD_MAX_PRODUCTS products per output
# (im2col's direct convolution takes 9): F(2x2, 3x3) at 4 products per output (16x16 maps, 6x6) ran faster than
# im2col; on the MNIST model's 11x11 layer, 36 tiles of 16 products for 121 outputs, 4.8 each, its training steps
# were 3-6% slower. Of the two tile sizes the engine takes the one with fewer products, F(2x2, 3x3) on a tie
# (cheaper transforms, less rounding; at 6x6 both take 4, and F(2x2, 3x3)'s forward ran 2.2 against 2.7 ms).
#
# F(4x4, 3x3) against the rule before it (F(2x2, 3x3) from 16x16 up, else im2col), whole steps in one process,
# alternating, one thread: the CIFAR model's training step 274-280 against 304 ms (two threads 154-163 against
# 179), its inference at batch 256 183-186 against 239; the MNIST model's 11x11 layer, now F(4x4, 3x3) at 2.7
# products per output, made inference 13-20% faster and its training step level (a forward pass 1 ms faster, a
# dw no faster than im2col's). dx of a 'valid' layer stays with col2im: as a Winograd convolution of the padded
# dout it was slower (that layer: 7.0 against 5.2 ms at batch 64).
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MAX_PRODUCTS = 4.0


def winograd_products(m: int, Ho: int, Wo: int) -> float:
    """Products per output pixel (and channel pair) of F(m x m, 3x3) on an Ho x Wo output, tiles over the edge
    included; the direct convolution's is 9."""
    th, tw = winograd.tiles(Ho, Wo, m)
    return th * tw * (m + 2) ** 2 / (Ho * Wo)


def winograd_tile(C, F, kh, kw, stride, Ho, Wo) -> int:
    """The output tile size m of the Winograd algorithm that runs a convolution with C input and F output
    channels and (Ho, Wo) outputs: 2 or 4, or 0 for none (im2col)."""
    if (kh, kw) != (3, 3) or tuple(stride) != (1, 1) or min(C, F) < WINOGRAD_MIN_CHANNELS:
        return 0
    m = min((2, 4), key=lambda m: winograd_products(m, Ho, Wo))  # the first of equals: 2
    return m if winograd_products(m, Ho, Wo) <= WINOGRAD_MAX_PRODUCTS else 0


def conv2d_forward(x, w, b, stride=(1, 1), pad=(0, 0, 0, 0), activation=None):
    """x: (N, H, W, C), w: (kh, kw, C, F), b: (F,) or None -> out: (N, Ho, Wo, F), cache.

    Per block of images: cols = im2col(block) (rows, kh*kw*C), then the GEMM straight into ``out``'s rows (in
    slices, for 32 filters or fewer: ``product_by_rows``), and the bias (and ``activation='relu'``, if asked)
    applied while those rows are still in cache. The cache keeps ``x``, not ``cols``; a short patch's taps that fit
    KEEP_TAPS_BYTES are built in one block and kept too. A wide 3x3 layer at stride 1 runs Winograd's algorithm
    instead (``winograd_tile``).
    """
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    _check_fused(activation)
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    m = winograd_tile(C, F, kh, kw, stride, Ho, Wo)
    if m:
        return winograd.conv3x3(x, w, b, pad, relu=activation == "relu", m=m), (x, w, stride, pad)
    P = Ho * Wo  # output pixels (GEMM rows) per image
    out = buffers.empty((N, Ho, Wo, F), np.result_type(x.dtype, w.dtype))
    w2, rows = w.reshape(-1, F), out.reshape(N * P, F)
    K = kh * kw * C

    def epilogue(block):  # on rows of out that the GEMM has just written
        _epilogue(block, b, activation)

    if K <= SHORT_PATCH and (K + 1) * N * P * x.itemsize <= KEEP_TAPS_BYTES:  # one block, kept for the backward
        taps = _taps_and_ones(x, kh, kw, stride, pad)
        product_by_rows(taps[:K].T, w2, rows, epilogue)
        return out, (x, w, stride, pad, taps)
    for s, e in _blocks(N, P, K * x.itemsize):
        product_by_rows(_cols(x[s:e], kh, kw, stride, pad), w2, rows[s * P : e * P], epilogue)
    return out, (x, w, stride, pad)


# Behind a max pooling most of dout is zero (2x2 windows: at most one number in four; the MNIST model's 11x11 layer,
# ReLU included: 13-16% while it trains). Where dx would go by im2col + col2im, the backward that skips the zeros
# (sparse.py) runs when at most SPARSE_MAX_DENSITY of dout is nonzero: that layer at batch 64, one thread, 4.2-5.1
# against 7.8-9.7 ms (30% nonzero at random places: about level). The Winograd layers keep Winograd: on the CIFAR
# model's 32x32 layer behind its pooling (21% nonzero) the sparse pass took 45 against 38 ms, on its 16x16 one 35
# against 25. Few input channels make its rows (kw*C numbers) too short to pay: 28x28 maps into 32 filters at batch
# 64, 21% nonzero, took 15.7 against 13.0 ms with C = 8, 14.0 against 14.6 with C = 16. (Those on the first
# development machine.) The limits still hold for the kernel that adds four g a pass, on the 2-core Xeon VM, one
# thread, medians of 30 calls, three in turn, random dout: the 11x11 layer at 15% nonzero 3.34-3.42 against
# 5.27-5.33 ms, 25% 4.86-4.91 against 5.30-5.35, 35% 6.43-6.50 against 5.28-5.32; the 28x28 maps with C = 8 8.2
# against 6.1, with C = 16 9.3 against 10.4; the CIFAR model's 32x32 and 16x16 layers at batch 128 (dout from
# training, 16% and 13% nonzero) 38.2 and 25.4 against Winograd's 37.6 and 22.9.
SPARSE_MAX_DENSITY = 0.25
SPARSE_MIN_CHANNELS = 16


def conv2d_backward(dout, cache, need_dx=True, nonzero=None, db=None):
    """dout: (N, Ho, Wo, F) -> dx: (N, H, W, C) (None unless ``need_dx``), dw: (kh, kw, C, F), db: (F,).

    ``nonzero`` (dout's nonzero fraction) and ``db``, where the caller knows them already, are not computed again.
    """
    x, w, stride, pad = cache[:4]
    dtype = np.result_type(dout.dtype, x.dtype, w.dtype)
    dout = np.ascontiguousarray(dout, dtype)
    if len(cache) == 5 and not need_dx and cache[4].dtype == dtype:  # the forward pass kept [taps; ones]
        dwdb = small_product(cache[4], dout.reshape(-1, dout.shape[3]))  # (K + 1, F): [dw; db]
        return None, dwdb[:-1].reshape(w.shape), dwdb[-1]
    x, w = np.ascontiguousarray(x, dtype), np.asarray(w, dtype)
    d2 = dout.reshape(-1, dout.shape[3])
    kh, kw, C, F = w.shape
    (H, W), (Ho, Wo) = x.shape[1:3], dout.shape[1:3]
    dx_is_a_conv = need_dx and _dx_is_a_convolution(x.shape, w.shape, dout.shape, stride, pad)
    dx_tile = winograd_tile(F, C, kh, kw, stride, H, W) if dx_is_a_conv else 0  # dout's F channels into C
    dx_by_col2im = need_dx and not dx_is_a_conv
    # dw as the forward pass, except when dx goes by col2im: then dw joins that pass over the blocks, whose cols
    # serve dw before their buffer takes dcols (R's 11x11 layer: training steps level with dw by F(4x4, 3x3), and
    # the pool keeps no Winograd buffers for dw)
    dw_tile = 0 if dx_by_col2im else winograd_tile(C, F, kh, kw, stride, Ho, Wo)
    if (
        dx_by_col2im
        and C >= SPARSE_MIN_CHANNELS
        and (sparse.nonzero_fraction(dout) if nonzero is None else nonzero) <= SPARSE_MAX_DENSITY
    ):
        dw, dx = sparse.conv2d_dw_dx(x, dout, w, stride, pad)  # most of dout is zero: skip the zeros
    elif dx_is_a_conv and not dx_tile:
        dx, dw = _conv_dx_dw(x, dout, w, pad)  # one im2col of dout gives both
    else:  # each of dw and dx by Winograd where it fits, the rest by im2col in one pass over the blocks
        dw, dx = _conv_dw_dx(x, dout, w, stride, pad, not dw_tile, dx_by_col2im)
        if dw_tile:
            dw = winograd.conv3x3_dw(x, dout, pad, m=dw_tile)
        if dx_tile:
            dx = winograd.conv3x3(dout, _rotated(w), None, _full_pad(kh, kw, pad), m=dx_tile)
    # db = dout summed over every pixel, written as a GEMV, ones @ dout: NumPy's column sum of a tall matrix with
    # few columns runs ~10x slower than BLAS does this. np.dot, not @: see ``small_product``.
    return dx, dw, (small_product(np.ones(len(d2), dtype), d2) if db is None else db)


# ---------------------------------------------------------------------------------------------------- products
# OpenBLAS's AVX-512 build (its SkylakeX kernels, as on the 2-core Xeon VM) computes a product of at most
# SMALL_GEMM_MACS multiply-adds with its "small matrix" kernels, which read A and B where they lie; a bigger product
# is first copied ("packed") into cache-sized panels. Packing pays when each panel serves a wide output; the
# engine's narrow products have few output columns (a first layer's 16-32 filters, a last Dense layer's 10 units)
# or few outputs in all (a first layer's dw), and there the copies cost more than the arithmetic. Cut into pieces
# that each stay under the threshold, they ran faster. One thread, medians of rounds in turn, pieces against whole:
# * products: S's Dense forward, (32, 10816) @ (10816, 10), 0.12 against 0.21 ms, and its dw, (10816, 32) @
#   (32, 10), 0.13 against 0.19; R's first layer's dw and db, (10, 43264) @ (43264, 32), 0.43 against 0.72;
# * first layers, forward (taps, GEMM, epilogue) / backward (dw, db): S's at 32 0.26 / 0.17 against 0.30 / 0.18
#   ms; R's at 64 0.64 / 0.51 against 0.93 / 0.75; C's (27 taps) at 128 4.3 / 5.8 against 4.9 / 5.9; a 16->32
#   layer by im2col (the demo model's, 15x15 at 32) 0.57 against 0.64 forward;
# * whole training steps: S's 1.25 against 1.39 ms, R's 10.3 against 10.8, C's level (149 ms).
# Wider products ran slower in pieces: im2col's (1820, 288) @ (288, 64) 0.89 against 0.70 ms, a Dense layer's
# (64, 1600) @ (1600, 64) 0.17 against 0.14, and S's dx, (32, 10) @ (10, 10816), 0.15 against 0.13. So two cuts,
# for the two kinds of narrow product:
# * ``product_by_rows``, an output of at most NARROW_COLUMNS columns: slices of its rows, each number summed as it
#   would be whole; an epilogue (bias, ReLU) then runs on each slice while the GEMM's output is still in cache;
# * ``small_product``, at most SMALL_OUTPUT numbers out: pieces of the sum, added up (the same terms in another
#   order).
# Where BLAS has no such kernels (OpenBLAS's Haswell and Zen ones), a piece is an ordinary product: the cost is a
# few microseconds of calls.
SMALL_GEMM_MACS = 1_000_000
NARROW_COLUMNS = 32
SMALL_OUTPUT = 2048


def _pieces(n: int, per: int) -> list[tuple[int, int]]:
    """[s, e) ranges covering range(n), as even as can be, each at most ``per`` long (at least one long)."""
    k = -(-n // max(1, per))
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def product_by_rows(a, b, out, epilogue=None):
    """out = a @ b, (M, N), in slices of rows that each take at most SMALL_GEMM_MACS multiply-adds when N is at most
    NARROW_COLUMNS (else whole); ``epilogue(rows)`` on each slice as it comes."""
    M, K = a.shape
    N = b.shape[1]
    per = SMALL_GEMM_MACS // max(1, K * N) if N <= NARROW_COLUMNS else M
    for s, e in _pieces(M, per):
        np.matmul(a[s:e], b, out=out[s:e])
        if epilogue is not None:
            epilogue(out[s:e])
    return out


# NumPy's matmul (``@``) lets other threads run Python during its product only when the product has at least 500
# outputs (numpy's threshold for releasing the GIL): a deep product with few outputs holds the GIL all the way
# through. Here that is db (F outputs) and a first layer's dw (9 x 32 in the MNIST model, 0.4 ms at batch 32), and
# the other slice's thread waits for them (two threads each running (9, 21632) @ (21632, 32): 2.1x one thread's
# time; 16 rows instead of 9: 1.0x). np.dot releases it whatever the size.
def small_product(a, b):
    """a @ b, for products with few outputs and a long sum, without holding the GIL; when a is a matrix and the
    output has at most SMALL_OUTPUT numbers, in pieces of the sum of at most SMALL_GEMM_MACS multiply-adds."""
    if a.ndim == 2 and a.shape[0] * b.shape[1] <= SMALL_OUTPUT:
        (s, e), *rest = _pieces(a.shape[1], SMALL_GEMM_MACS // max(1, a.shape[0] * b.shape[1]))
        out = np.dot(a[:, s:e], b[s:e])
        for s, e in rest:
            out += np.dot(a[:, s:e], b[s:e])
        return out
    return np.dot(a, b)


def _conv_dw_dx(x, dout, w, stride, pad, need_dw=True, need_dx=True):
    """dw = cols^T @ dout and dx by dcols = dout @ w^T and col2im, each if asked (else None), block by block: each
    block's cols is rebuilt from x, gives dw, and its buffer then takes dcols, while the block's dout is still in
    cache (R's 32->64 layer: 3% less time than the two in separate passes over the batch).

    For a short patch, cols^T is the tap-by-tap copy itself, (kh*kw*C, rows) and contiguous: on one thread the
    first layers' dw took 10-13% less time this way (C's conv1: 9.8-10.3 against 11.3-11.4 ms) than as the
    transposed product dout^T @ cols, and R's 32->64 layer, whose cols come from im2col, took as long. That cols
    is a transposed view, so dcols then takes a pooled buffer of its own, as it does when dw is not asked."""
    N = x.shape[0]
    kh, kw, C, F = w.shape
    Ho, Wo = dout.shape[1:3]
    P, K = Ho * Wo, kh * kw * C
    d2, w2t = dout.reshape(N * P, F), w.reshape(K, F).T
    dw = np.zeros((K, F), dout.dtype) if need_dw else None
    dx = buffers.zeros(x.shape, dout.dtype) if need_dx else None
    if not (need_dw or need_dx):
        return dw, dx
    for s, e in _blocks(N, P, K * x.itemsize):
        d = d2[s * P : e * P]
        cols = _cols(x[s:e], kh, kw, stride, pad) if need_dw else None
        if need_dw:
            dw += small_product(cols.T, d)  # (K, F): 288 numbers in a first 3x3 layer of 32 filters
        if need_dx:
            reuse = cols is not None and cols.flags.c_contiguous
            dcols = cols if reuse else buffers.empty((len(d), K), dout.dtype)
            np.matmul(d, w2t, out=dcols)
            _col2im(dcols, kh, kw, stride[0], stride[1], pad[0], pad[2], Ho, Wo, dx[s:e])
            del dcols
        del cols  # its pooled buffer is free again for the next block
    return (dw.reshape(w.shape) if need_dw else None), dx


def _full_pad(kh, kw, pad):
    """The padding that turns dx into a convolution of dout: ``k - 1 - pad`` on each side."""
    return (kh - 1 - pad[0], kh - 1 - pad[1], kw - 1 - pad[2], kw - 1 - pad[3])


def _rotated(w):
    """The kernel of dx as a convolution of dout: w turned by 180 degrees, in and out channels swapped."""
    return np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))


def _dx_is_a_convolution(x_shape, w_shape, dout_shape, stride, pad):
    """At stride 1 the gradient of a convolution is itself a convolution: each input pixel received ``w[p, q]``
    times the outputs around it, so ``dx`` = dout, padded by ``k - 1 - pad`` on each side, convolved with the kernel
    rotated by 180 degrees and its in/out channels swapped, ``w[::-1, ::-1].transpose(0, 1, 3, 2)``. That runs
    through the same blocked im2col + GEMM as the forward pass and has no scattered adds. Used when it pays:

    * 'same' padding only: a 'valid' layer's dx has more pixels than its dout (13x13 against 11x11 in the MNIST
      model), and the padded convolution then costs 40% more arithmetic than dcols + col2im (measured slower);
    * C >= 8: that GEMM's output is C columns wide, too narrow for BLAS below (C = 3: 18 ms against 8.5).
    """
    kh, kw, C, _ = w_shape
    same = x_shape[1] * x_shape[2] <= 1.1 * dout_shape[1] * dout_shape[2]
    return tuple(stride) == (1, 1) and min(_full_pad(kh, kw, pad)) >= 0 and same and C >= 8


def _conv_dx_dw(x, dout, w, pad):
    """dx and dw from one im2col, of dout, when dx is a convolution (see ``_dx_is_a_convolution``).

    dcols = im2col(dout padded by k - 1 - pad) has one row per input pixel m and a column for each tap (p', q')
    and filter f. Row m against the rotated kernel gives dx; and the same numbers, dout at the output that saw
    pixel m through tap (p, q) = (kh-1-p', kw-1-q'), are what dw pairs with x[m]:

        dx = dcols @ w_rot                       (rows, kh*kw*F) @ (kh*kw*F, C)
        dw[p, q, c, f] = (x^T @ dcols)[c, (kh-1-p, kw-1-q, f)]

    so the backward pass copies dout into patches once, not dout and x each once.
    """
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    full = _full_pad(kh, kw, pad)
    w_rot = _rotated(w).reshape(kh * kw * F, C)
    dx = buffers.empty(x.shape, dout.dtype)
    x2, dx2 = x.reshape(-1, C), dx.reshape(-1, C)
    dw_rot = np.zeros((C, kh * kw * F), dout.dtype)
    P = H * W  # dx's pixels per image: the rows of dcols
    for s, e in _blocks(N, P, kh * kw * F * dout.itemsize):
        dcols = _cols(dout[s:e], kh, kw, (1, 1), full)
        np.matmul(dcols, w_rot, out=dx2[s * P : e * P])
        dw_rot += x2[s * P : e * P].T @ dcols
    dw = dw_rot.reshape(C, kh, kw, F)[:, ::-1, ::-1].transpose(1, 2, 0, 3)
    return dx, np.ascontiguousarray(dw)


# ---------------------------------------------------------------------------------------------------- pooling
@njit(cache=True, parallel=PARALLEL, nogil=True, error_model="numpy")
def _maxpool_forward(x, ph, pw, sh, sw, pt, pl, out, argmax):
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    for ni in prange(N * Ho):  # each iteration writes its own output row
        n, i = ni // Ho, ni % Ho
        r0, r1 = max(i * sh - pt, 0), min(i * sh - pt + ph, H)
        for j in range(Wo):
            s0, s1 = max(j * sw - pl, 0), min(j * sw - pl + pw, W)
            best, where, first = out[n, i, j], argmax[n, i, j], x[n, r0, s0]  # (C,) views
            # The window's first element starts as the winner; a strict '>' then keeps the first maximum (in
            # row-major window order) on ties. Written as selects over a contiguous channel run, it vectorises.
            for c in range(C):
                best[c] = first[c]
                where[c] = r0 * W + s0
            for r in range(r0, r1):
                for s in range(s0, s1):
                    v = x[n, r, s]
                    at = r * W + s  # the winner's flat index in the (H*W) plane
                    for c in range(C):
                        better = v[c] > best[c]
                        best[c] = v[c] if better else best[c]
                        where[c] = at if better else where[c]


@njit(cache=True, parallel=PARALLEL, nogil=True, error_model="numpy")
def _maxpool2x2_forward(x, out, argmax):
    """The common case, MaxPooling2D(2) without padding, unrolled: the window's four (C,) runs are compared in
    registers, the first maximum kept on ties (a strict '>', in row-major order). Measured 2.5-4x faster than
    the general loop, which keeps its running maximum in memory."""
    N, H, W, C = x.shape
    _, Ho, Wo, _ = out.shape
    for ni in prange(N * Ho):
        n, i = ni // Ho, ni % Ho
        r = 2 * i
        for j in range(Wo):
            s = 2 * j
            a, b, c_, d = x[n, r, s], x[n, r, s + 1], x[n, r + 1, s], x[n, r + 1, s + 1]
            best, where, at = out[n, i, j], argmax[n, i, j], r * W + s
            for c in range(C):
                m, k = a[c], at
                if b[c] > m:
                    m, k = b[c], at + 1
                if c_[c] > m:
                    m, k = c_[c], at + W
                if d[c] > m:
                    m, k = d[c], at + W + 1
                best[c] = m
                where[c] = k


@njit(cache=True, parallel=PARALLEL, nogil=True, error_model="numpy")
def _maxpool_backward(dout, argmax, dx):
    N, Ho, Wo, C = dout.shape
    plane = dx.reshape(N, -1, C)  # (N, H*W, C): argmax indexes its middle axis directly, no division needed
    for n in prange(N):  # one image per iteration: overlapping windows add into one thread's image only
        plane[n] = 0
        for i in range(Ho):
            for j in range(Wo):
                for c in range(C):
                    plane[n, argmax[n, i, j, c], c] += dout[n, i, j, c]


@njit(cache=True, parallel=PARALLEL, nogil=True, error_model="numpy")
def _maxpool2x2_backward(dout, argmax, dx):
    """MaxPooling2D(2)'s backward: the windows do not overlap, so each element of dx is written once, the
    gradient where its window's winner was and a zero elsewhere, with no zero fill first (0.44-0.48 against
    0.60-0.63 ms for the general loop on the MNIST model's first pooling, one thread). One loop per element of
    the window, each writing a single (C,) run: with the four writes in one loop, which the compiler must assume
    may alias, it stayed scalar (4x slower). An odd last row or column of dx belongs to no window: zeros."""
    N, Ho, Wo, C = dout.shape
    W = dx.shape[2]
    for n in prange(N):
        dx[n, 2 * Ho :] = 0
        dx[n, :, 2 * Wo :] = 0
        for i in range(Ho):
            r = 2 * i
            for j in range(Wo):
                s = 2 * j
                at = r * W + s  # the flat index of the window's top-left element, as argmax records it
                g, k = dout[n, i, j], argmax[n, i, j]
                tl, tr, bl, br = dx[n, r, s], dx[n, r, s + 1], dx[n, r + 1, s], dx[n, r + 1, s + 1]  # (C,) views
                for c in range(C):
                    tl[c] = g[c] if k[c] == at else 0
                for c in range(C):
                    tr[c] = g[c] if k[c] == at + 1 else 0
                for c in range(C):
                    bl[c] = g[c] if k[c] == at + W else 0
                for c in range(C):
                    br[c] = g[c] if k[c] == at + W + 1 else 0


def _is_2x2(pool, stride, pad) -> bool:
    """MaxPooling2D(2) without padding: the case with its own unrolled kernels."""
    return tuple(pool) == (2, 2) and tuple(stride) == (2, 2) and not any(pad)


def maxpool2d_forward(x, pool=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C) -> out: (N, Ho, Wo, C); the winner of each window is recorded once, as a flat index."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, W, pool[0], pool[1], stride, pad)
    out = buffers.empty((N, Ho, Wo, C), x.dtype)
    argmax = buffers.empty((N, Ho, Wo, C), np.int32)
    two_by_two = _is_2x2(pool, stride, pad)
    if two_by_two:
        _maxpool2x2_forward(np.ascontiguousarray(x), out, argmax)
    else:
        _maxpool_forward(np.ascontiguousarray(x), pool[0], pool[1], stride[0], stride[1], pad[0], pad[2], out, argmax)
    return out, (x.shape, argmax, two_by_two)


def maxpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)"""
    x_shape, argmax, two_by_two = cache
    dx = buffers.empty(x_shape, dout.dtype)
    if two_by_two:
        _maxpool2x2_backward(np.ascontiguousarray(dout), argmax, dx)
    else:
        _maxpool_backward(np.ascontiguousarray(dout), argmax, dx)
    return dx


@njit(cache=True, parallel=PARALLEL, nogil=True)
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


@njit(cache=True, parallel=PARALLEL, nogil=True)
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
    out = buffers.empty((N, Ho, Wo, C), x.dtype)
    _avgpool_forward(np.ascontiguousarray(x), pool[0], pool[1], stride[0], stride[1], pad[0], pad[2], out)
    return out, (x.shape, pool, stride, pad)


def avgpool2d_backward(dout, cache):
    """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)"""
    x_shape, pool, stride, pad = cache
    dx = buffers.zeros(x_shape, dout.dtype)
    _avgpool_backward(np.ascontiguousarray(dout), pool[0], pool[1], stride[0], stride[1], pad[0], pad[2], dx)
    return dx


# ---------------------------------------------------------------------------------------------------- relu
@njit(cache=True, parallel=PARALLEL, nogil=True)
def _relu_forward(z, y):
    for k in prange(z.size):
        y[k] = z[k] if z[k] > 0 else 0


@njit(cache=True, parallel=PARALLEL, nogil=True)
def _relu_backward(dout, y, dx):
    for k in prange(dout.size):
        dx[k] = dout[k] if y[k] > 0 else 0


# In place, ``_relu_backward(dout, y, dout)`` would be the same maths, but dx and dout are then the same array and
# the compiler, which must allow for that, gives up vectorising: one branch per element, mispredicted half the time
# when the signs are random (7.6 ms against 0.27 ms at the size of the MNIST model's first layer). A loop that
# writes only the array it reads keeps the vector select.
@njit(cache=True, parallel=PARALLEL, nogil=True)
def _relu_backward_inplace(dout, y):
    for k in prange(dout.size):
        dout[k] = dout[k] if y[k] > 0 else 0


def activation_forward(name, x, overwrite_x=False):
    """As ``activations.activation_forward``; ReLU, the common case, in one compiled pass (no temporaries), in
    place when ``overwrite_x``."""
    if name != "relu" or not x.flags.c_contiguous:
        return act.activation_forward(name, x, overwrite_x)
    y = x if overwrite_x else buffers.empty(x.shape, x.dtype)
    _relu_forward(x.reshape(-1), y.reshape(-1))
    return y, y


def activation_backward(name, dout, cache, overwrite_dout=False):
    """As ``activations.activation_backward``; ReLU in one compiled pass: dx = dout where y > 0, else 0 (written
    over ``dout`` when ``overwrite_dout``)."""
    if name != "relu" or not (dout.flags.c_contiguous and cache.flags.c_contiguous) or dout.dtype != cache.dtype:
        return act.activation_backward(name, dout, cache, overwrite_dout)
    if overwrite_dout:
        _relu_backward_inplace(dout.reshape(-1), cache.reshape(-1))
        return dout
    dx = buffers.empty(dout.shape, dout.dtype)
    _relu_backward(dout.reshape(-1), cache.reshape(-1), dx.reshape(-1))
    return dx


# A dense layer is one GEMM forward and two backward: BLAS does them, a narrow layer's (few units) in pieces
# (``small_product``, ``product_by_rows``); the forward pass adds the fused epilogue.
def dense_forward(x, w, b, activation=None):
    """x: (N, D), w: (D, M), b: (M,) or None -> out: (N, M) = x @ w + b, then ReLU if ``activation='relu'``."""
    out = small_product(x, w)
    _epilogue(out, b, activation)
    return out, (x, w)


def dense_backward(dout, cache, need_dx=True):
    """dout: (N, M) -> dx: (N, D) (None unless ``need_dx``), dw: (D, M), db: (M,)"""
    x, w = cache
    dw = product_by_rows(x.T, dout, np.empty(w.shape, np.result_type(x, dout)))
    return (dout @ w.T if need_dx else None), dw, dout.sum(axis=0)


# ---------------------------------------------------------------------------------------------------- conv + pool
# A Conv2D(relu) followed by MaxPooling2D(2), as in most small image classifiers, writes a full-size output that
# the pooling reads once and nobody reads again, and in the backward pass a full-size gradient that ReLU's
# derivative reads and writes again. Run as one pair of kernels, the convolution's output is never written:
# the pooling takes each window's maximum while the output is still in cache, and writes a quarter of it. The bias
# and ReLU come after, on the pooled grid, 4x smaller: the bias is the same across a window, and ReLU commutes with
# max, relu(max(z) + b) = max(relu(z + b)). In the backward pass ReLU's derivative runs on the pooled grid too
# (the winner is the element it was taken from, y > 0 there exactly when the pooled value is > 0).
#
# * A first layer (1 or 3 channels in: the MNIST model R's Conv2D(32, 3, relu) on 28x28x1 writes 5.5 MB at batch
#   64) does little arithmetic on that big output. Forward, per piece of whole images: the taps, z = taps^T @ w
#   (in cache), then 2x2 pooling of z straight into the pooled output (and the winners' places). It needs no dx,
#   so the backward works per piece too: the pooling's dz into a cache-sized buffer, the taps again, and
#   [dw; db] += [taps; ones] @ dz; nothing full-size is written. Pieces as many images as keep each product under
#   SMALL_GEMM_MACS. When the whole batch's [taps; ones] take at most KEEP_TAPS_BYTES, they are built once and
#   kept for the backward pass, as ``conv2d_forward`` keeps them (R's training step, in turn: 1.5-2% faster than
#   building them twice). R's first layer and pooling at batch 64, forward and backward, one thread, ten rounds in
#   turn: 1.67-2.32 ms against 2.50-3.06 as separate kernels (medians 2.30 against 3.04, on a slow spell).
# * A wide 3x3 layer (Winograd's: ``winograd_tile``) pools inside its output transform
#   (``winograd.conv3x3_maxpool2x2``): each 2x2 window lies inside one tile. Its backward needs the full-size dz
#   for dx and dw: the pooling's dz, then ``conv2d_backward`` (behind the pooling most of dz is zero, and a
#   'valid' layer's dx and dw go by the sparse kernel). What it saves is the output's write and read, and ReLU's
#   full-size pass. In turn against the first layer's pair alone (three rounds' medians, 2-core Xeon VM, one
#   thread): R's training step (its 32->64 layer) 8.99-9.11 against 9.28-9.39 ms, its inference at 256 10.5-11.1
#   against 11.9-12.6; the CIFAR model C's (two pairs) 133.8-135.0 against 139.4-140.0 and 77.8-78.7 against
#   84.2-84.7. On two threads, R's step 6.49-6.78 against 6.64-6.81 ms, C's 78.4-87.5 against 82.1-89.5.
# * A one-channel 3x3 layer at stride 1 (R's first layer, the Keras MNIST example's) goes without taps or GEMM:
#   a product only 9 deep is mostly loads and stores for BLAS. ``_conv3x3_one_channel_maxpool2x2`` reads each
#   window's 4x4 inputs into registers, and for each filter computes its four outputs (9 multiply-adds each, the
#   filters vectorised), pools them, adds the bias and applies ReLU: one write, of the pooled output. Its backward
#   (``_conv3x3_one_channel_maxpool2x2_dwdb``) sends each filter's pooled gradient to its winner's nine inputs
#   and adds them into dw and db, window by window: no dz, no taps. R's first layer and pooling at batch 32, one
#   thread, calls alternating with the taps-and-GEMM pair (medians of 400, both on 256-bit vectors): forward 0.21
#   against 0.37 ms, backward 0.28 against 0.43; at 64, 0.43 against 0.74 and 0.69 against 0.87. On 512-bit
#   vectors (see kernels/__init__.py) the two kernels took 0.15 and 0.20 ms at 32. (Direct convolutions that wrote
#   the full output were no faster than the GEMM: under "Tried" in benchmarks/RESULTS.md.)
# * Any other layer takes the first layer's forward, and its backward too where it needs no dx; where it needs dx,
#   the Winograd layer's backward.
#
# ``minicnn.layers.fused`` runs a Conv2D(relu) and the MaxPooling2D(2) after it through this pair of kernels.
@njit(cache=True, parallel=PARALLEL, nogil=True, error_model="numpy", fastmath={"contract"})
def _conv3x3_one_channel_maxpool2x2(img, w, b, pooled, argmax):
    """img: (N, H, W), one channel, padded; w: (9, F); b: (F,) -> pooled: (N, (H - 2) // 2, (W - 2) // 2, F)
    <- relu(max over each 2x2 window of the 'valid' 3x3 convolution, + b), and argmax: each winner's flat index
    in the (H - 2, W - 2) output, as ``_maxpool2x2_forward`` records it (the first maximum on ties).
    ``fastmath={"contract"}`` lets each multiply-add be one fused instruction (rounded once)."""
    N, H, W = img.shape
    _, Hp, Wp, F = pooled.shape
    Wo = W - 2
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]  # the taps' rows
    for ni in prange(N * Hp):
        n, i = ni // Hp, ni % Hp
        im, r = img[n], 2 * i
        for j in range(Wp):
            s = 2 * j
            # the window's 4x4 inputs: output (0, 0) reads a00..a22, (0, 1) a01..a23, (1, 0) a10..a32, (1, 1) a11..a33
            a00, a01, a02, a03 = im[r, s], im[r, s + 1], im[r, s + 2], im[r, s + 3]
            a10, a11, a12, a13 = im[r + 1, s], im[r + 1, s + 1], im[r + 1, s + 2], im[r + 1, s + 3]
            a20, a21, a22, a23 = im[r + 2, s], im[r + 2, s + 1], im[r + 2, s + 2], im[r + 2, s + 3]
            a30, a31, a32, a33 = im[r + 3, s], im[r + 3, s + 1], im[r + 3, s + 2], im[r + 3, s + 3]
            out, where, at = pooled[n, i, j], argmax[n, i, j], r * Wo + s
            for f in range(F):
                z00 = a00 * w0[f] + a01 * w1[f] + a02 * w2[f] + a10 * w3[f] + a11 * w4[f] + a12 * w5[f]
                z00 += a20 * w6[f] + a21 * w7[f] + a22 * w8[f]
                z01 = a01 * w0[f] + a02 * w1[f] + a03 * w2[f] + a11 * w3[f] + a12 * w4[f] + a13 * w5[f]
                z01 += a21 * w6[f] + a22 * w7[f] + a23 * w8[f]
                z10 = a10 * w0[f] + a11 * w1[f] + a12 * w2[f] + a20 * w3[f] + a21 * w4[f] + a22 * w5[f]
                z10 += a30 * w6[f] + a31 * w7[f] + a32 * w8[f]
                z11 = a11 * w0[f] + a12 * w1[f] + a13 * w2[f] + a21 * w3[f] + a22 * w4[f] + a23 * w5[f]
                z11 += a31 * w6[f] + a32 * w7[f] + a33 * w8[f]
                m, k = z00, at
                if z01 > m:
                    m, k = z01, at + 1
                if z10 > m:
                    m, k = z10, at + Wo
                if z11 > m:
                    m, k = z11, at + Wo + 1
                v = m + b[f]
                out[f] = v if v > 0 else 0
                where[f] = k


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _conv3x3_one_channel_maxpool2x2_dwdb(img, dout, pooled, argmax, dwdb):
    """The backward of ``_conv3x3_one_channel_maxpool2x2`` for w and b: dwdb (10, F) += [dw (9, F); db], from
    dout: dL/dpooled. ReLU's derivative on the pooled grid, then each filter's gradient goes to its window's winner
    (one of four outputs), whose nine inputs it multiplies into dw. One thread: every window adds into dwdb."""
    N, H, W = img.shape
    _, Hp, Wp, F = pooled.shape
    Wo = W - 2
    zero = np.zeros(1, dwdb.dtype)[0]  # a 0 of dwdb's type: a literal 0 would make the selects below float64
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = dwdb[0], dwdb[1], dwdb[2], dwdb[3], dwdb[4], dwdb[5], dwdb[6], dwdb[7], dwdb[8]
    db = dwdb[9]
    for n in range(N):
        im = img[n]
        for i in range(Hp):
            r = 2 * i
            for j in range(Wp):
                s = 2 * j
                a00, a01, a02, a03 = im[r, s], im[r, s + 1], im[r, s + 2], im[r, s + 3]
                a10, a11, a12, a13 = im[r + 1, s], im[r + 1, s + 1], im[r + 1, s + 2], im[r + 1, s + 3]
                a20, a21, a22, a23 = im[r + 2, s], im[r + 2, s + 1], im[r + 2, s + 2], im[r + 2, s + 3]
                a30, a31, a32, a33 = im[r + 3, s], im[r + 3, s + 1], im[r + 3, s + 2], im[r + 3, s + 3]
                g, y, where, at = dout[n, i, j], pooled[n, i, j], argmax[n, i, j], r * Wo + s
                for f in range(F):
                    gf = g[f] if y[f] > 0 else zero  # ReLU's derivative
                    k = where[f] - at  # the winner: 0, 1, Wo or Wo + 1
                    g00 = gf if k == 0 else zero
                    g01 = gf if k == 1 else zero
                    g10 = gf if k == Wo else zero
                    g11 = gf if k == Wo + 1 else zero
                    d0[f] += a00 * g00 + a01 * g01 + a10 * g10 + a11 * g11  # tap (0, 0): each output's top-left input
                    d1[f] += a01 * g00 + a02 * g01 + a11 * g10 + a12 * g11
                    d2[f] += a02 * g00 + a03 * g01 + a12 * g10 + a13 * g11
                    d3[f] += a10 * g00 + a11 * g01 + a20 * g10 + a21 * g11
                    d4[f] += a11 * g00 + a12 * g01 + a21 * g10 + a22 * g11
                    d5[f] += a12 * g00 + a13 * g01 + a22 * g10 + a23 * g11
                    d6[f] += a20 * g00 + a21 * g01 + a30 * g10 + a31 * g11
                    d7[f] += a21 * g00 + a22 * g01 + a31 * g10 + a32 * g11
                    d8[f] += a22 * g00 + a23 * g01 + a32 * g10 + a33 * g11
                    db[f] += gf


def _one_channel_3x3(x_shape, w_shape, stride) -> bool:
    """Whether the fused pair runs by the one-channel 3x3 kernels."""
    return x_shape[3] == 1 and tuple(w_shape[:2]) == (3, 3) and tuple(stride) == (1, 1)


def _padded_image(x, pad):
    """x: (N, H, W, 1) -> (N, pt + H + pb, pl + W + pr), zero-padded (a pooled buffer), or x's plane itself."""
    pt, pb, pl, pr = pad
    if not any(pad):
        return x[..., 0]
    N, H, W, _ = x.shape
    img = buffers.zeros((N, pt + H + pb, pl + W + pr), x.dtype)
    img[:, pt : pt + H, pl : pl + W] = x[..., 0]
    return img


def conv2d_relu_maxpool2x2_forward(x, w, b, stride=(1, 1), pad=(0, 0, 0, 0)):
    """x: (N, H, W, C), w: (kh, kw, C, F), b: (F,) or None -> pooled: (N, Ho // 2, Wo // 2, F), cache: the output
    of ``conv2d_forward(x, w, b, stride, pad, activation='relu')`` put through ``maxpool2d_forward`` (2x2,
    stride 2), without the convolution's full output."""
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    dtype = np.result_type(x.dtype, w.dtype)
    x, w2 = np.ascontiguousarray(x, dtype), np.asarray(w, dtype).reshape(-1, F)
    tile = winograd_tile(C, F, kh, kw, stride, Ho, Wo)
    if tile:  # a wide 3x3 layer: the pooling runs inside Winograd's output transform
        pooled, argmax = winograd.conv3x3_maxpool2x2(x, np.asarray(w, dtype), pad, m=tile)
        _epilogue(pooled.reshape(-1, F), b, "relu")
        return pooled, (x, w, stride, pad, pooled, argmax, None, True)
    K, P = kh * kw * C, Ho * Wo
    pooled = buffers.empty((N, Ho // 2, Wo // 2, F), dtype)
    argmax = buffers.empty(pooled.shape, np.int32)
    if _one_channel_3x3(x.shape, w.shape, stride):  # no taps: the image itself, kept for the backward
        img = _padded_image(x, pad)
        bias = np.zeros(F, dtype) if b is None else np.asarray(b, dtype)
        _conv3x3_one_channel_maxpool2x2(img, w2, bias, pooled, argmax)
        return pooled, (x, w, stride, pad, pooled, argmax, img, False)
    per = max(1, SMALL_GEMM_MACS // ((K + 1) * P * F))  # images a piece
    # the batch's [taps; ones], kept for the backward, as conv2d_forward keeps them
    small = K <= SHORT_PATCH and (K + 1) * N * P * x.itemsize <= KEEP_TAPS_BYTES
    kept = _taps_and_ones(x, kh, kw, stride, pad) if small else None
    z = buffers.empty((per * P, F), dtype)
    for s, e in _pieces(N, per):
        r = (e - s) * P
        cols = kept[:K, s * P : e * P].T if kept is not None else _cols(x[s:e], kh, kw, stride, pad)  # (r, K)
        np.matmul(cols, w2, out=z[:r])
        _maxpool2x2_forward(z[:r].reshape(e - s, Ho, Wo, F), pooled[s:e], argmax[s:e])
    _epilogue(pooled.reshape(-1, F), b, "relu")
    return pooled, (x, w, stride, pad, pooled, argmax, kept, False)


def conv2d_relu_maxpool2x2_backward(dout, cache, overwrite_dout=False, need_dx=False):
    """dout: dL/dpooled (N, Ho // 2, Wo // 2, F) -> dx: (N, H, W, C) (None unless ``need_dx``), dw: (kh, kw, C, F),
    db: (F,); as the three backward passes (pooling, ReLU, convolution) in turn. ``overwrite_dout``: ReLU's
    derivative may go into dout."""
    x, w, stride, pad, pooled, argmax, kept, by_winograd = cache
    N, H, W, C = x.shape
    kh, kw, _, F = w.shape
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    K, P = kh * kw * C, Ho * Wo
    dtype = x.dtype
    dout = np.ascontiguousarray(dout, dtype)
    if not need_dx and _one_channel_3x3(x.shape, w.shape, stride):  # ReLU's derivative inside; kept: the image
        dwdb = np.zeros((K + 1, F), dtype)
        _conv3x3_one_channel_maxpool2x2_dwdb(kept, dout, pooled, argmax, dwdb)
        return None, dwdb[:-1].reshape(w.shape), dwdb[-1]
    g = activation_backward("relu", dout, pooled, overwrite_dout)  # ReLU's derivative, on the pooled grid
    if need_dx or by_winograd:  # the full-size dz, then the convolution's own backward pass
        dz = buffers.empty((N, Ho, Wo, F), dtype)
        _maxpool2x2_backward(g, argmax, dz)
        # dz is g's numbers, each moved to its window's winner, and zeros: its nonzero count and its column sums
        # (db) are g's, 4x fewer numbers to go through (R's 32->64 layer at 64, one thread: 0.017 against 0.075 ms
        # and 0.012 against 0.050)
        g2 = g.reshape(-1, F)
        nonzero = sparse.nonzero_fraction(g2) * g2.size / dz.size
        db = small_product(np.ones(len(g2), dtype), g2)
        return conv2d_backward(dz, (x, w, stride, pad), need_dx, nonzero, db)
    per = max(1, SMALL_GEMM_MACS // ((K + 1) * P * F))
    dz = buffers.empty((per * P, F), dtype)
    dwdb = np.zeros((K + 1, F), dtype)
    for s, e in _pieces(N, per):
        r = (e - s) * P
        _maxpool2x2_backward(g[s:e], argmax[s:e], dz[:r].reshape(e - s, Ho, Wo, F))
        # [taps; ones]: db = the column sums of dz, from the same product
        taps = kept[:, s * P : e * P] if kept is not None else _taps_and_ones(x[s:e], kh, kw, stride, pad)
        dwdb += np.dot(taps, dz[:r])
    return None, dwdb[:-1].reshape(w.shape), dwdb[-1]
