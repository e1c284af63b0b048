"""The backward pass of a convolution when most of dout is zero: skip the zeros.

Behind a max pooling, the gradient that reaches a convolution's output is zero everywhere but at each window's
winner: with 2x2 windows at most one number in four is nonzero, and the ReLU in between zeroes more (the MNIST
model's 11x11 layer: 13-16% nonzero while it trains). ``reference.conv2d_backward`` visits every
g = dout[n, i, j, f] and sends it back along the kh*kw*C edges it came by:

    dw[..., f]            += g * patch(n, i, j)       the input patch: kh*kw*C numbers, im2col's row
    dx at patch(n, i, j)  += g * w[..., f]

A zero g sends nothing back. im2col + GEMM (``cpu._conv_dw_dx``) multiplies by the zeros all the same; this
kernel does the reference's loops, but per output pixel it first gathers the nonzero g and their filters, then

* dw: files each nonzero g under its filter, with where the pixel's patch starts in x. Every PIXELS_PER_PASS
  pixels, each filter's row of dw (held as dw^T, (F, kh*kw*C)) adds g * patch for its filed g, eight at a time
  (then four, then one): one load and store of the row per eight multiply-adds, where one g at a time stored the
  row for each, and those stores bounded it. The patches are read where they lie in x, a kernel row (kw*C
  numbers) at a time; a padded layer's x is first copied once into a zero-padded array, so that every patch is
  whole there.
* dx: adds the pixel's share, g * w[..., f] summed over its nonzero g four filters at a time, straight into the
  patch's place in dx: kh rows of kw*C numbers each. A patch that hangs over the edge (padding) sums into
  ``acc`` first, and only acc's taps inside the map go into dx.

Its arithmetic is the GEMMs' times the density; its rate is lower than BLAS's (the rows it adds are a few
hundred numbers, gathered), so it pays below about a quarter nonzero: ``cpu.SPARSE_MAX_DENSITY``. On the MNIST
model's 11x11 layer at batch 64 (its dout taken from training, 13% nonzero), one thread, alternating: 4.2-5.1 ms
against 7.8-9.7 for im2col + GEMM + col2im (on the first development machine, with the kernel one g at a time).
On the 2-core Xeon VM, that layer at batch 32 (15% nonzero), one thread, medians of 150 calls: 1.61 ms against
2.40-2.51 one g at a time with the pixel's dx summed in ``acc`` (3.43 against 4.78-5.12 at batch 64). dw is
bitwise the same either way (the same sums in the same order); dx is summed in another order. Each pixel's patch
was copied into a buffer for dw at first; read in place, eight g a pass and 128 pixels a pass (not 64), the
kernel took 0.88x the time at batch 32 and 0.85x at 64 (R's 32->64 layer, its dz from training, 18% nonzero;
calls alternating with the copying kernel's, medians of the paired ratios over 400-600 calls: 1.80 against 2.06
ms, 3.39 against 3.99). The same sums in the same order again: dw and dx are bitwise the same as the copying
kernel's.

Three things keep its loops fast: no computed signed index (Numba checks one for a negative value, and that check made
the loop that adds into dx scalar: 1 ms more; the patches' copies, written with computed indices, took 0.5 ms against
0.14), so dx's loops index views of rows with loop counters from 0; dw's loops index x and dw by unsigned offsets, not
views of rows, which measured slower there (dw alone, from a list of the nonzero g made beforehand: 1.2 ms with views
against 0.74-0.80); a sum of products written ``d + g0 * v0 + ...`` from the left is fused multiply-adds in a row; and
the gather writes only the filter, one store per element, and reads the k nonzero g after. Only ``fastmath``'s
contraction is asked for: all of it would let the compiler assume no NaN, and a NaN g must count as nonzero, so that
it reaches dw and dx as it does through the GEMMs.

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
    xp = x
    if any(pad):  # dw reads every patch whole: the padding's zeros must be there to read
        xp = buffers.zeros((N, H + pad[0] + pad[1], W + pad[2] + pad[3], C), x.dtype)  # a pooled buffer
        xp[:, pad[0] : pad[0] + H, pad[2] : pad[2] + W] = x
    dx = buffers.zeros(x.shape, x.dtype) if need_dx else np.zeros((0, 0, 0, 0), x.dtype)
    dx_rows = dx.reshape((N, H, W * C) if need_dx else (0, 0, 0))  # an image row of dx, W*C long
    xp_rows = xp.reshape(N, xp.shape[1], xp.shape[2] * C)
    _dw_dx(xp_rows, dout, wt, H, W, stride[0], stride[1], pad[0], pad[2], need_dx, dwt, dx_rows)
    return np.ascontiguousarray(dwt.transpose(1, 2, 3, 0)), (dx if need_dx else None)


PIXELS_PER_PASS = 128  # output pixels whose nonzero g are filed for one pass of dw (a constant to the kernel)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _dw_dx(xp, dout, wt, H, W, sh, sw, pt, pl, need_dx, dwt, dx):
    """dwt (F, kh, kw, C) += the sum over nonzero g of g * patch, the patch read from xp (N, Hp, Wp*C: x with its
    padding); dx (N, H, W*C) += g * wt[f] at the patch."""
    N, Hp, WpC = xp.shape
    _, Ho, Wo, F = dout.shape
    kh, kw, C = wt.shape[1], wt.shape[2], wt.shape[3]
    R, K = kw * C, kh * kw * C  # a row of the patch, the whole patch
    P, B = Ho * Wo, PIXELS_PER_PASS
    d2 = dout.reshape(N * P, F)  # one row of g per output pixel
    w2, dw2 = wt.reshape(F, K), dwt.reshape(F, K)
    # dw reads x in place, by flat offsets into xf. They are unsigned: Numba checks a signed index for a negative
    # value, and that check keeps a loop from SIMD (see the module's text).
    xf, dwf = xp.ravel(), dw2.ravel()
    row_step, R_, K_ = np.uint64(WpC), np.uint64(R), np.uint64(K)
    acc = np.empty(K, dx.dtype)
    fs = np.empty(F, np.int64)  # a pixel's nonzero g and their filters
    gs = np.empty(F, dx.dtype)
    count = np.zeros(F, np.int64)  # per filter, this pass's nonzero g and the patches they met
    patch = np.empty((F, B), np.uint64)  # where the patch starts in xf
    gf = np.empty((F, B), dx.dtype)
    for s in range(0, N * P, B):  # a pass: B output pixels, counted through the whole batch
        count[:] = 0
        for u in range(min(B, N * P - s)):
            gp = d2[s + u]
            k = 0
            for f in range(F):  # the nonzero g's filters, without a branch: write every f, move on past a nonzero
                fs[k] = f
                k += gp[f] != 0
            if k == 0:
                continue
            n, ij = divmod(s + u, P)
            i, j = divmod(ij, Wo)
            at = np.uint64((n * Hp + i * sh) * WpC + j * sw * C)  # the patch's first number in xf
            for t in range(k):  # their g; each filed under its filter, for dw
                f = fs[t]
                gs[t] = gp[f]
                patch[f, count[f]] = at
                gf[f, count[f]] = gp[f]
                count[f] += 1
            if not need_dx:
                continue
            # the taps q0 <= q < q1 of each kernel row fall inside the map; the rest are padding
            h0, w0 = i * sh - pt, j * sw - pl
            q0, q1 = max(0, -w0), min(kw, W - w0)
            a, b = (w0 + q0) * C, (w0 + q1) * C  # those taps' span of an image row of dx
            inside = q0 == 0 and q1 == kw and h0 >= 0 and h0 + kh <= H  # no tap in the padding
            t = 0
            if inside:  # dx: g * w[f] straight into the patch's kh rows of dx, four filters a pass
                while t + 4 <= k:
                    g0, g1, g2, g3 = gs[t], gs[t + 1], gs[t + 2], gs[t + 3]
                    v0, v1, v2, v3 = w2[fs[t]], w2[fs[t + 1]], w2[fs[t + 2]], w2[fs[t + 3]]
                    for p in range(kh):
                        d, e = dx[n, h0 + p, a:b], p * R
                        u0, u1, u2, u3 = v0[e : e + R], v1[e : e + R], v2[e : e + R], v3[e : e + R]
                        for c in range(R):
                            d[c] = d[c] + g0 * u0[c] + g1 * u1[c] + g2 * u2[c] + g3 * u3[c]  # 4 fused multiply-adds
                    t += 4
                while t < k:
                    g0, v0 = gs[t], w2[fs[t]]
                    for p in range(kh):
                        d, u0 = dx[n, h0 + p, a:b], v0[p * R : (p + 1) * R]
                        for c in range(R):
                            d[c] += g0 * u0[c]
                    t += 1
                continue
            acc[:] = 0  # over the edge: acc = sum of g * w[f], then its taps inside the map into dx
            while t + 4 <= k:
                g0, g1, g2, g3 = gs[t], gs[t + 1], gs[t + 2], gs[t + 3]
                v0, v1, v2, v3 = w2[fs[t]], w2[fs[t + 1]], w2[fs[t + 2]], w2[fs[t + 3]]
                for c in range(K):
                    acc[c] = acc[c] + g0 * v0[c] + g1 * v1[c] + g2 * v2[c] + g3 * v3[c]
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
        # dw: filter f's row adds g * patch for its filed g, eight g a pass (then four, then one), a kernel row p of
        # the patches at a time: R numbers of dw's row from top + p*R, of x's rows from each patch's start + p*WpC
        for f in range(F):
            k, t = count[f], 0
            top = np.uint64(f) * K_  # filter f's row of dwf
            while t + 8 <= k:
                g0, g1, g2, g3 = gf[f, t], gf[f, t + 1], gf[f, t + 2], gf[f, t + 3]
                g4, g5, g6, g7 = gf[f, t + 4], gf[f, t + 5], gf[f, t + 6], gf[f, t + 7]
                x0, x1, x2, x3 = patch[f, t], patch[f, t + 1], patch[f, t + 2], patch[f, t + 3]
                x4, x5, x6, x7 = patch[f, t + 4], patch[f, t + 5], patch[f, t + 6], patch[f, t + 7]
                for p in range(kh):
                    r, o = top + np.uint64(p) * R_, np.uint64(p) * row_step
                    for c in range(R):
                        rc, oc = r + np.uint64(c), o + np.uint64(c)
                        dwf[rc] = (
                            dwf[rc]
                            + g0 * xf[x0 + oc]
                            + g1 * xf[x1 + oc]
                            + g2 * xf[x2 + oc]
                            + g3 * xf[x3 + oc]
                            + g4 * xf[x4 + oc]
                            + g5 * xf[x5 + oc]
                            + g6 * xf[x6 + oc]
                            + g7 * xf[x7 + oc]
                        )
                t += 8
            while t + 4 <= k:
                g0, g1, g2, g3 = gf[f, t], gf[f, t + 1], gf[f, t + 2], gf[f, t + 3]
                x0, x1, x2, x3 = patch[f, t], patch[f, t + 1], patch[f, t + 2], patch[f, t + 3]
                for p in range(kh):
                    r, o = top + np.uint64(p) * R_, np.uint64(p) * row_step
                    for c in range(R):
                        rc, oc = r + np.uint64(c), o + np.uint64(c)
                        dwf[rc] = dwf[rc] + g0 * xf[x0 + oc] + g1 * xf[x1 + oc] + g2 * xf[x2 + oc] + g3 * xf[x3 + oc]
                t += 4
            while t < k:
                g0, x0 = gf[f, t], patch[f, t]
                for p in range(kh):
                    r, o = top + np.uint64(p) * R_, np.uint64(p) * row_step
                    for c in range(R):
                        rc, oc = r + np.uint64(c), o + np.uint64(c)
                        dwf[rc] += g0 * xf[x0 + oc]
                t += 1
