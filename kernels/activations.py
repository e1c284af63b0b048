"""Element-wise activations, forward and backward side by side.

``activation_forward(name, x, overwrite_x=False) -> (y, cache)`` and
``activation_backward(name, dout, cache, overwrite_dout=False) -> dx``, for ``name`` in ``linear, relu, sigmoid,
tanh, softmax, leaky_relu``. Each derivative is written under its function, in terms of what the forward pass
already computed (usually ``y``), so nothing is recomputed. The ``overwrite_*`` flags let ReLU work in place for
a caller that owns the array (a layer inside a model).
"""

from __future__ import annotations

import numpy as np

LEAKY_RELU_SLOPE = 0.2  # Keras 3's default negative_slope


def _sigmoid(x):
    # exp of a negative number only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def softmax(x, axis=-1):
    """``exp(x - max) / sum(exp(x - max))``: subtracting the max changes nothing but prevents overflow."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def activation_forward(name: str, x, overwrite_x: bool = False):
    """y = f(x) for the activation called ``name``; the cache is what the derivative needs.

    ``overwrite_x=True`` allows (does not require) writing ``y`` over ``x``, for a caller that owns ``x`` and
    never reads it again: ReLU then costs no new array.
    """
    if name == "linear":
        return x, None
    if name == "relu":
        y = np.maximum(x, 0, out=x if overwrite_x else None)  # d/dx = 1 where x > 0
        return y, y
    if name == "sigmoid":
        y = _sigmoid(x)  # d/dx = y (1 - y)
        return y, y
    if name == "tanh":
        y = np.tanh(x)  # d/dx = 1 - y^2
        return y, y
    if name == "softmax":
        y = softmax(x)  # d/dx_i = y_i (dout_i - sum_j dout_j y_j)
        return y, y
    if name == "leaky_relu":
        y = np.where(x > 0, x, x * x.dtype.type(LEAKY_RELU_SLOPE))  # d/dx = 1 or slope
        return y, x
    raise ValueError(f"unknown activation {name!r}")


def activation_backward(name: str, dout, cache, overwrite_dout: bool = False):
    """dx = dout * f'(x), from the cache of ``activation_forward``. ``overwrite_dout=True`` allows writing dx over
    ``dout`` (ReLU does), for a caller that owns it."""
    if name == "linear":
        return dout
    if name == "relu":
        return np.multiply(dout, cache > 0, out=dout if overwrite_dout else None)
    if name == "sigmoid":
        return dout * cache * (1 - cache)
    if name == "tanh":
        return dout * (1 - cache * cache)
    if name == "softmax":
        return cache * (dout - (dout * cache).sum(axis=-1, keepdims=True))
    if name == "leaky_relu":
        return np.where(cache > 0, dout, dout * dout.dtype.type(LEAKY_RELU_SLOPE))
    raise ValueError(f"unknown activation {name!r}")
