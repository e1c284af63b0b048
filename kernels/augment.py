"""Data augmentation on channels-last batches ``x`` of shape ``(N, H, W, C)``: pure functions, no layers here.

Rotation, translation and zoom are one operation, an *affine resampling*. For each image ``n`` a 2x3 matrix
``M_n`` says where each output pixel comes from in the input ("inverse mapping")::

    (r, c) = M_n @ (i, j, 1)        out[n, i, j] = x[n] sampled at row r, column c (bilinear)

Pixel ``(i, j)`` sits at coordinate ``(i, j)``, so the centre of an image is ``((H - 1) / 2, (W - 1) / 2)``.
Mapping output to input, not input to output, is what makes resampling work: every output pixel gets exactly
one value, and no holes appear.

Bilinear interpolation mixes the four integer neighbours of ``(r, c)``::

    r0 = floor(r), dr = r - r0 (same for c)
    out = (1-dr)(1-dc) x[r0, c0] + (1-dr) dc x[r0, c0+1] + dr (1-dc) x[r0+1, c0] + dr dc x[r0+1, c0+1]

A neighbour that falls outside the image is read through the ``fill_mode`` (Keras's names; input ``abcd``)::

    'reflect'   d c b a | a b c d | d c b a     (mirror about the edge of the last pixel; the Keras default)
    'wrap'      a b c d | a b c d | a b c d
    'nearest'   a a a a | a b c d | d d d d
    'constant'  k k k k | a b c d | k k k k     (k = fill_value)

The rule is applied to each integer neighbour, as Keras's NumPy and JAX backends (and ``jax.scipy.ndimage``)
do, so a pixel half outside in 'constant' mode blends smoothly towards ``fill_value``.

The matrix builders follow Keras 3's conventions: a positive angle turns the picture counter-clockwise (as
``np.rot90``), a positive shift moves it down / right, and a zoom factor above 1 zooms *out*.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu import PARALLEL  # one thread unless asked: see cpu.PARALLEL

__all__ = [
    "FILL_MODES",
    "INTERPOLATIONS",
    "affine_sample_reference",
    "affine_sample",
    "rotation_matrices",
    "translation_matrices",
    "zoom_matrices",
    "flip",
    "adjust_contrast",
]

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")


# ---------------------------------------------------------------------------------------------------- the twin
def fix_index(k: int, size: int, fill_mode: str) -> int:
    """The index of the pixel that integer position ``k`` reads on an axis of ``size`` pixels; -1 for "fill"."""
    if 0 <= k < size:
        return k
    if fill_mode == "nearest":
        return 0 if k < 0 else size - 1
    if fill_mode == "wrap":
        return k % size
    if fill_mode == "reflect":
        k = k % (2 * size)  # the pattern "a b c d d c b a" repeats every 2 * size pixels
        return k if k < size else 2 * size - 1 - k
    return -1  # 'constant'


def affine_sample_reference(x, matrices, fill_mode="reflect", fill_value=0.0, interpolation="bilinear"):
    """Resample every image of ``x`` through its own affine map, with plain loops.

    x: (N, H, W, C) float, matrices: (N, 2, 3) mapping output (i, j, 1) to input (r, c) -> out: (N, H, W, C),
    same dtype as x. ``interpolation='nearest'`` reads the single pixel ``(round(r), round(c))`` instead.
    """
    N, H, W, C = x.shape
    out = np.empty_like(x)
    for n in range(N):
        m = matrices[n]
        for i in range(H):
            for j in range(W):
                r = m[0, 0] * i + m[0, 1] * j + m[0, 2]
                c = m[1, 0] * i + m[1, 1] * j + m[1, 2]
                if interpolation == "nearest":
                    # floor(r + 0.5): round half up, so a point exactly between two pixels takes the second
                    corners = [(int(np.floor(r + 0.5)), int(np.floor(c + 0.5)), 1.0)]
                else:
                    r0, c0 = int(np.floor(r)), int(np.floor(c))
                    dr, dc = r - r0, c - c0
                    corners = [
                        (r0, c0, (1 - dr) * (1 - dc)),
                        (r0, c0 + 1, (1 - dr) * dc),
                        (r0 + 1, c0, dr * (1 - dc)),
                        (r0 + 1, c0 + 1, dr * dc),
                    ]
                for ch in range(C):
                    total = 0.0
                    for rr, cc, weight in corners:
                        p, q = fix_index(rr, H, fill_mode), fix_index(cc, W, fill_mode)
                        # float(): sum in float64, as the Numba kernel does, whatever the dtype of x
                        value = fill_value if p < 0 or q < 0 else float(x[n, p, q, ch])
                        total += weight * value
                    out[n, i, j, ch] = total
    return out


# ---------------------------------------------------------------------------------------------------- Numba
_CONSTANT, _NEAREST, _WRAP, _REFLECT = 0, 1, 2, 3


@njit(cache=True)
def _fix(k, size, mode):
    if 0 <= k < size:
        return k
    if mode == _NEAREST:
        return 0 if k < 0 else size - 1
    if mode == _WRAP:
        return k % size  # Python's %, also in Numba: never negative for size > 0
    if mode == _REFLECT:
        k = k % (2 * size)
        return k if k < size else 2 * size - 1 - k
    return -1


def affine_sample(x, matrices, fill_mode="reflect", fill_value=0.0, interpolation="bilinear"):
    """The fast twin of ``affine_sample_reference``: same signature, same result, compiled by Numba.

    This wrapper only puts the arguments in one form (contiguous ``x``, float64 matrices, the modes as
    integers), so Numba compiles ``_affine_sample`` once per dtype of ``x`` rather than once per combination of
    argument types.
    """
    if fill_mode not in FILL_MODES or interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"affine_sample: fill_mode must be one of {FILL_MODES} and interpolation one of {INTERPOLATIONS}; "
            f"got {fill_mode!r}, {interpolation!r}"
        )
    x = np.ascontiguousarray(x)
    matrices = np.ascontiguousarray(matrices, dtype=np.float64)
    mode = {"constant": _CONSTANT, "nearest": _NEAREST, "wrap": _WRAP, "reflect": _REFLECT}[fill_mode]
    return _affine_sample(x, matrices, mode, float(fill_value), interpolation == "bilinear")


@njit(cache=True, parallel=PARALLEL)
def _affine_sample(x, matrices, mode, fill_value, bilinear):
    # One output row (n, i) per parallel iteration: each thread writes only its own row, so no locks. The four
    # neighbours and weights of a pixel are found once and reused for every channel.
    N, H, W, C = x.shape
    out = np.empty_like(x)
    for ni in prange(N * H):
        n, i = ni // H, ni % H
        m = matrices[n]
        for j in range(W):
            r = m[0, 0] * i + m[0, 1] * j + m[0, 2]
            c = m[1, 0] * i + m[1, 1] * j + m[1, 2]
            if bilinear:
                r0, c0 = int(np.floor(r)), int(np.floor(c))
                dr, dc = r - r0, c - c0
            else:
                r0, c0 = int(np.floor(r + 0.5)), int(np.floor(c + 0.5))
                dr, dc = 0.0, 0.0
            p0, p1 = _fix(r0, H, mode), _fix(r0 + 1, H, mode)
            q0, q1 = _fix(c0, W, mode), _fix(c0 + 1, W, mode)
            w00, w01 = (1 - dr) * (1 - dc), (1 - dr) * dc
            w10, w11 = dr * (1 - dc), dr * dc
            for ch in range(C):
                v00 = fill_value if p0 < 0 or q0 < 0 else x[n, p0, q0, ch]
                total = w00 * v00
                if bilinear:
                    v01 = fill_value if p0 < 0 or q1 < 0 else x[n, p0, q1, ch]
                    v10 = fill_value if p1 < 0 or q0 < 0 else x[n, p1, q0, ch]
                    v11 = fill_value if p1 < 0 or q1 < 0 else x[n, p1, q1, ch]
                    total += w01 * v01 + w10 * v10 + w11 * v11
                out[n, i, j, ch] = total
    return out


# ---------------------------------------------------------------------------------------------------- matrices
def rotation_matrices(angles, H: int, W: int) -> np.ndarray:
    """Rotations about the image centre by ``angles`` (N,) radians; positive = counter-clockwise.

    ``(r - cy, c - cx) = [[cos, sin], [-sin, cos]] @ (i - cy, j - cx)``, the inverse of turning the picture by
    ``+angle`` on a screen whose rows grow downwards. ``angle = pi/2`` gives ``np.rot90(image)``. -> (N, 2, 3)
    """
    angles = np.asarray(angles, dtype=np.float64)
    cos, sin = np.cos(angles), np.sin(angles)
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    m = np.empty((angles.shape[0], 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, sin, cy - cos * cy - sin * cx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = -sin, cos, cx + sin * cy - cos * cx
    return m


def translation_matrices(dy, dx) -> np.ndarray:
    """Shifts by ``dy`` rows and ``dx`` columns (N,) pixels; positive = down / right: ``out[i, j] = x[i-dy, j-dx]``.

    -> (N, 2, 3)
    """
    dy, dx = np.asarray(dy, dtype=np.float64), np.asarray(dx, dtype=np.float64)
    m = np.zeros((dy.shape[0], 2, 3))
    m[:, 0, 0], m[:, 0, 2] = 1.0, -dy
    m[:, 1, 1], m[:, 1, 2] = 1.0, -dx
    return m


def zoom_matrices(zy, zx, H: int, W: int) -> np.ndarray:
    """Zooms about the centre by ``zy`` (rows) and ``zx`` (columns), (N,) each: ``r - cy = zy (i - cy)``.

    A factor above 1 reads a larger region into the same pixels: the picture shrinks (zoom *out*); below 1 it
    grows (zoom in). -> (N, 2, 3)
    """
    zy, zx = np.asarray(zy, dtype=np.float64), np.asarray(zx, dtype=np.float64)
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    m = np.zeros((zy.shape[0], 2, 3))
    m[:, 0, 0], m[:, 0, 2] = zy, cy * (1 - zy)
    m[:, 1, 1], m[:, 1, 2] = zx, cx * (1 - zx)
    return m


# ---------------------------------------------------------------------------------------------------- simple ones
def flip(x, horizontal=None, vertical=None):
    """Mirror the images picked by the boolean masks (N,): ``horizontal`` left-right, ``vertical`` up-down.

    x: (N, H, W, C) -> (N, H, W, C), a new array; a mask of None flips nothing.
    """
    out = np.array(x, copy=True)
    if horizontal is not None:
        out[horizontal] = out[horizontal, :, ::-1]
    if vertical is not None:
        out[vertical] = out[vertical, ::-1]
    return out


def adjust_contrast(x, factors):
    """``(x - mean) * factor + mean``, with the mean over each image's pixels, per channel.

    x: (N, H, W, C), factors: (N,) -> (N, H, W, C), same dtype as x.
    """
    mean = x.mean(axis=(1, 2), keepdims=True)
    factors = np.asarray(factors, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return (x - mean) * factors + mean
