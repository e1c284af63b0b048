"""The one pattern every layer follows.

A layer is built once for an input shape, then called forward and backward any number of times:

* ``build(input_shape, rng)`` creates ``params`` (a dict of arrays, e.g. ``{"kernel": ..., "bias": ...}``) and an
  empty ``grads`` dict with the same keys; ``input_shape`` has no batch axis, e.g. ``(28, 28, 1)``.
* ``forward(x, training)`` computes the output and keeps what ``backward`` needs in ``self.cache``
  (one cache per forward pass, replaced by the next).
* ``backward(dout)`` takes dL/d(output), fills ``grads[key]`` with dL/d(params[key]) and returns dL/d(input).

Arrays are computed by ``self.backend`` (see ``minicnn.backend``), so the same layer runs on CPU or GPU.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from minicnn.backend import get_backend

_name_counts: defaultdict[str, int] = defaultdict(int)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("2_d", "2d")


def unique_name(base: str) -> str:
    """Keras-style default names: ``conv2d``, ``conv2d_1``, ``conv2d_2``, ..."""
    n = _name_counts[base]
    _name_counts[base] += 1
    return base if n == 0 else f"{base}_{n}"


def reset_names() -> None:
    _name_counts.clear()


class Layer:
    """Base class: names, shapes, params/grads and the checks made once at the edge."""

    def __init__(self, name: str | None = None, input_shape=None, trainable: bool = True, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s): {', '.join(sorted(kwargs))}")
        self.name = name or unique_name(_snake(type(self).__name__))
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.trainable = trainable
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.cache = None
        self.built = False
        self.output_shape: tuple | None = None
        self.backend = get_backend()
        # False for the first layer with weights in a model: the gradient w.r.t. the images is never used.
        self.need_input_gradient = True
        # True inside a model, which owns the gradients it passes down: backward may then write over ``dout``
        # (ReLU does). A layer called by hand leaves its caller's ``dout`` alone.
        self.may_overwrite_dout = False

    # ------------------------------------------------------------------------------------------------ building
    def build(self, input_shape: tuple, rng: np.random.Generator | None = None) -> None:
        """Create the parameters for inputs of ``input_shape`` (no batch axis)."""
        input_shape = tuple(int(d) for d in input_shape)
        self.check_input_shape(input_shape)
        self.input_shape = input_shape
        self.output_shape = self.compute_output_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def check_input_shape(self, input_shape: tuple) -> None:
        """Raise a ValueError naming this layer when it cannot take inputs of ``input_shape``."""

    def count_params(self) -> int:
        return int(sum(int(np.prod(p.shape)) for p in self.params.values()))

    # ------------------------------------------------------------------------------------------------ running
    def forward(self, x, training: bool = False):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x, training: bool = False):
        """Run a standalone layer on a NumPy batch (built on first use), as ``keras_layer(x)`` does."""
        x = np.asarray(x)
        if not self.built:
            self.build(x.shape[1:])
        self.check_batch(x)
        return self.backend.to_numpy(self.forward(self.backend.asarray(x, x.dtype), training=training))

    def check_batch(self, x) -> None:
        """The edge check: ``x`` must be a batch of this layer's input shape."""
        expected = (None, *self.input_shape)
        if x.ndim != len(expected):
            hint = ""
            if x.ndim == len(expected) - 1 and len(expected) == 4:
                hint = ": add a channel axis, e.g. x[..., None]"
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects input of rank {len(expected)} "
                f"{_fmt(expected)}; got shape {tuple(x.shape)}{hint}"
            )
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects input of shape {_fmt(expected)}; got {tuple(x.shape)}"
            )

    # ------------------------------------------------------------------------------------------------ weights
    def get_weights(self) -> list[np.ndarray]:
        return [np.array(self.backend.to_numpy(p)) for p in self.params.values()]

    def set_weights(self, weights) -> None:
        weights = list(weights)
        if len(weights) != len(self.params):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has {len(self.params)} weight arrays; got {len(weights)}"
            )
        for (key, p), w in zip(self.params.items(), weights, strict=True):
            w = np.asarray(w)
            if tuple(w.shape) != tuple(p.shape):
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': weight '{key}' has shape {tuple(p.shape)}; "
                    f"got {tuple(w.shape)}"
                )
            self.params[key] = self.backend.asarray(w, p.dtype)

    def to_backend(self, backend) -> None:
        """Move this layer's parameters to ``backend`` (e.g. from 'cpu' to 'cuda')."""
        host = {k: self.backend.to_numpy(p) for k, p in self.params.items()}
        self.backend = backend
        self.params = {k: backend.asarray(v, v.dtype) for k, v in host.items()}
        self.grads = {}
        self.cache = None

    # ------------------------------------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """JSON-serialisable arguments that rebuild this layer: ``type(layer)(**layer.get_config())``."""
        config = {"name": self.name, "trainable": self.trainable}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}'>"


LOGIT_ACTIVATIONS = ("softmax", "sigmoid")


class LinearActivationLayer(Layer):
    """What Conv2D and Dense share: ``z = linear(x) + bias``, then ``y = activation(z)``.

    The cache holds the linear kernel's cache, the activation's cache and, for a softmax or sigmoid layer, ``z``
    itself: ``z`` (the logits) is what the model's fused softmax-cross-entropy reads when this is the last layer.
    """

    activation = "linear"
    use_bias = True

    def activate(self, z, linear_cache):
        # z is this layer's own new array, and only a softmax or sigmoid layer's z is read again (the fused losses
        # read it as logits); other activations may overwrite it, so a ReLU layer keeps one copy of its output.
        keep_z = self.activation in LOGIT_ACTIVATIONS
        y, act_cache = self.backend.activation_forward(self.activation, z, overwrite_x=not keep_z)
        self.cache = (linear_cache, act_cache, z if keep_z else None)
        return y

    def fuses_activation(self) -> bool:
        """Whether the engine applies this layer's activation itself, in the epilogue of its kernel."""
        return self.activation in self.backend.fused_activations

    def activated(self, y, linear_cache):
        """As ``activate``, for a ``y`` the engine has already put through the activation (a fused one: ReLU, whose
        derivative reads only ``y``)."""
        self.cache = (linear_cache, y, None)
        return y

    def activation_backward(self, dout, skip_activation: bool):
        """dL/dz from dL/dy, and the linear kernel's cache. ``skip_activation``: dout already is dL/dz."""
        linear_cache, act_cache, _ = self.cache
        if skip_activation:
            return dout, linear_cache
        dz = self.backend.activation_backward(self.activation, dout, act_cache, overwrite_dout=self.may_overwrite_dout)
        if self.may_overwrite_dout:  # in a model's step this backward runs once: let go of the activation's cache
            self.cache = (linear_cache, None, self.cache[2])  # (the output), whose buffer may then take dx
        return dz, linear_cache

    def store_grads(self, dw, db) -> None:
        self.grads["kernel"] = dw
        if self.use_bias:
            self.grads["bias"] = db

    @property
    def logits(self):
        """The pre-activation output ``z`` of the last forward pass of a softmax or sigmoid layer."""
        if self.activation not in LOGIT_ACTIVATIONS:
            raise AttributeError(
                f"{type(self).__name__} '{self.name}': logits are kept for {' and '.join(LOGIT_ACTIVATIONS)} layers "
                f"only (what the fused losses read); this layer's '{self.activation}' overwrites them"
            )
        return self.cache[2]


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
