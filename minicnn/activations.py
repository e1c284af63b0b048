"""Activations by their Keras names. The maths lives in ``minicnn.kernels.activations`` (forward and backward
side by side); this module only resolves names, as ``keras.activations.get`` does."""

from __future__ import annotations

NAMES = ("linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu")


def get(identifier) -> str:
    """``None`` -> ``'linear'``; a known name -> itself; anything else -> a ValueError that lists the names."""
    if identifier is None:
        return "linear"
    name = str(identifier).lower()
    if name not in NAMES:
        raise ValueError(f"unknown activation {identifier!r}; choose one of {NAMES}")
    return name
