"""Cross-entropy losses, each returning ``(loss, grad)``: the mean loss over the batch and its gradient.

Two kinds, as in Keras:

* from **logits** ``z`` (``softmax_cross_entropy``, ``sigmoid_binary_cross_entropy``): the activation and the loss
  are fused, so the gradient is the famous ``(p - y) / N`` and ``log`` never sees a 0 (stable for any ``z``);
* from **probabilities** ``p`` (``cross_entropy``, ``binary_cross_entropy``): what a model whose last layer already
  applied softmax/sigmoid hands over; ``p`` is clipped to ``[eps, 1 - eps]`` (Keras's ``epsilon() = 1e-7``).

Shapes: predictions ``(N, K)``; targets ``y`` either int class labels ``(N,)`` ("sparse") or floats ``(N, K)``
(one-hot rows or probabilities). ``grad`` has the shape and dtype of the prediction.
"""

from __future__ import annotations

import numpy as np

__all__ = ["softmax_cross_entropy", "sigmoid_binary_cross_entropy", "cross_entropy", "binary_cross_entropy"]

EPSILON = 1e-7  # keras.backend.epsilon()


def _one_hot(y, K, dtype):
    """(N,) int labels -> (N, K) rows with a 1 at each label."""
    out = np.zeros((y.shape[0], K), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def softmax_cross_entropy(logits, y):
    """Softmax then cross-entropy, fused.

    ``log p_k = z_k - logsumexp(z)``, with ``logsumexp(z) = m + log sum_j exp(z_j - m)``, ``m = max_j z_j``: every
    exponent is <= 0, so nothing overflows, and ``log`` gets a sum >= 1, so nothing is -inf.

    ``L = -(1/N) sum_n sum_k y[n, k] log p[n, k]``;   ``dL/dz = (p - y) / N``

    logits: (N, K), y: (N,) int or (N, K) float -> loss: float, dlogits: (N, K)
    """
    N, K = logits.shape
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    if y.ndim == 1:
        rows = np.arange(N)
        loss = -log_p[rows, y].sum() / N
        p[rows, y] -= 1  # p - one_hot(y), without building the one-hot rows
        dlogits = p
    else:
        y = y.astype(logits.dtype, copy=False)
        loss = -(y * log_p).sum() / N
        dlogits = p - y
    dlogits /= N
    return float(loss), dlogits


def sigmoid_binary_cross_entropy(logits, y):
    """Sigmoid then binary cross-entropy, fused, per element; the mean is over all ``N * K`` elements (Keras
    averages over the last axis, then over the batch).

    ``-y log s(z) - (1-y) log(1-s(z)) = max(z, 0) - z y + log(1 + exp(-|z|))``: the exponent is <= 0, so it is
    stable for any ``z``.   ``dL/dz = (s(z) - y) / (N K)``

    logits: (N, K), y: (N, K) float in [0, 1] -> loss: float, dlogits: (N, K)
    """
    y = y.astype(logits.dtype, copy=False)
    e = np.exp(-np.abs(logits))
    loss = (np.maximum(logits, 0) - logits * y + np.log1p(e)).mean()
    # s(z) from the same e = exp(-|z|): 1 / (1 + e) for z >= 0, e / (1 + e) for z < 0
    s = np.where(logits >= 0, 1, e) / (1 + e)
    dlogits = ((s - y) / logits.size).astype(logits.dtype, copy=False)
    return float(loss), dlogits


def cross_entropy(probs, y, epsilon=EPSILON):
    """Categorical cross-entropy of probabilities, as Keras computes it: normalise each row to sum to 1, clip.

    ``q = p / sum_k p_k``, ``c = clip(q, eps, 1 - eps)``, ``L = -(1/N) sum_n sum_k y[n, k] log c[n, k]``

    ``dL/dq_k = -y_k / c_k`` where ``q`` was not clipped (0 where it was), and through the normalisation
    ``dL/dp_k = (dL/dq_k - sum_j dL/dq_j q_j) / sum_j p_j``. (When ``p`` came out of a softmax, the second term is
    a constant per row, which the softmax's backward cancels: the logits get ``(p - y) / N`` all the same.)

    probs: (N, K), y: (N,) int or (N, K) float -> loss: float, dprobs: (N, K)
    """
    N, K = probs.shape
    y = _one_hot(y, K, probs.dtype) if y.ndim == 1 else y.astype(probs.dtype, copy=False)
    total = probs.sum(axis=1, keepdims=True)
    q = probs / total
    c = np.clip(q, epsilon, 1 - epsilon)
    loss = -(y * np.log(c)).sum() / N
    dq = np.where((q >= epsilon) & (q <= 1 - epsilon), -y / c, 0)
    dprobs = (dq - (dq * q).sum(axis=1, keepdims=True)) / total / N
    return float(loss), dprobs.astype(probs.dtype, copy=False)


def binary_cross_entropy(probs, y, epsilon=EPSILON):
    """Binary cross-entropy of probabilities, per element, clipped as in Keras; mean over all elements.

    ``c = clip(p, eps, 1 - eps)``, ``L = -mean(y log c + (1 - y) log(1 - c))``

    ``dL/dp = -(y / c - (1 - y) / (1 - c)) / (N K)`` where ``p`` was not clipped (0 where it was)

    probs: (N, K), y: (N, K) float in [0, 1] -> loss: float, dprobs: (N, K)
    """
    y = y.astype(probs.dtype, copy=False)
    c = np.clip(probs, epsilon, 1 - epsilon)
    loss = -(y * np.log(c) + (1 - y) * np.log(1 - c)).mean()
    inside = (probs >= epsilon) & (probs <= 1 - epsilon)
    dprobs = np.where(inside, (1 - y) / (1 - c) - y / c, 0) / probs.size
    return float(loss), dprobs.astype(probs.dtype, copy=False)
