"""Weight initializers by their Keras names. Each is ``f(shape, rng) -> float32 array``.

For a conv kernel ``(kh, kw, C, F)`` Keras counts ``fan_in = kh*kw*C`` and ``fan_out = kh*kw*F``; for a dense
kernel ``(D, M)``, ``fan_in = D`` and ``fan_out = M``. The scale keeps the variance of activations (Glorot: of
activations and gradients) roughly the same from layer to layer, so deep stacks neither explode nor vanish.
"""

from __future__ import annotations

import numpy as np


def fans(shape: tuple) -> tuple[int, int]:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape, rng):
    """U(-limit, limit), ``limit = sqrt(6 / (fan_in + fan_out))``: Keras's default kernel initializer."""
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def glorot_normal(shape, rng):
    fan_in, fan_out = fans(shape)
    return _truncated_normal(shape, np.sqrt(2.0 / (fan_in + fan_out)), rng)


def he_uniform(shape, rng):
    """U(-limit, limit), ``limit = sqrt(6 / fan_in)``: for ReLU networks (He et al. 2015)."""
    limit = np.sqrt(6.0 / fans(shape)[0])
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def he_normal(shape, rng):
    return _truncated_normal(shape, np.sqrt(2.0 / fans(shape)[0]), rng)


def random_normal(shape, rng):
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)


def zeros(shape, rng=None):
    return np.zeros(shape, np.float32)


def ones(shape, rng=None):
    return np.ones(shape, np.float32)


def _truncated_normal(shape, stddev, rng):
    # Keras draws from a normal truncated at 2 standard deviations; the 0.8796 corrects the variance lost.
    std = stddev / 0.87962566103423978
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return (out * std).astype(np.float32)


_ALL = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal, random_normal, zeros, ones)}


def get(identifier):
    """A name (``'glorot_uniform'``, ``'he_normal'``, ...) or a callable ``f(shape, rng)``."""
    if callable(identifier):
        return identifier
    try:
        return _ALL[str(identifier).lower()]
    except KeyError:
        raise ValueError(f"unknown initializer {identifier!r}; choose one of {sorted(_ALL)}") from None
