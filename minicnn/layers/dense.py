"""Dense: every input connected to every unit.

z = x @ kernel + bias        x: (N, D), kernel: (D, units), bias: (units,)
y = activation(z)            y: (N, units)
"""

from __future__ import annotations

import numpy as np

from minicnn import activations, initializers

from .base import LinearActivationLayer, _fmt
from .conv import _init_name


class Dense(LinearActivationLayer):
    """``Dense(units, activation=None, use_bias=True, kernel_initializer='glorot_uniform', ...)``, as Keras."""

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int | np.integer) or units < 1:
            raise ValueError(f"Dense '{self.name}': units must be a positive int; got {units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def check_input_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense '{self.name}' expects input of rank 2 (N, features); got {_fmt((None, *input_shape))}"
                ": put a Flatten() or GlobalAveragePooling2D() layer before it"
            )

    def build(self, input_shape, rng=None):
        super().build(input_shape, rng)
        rng = rng if rng is not None else np.random.default_rng()
        kernel = initializers.get(self.kernel_initializer)((self.input_shape[0], self.units), rng)
        self.params = {"kernel": self.backend.asarray(kernel, np.float32)}
        if self.use_bias:
            bias = initializers.get(self.bias_initializer)((self.units,), rng)
            self.params["bias"] = self.backend.asarray(bias, np.float32)

    def compute_output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, training=False):
        if self.fuses_activation():  # bias + ReLU in the kernel's epilogue
            y, dense_cache = self.backend.dense_forward(
                x, self.params["kernel"], self.params.get("bias"), activation=self.activation
            )
            return self.activated(y, dense_cache)
        z, dense_cache = self.backend.dense_forward(x, self.params["kernel"], self.params.get("bias"))
        return self.activate(z, dense_cache)

    def backward(self, dout, skip_activation: bool = False):
        """dout: (N, units) -> dx: (N, D); fills grads['kernel'], grads['bias'].

        ``skip_activation=True`` means ``dout`` is already dL/dz (the fused softmax-cross-entropy path).
        """
        dz, dense_cache = self.activation_backward(dout, skip_activation)
        dx, dw, db = self.backend.dense_backward(dz, dense_cache, self.need_input_gradient)
        self.store_grads(dw, db)
        return dx

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _init_name(self.kernel_initializer),
            "bias_initializer": _init_name(self.bias_initializer),
        }
