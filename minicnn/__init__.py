"""minicnn: a from-scratch convolutional neural network engine, written to be read.

import minicnn
from minicnn import layers

model = minicnn.Sequential([
    layers.Conv2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)),
    layers.Flatten(),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=1)
"""

from minicnn import callbacks, layers, losses, optimizers, utils
from minicnn.backend import get_device, set_device
from minicnn.layers import Input
from minicnn.model import Sequential
from minicnn.parallel import get_parallel, set_parallel
from minicnn.utils import set_random_seed

__version__ = "0.1.0"


def load_model(path, device: str | None = None):
    """Rebuild a model saved with ``model.save(path)``: architecture, weights, optimizer state, class names."""
    from minicnn.saving import load_model as _load

    return _load(path, device=device)


def __getattr__(name):
    # Imported on first use, so that `import minicnn` stays fast and needs no image or plotting libraries.
    if name in ("datasets", "plot", "models", "saving", "testing"):
        import importlib

        return importlib.import_module(f"minicnn.{name}")
    raise AttributeError(f"module 'minicnn' has no attribute {name!r}")


__all__ = [
    "Sequential",
    "Input",
    "layers",
    "losses",
    "optimizers",
    "callbacks",
    "utils",
    "load_model",
    "set_device",
    "get_device",
    "set_parallel",
    "get_parallel",
    "set_random_seed",
]
