"""Pooling: summarise each ``ph x pw`` window of every channel by its maximum or its mean.

y: (N, Ho, Wo, C) from x: (N, H, W, C); no parameters. ``strides`` defaults to ``pool_size`` (Keras).
"""

from __future__ import annotations

from minicnn.kernels.shapes import output_size, padding_amounts, pair

from .base import Layer, _fmt


class _Pooling2D(Layer):
    kind = ""  # "maxpool2d" or "avgpool2d": which backend kernels to call

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", **kwargs):
        super().__init__(**kwargs)
        label = f"{type(self).__name__} '{self.name}'"
        self.pool_size = pair(pool_size, f"{label} pool_size")
        self.strides = pair(strides if strides is not None else self.pool_size, f"{label} strides")
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(f"{label}: padding must be 'valid' or 'same'; got {padding!r}")
        self.pad = (0, 0, 0, 0)

    def check_input_shape(self, input_shape):
        label = f"{type(self).__name__} '{self.name}'"
        if len(input_shape) != 3:
            raise ValueError(f"{label} expects input of rank 4 (N, H, W, C); got {_fmt((None, *input_shape))}")
        Ho, Wo = self.compute_output_shape(input_shape)[:2]
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"{label}: pool {self.pool_size} is larger than its input {input_shape[0]}x{input_shape[1]}; "
                "use padding='same' or fewer pooling layers"
            )

    def build(self, input_shape, rng=None):
        super().build(input_shape, rng)
        H, W, _ = self.input_shape
        self.pad = padding_amounts(H, W, *self.pool_size, self.strides, self.padding)

    def compute_output_shape(self, input_shape):
        H, W, C = input_shape
        pad = padding_amounts(H, W, *self.pool_size, self.strides, self.padding)
        return (*output_size(H, W, *self.pool_size, self.strides, pad), C)

    def forward(self, x, training=False):
        y, self.cache = getattr(self.backend, self.kind + "_forward")(x, self.pool_size, self.strides, self.pad)
        return y

    def backward(self, dout):
        """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C)"""
        return getattr(self.backend, self.kind + "_backward")(dout, self.cache)

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
        }


class MaxPooling2D(_Pooling2D):
    """Largest value per window; the gradient flows only to the winner (the first, if several tie)."""

    kind = "maxpool2d"


class AveragePooling2D(_Pooling2D):
    """Mean per window; the gradient is shared equally. With 'same', padding is left out of the mean (Keras)."""

    kind = "avgpool2d"


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D


class GlobalAveragePooling2D(Layer):
    """Mean over all positions of each channel: x (N, H, W, C) -> y (N, C). A parameter-free Flatten."""

    def check_input_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"GlobalAveragePooling2D '{self.name}' expects input of rank 4 (N, H, W, C); "
                f"got {_fmt((None, *input_shape))}"
            )

    def compute_output_shape(self, input_shape):
        return (input_shape[2],)

    def forward(self, x, training=False):
        H, W, C = self.input_shape
        y, self.cache = self.backend.avgpool2d_forward(x, (H, W), (H, W), (0, 0, 0, 0))
        return y.reshape(y.shape[0], C)

    def backward(self, dout):
        """dout: (N, C) -> dx: (N, H, W, C)"""
        return self.backend.avgpool2d_backward(dout.reshape(dout.shape[0], 1, 1, -1), self.cache)
