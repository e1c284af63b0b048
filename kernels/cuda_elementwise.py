"""Element-wise kernels on the GPU: activations forward and backward, dropout, and filling with zeros.

Each activation is a one-line *device function* (compiled inline into whatever kernel calls it), with its
derivative written right under it in terms of what the forward pass kept, as in ``activations.py``:

    relu        y = max(x, 0)              dx = dout if y > 0 else 0            (cache: y)
    sigmoid     y = 1 / (1 + exp(-x))      dx = dout y (1 - y)                  (cache: y)
    tanh        y = tanh(x)                dx = dout (1 - y^2)                  (cache: y)
    leaky_relu  y = x if x > 0 else 0.2 x  dx = dout if x > 0 else 0.2 dout     (cache: x)
    softmax     along the last axis, one thread per row (rows are short: a row is one sample's K classes)

``map_kernel(f)`` and ``zip_kernel(f)`` turn a device function of one or two numbers into a grid-stride kernel
over whole arrays: one thread per element, consecutive threads on consecutive words. Everything is float32.

Dropout draws its uniform numbers on the host, with the layer's ``numpy.random.Generator``, exactly as the CPU
backend does, and sends them to the GPU, where one kernel turns them into the mask and applies it. The price is
one host-to-device copy of ``x.size`` floats per call; the gain is that a seed gives the same mask on every
backend, so a CUDA run can be checked number for number against a CPU run.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, float32

from .activations import LEAKY_RELU_SLOPE
from .cuda_launch import grid_1d, kernel

ONE, ZERO, SLOPE = float32(1), float32(0), float32(LEAKY_RELU_SLOPE)


# ---------------------------------------------------------------------------------------------------- the functions
@cuda.jit(device=True)
def relu(x):
    return x if x > ZERO else ZERO


@cuda.jit(device=True)
def relu_grad(dout, y):
    return dout if y > ZERO else ZERO


@cuda.jit(device=True)
def sigmoid(x):
    e = float32(math.exp(-abs(x)))  # exp of a negative number only: no overflow for large |x|
    return ONE / (ONE + e) if x >= ZERO else e / (ONE + e)


@cuda.jit(device=True)
def sigmoid_grad(dout, y):
    return dout * y * (ONE - y)


@cuda.jit(device=True)
def tanh(x):
    return float32(math.tanh(x))


@cuda.jit(device=True)
def tanh_grad(dout, y):
    return dout * (ONE - y * y)


@cuda.jit(device=True)
def leaky_relu(x):
    return x if x > ZERO else x * SLOPE


@cuda.jit(device=True)
def leaky_relu_grad(dout, x):
    return dout if x > ZERO else dout * SLOPE


@cuda.jit(device=True)
def times(a, b):
    return a * b


# ---------------------------------------------------------------------------------------------------- the kernels
@functools.cache
def map_kernel(f):
    """``y[i] = f(x[i])`` for every i, on flat arrays."""

    @kernel
    def map_f(x, y):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            y[i] = f(x[i])

    return map_f


@functools.cache
def zip_kernel(f):
    """``out[i] = f(a[i], b[i])`` for every i, on flat arrays."""

    @kernel
    def zip_f(a, b, out):
        for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            out[i] = f(a[i], b[i])

    return zip_f


@kernel
def softmax_rows_kernel(x, y):
    """One thread per row of (R, K): subtract the row max (no overflow), exponentiate, divide by the sum."""
    R, K = x.shape
    for r in range(cuda.grid(1), R, cuda.gridsize(1)):
        m = x[r, 0]
        for k in range(1, K):
            m = max(m, x[r, k])
        total = ZERO
        for k in range(K):
            e = float32(math.exp(x[r, k] - m))
            y[r, k] = e
            total += e
        for k in range(K):
            y[r, k] = y[r, k] / total


@kernel
def softmax_backward_rows_kernel(dout, y, dx):
    """``dx_k = y_k (dout_k - sum_j dout_j y_j)``, one thread per row."""
    R, K = y.shape
    for r in range(cuda.grid(1), R, cuda.gridsize(1)):
        dot = ZERO
        for k in range(K):
            dot += dout[r, k] * y[r, k]
        for k in range(K):
            dx[r, k] = y[r, k] * (dout[r, k] - dot)


@kernel
def dropout_kernel(x, u, keep, scale, y, mask):
    """``mask = (u < keep) / keep``, ``y = x * mask``, in one pass over flat arrays."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        m = scale if u[i] < keep else ZERO
        mask[i] = m
        y[i] = x[i] * m


