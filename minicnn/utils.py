"""Seeds and small array helpers, as ``keras.utils``.

All randomness in minicnn flows from ``numpy.random.Generator`` objects. ``set_random_seed(seed)`` seeds the one
from which every new model (and every layer built on its own) draws its generator, so two runs of the same program
give identical weights and histories.
"""

from __future__ import annotations

import numpy as np

_seed_sequence = np.random.SeedSequence()


def set_random_seed(seed: int) -> None:
    """Make everything that follows reproducible: models, initial weights, shuffling, dropout, augmentation."""
    global _seed_sequence
    _seed_sequence = np.random.SeedSequence(int(seed))
    np.random.seed(int(seed) % 2**32)  # noqa: NPY002  (for user code that still uses the legacy global functions)


def new_rng(seed: int | None = None) -> np.random.Generator:
    """A fresh generator: from ``seed`` when given, else the next one spawned from ``set_random_seed``'s seed."""
    if seed is not None:
        return np.random.default_rng(seed)
    return np.random.default_rng(_seed_sequence.spawn(1)[0])


def to_categorical(y, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """Integer labels (N,) -> one-hot rows (N, num_classes), as ``keras.utils.to_categorical``."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must lie in [0, {num_classes}); got min {y.min()}, max {y.max()}")
    out = np.zeros((y.size, num_classes), dtype=dtype)
    out[np.arange(y.size), y] = 1
    return out
