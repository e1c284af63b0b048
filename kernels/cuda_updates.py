"""Optimizer steps on the GPU, in place, with the formulas (and hyper-parameter rounding) of ``updates.py``.

An optimizer step is memory-bound: a handful of arithmetic per element, and every element of the parameter, its
gradient and its state read and written once. So each rule is one fused kernel, one launch per parameter, one
thread per element (grid-stride), with the state updated in registers and written back once.

Parameters and their state must already live on the device (``backend.asarray`` at build time): an update of a
host array would change a temporary copy and be lost, so it raises instead.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .cuda_launch import grid_1d, kernel

f32 = np.float32


@kernel
def sgd_kernel(p, g, lr):
    """``p -= lr g``"""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i] -= lr * g[i]


@kernel
def sgd_momentum_kernel(p, g, velocity, lr, momentum, nesterov):
    """``v = momentum v - lr g``;  ``p += v``  (Nesterov: ``p += momentum v - lr g``)"""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        vi = momentum * velocity[i] - lr * g[i]
        velocity[i] = vi
        if nesterov:
            p[i] += momentum * vi - lr * g[i]
        else:
            p[i] += vi


@kernel
def adam_kernel(p, g, m, v, lr_wd, lr_t, one_minus_beta_1, one_minus_beta_2, epsilon):
    """``p -= lr wd p`` (AdamW); ``m += (g - m)(1 - b1)``; ``v += (g^2 - v)(1 - b2)``;
    ``p -= lr_t m / (sqrt(v) + eps)``"""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi, pi = g[i], p[i]
        pi -= lr_wd * pi
        mi = m[i] + (gi - m[i]) * one_minus_beta_1
        vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2
        m[i], v[i] = mi, vi
        p[i] = pi - lr_t * mi / (math.sqrt(vi) + epsilon)


@kernel
def rmsprop_kernel(p, g, v, lr, rho, one_minus_rho, epsilon):
    """``v = rho v + (1 - rho) g^2``;  ``p -= lr g / sqrt(v + eps)``  (Keras 3: epsilon inside the root)"""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        vi = rho * v[i] + one_minus_rho * gi * gi
        v[i] = vi
        p[i] -= lr * gi / math.sqrt(vi + epsilon)


def _flat(a, what="parameter"):
    if isinstance(a, np.ndarray) or not hasattr(a, "copy_to_host"):
        raise TypeError(
            f"the cuda backend updates {what}s in place on the GPU; got a host array of shape {np.shape(a)}: "
            "create parameters and optimizer state with backend.asarray / backend.zeros"
        )
    return a if a.ndim == 1 else a.reshape(a.size)  # numba's reshape builds a new array object even for 1-D


def sgd_update(p, g, velocity, lr, momentum=0.0, nesterov=False):
    """Keras SGD, in place. ``velocity`` is unused (may be None) when ``momentum == 0``."""
    if momentum == 0:
        sgd_kernel[grid_1d(p.size)](_flat(p), _flat(g, "gradient"), f32(lr))
    else:
        sgd_momentum_kernel[grid_1d(p.size)](
            _flat(p), _flat(g, "gradient"), _flat(velocity, "state"), f32(lr), f32(momentum), bool(nesterov)
        )


def adam_update(p, g, m, v, lr, beta_1, beta_2, epsilon, t, weight_decay=0.0):
    """Keras Adam (AdamW when ``weight_decay > 0``) at step ``t``, in place."""
    lr_wd = lr * weight_decay if weight_decay > 0 else 0.0
    lr_t = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    adam_kernel[grid_1d(p.size)](
        _flat(p),
        _flat(g, "gradient"),
        _flat(m, "state"),
        _flat(v, "state"),
        f32(lr_wd),
        f32(lr_t),
        f32(1 - beta_1),
        f32(1 - beta_2),
        f32(epsilon),
    )


def rmsprop_update(p, g, v, lr, rho=0.9, epsilon=1e-7):
    """Keras 3 RMSprop, in place."""
    rmsprop_kernel[grid_1d(p.size)](
        _flat(p), _flat(g, "gradient"), _flat(v, "state"), f32(lr), f32(rho), f32(1 - rho), f32(epsilon)
    )