@kernel
def fill_kernel(a, value):
    """``a[i] = value`` for every i of a flat array, grid-stride (``zeros`` and the tests use it)."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = value


# ---------------------------------------------------------------------------------------------------- the API
FORWARD = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "leaky_relu": leaky_relu}
BACKWARD = {"relu": relu_grad, "sigmoid": sigmoid_grad, "tanh": tanh_grad, "leaky_relu": leaky_relu_grad}


def _flat(a):
    """``a`` as a vector (a 1-D array as is: numba's reshape builds a new array object even then)."""
    return a if a.ndim == 1 else a.reshape(a.size)


def _rows(a):
    """(..., K) as (rows, K). (``a.shape[a.ndim - 1]``: the simulator's shapes take no negative index.)"""
    K = a.shape[a.ndim - 1]
    return a.reshape(a.size // K, K)


def activation_forward(name: str, x, overwrite_x: bool = False):
    """y = f(x) for the activation called ``name``; the cache is what the derivative needs (as on the CPU).
    ``overwrite_x``: ReLU may write ``y`` over ``x`` (each thread reads and writes its own element)."""
    if name == "linear":
        return x, None
    inplace = overwrite_x and name == "relu"
    y = x if inplace else cuda.device_array(x.shape, dtype=np.float32)
    if name == "softmax":
        x2, y2 = _rows(x), _rows(y)
        softmax_rows_kernel[grid_1d(x2.shape[0])](x2, y2)
        return y, y
    if name not in FORWARD:
        raise ValueError(f"unknown activation {name!r}")
    map_kernel(FORWARD[name])[grid_1d(x.size)](_flat(x), _flat(y))
    return y, (x if name == "leaky_relu" else y)


def activation_backward(name: str, dout, cache, overwrite_dout: bool = False):
    """dx = dout * f'(x), from the cache of ``activation_forward``; ReLU writes over ``dout`` if ``overwrite_dout``."""
    if name == "linear":
        return dout
    inplace = overwrite_dout and name == "relu"
    dx = dout if inplace else cuda.device_array(dout.shape, dtype=np.float32)
    if name == "softmax":
        d2 = _rows(dout)
        softmax_backward_rows_kernel[grid_1d(d2.shape[0])](d2, _rows(cache), _rows(dx))
        return dx
    if name not in BACKWARD:
        raise ValueError(f"unknown activation {name!r}")
    zip_kernel(BACKWARD[name])[grid_1d(dout.size)](_flat(dout), _flat(cache), _flat(dx))
    return dx


def dropout_forward(x, rate, rng):
    """Zero each element with probability ``rate`` and scale the rest by ``1 / (1 - rate)`` (inverted dropout).

    x: device array, rng: numpy Generator -> y, mask (both on the device). Same draws as the CPU backend.
    """
    keep = np.float32(1.0 - rate)
    u = cuda.to_device(rng.random(x.shape, dtype=np.float32))
    y = cuda.device_array(x.shape, dtype=np.float32)
    mask = cuda.device_array(x.shape, dtype=np.float32)
    dropout_kernel[grid_1d(x.size)](_flat(x), _flat(u), keep, np.float32(1) / keep, _flat(y), _flat(mask))
    return y, mask


def dropout_backward(dout, mask):
    """dx = dout * mask."""
    dx = cuda.device_array(dout.shape, dtype=np.float32)
    zip_kernel(times)[grid_1d(dout.size)](_flat(dout), _flat(mask), _flat(dx))
    return dx


def zeros(shape, dtype=np.float32):
    """A device array of zeros (allocated on the GPU and filled there: nothing crosses the bus)."""
    a = cuda.device_array(shape, dtype=dtype)
    fill_kernel[grid_1d(a.size)](_flat(a), 0)
    return a
