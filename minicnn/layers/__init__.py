"""The layers, by their Keras names: ``from minicnn import layers; layers.Conv2D(32, 3, activation='relu')``."""

from .base import Layer
from .conv import Conv2D
from .core import Activation, Dropout, Flatten, Input, InputLayer, ReLU
from .dense import Dense
from .pool import AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, MaxPool2D, MaxPooling2D

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
]
