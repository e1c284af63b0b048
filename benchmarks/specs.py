"""The three reference models, written once as data, and the arithmetic that every table shares.

====  ===========================================================================================  =====
S     28x28x1: Conv2D(16, 3, relu) -> Flatten -> Dense(10)                                            32
R     28x28x1: Conv2D(32, 3, relu) -> MaxPool 2 -> Conv2D(64, 3, relu) -> MaxPool 2 -> Flatten          64
      -> Dense(128, relu) -> Dense(10)
C     32x32x3: 2x Conv2D(32, 3, 'same', relu) -> MaxPool 2 -> 2x Conv2D(64, 3, 'same', relu)          128
      -> MaxPool 2 -> Flatten -> Dense(256, relu) -> Dense(10)
====  ===========================================================================================  =====

(the last column is the training batch size). Every framework's model is built from these specs, so a table
compares the same network everywhere. The last Dense ends in softmax; PyTorch fuses it into its loss, as usual.

FLOPs are counted analytically (a multiply-add is 2 FLOPs): conv forward ``2 N Ho Wo F kh kw C``, Dense forward
``2 N D M``; a backward pass costs twice its forward (one product for ``dx``, one for ``dw``). Pooling, activations
and the optimizer are not counted: their cost is memory traffic, not arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Conv(NamedTuple):
    filters: int
    kernel: int = 3
    padding: str = "valid"


class Pool(NamedTuple):
    size: int = 2


class Flatten(NamedTuple):
    pass


class Dense(NamedTuple):
    units: int
    activation: str = "relu"


class ModelSpec(NamedTuple):
    name: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    batch: int
    layers: tuple


MODELS = {
    "S": ModelSpec("S", (28, 28, 1), 32, (Conv(16), Flatten(), Dense(10, "softmax"))),
    "R": ModelSpec(
        "R",
        (28, 28, 1),
        64,
        (Conv(32), Pool(), Conv(64), Pool(), Flatten(), Dense(128), Dense(10, "softmax")),
    ),
    "C": ModelSpec(
        "C",
        (32, 32, 3),
        128,
        (
            Conv(32, 3, "same"),
            Conv(32, 3, "same"),
            Pool(),
            Conv(64, 3, "same"),
            Conv(64, 3, "same"),
            Pool(),
            Flatten(),
            Dense(256),
            Dense(10, "softmax"),
        ),
    ),
}
NUM_CLASSES = 10
INFERENCE_BATCH = 256


def same_pad(n: int, k: int) -> tuple[int, int]:
    """Keras's 'same' padding at stride 1: ``k - 1`` in all, the smaller half first."""
    return (k - 1) // 2, (k - 1) - (k - 1) // 2


class LayerShape(NamedTuple):
    index: int
    label: str  # e.g. "conv2 32->64 3x3"
    layer: tuple  # the spec entry
    in_shape: tuple  # (H, W, C) or (D,)
    out_shape: tuple
    pad: tuple[int, int, int, int]
    forward_flops_per_sample: float


def walk(spec: ModelSpec) -> list[LayerShape]:
    """Every layer of ``spec`` with its input and output shapes (no batch axis) and forward FLOPs per sample."""
    shape = spec.input_shape
    out = []
    counts: dict[str, int] = {}
    for i, layer in enumerate(spec.layers):
        kind = type(layer).__name__.lower()
        counts[kind] = counts.get(kind, 0) + 1
        pad = (0, 0, 0, 0)
        if isinstance(layer, Conv):
            H, W, C = shape
            k = layer.kernel
            if layer.padding == "same":
                pad = same_pad(H, k) + same_pad(W, k)
            Ho, Wo = H + pad[0] + pad[1] - k + 1, W + pad[2] + pad[3] - k + 1
            new = (Ho, Wo, layer.filters)
            flops = 2.0 * Ho * Wo * layer.filters * k * k * C
            label = f"conv{counts[kind]} {C}->{layer.filters} {k}x{k} {layer.padding} @{H}x{W}"
        elif isinstance(layer, Pool):
            H, W, C = shape
            new = (H // layer.size, W // layer.size, C)
            flops = 0.0
            label = f"maxpool{counts[kind]} {layer.size}x{layer.size} @{H}x{W}x{C}"
        elif isinstance(layer, Flatten):
            new = (int(np.prod(shape)),)
            flops = 0.0
            label = "flatten"
        else:
            (D,) = shape
            new = (layer.units,)
            flops = 2.0 * D * layer.units
            label = f"dense{counts[kind]} {D}->{layer.units}"
        out.append(LayerShape(i, label, layer, tuple(shape), new, pad, flops))
        shape = new
    return out


def forward_flops(spec: ModelSpec, n: int) -> float:
    return n * sum(s.forward_flops_per_sample for s in walk(spec))


def training_flops(spec: ModelSpec, n: int) -> float:
    """Forward + backward, with backward = 2 x forward."""
    return 3.0 * forward_flops(spec, n)


def random_batch(spec: ModelSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images in [0, 1) (NHWC float32) and int64 labels: the same data for every framework."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *spec.input_shape), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
    return x, y
