"""Optimizer steps, in place, with Keras's formulas: SGD (with momentum, Nesterov), Adam / AdamW, RMSprop.

Each rule comes twice, with one signature:

* ``*_reference``: NumPy, one line per formula; each line makes a temporary array and walks memory again;
* the fast one (``sgd_update``, ``adam_update``, ``rmsprop_update``): a Numba loop that reads each element of the
  parameter, its gradient and its state once, updates them in registers and writes them back: one pass over
  memory, no temporaries. Optimizer steps are memory-bound, so the pass count is what the time is.

Every function changes ``p`` and its state arrays in place and returns nothing. Arrays are ``float32`` or
``float64``; the hyper-parameters are cast to that dtype first, so both versions round the same way. One thing
only the fast ones do: state that has decayed to the edge of the subnormal numbers becomes zero (see "Subnormal
numbers" below).
"""

from __future__ import annotations

import functools
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
#
# Subnormal numbers. A parameter whose gradient stays zero (a dead ReLU unit's weights, an input that is always
# zero) has state that decays by a constant factor each step: Adam's m by beta_1, its v by beta_2, momentum's
# velocity by momentum. It sinks below the smallest normal float (float32: 1.2e-38) into the subnormal numbers,
# which x86 CPUs handle in microcode (Adam's loop over subnormal m: 23x slower), and it gets stuck there: near the
# smallest subnormal, ``m + (0 - m) * 0.1`` rounds back to m. Training the MNIST model R on real digits (30,000 of
# them, batch 64, one thread, on the 2-core Xeon VM) left 35,000 of its Dense layer's 204,800 m values subnormal
# after two epochs (dead units); the optimizer's step over all of R's weights then took 1.81 ms against 0.33 with
# them flushed, and the third epoch 4.9 s against 4.2. So the loops flush such state to zero, as a GPU's
# flush-to-zero mode does: a value below ``floor`` becomes 0, and then stays 0 with no slow arithmetic. ``floor``
# (``_floor``) is the smallest value whose next step, a product by the rule's factor (``(0 - m) * (1 - beta_1)``),
# is still a normal number. What is lost is below any effect on the weights: Adam's step for m at its floor is
# about lr * 1.2e-37 / epsilon, some 1e-33.
@functools.lru_cache(maxsize=64)  # np.finfo costs ~4 us a call; a step calls this twice per parameter
def _floor(dtype, *factors) -> float:
    """The smallest magnitude whose products by each of ``factors`` (those above 0) are normal numbers of ``dtype``,
    and never below the smallest normal number itself."""
    smallest = min((f for f in factors if f > 0), default=1.0)
    return float(np.finfo(dtype).tiny) / min(smallest, 1.0)


@njit(cache=True)
def _sgd(p, g, lr):
    for i in range(p.size):
        p[i] -= lr * g[i]


@njit(cache=True)
def _sgd_momentum(p, g, velocity, lr, momentum, nesterov, floor):
    zero = p.dtype.type(0)  # a bare 0 is an int, and the select would then run in float64, one element at a time
    for i in range(p.size):
        vi = momentum * velocity[i] - lr * g[i]
        vi = zero if abs(vi) < floor else vi  # flush to zero (a NaN stays NaN): see the text above
        velocity[i] = vi
        if nesterov:
            p[i] += momentum * vi - lr * g[i]
        else:
            p[i] += vi


@njit(cache=True, error_model="numpy")
def _adam(p, g, m, v, lr_wd, lr_t, one_minus_beta_1, one_minus_beta_2, epsilon, m_floor, v_floor):
    zero = p.dtype.type(0)  # as above
    for i in range(p.size):
        gi, pi = g[i], p[i]
        pi -= lr_wd * pi
        mi = m[i] + (gi - m[i]) * one_minus_beta_1
        vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2
        mi = zero if abs(mi) < m_floor else mi  # flush to zero (a NaN stays NaN): see the text above
        vi = zero if vi < v_floor else vi
        m[i], v[i] = mi, vi
        p[i] = pi - lr_t * mi / (np.sqrt(vi) + epsilon)


@njit(cache=True, error_model="numpy")
def _rmsprop(p, g, v, lr, rho, one_minus_rho, epsilon, floor):
    zero = p.dtype.type(0)  # as above
    for i in range(p.size):
        gi = g[i]
        vi = rho * v[i] + one_minus_rho * gi * gi
        vi = zero if vi < floor else vi  # flush to zero (a NaN stays NaN): see the text above
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
        floor = f(_floor(p.dtype, momentum))
        _sgd_momentum(_flat(p), _flat(g), _flat(velocity), f(lr), f(momentum), bool(nesterov), floor)


def adam_update(p, g, m, v, lr, beta_1, beta_2, epsilon, t, weight_decay=0.0):
    """Same as ``adam_update_reference``, in one pass."""
    args = _adam_args(p.dtype, float(lr), float(beta_1), float(beta_2), float(epsilon), int(t), float(weight_decay))
    _adam(_flat(p), _flat(g), _flat(m), _flat(v), *args)


@functools.lru_cache(maxsize=8)  # the same for every parameter array of a step: worked out once, not per array
def _adam_args(dtype, lr, beta_1, beta_2, epsilon, t, weight_decay) -> tuple:
    """``_adam``'s scalars, in the parameters' dtype: decay step, step size (bias corrections folded in), 1 - betas,
    epsilon and the flush-to-zero floors of m and v."""
    f = dtype.type
    lr_wd = lr * weight_decay if weight_decay > 0 else 0.0
    lr_t = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    m_floor, v_floor = f(_floor(dtype, 1 - beta_1)), f(_floor(dtype, 1 - beta_2))
    return f(lr_wd), f(lr_t), f(1 - beta_1), f(1 - beta_2), f(epsilon), m_floor, v_floor


def rmsprop_update(p, g, v, lr, rho=0.9, epsilon=1e-7):
    """Same as ``rmsprop_update_reference``, in one pass."""
    f = p.dtype.type
    _rmsprop(_flat(p), _flat(g), _flat(v), f(lr), f(rho), f(1 - rho), f(epsilon), f(_floor(p.dtype, rho)))
