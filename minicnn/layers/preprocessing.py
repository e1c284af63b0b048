"""Preprocessing and augmentation layers, by their Keras names: Rescaling, RandomFlip, RandomRotation,
RandomTranslation, RandomZoom, RandomContrast.

They sit right after the input. ``Rescaling`` always acts; the ``Random*`` layers act only when
``training=True`` (in ``fit``) and are the identity in ``evaluate`` and ``predict``, so a model sees a new
variant of each image every epoch but is judged on the images as they are. The maths lives in
``minicnn.kernels.augment``.

Randomness: each ``Random*`` layer draws from its own ``numpy.random.Generator``, ``self.rng``, made from
``seed`` when one is given, else from the model's generator when the layer is built, so a seeded model
augments the same way on every run.

No gradient flows into the data, but the pattern holds: ``backward(dout)`` returns dL/d(input), which is
``dout`` for the identity (and, as Keras's layers, the random transforms are treated as fixed), and
``dout * scale`` for ``Rescaling``.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from minicnn.kernels import augment

from .base import Layer

_HOST_BACKENDS = ("cpu", "numpy", "reference")


def _as_float(x):
    """Integer images (uint8 pixels) become float32, as Keras's layers compute in floats."""
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


class _ImageLayer(Layer):
    """What the augmentation layers share: a seeded generator, an (H, W, C) input, and NumPy on the host."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"{type(self).__name__} '{self.name}': seed must be an int or None; got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.rng = np.random.default_rng(self.seed)

    def build(self, input_shape, rng=None):
        super().build(input_shape, rng)
        if self.seed is None and rng is not None:
            self.rng = np.random.default_rng(rng.integers(2**63))

    def check_input_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects images of shape (H, W, C) (no batch axis); "
                f"got {input_shape}: add a channel axis, e.g. x[..., None]"
            )

    def forward(self, x, training=False):
        self.cache = None
        if not training:
            return x
        on_host = self.backend.name in _HOST_BACKENDS
        # The kernels are NumPy / Numba CPU code: a device batch makes a round trip to the host.
        y = self.augment(_as_float(np.asarray(x if on_host else self.backend.to_numpy(x))))
        return y if on_host else self.backend.asarray(y, y.dtype)

    def augment(self, x: np.ndarray) -> np.ndarray:
        """x: (N, H, W, C) float NumPy array -> a transformed copy, same shape and dtype."""
        raise NotImplementedError

    def backward(self, dout):
        return dout

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


# ---------------------------------------------------------------------------------------------------- arguments
def _number(layer, arg, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{layer}: {arg} must be a number or a pair of numbers; got {value!r}")
    return float(value)


def _bounds(layer, arg, factor, low=-1.0, high=1.0, sort=False) -> tuple[float, float]:
    """Keras's factor convention: ``f`` means ``(-|f|, |f|)``; ``(lo, hi)`` means itself; all in [low, high]."""
    if isinstance(factor, (tuple, list)):
        if len(factor) != 2:
            raise ValueError(f"{layer}: {arg} must be a number or a pair (lower, upper); got {factor!r}")
        lo, hi = (_number(layer, arg, f) for f in factor)
        if sort:
            lo, hi = min(lo, hi), max(lo, hi)
        elif lo > hi:
            raise ValueError(f"{layer}: {arg} lower bound {lo} is above its upper bound {hi}")
    else:
        hi = abs(_number(layer, arg, factor))
        lo = -hi
    for f in (lo, hi):
        if not low <= f <= high:
            raise ValueError(f"{layer}: {arg} values must be in [{low}, {high}]; got {factor!r}")
    return lo, hi


def _choice(layer, arg, value, options) -> str:
    if value not in options:
        raise ValueError(f"{layer}: {arg} must be one of {options}; got {value!r}")
    return value


def _jsonable(value):
    return list(value) if isinstance(value, (tuple, list)) else value


