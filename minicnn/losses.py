"""Keras's cross-entropy losses: ``SparseCategoricalCrossentropy``, ``CategoricalCrossentropy``,
``BinaryCrossentropy``, and ``get`` for the names ``compile(loss=...)`` accepts.

A loss turns the model's output and the targets into ``(loss, d loss / d output)``; the maths is in
``minicnn.kernels.losses``, called through ``self.backend`` so that it runs where the arrays live.

The fused path: a model whose last layer ends in softmax (sigmoid) calls ``forward_from_logits`` with that
layer's pre-activation ``z`` and skips the activation's backward. The gradient is then ``(p - y) / N``, exact and
finite, where going through ``log p`` and the softmax Jacobian would lose digits and, at saturated ``p``, give
``0 * inf``. ``fuses_with`` names the activation each loss can absorb.
"""

from __future__ import annotations

import numpy as np

from minicnn.backend import get_backend

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy", "get"]


class Loss:
    """Base class. Subclasses set ``name``, ``fuses_with`` and the two kernels they call."""

    name = "loss"
    fuses_with: str | None = None
    _logits_kernel = ""  # name of the fused kernel in the backend
    _probs_kernel = ""  # name of the from-probabilities kernel

    def __init__(self, from_logits: bool = False, name: str | None = None):
        self.from_logits = bool(from_logits)
        if name is not None:
            self.name = name
        self.backend = get_backend()

    # ------------------------------------------------------------------------------------------------ maths
    def forward(self, y_pred, y_true):
        """``(loss, dy_pred)`` for a batch; ``y_pred`` are logits if ``from_logits`` else probabilities."""
        if self.from_logits:
            return self.forward_from_logits(y_pred, y_true)
        return getattr(self.backend, self._probs_kernel)(y_pred, y_true)

    def forward_from_logits(self, logits, y_true):
        """``(loss, dlogits)`` through the fused ``fuses_with`` + cross-entropy kernel."""
        return getattr(self.backend, self._logits_kernel)(logits, y_true)

    def __call__(self, y_true, y_pred) -> float:
        """The mean loss of a batch of NumPy arrays, in Keras's argument order: ``loss(y_true, y_pred)``."""
        y_pred = np.asarray(y_pred)
        dtype = y_pred.dtype if y_pred.dtype.kind == "f" else np.float32
        if y_pred.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects predictions of shape (N, K); got {y_pred.shape}")
        y = self.check_targets(y_true, y_pred.shape[1])
        y = self.backend.asarray(y, y.dtype if y.dtype.kind == "i" else dtype)
        loss, _ = self.forward(self.backend.asarray(y_pred, dtype), y)
        return float(loss)

    # ------------------------------------------------------------------------------------------------ edge checks
    def check_targets(self, y_true, n_outputs: int) -> np.ndarray:
        """Check the labels of a whole data set once, against a model with ``n_outputs`` outputs; return them
        as ``forward`` wants them. Raises ValueError with a way out when they do not fit this loss."""
        y = np.asarray(y_true)
        if y.dtype.kind not in "biuf":
            raise ValueError(f"{self._who()} expects numeric targets; got an array of dtype {y.dtype}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            bad = int(np.size(y) - np.isfinite(y).sum())
            raise ValueError(f"{self._who()}: the targets contain {bad} NaN or inf value(s); clean the labels first")
        return self._check(y, int(n_outputs))

    def _check(self, y: np.ndarray, K: int) -> np.ndarray:
        raise NotImplementedError

    def _who(self) -> str:
        return f"{type(self).__name__} ('{self.name}')"

    # ------------------------------------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {"name": self.name, "from_logits": self.from_logits}

    @classmethod
    def from_config(cls, config: dict) -> Loss:
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


def _range_text(y) -> str:
    return f"min {y.min()}, max {y.max()}" if y.size else "no labels"


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer class labels: ``y_true`` is ``(N,)`` (or ``(N, 1)``) ints in ``[0, K)``,
    ``y_pred`` is ``(N, K)``. ``L = -(1/N) sum_n log p[n, y_n]``."""

    name = "sparse_categorical_crossentropy"
    fuses_with = "softmax"
    _logits_kernel = "softmax_cross_entropy"
    _probs_kernel = "cross_entropy"

    def _check(self, y, K):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim == 2:
            raise ValueError(
                f"{self._who()} expects integer class labels of shape (N,); got targets of shape {y.shape} "
                "(one-hot rows?): use 'categorical_crossentropy' or y.argmax(axis=1)"
            )
        if y.ndim != 1:
            raise ValueError(f"{self._who()} expects integer class labels of shape (N,); got shape {y.shape}")
        if y.dtype.kind == "f":
            if not np.array_equal(y, np.round(y)):
                raise ValueError(
                    f"{self._who()} expects integer class labels; got non-integer floats "
                    f"(e.g. {y[y != np.round(y)][0]}): pass class indices, or use 'categorical_crossentropy' "
                    "for probabilities"
                )
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= K):
            raise ValueError(
                f"{self._who()}: class labels must lie in [0, {K}) for a model with {K} outputs; got {_range_text(y)}"
            )
        return y


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot (or probability) rows: ``y_true`` and ``y_pred`` both ``(N, K)``.
    ``L = -(1/N) sum_n sum_k y[n, k] log p[n, k]``."""

    name = "categorical_crossentropy"
    fuses_with = "softmax"
    _logits_kernel = "softmax_cross_entropy"
    _probs_kernel = "cross_entropy"

    def _check(self, y, K):
        looks_sparse = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and K > 1)
        if looks_sparse and (y.dtype.kind in "biu" or np.array_equal(y, np.round(y))):
            raise ValueError(
                f"{self._who()} expects one-hot targets of shape (N, {K}); got integer labels of shape {y.shape}: "
                "use 'sparse_categorical_crossentropy', or one-hot encode them (np.eye(K)[y])"
            )
        if y.ndim != 2 or y.shape[1] != K:
            raise ValueError(
                f"{self._who()} expects targets of shape (N, {K}) to match the model's {K} outputs; got {y.shape}"
            )
        return y if y.dtype.kind == "f" else y.astype(np.float32)


