"""Finite-difference gradient checks: the one tool that tests and notebooks use to trust a backward pass.

For a function ``f`` and a random upstream gradient ``dout``, the scalar ``L(x) = sum(f(x) * dout)`` has the
gradient that ``backward(dout)`` should return. Centred differences estimate it one entry at a time:

    dL/dx[i] ~ (L(x + h e_i) - L(x - h e_i)) / (2 h)        (error O(h^2); h = 1e-6 in float64)

and ``relative_error`` compares the two as ``|a - b| / max(|a| + |b|, tiny)`` over the whole array (norms),
which is scale-free and does not blow up on entries that happen to be near zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def relative_error(a, b) -> float:
    """``||a - b|| / (||a|| + ||b||)``; 0.0 when both are zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def numerical_gradient(f: Callable[[], np.ndarray], x: np.ndarray, dout, h: float = 1e-6) -> np.ndarray:
    """Centred-difference estimate of d sum(f() * dout) / dx. ``f`` reads ``x``, which is changed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = np.sum(f() * dout)
        flat[i] = old - h
        minus = np.sum(f() * dout)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def check_layer_gradients(layer, x, training: bool = True, seed: int = 0, h: float = 1e-6) -> dict[str, float]:
    """Relative errors of a layer's analytic gradients against finite differences, in float64.

    Builds ``layer`` for ``x`` if needed, casts its parameters to float64, draws a random upstream gradient and
    returns ``{"x": err, "kernel": err, ...}``. A layer that uses randomness in training (dropout, augmentation)
    gets the same random draws on every call, so the function being differentiated stays fixed.
    """
    x = np.array(x, dtype=np.float64)
    if not layer.built:
        layer.build(x.shape[1:], np.random.default_rng(seed))
    for k, p in layer.params.items():
        layer.params[k] = np.array(p, dtype=np.float64)

    def f():
        if hasattr(layer, "rng"):
            layer.rng = np.random.default_rng(seed + 1)
        return layer.forward(x, training=training)

    out = f()
    dout = np.random.default_rng(seed + 2).standard_normal(out.shape)
    dx = layer.backward(dout)
    errors = {"x": relative_error(dx, numerical_gradient(f, x, dout, h))}
    analytic = {k: np.array(g) for k, g in layer.grads.items()}
    for k, p in layer.params.items():
        errors[k] = relative_error(analytic[k], numerical_gradient(f, p, dout, h))
    return errors


def check_function_gradient(f: Callable[[np.ndarray], np.ndarray], grad: np.ndarray, x, h: float = 1e-6) -> float:
    """Relative error between ``grad`` and the finite-difference gradient of the scalar ``f(x)``."""
    x = np.array(x, dtype=np.float64)
    return relative_error(grad, numerical_gradient(lambda: np.asarray(f(x)), x, 1.0, h))