# ---------------------------------------------------------------------------------------------------- Rescaling
class Rescaling(Layer):
    """``y = x * scale + offset``, always (training and inference): e.g. ``Rescaling(1 / 255)`` for pixels.

    ``scale`` and ``offset`` are numbers, or one number per channel (broadcast over the last axis).
    Integer input becomes float32. Gradient: ``dx = dout * scale``.
    """

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = self._check(scale, "scale")
        self.offset = self._check(offset, "offset")

    def _check(self, value, arg):
        layer = f"Rescaling '{self.name}'"
        if isinstance(value, (tuple, list, np.ndarray)):
            values = [_number(layer, arg, v) for v in np.asarray(value).ravel().tolist()]
            if not values:
                raise ValueError(f"{layer}: {arg} is empty")
            return values
        return _number(layer, arg, value)

    def check_input_shape(self, input_shape):
        for arg, value in (("scale", self.scale), ("offset", self.offset)):
            if isinstance(value, list) and len(value) not in (1, input_shape[-1] if input_shape else 0):
                raise ValueError(
                    f"Rescaling '{self.name}': {arg} has {len(value)} values but the input has "
                    f"{input_shape[-1] if input_shape else 0} channels (input shape {input_shape})"
                )

    def _apply(self, fn, a):
        """Run ``fn`` on NumPy arrays; a device array makes a round trip to the host."""
        if self.backend.name in _HOST_BACKENDS:
            return fn(np.asarray(a))
        y = fn(np.asarray(self.backend.to_numpy(a)))
        return self.backend.asarray(y, y.dtype)

    def forward(self, x, training=False):
        self.cache = None

        def rescale(x):
            x = _as_float(x)
            return x * np.asarray(self.scale, x.dtype) + np.asarray(self.offset, x.dtype)

        return self._apply(rescale, x)

    def backward(self, dout):
        return self._apply(lambda d: d * np.asarray(self.scale, d.dtype), dout)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


# ---------------------------------------------------------------------------------------------------- flips
class RandomFlip(_ImageLayer):
    """Training only: mirror each image with probability 1/2 per direction. Inference: the identity.

    ``mode``: ``'horizontal'`` (left-right), ``'vertical'`` (up-down) or ``'horizontal_and_vertical'`` (each
    drawn independently). x: (N, H, W, C) -> (N, H, W, C).
    """

    MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(self, mode="horizontal_and_vertical", seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.mode = _choice(f"RandomFlip '{self.name}'", "mode", mode, self.MODES)

    def augment(self, x):
        N = x.shape[0]
        horizontal = self.rng.random(N) < 0.5 if self.mode != "vertical" else None
        vertical = self.rng.random(N) < 0.5 if self.mode != "horizontal" else None
        return augment.flip(x, horizontal, vertical)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


# ---------------------------------------------------------------------------------------------------- affine
class _AffineLayer(_ImageLayer):
    """Resample each image through a random affine map (see ``minicnn.kernels.augment``)."""

    def __init__(self, fill_mode, interpolation, seed, fill_value, **kwargs):
        super().__init__(seed=seed, **kwargs)
        layer = f"{type(self).__name__} '{self.name}'"
        self.fill_mode = _choice(layer, "fill_mode", fill_mode, augment.FILL_MODES)
        self.interpolation = _choice(layer, "interpolation", interpolation, augment.INTERPOLATIONS)
        self.fill_value = _number(layer, "fill_value", fill_value)

    def matrices(self, N: int, H: int, W: int) -> np.ndarray:
        """Draw N random maps: (N, 2, 3), output (i, j, 1) -> input (row, column)."""
        raise NotImplementedError

    def augment(self, x):
        N, H, W, _ = x.shape
        m = self.matrices(N, H, W)
        sample = augment.affine_sample_reference if self.backend.name == "reference" else augment.affine_sample
        return sample(np.ascontiguousarray(x), m, self.fill_mode, self.fill_value, self.interpolation)

    def get_config(self):
        return {
            **super().get_config(),
            "fill_mode": self.fill_mode,
            "interpolation": self.interpolation,
            "fill_value": self.fill_value,
        }


class RandomRotation(_AffineLayer):
    """Training only: rotate each image about its centre by a random angle. Inference: the identity.

    ``factor``: a fraction of a full turn (2 pi), in [-1, 1]: ``0.1`` draws angles uniformly in
    [-0.1 * 2 pi, 0.1 * 2 pi]; ``(lo, hi)`` in [lo * 2 pi, hi * 2 pi]. A positive angle turns the picture
    counter-clockwise. ``fill_mode`` ('reflect', 'wrap', 'constant', 'nearest') says what fills the corners;
    ``fill_value`` is used by 'constant'. x: (N, H, W, C) -> (N, H, W, C).
    """

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.lower, self.upper = _bounds(f"RandomRotation '{self.name}'", "factor", factor, sort=True)
        self.factor = _jsonable(factor)

    def matrices(self, N, H, W):
        angles = self.rng.uniform(self.lower, self.upper, N) * 2 * np.pi
        return augment.rotation_matrices(angles, H, W)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class RandomTranslation(_AffineLayer):
    """Training only: shift each image by a random fraction of its height and width. Inference: the identity.

    ``height_factor``, ``width_factor``: in [-1, 1]; ``0.2`` shifts by up to 20% either way, ``(-0.2, 0.3)``
    by -20% to +30%. Positive moves the picture down / right. x: (N, H, W, C) -> (N, H, W, C).
    """

    def __init__(
        self,
        height_factor,
        width_factor,
        fill_mode="reflect",
        interpolation="bilinear",
        seed=None,
        fill_value=0.0,
        **kwargs,
    ):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        layer = f"RandomTranslation '{self.name}'"
        self.height_lower, self.height_upper = _bounds(layer, "height_factor", height_factor)
        self.width_lower, self.width_upper = _bounds(layer, "width_factor", width_factor)
        self.height_factor, self.width_factor = _jsonable(height_factor), _jsonable(width_factor)

    def matrices(self, N, H, W):
        dy = self.rng.uniform(self.height_lower, self.height_upper, N) * H
        dx = self.rng.uniform(self.width_lower, self.width_upper, N) * W
        return augment.translation_matrices(dy, dx)

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor, "width_factor": self.width_factor}