class BinaryCrossentropy(Loss):
    """Binary cross-entropy per output, for 0/1 targets (one output, or several independent ones):
    ``y_true`` and ``y_pred`` ``(N, K)``, ``y_true`` may be ``(N,)`` when ``K == 1``.
    ``L = -mean(y log p + (1 - y) log(1 - p))``."""

    name = "binary_crossentropy"
    fuses_with = "sigmoid"
    _logits_kernel = "sigmoid_binary_cross_entropy"
    _probs_kernel = "binary_cross_entropy"

    def _check(self, y, K):
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"{self._who()} expects targets in [0, 1]; got {_range_text(y)}"
                + (": for class labels use 'sparse_categorical_crossentropy'" if y.max() > 1 else "")
            )
        if y.ndim == 1 and K == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[1] != K:
            raise ValueError(
                f"{self._who()} expects targets of shape (N, {K}) to match the model's {K} outputs; got {y.shape}"
            )
        return y if y.dtype.kind == "f" else y.astype(np.float32)


# ---------------------------------------------------------------------------------------------------- get
_CLASSES = {c.name: c for c in (SparseCategoricalCrossentropy, CategoricalCrossentropy, BinaryCrossentropy)}
_CLASSES.update({c.__name__: c for c in list(_CLASSES.values())})


def get(identifier):
    """A Loss from a Loss (returned as is), a Loss class, a Keras name ('sparse_categorical_crossentropy',
    'categorical_crossentropy', 'binary_crossentropy') or a config dict ``{"class_name": ..., "config": ...}``."""
    if identifier is None or isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str) and identifier in _CLASSES:
        return _CLASSES[identifier]()
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    known = ", ".join(
        repr(c.name) for c in (SparseCategoricalCrossentropy, CategoricalCrossentropy, BinaryCrossentropy)
    )
    raise ValueError(f"unknown loss {identifier!r}; choose one of {known}, a Loss instance or a config dict")
