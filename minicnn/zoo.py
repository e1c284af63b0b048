"""A few named architectures, for ``minicnn train --model NAME`` and the notebooks.

Each builder takes the input shape ``(H, W, C)`` and the number of classes and returns an uncompiled
``Sequential``. Pixels arrive as 0..255 and are rescaled by the first layer, so raw uint8 images can be fed.
With ``augment=True`` random flips, rotations and zooms come next (active only while training).
"""

from __future__ import annotations

import numpy as np

from minicnn import layers
from minicnn.layers.preprocessing import RandomFlip, RandomRotation, RandomZoom, Rescaling
from minicnn.model import Sequential


def _seeds(seed: int | None, n: int) -> list:
    """``n`` independent seeds derived from one (or ``None``s: the model's generator then seeds each layer).

    Giving every random layer the same seed would make them draw the same numbers: every flip would come with
    the same rotation and zoom, one dimension of variety instead of three.
    """
    if seed is None:
        return [None] * n
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def _head(input_shape, augment: bool, seed: int | None) -> list:
    stack = [layers.Input(shape=input_shape), Rescaling(1 / 255)]
    if augment:
        flip, rotation, zoom = _seeds(seed, 3)
        stack += [RandomFlip("horizontal", seed=flip), RandomRotation(0.05, seed=rotation), RandomZoom(0.1, seed=zoom)]
    return stack


def tiny(input_shape, n_classes, augment=False, seed=None):
    """Conv2D(16) -> Flatten -> Dense: the smallest model that is still a CNN (benchmark model S)."""
    return _head(input_shape, augment, seed) + [
        layers.Conv2D(16, 3, activation="relu"),
        layers.Flatten(),
        layers.Dense(n_classes, activation="softmax"),
    ]


def small(input_shape, n_classes, augment=False, seed=None):
    """Two conv-pool blocks (16, 32 filters) and a 64-unit dense layer: the demo model."""
    return _head(input_shape, augment, seed) + [
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ]


def mnist(input_shape, n_classes, augment=False, seed=None):
    """The classic Keras MNIST CNN: conv32-pool-conv64-pool-fc128 (benchmark model R)."""
    return _head(input_shape, augment, seed) + [
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ]


def cifar(input_shape, n_classes, augment=False, seed=None):
    """VGG-style: two 'same' conv32, pool, two 'same' conv64, pool, fc256 (benchmark model C)."""
    return _head(input_shape, augment, seed) + [
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(256, activation="relu"),
        layers.Dropout(0.3, seed=_seeds(seed, 4)[3]),
        layers.Dense(n_classes, activation="softmax"),
    ]


def photos(input_shape, n_classes, augment=False, seed=None):
    """For photos at 64x64 or more: three conv-pool blocks (16, 32, 64), dropout, fc64."""
    return _head(input_shape, augment, seed) + [
        layers.Conv2D(16, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dropout(0.5, seed=_seeds(seed, 4)[3]),
        layers.Dense(64, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ]


ARCHITECTURES = {f.__name__: f for f in (tiny, small, mnist, cifar, photos)}


def build(name: str, input_shape, n_classes: int, augment: bool = False, seed: int | None = None) -> Sequential:
    """``build('small', (32, 32, 3), 6)``: a new model of the named architecture."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return Sequential(ARCHITECTURES[name](tuple(input_shape), int(n_classes), augment, seed), name=name, seed=seed)