class RandomZoom(_AffineLayer):
    """Training only: zoom each image about its centre by a random amount. Inference: the identity.

    As in Keras 3, a factor ``f`` in [-1, 1] gives a zoom of ``1 + f``, and a POSITIVE factor zooms OUT (the
    picture shrinks and the border is filled), a negative one zooms IN. ``height_factor=0.2`` draws
    ``1 + f`` in [0.8, 1.2]; ``(-0.3, -0.1)`` only zooms in. ``width_factor=None`` (default) uses the height
    zoom for the width too, keeping the aspect ratio. x: (N, H, W, C) -> (N, H, W, C).
    """

    def __init__(
        self,
        height_factor,
        width_factor=None,
        fill_mode="reflect",
        interpolation="bilinear",
        seed=None,
        fill_value=0.0,
        **kwargs,
    ):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        layer = f"RandomZoom '{self.name}'"
        self.height_lower, self.height_upper = _bounds(layer, "height_factor", height_factor)
        if width_factor is not None:
            self.width_lower, self.width_upper = _bounds(layer, "width_factor", width_factor)
        self.height_factor, self.width_factor = _jsonable(height_factor), _jsonable(width_factor)

    def matrices(self, N, H, W):
        zy = 1.0 + self.rng.uniform(self.height_lower, self.height_upper, N)
        zx = zy if self.width_factor is None else 1.0 + self.rng.uniform(self.width_lower, self.width_upper, N)
        return augment.zoom_matrices(zy, zx, H, W)

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor, "width_factor": self.width_factor}


# ---------------------------------------------------------------------------------------------------- contrast
class RandomContrast(_ImageLayer):
    """Training only: ``(x - mean) * c + mean`` per image and channel, c random per image. Inference: identity.

    ``factor``: ``f`` draws ``c`` uniformly in [1 - f, 1 + f]; ``(lower, upper)`` in [1 - lower, 1 + upper]
    (0 <= lower <= 1, upper >= 0). As in Keras, the result is clipped to ``value_range`` (default (0, 255));
    ``value_range=None`` turns the clipping off (use it for standardised inputs). x: (N, H, W, C) -> same.
    """

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        layer = f"RandomContrast '{self.name}'"
        if isinstance(factor, (tuple, list)):
            if len(factor) != 2:
                raise ValueError(f"{layer}: factor must be a number or a pair (lower, upper); got {factor!r}")
            self.lower, self.upper = (_number(layer, "factor", f) for f in factor)
        else:
            self.lower = self.upper = _number(layer, "factor", factor)
        if not (0.0 <= self.lower <= 1.0 and self.upper >= 0.0):
            raise ValueError(
                f"{layer}: factor must be >= 0 (and its lower part <= 1, so the contrast stays >= 0); got {factor!r}"
            )
        if value_range is not None:
            if not isinstance(value_range, (tuple, list)) or len(value_range) != 2:
                raise ValueError(f"{layer}: value_range must be a pair (low, high) or None; got {value_range!r}")
            low, high = (_number(layer, "value_range", v) for v in value_range)
            if low >= high:
                raise ValueError(f"{layer}: value_range low must be below high; got {value_range!r}")
            value_range = [low, high]
        self.factor = _jsonable(factor)
        self.value_range = value_range

    def augment(self, x):
        c = self.rng.uniform(1.0 - self.lower, 1.0 + self.upper, x.shape[0])
        y = augment.adjust_contrast(x, c)
        if self.value_range is not None:
            y = np.clip(y, *self.value_range).astype(x.dtype, copy=False)
        return y

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range}
