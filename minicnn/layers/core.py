"""Layers without weights that reshape, regularise or activate: Input, Flatten, Dropout, Activation, ReLU."""

from __future__ import annotations

import numpy as np

from minicnn import activations

from .base import Layer


class InputLayer(Layer):
    """Marks the input shape of a Sequential model (no batch axis); the identity otherwise."""

    def __init__(self, shape=None, input_shape=None, **kwargs):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input needs a shape without the batch axis, e.g. Input(shape=(28, 28, 1))")
        super().__init__(input_shape=shape, **kwargs)

    def forward(self, x, training=False):
        return x

    def backward(self, dout):
        return dout


def Input(shape, name=None) -> InputLayer:
    """``Input(shape=(28, 28, 1))``: the first element of a ``Sequential([...])``, as ``keras.Input``."""
    return InputLayer(shape=shape, name=name)


class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C), in channels-last order (as Keras), so Dense weights map one to one."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(dout.shape[0], *self.input_shape)


class Dropout(Layer):
    """Training: zero each input with probability ``rate`` and scale the rest by ``1 / (1 - rate)`` (inverted
    dropout), so inference needs no rescaling. Inference: the identity."""

    def __init__(self, rate: float, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout '{self.name}': rate must be in [0, 1); got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def build(self, input_shape, rng=None):
        super().build(input_shape, rng)
        if self.seed is None and rng is not None:
            self.rng = np.random.default_rng(rng.integers(2**63))

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self.cache = None
            return x
        y, self.cache = self.backend.dropout_forward(x, self.rate, self.rng)
        return y

    def backward(self, dout):
        return dout if self.cache is None else self.backend.dropout_backward(dout, self.cache)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class Activation(Layer):
    """``Activation('relu')``: applies an activation by name; see ``minicnn.kernels.activations``."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def forward(self, x, training=False):
        y, self.cache = self.backend.activation_forward(self.activation, x)
        return y

    def backward(self, dout, skip_activation: bool = False):
        return dout if skip_activation else self.backend.activation_backward(self.activation, dout, self.cache)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


class ReLU(Activation):
    """``ReLU()``: max(x, 0)."""

    def __init__(self, **kwargs):
        super().__init__("relu", **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["activation"]
        return config
