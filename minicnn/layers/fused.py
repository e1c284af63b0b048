"""A Conv2D with ReLU and the 2x2 MaxPooling2D after it, run by the engine as one kernel.

Most small image classifiers are built of blocks the way the Keras MNIST example is: ``Conv2D(32, 3,
activation='relu')``, then ``MaxPooling2D(2)``. The convolution writes a big output that only the pooling reads,
and whose gradient the backward pass writes and reads again for ReLU's derivative. An engine that has
``conv2d_relu_maxpool2x2_forward`` / ``_backward`` (the CPU engine: see ``kernels/cpu.py``, "conv + pool")
pools the convolution's output while it is still in cache, and applies ReLU and its derivative on the pooled grid,
4x smaller: the full-size output is never written, and for a first layer run by im2col (which needs no input
gradient) neither is its gradient. The result is the same as the two layers one after the other, up to the order
of sums.

``steps(layers)`` is what a model runs: its layers, with each such pair replaced by a ``ConvReLUMaxPool``. A pair
qualifies when the convolution fuses ReLU and has weights to learn, and the pooling is 2x2 at stride 2 without
padding. The layers keep their weights and gradients; only the convolution's ``cache`` holds what the pair's
backward needs. ``model.profile`` times the pair as one step.
"""

from __future__ import annotations

from .conv import Conv2D
from .pool import MaxPooling2D

FUSE = True  # False: every layer runs on its own (for comparisons)


class ConvReLUMaxPool:
    """Forward and backward of ``conv`` then ``pool`` through the engine's fused kernels."""

    def __init__(self, conv: Conv2D, pool: MaxPooling2D):
        self.conv, self.pool = conv, pool
        self.layers = (conv, pool)  # what a step of a pass runs (a plain layer is a step of its own)
        self.name = f"{conv.name} + {pool.name}"  # as ``model.profile`` shows the step

    @staticmethod
    def fits(conv, pool) -> bool:
        return (
            FUSE
            and isinstance(conv, Conv2D)
            and isinstance(pool, MaxPooling2D)
            and conv.activation == "relu"
            and conv.trainable
            and hasattr(conv.backend, "conv2d_relu_maxpool2x2_forward")
            and pool.pool_size == (2, 2)
            and pool.strides == (2, 2)
            and not any(pool.pad)
        )

    def forward(self, x, training: bool = False):
        conv = self.conv
        y, cache = conv.backend.conv2d_relu_maxpool2x2_forward(
            x, conv.params["kernel"], conv.params.get("bias"), conv.strides, conv.pad
        )
        conv.cache, self.pool.cache = cache, None
        return y

    def backward(self, dout):
        """dout: dL/d(pooled output) -> dx: dL/d(conv input), or None where the convolution needs none; fills the
        conv's grads."""
        conv = self.conv
        dx, dw, db = conv.backend.conv2d_relu_maxpool2x2_backward(
            dout, conv.cache, conv.may_overwrite_dout, conv.need_input_gradient
        )
        conv.store_grads(dw, db)
        return dx


def steps(layers: list) -> list:
    """``layers``, with each Conv2D(relu) + MaxPooling2D(2) pair that ``ConvReLUMaxPool.fits`` as one step. A
    model leaves its last layer out (the loss reads that one's output and cache)."""
    out, i = [], 0
    while i < len(layers):
        if i + 1 < len(layers) and ConvReLUMaxPool.fits(layers[i], layers[i + 1]):
            out.append(ConvReLUMaxPool(layers[i], layers[i + 1]))
            i += 2
        else:
            out.append(layers[i])
            i += 1
    return out
