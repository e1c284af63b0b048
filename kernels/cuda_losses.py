"""Cross-entropy losses on the GPU, same contract and formulas as ``losses.py``: ``(mean loss, gradient)``.

Each loss is one kernel that writes the gradient and one loss term per row (or per element), followed by a
device-side sum (``cuda_reduce.total``); the only number that crosses to the host is the total, as a Python float.

* The categorical losses run one thread per row ``n``: a row is one sample's K scores, short enough for one
  thread, and softmax needs the whole row (its max and its sum) before any gradient can be written.
* The binary losses are element-wise: one thread per element, grid-stride.

Targets ``y`` are int labels ``(N,)`` or floats ``(N, K)``. Labels are read as one-hot rows without building
them: the target of ``(n, k)`` is ``1 if k == y[n] else 0``. Host arrays are copied to the device first.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from .cuda_launch import grid_1d, kernel
from .cuda_reduce import total
from .losses import EPSILON

ONE, ZERO = float32(1), float32(0)


@cuda.jit(device=True)
def target(y, sparse, r, k):
    """``y[r, k]`` of the one-hot rows; with ``sparse``, ``y`` is (N, 1) labels and the row is never built."""
    if sparse:
        return ONE if int(y[r, 0]) == k else ZERO
    return float32(y[r, k])


@kernel
def softmax_cross_entropy_kernel(z, y, sparse, dz, row_loss):
    """``log p = z - max - log sum exp(z - max)``; ``loss_n = -sum_k y log p``; ``dz = (p - y) / N``."""
    N, K = z.shape
    for r in range(cuda.grid(1), N, cuda.gridsize(1)):
        m = z[r, 0]
        for k in range(1, K):
            m = max(m, z[r, k])
        s = ZERO
        for k in range(K):
            s += float32(math.exp(z[r, k] - m))
        log_s = float32(math.log(s))
        loss = ZERO
        for k in range(K):
            log_p = (z[r, k] - m) - log_s
            t = target(y, sparse, r, k)
            loss -= t * log_p
            dz[r, k] = (float32(math.exp(log_p)) - t) / float32(N)
        row_loss[r] = loss


@kernel
def sigmoid_binary_cross_entropy_kernel(z, y, dz, loss):
    """``loss = max(z, 0) - z y + log(1 + exp(-|z|))``; ``dz = (sigmoid(z) - y) / size``, on flat arrays."""
    size = float32(z.size)
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        zi, yi = z[i], float32(y[i])
        e = float32(math.exp(-abs(zi)))
        loss[i] = max(zi, ZERO) - zi * yi + float32(math.log1p(e))
        s = (ONE if zi >= ZERO else e) / (ONE + e)
        dz[i] = (s - yi) / size


@kernel
def cross_entropy_kernel(p, y, sparse, lo, hi, dp, row_loss):
    """Normalise the row (``q = p / sum p``), clip to ``[lo, hi]``, ``loss_n = -sum_k y log c``; the gradient
    goes back through the clip (0 where clipped) and the normalisation: ``(dq - sum_j dq_j q_j) / sum p / N``."""
    N, K = p.shape
    for r in range(cuda.grid(1), N, cuda.gridsize(1)):
        row_sum = ZERO
        for k in range(K):
            row_sum += p[r, k]
        loss, dot = ZERO, ZERO
        for k in range(K):
            q = p[r, k] / row_sum
            c = min(max(q, lo), hi)
            t = target(y, sparse, r, k)
            loss -= t * float32(math.log(c))
            dq = -t / c if lo <= q <= hi else ZERO
            dot += dq * q
            dp[r, k] = dq  # kept here until the row's dot product is known
        for k in range(K):
            dp[r, k] = (dp[r, k] - dot) / row_sum / float32(N)
        row_loss[r] = loss


@kernel
def binary_cross_entropy_kernel(p, y, lo, hi, dp, loss):
    """``c = clip(p)``, ``loss = -(y log c + (1 - y) log(1 - c))``; ``dp = ((1-y)/(1-c) - y/c) / size`` where
    ``p`` was not clipped, 0 where it was; on flat arrays."""
    size = float32(p.size)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi, yi = p[i], float32(y[i])
        c = min(max(pi, lo), hi)
        loss[i] = -(yi * float32(math.log(c)) + (ONE - yi) * float32(math.log(ONE - c)))
        dp[i] = ((ONE - yi) / (ONE - c) - yi / c) / size if lo <= pi <= hi else ZERO


def _targets(y, shape):
    """``y`` on the device as (N, 1) labels (``sparse``) or (N, K) floats: ``(y, sparse)``."""
    if isinstance(y, np.ndarray) or not hasattr(y, "copy_to_host"):
        y = np.asarray(y)
        y = cuda.to_device(np.ascontiguousarray(y, dtype=np.int64 if y.ndim == 1 else np.float32))
    if y.ndim == 1 and len(shape) == 2 and shape[1] > 1:
        return y.reshape(y.shape[0], 1), True
    return y.reshape(*shape), False


def _clip_bounds(epsilon):
    return np.float32(epsilon), np.float32(1 - epsilon)


def softmax_cross_entropy(logits, y):
    """logits: (N, K), y: (N,) int or (N, K) float -> (loss: float, dlogits: (N, K))"""
    N, K = logits.shape
    y, sparse = _targets(y, logits.shape)
    dz = cuda.device_array((N, K), dtype=np.float32)
    row_loss = cuda.device_array(N, dtype=np.float32)
    softmax_cross_entropy_kernel[grid_1d(N)](logits, y, sparse, dz, row_loss)
    return total(row_loss) / N, dz


def sigmoid_binary_cross_entropy(logits, y):
    """logits: (N, K), y: (N, K) float in [0, 1] -> (loss: float, dlogits: (N, K)); mean over all elements"""
    y, _ = _targets(y, logits.shape)
    dz = cuda.device_array(logits.shape, dtype=np.float32)
    loss = cuda.device_array(logits.size, dtype=np.float32)
    sigmoid_binary_cross_entropy_kernel[grid_1d(logits.size)](
        logits.reshape(logits.size), y.reshape(y.size), dz.reshape(dz.size), loss
    )
    return total(loss) / logits.size, dz


def cross_entropy(probs, y, epsilon=EPSILON):
    """probs: (N, K), y: (N,) int or (N, K) float -> (loss: float, dprobs: (N, K))"""
    N, K = probs.shape
    y, sparse = _targets(y, probs.shape)
    dp = cuda.device_array((N, K), dtype=np.float32)
    row_loss = cuda.device_array(N, dtype=np.float32)
    cross_entropy_kernel[grid_1d(N)](probs, y, sparse, *_clip_bounds(epsilon), dp, row_loss)
    return total(row_loss) / N, dp


def binary_cross_entropy(probs, y, epsilon=EPSILON):
    """probs: (N, K), y: (N, K) float in [0, 1] -> (loss: float, dprobs: (N, K)); mean over all elements"""
    y, _ = _targets(y, probs.shape)
    dp = cuda.device_array(probs.shape, dtype=np.float32)
    loss = cuda.device_array(probs.size, dtype=np.float32)
    binary_cross_entropy_kernel[grid_1d(probs.size)](
        probs.reshape(probs.size), y.reshape(y.size), *_clip_bounds(epsilon), dp.reshape(dp.size), loss
    )
    return total(loss) / probs.size, dp
