"""Optimizer steps, in place, with Keras's formulas: SGD (with momentum, Nesterov), Adam / AdamW, RMSprop.

Each rule comes twice, with one signature:

* ``*_reference``: NumPy, one line per formula; each line makes a temporary array and walks memory again;
* the fast one (``sgd_update``, ``adam_update``, ``rmsprop_update``): a Numba loop that reads each element of the
  parameter, its gradient and its state once, updates them in registers and writes them back: one pass over
  memory, no temporaries. Optimizer steps are memory-bound, so the pass count is what the time is.

Every function changes ``p`` and its state arrays in place and returns nothing. Arrays are ``float32`` or
``float64``; the hyper-parameters are cast to that dtype first, so both versions round the same way.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["sgd_update", "adam_update", "rmsprop_update"]


# ---------------------------------------------------------------------------------------------------- references
def sgd_update_reference(p, g, velocity, lr, momentum=0.0, nesterov=False):
    """Keras SGD. ``momentum == 0``: ``p -= lr g`` (``velocity`` unused, may be None). Otherwise

    ``v = momentum v - lr g``;  ``p += v``  (Nesterov: ``p += momentum v - lr g``, a look at the next step)
    """
    if momentum == 0:
        p -= lr * g
        return
    velocity[...] = momentum * velocity - lr * g
    if nesterov:
        p += momentum * velocity - lr * g
    else:
        p += velocity


def adam_update_reference(p, g, m, v, lr, beta_1, beta_2, epsilon, t, weight_decay=0.0):
    """Keras Adam at step ``t`` (1, 2, ...); ``weight_decay > 0`` makes it AdamW (decay decoupled from ``g``).

    ``p -= lr wd p``  (AdamW only)
    ``m += (g - m)(1 - beta_1)``;  ``v += (g^2 - v)(1 - beta_2)``  (running means of g and g^2)
    ``lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``  (both bias corrections folded into the step size)
    ``p -= lr_t m / (sqrt(v) + epsilon)``
    """
    if weight_decay > 0:
        p -= lr * weight_decay * p
    lr_t = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    m += (g - m) * (1 - beta_1)
    v += (g * g - v) * (1 - beta_2)
    p -= lr_t * m / (np.sqrt(v) + epsilon)


def rmsprop_update_reference(p, g, v, lr, rho=0.9, epsilon=1e-7):
    """Keras 3 RMSprop (no momentum, not centred).

    ``v = rho v + (1 - rho) g^2``;  ``p -= lr g / sqrt(v + epsilon)``  (Keras 3 puts epsilon inside the root)
    """
    v[...] = rho * v + (1 - rho) * g * g
    p -= lr * g / np.sqrt(v + epsilon)


# ---------------------------------------------------------------------------------------------------- Numba loops
# error_model="numpy": by default Numba follows Python and checks every division for a zero divisor, to raise
# ZeroDivisionError. That branch in the loop stops the compiler from using SIMD instructions, and Adam's and
# RMSprop's loops then ran one element at a time (Adam on the MNIST model's 204,800 Dense weights: 830 us with the
# check, 97 us without). With NumPy's model a division by zero gives inf, as NumPy's own arrays do.
@njit(cache=True)
def _sgd(p, g, lr):
    for i in range(p.size):
        p[i] -= lr * g[i]


@njit(cache=True)
def _sgd_momentum(p, g, velocity, lr, momentum, nesterov):
    for i in range(p.size):
        vi = momentum * velocity[i] - lr * g[i]
        velocity[i] = vi
        if nesterov:
            p[i] += momentum * vi - lr * g[i]
        else:
            p[i] += vi


@njit(cache=True, error_model="numpy")
def _adam(p, g, m, v, lr_wd, lr_t, one_minus_beta_1, one_minus_beta_2, epsilon):
    for i in range(p.size):
        gi, pi = g[i], p[i]
        pi -= lr_wd * pi
        mi = m[i] + (gi - m[i]) * one_minus_beta_1
        vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2
        m[i], v[i] = mi, vi
        p[i] = pi - lr_t * mi / (np.sqrt(vi) + epsilon)


@njit(cache=True, error_model="numpy")
def _rmsprop(p, g, v, lr, rho, one_minus_rho, epsilon):
    for i in range(p.size):
        gi = g[i]
        vi = rho * v[i] + one_minus_rho * gi * gi
        v[i] = vi
        p[i] -= lr * gi / np.sqrt(vi + epsilon)


def _flat(a):
    """A 1-D view of ``a``. A non-contiguous array would be copied, and the update silently lost: refuse it."""
    if not a.flags.c_contiguous:
        raise ValueError(f"optimizer updates need C-contiguous arrays; got one of shape {a.shape}")
    return a.reshape(-1)


# ---------------------------------------------------------------------------------------------------- fast steps
def sgd_update(p, g, velocity, lr, momentum=0.0, nesterov=False):
    """Same as ``sgd_update_reference``, in one pass."""
    f = p.dtype.type
    if momentum == 0:
        _sgd(_flat(p), _flat(g), f(lr))
    else:
        _sgd_momentum(_flat(p), _flat(g), _flat(velocity), f(lr), f(momentum), bool(nesterov))


def adam_update(p, g, m, v, lr, beta_1, beta_2, epsilon, t, weight_decay=0.0):
    """Same as ``adam_update_reference``, in one pass."""
    f = p.dtype.type
    lr_wd = lr * weight_decay if weight_decay > 0 else 0.0
    lr_t = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    _adam(_flat(p), _flat(g), _flat(m), _flat(v), f(lr_wd), f(lr_t), f(1 - beta_1), f(1 - beta_2), f(epsilon))


def rmsprop_update(p, g, v, lr, rho=0.9, epsilon=1e-7):
    """Same as ``rmsprop_update_reference``, in one pass."""
    f = p.dtype.type
    _rmsprop(_flat(p), _flat(g), _flat(v), f(lr), f(rho), f(1 - rho), f(epsilon))
