"""The layers, by their Keras names: ``from minicnn import layers; layers.Conv2D(32, 3, activation='relu')``."""

from .base import Layer
from .conv import Conv2D
from .core import Activation, Dropout, Flatten, Input, InputLayer, ReLU
from .dense import Dense
from .pool import AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, MaxPool2D, MaxPooling2D
from .preprocessing import RandomContrast, RandomFlip, RandomRotation, RandomTranslation, RandomZoom, Rescaling

__all__ = [
    "Layer",
    "Input",
    "InputLayer",
    "Conv2D",
    "MaxPooling2D",
    "MaxPool2D",
    "AveragePooling2D",
    "AvgPool2D",
    "GlobalAveragePooling2D",
    "Flatten",
    "Dense",
    "Dropout",
    "Activation",
    "ReLU",
    "Rescaling",
    "RandomFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "RandomContrast",
]


def registry() -> dict[str, type]:
    """Layer classes by name, for rebuilding a model from its saved config."""
    return {name: cls for name, cls in globals().items() if isinstance(cls, type) and issubclass(cls, Layer)}
