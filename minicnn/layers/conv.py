"""Conv2D: a bank of ``filters`` learned ``kh x kw x C`` templates slid over the image.

    z = conv2d(x, kernel) + bias          x: (N, H, W, C), kernel: (kh, kw, C, filters), bias: (filters,)
    y = activation(z)                     y: (N, Ho, Wo, filters)

with Keras's output size: ``'valid'``: ``Ho = (H - kh) // sh + 1``; ``'same'``: ``Ho = ceil(H / sh)``.
"""

from __future__ import annotations

import numpy as np

from minicnn import activations, initializers
from minicnn.kernels.shapes import output_size, padding_amounts, pair

from .base import LinearActivationLayer, _fmt


class Conv2D(LinearActivationLayer):
    """``Conv2D(filters, kernel_size, strides=1, padding='valid', activation=None, use_bias=True, ...)``, as Keras."""

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int | np.integer) or filters < 1:
            raise ValueError(f"Conv2D '{self.name}': filters must be a positive int; got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size, f"Conv2D '{self.name}' kernel_size")
        self.strides = pair(strides, f"Conv2D '{self.name}' strides")
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(f"Conv2D '{self.name}': padding must be 'valid' or 'same'; got {padding!r}")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.pad = (0, 0, 0, 0)

    def check_input_shape(self, input_shape):
        if len(input_shape) != 3:
            hint = ": add a channel axis, e.g. x[..., None]" if len(input_shape) == 2 else ""
            raise ValueError(
                f"Conv2D '{self.name}' expects input of rank 4 (N, H, W, C); got {_fmt((None, *input_shape))}{hint}"
            )
        H, W, _ = input_shape
        kh, kw = self.kernel_size
        pad = padding_amounts(H, W, kh, kw, self.strides, self.padding)
        Ho, Wo = output_size(H, W, kh, kw, self.strides, pad)
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"Conv2D '{self.name}': kernel {kh}x{kw} is larger than its input {H}x{W} with padding "
                f"'{self.padding}'; use a smaller kernel_size, padding='same', or fewer pooling layers before it"
            )

    def build(self, input_shape, rng=None):
        super().build(input_shape, rng)
        H, W, C = self.input_shape
        kh, kw = self.kernel_size
        self.pad = padding_amounts(H, W, kh, kw, self.strides, self.padding)
        rng = rng if rng is not None else np.random.default_rng()
        kernel = initializers.get(self.kernel_initializer)((kh, kw, C, self.filters), rng)
        self.params = {"kernel": self.backend.asarray(kernel, np.float32)}
        if self.use_bias:
            bias = initializers.get(self.bias_initializer)((self.filters,), rng)
            self.params["bias"] = self.backend.asarray(bias, np.float32)

    def compute_output_shape(self, input_shape):
        H, W, _ = input_shape
        kh, kw = self.kernel_size
        pad = padding_amounts(H, W, kh, kw, self.strides, self.padding)
        return (*output_size(H, W, kh, kw, self.strides, pad), self.filters)

    def forward(self, x, training=False):
        b = self.params.get("bias")
        if self.fuses_activation():  # bias + ReLU in the kernel's epilogue
            y, conv_cache = self.backend.conv2d_forward(
                x, self.params["kernel"], b, self.strides, self.pad, activation=self.activation
            )
            return self.activated(y, conv_cache)
        z, conv_cache = self.backend.conv2d_forward(x, self.params["kernel"], b, self.strides, self.pad)
        return self.activate(z, conv_cache)

    def backward(self, dout, skip_activation: bool = False):
        """dout: (N, Ho, Wo, filters) -> dx: (N, H, W, C); fills grads['kernel'], grads['bias'].

        ``skip_activation=True`` means ``dout`` is already dL/dz (the fused softmax-cross-entropy path).
        """
        dz, conv_cache = self.activation_backward(dout, skip_activation)
        dx, dw, db = self.backend.conv2d_backward(dz, conv_cache, self.need_input_gradient)
        self.store_grads(dw, db)
        return dx

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _init_name(self.kernel_initializer),
            "bias_initializer": _init_name(self.bias_initializer),
        }


def _init_name(init):
    return init if isinstance(init, str) else getattr(init, "__name__", "glorot_uniform")
