"""One reference model in each framework, behind the same two calls: ``train_step()`` and ``predict()``.

A runner owns its model, its optimizer (Adam, learning rate 1e-3, each framework's defaults otherwise) and its
batches, already converted to what that framework eats (NHWC float32 for minicnn and Keras, NCHW for the naive
engine and PyTorch, channels-last memory for PyTorch's second variant), so the clock sees only the framework:

* ``train_step()``: forward, loss, backward and the optimizer update for one training batch;
* ``predict()``: class scores for one inference batch, gradients off.

``available()`` says which frameworks this Python can run, with the reason when one cannot.
"""

from __future__ import annotations

import os

import numpy as np

from . import naive
from .specs import Conv, Flatten, ModelSpec, Pool, random_batch

FRAMEWORKS = ("minicnn", "torch", "torch_cl", "keras", "naive")
LABELS = {
    "minicnn": "minicnn",
    "torch": "PyTorch (NCHW)",
    "torch_cl": "PyTorch (channels_last)",
    "keras": "Keras 3 (torch backend)",
    "naive": "naive NumPy (baseline)",
}


def available(check_keras: bool = True) -> dict[str, str | None]:
    """``{framework: None if it can run, else why not}``. Importing Keras takes seconds: ``check_keras=False``
    leaves it out (as unavailable, with that reason)."""
    out: dict[str, str | None] = {"minicnn": None, "naive": None}
    try:
        import torch  # noqa: F401

        out["torch"] = out["torch_cl"] = None
    except ImportError as e:
        out["torch"] = out["torch_cl"] = f"PyTorch not importable ({e}); pip install 'minicnn[bench]'"
    out["keras"] = keras_unavailable() if check_keras else "not needed by the chosen sections"
    return out


def keras_unavailable() -> str | None:
    if os.environ.get("KERAS_BACKEND", "torch") != "torch":
        return f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}; this benchmark runs Keras on its torch backend"
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as e:  # ImportError, or a backend that fails to load
        return f"Keras 3 not importable ({type(e).__name__}: {e}); pip install 'minicnn[keras]'"
    if not keras.__version__.startswith("3"):
        return f"Keras {keras.__version__} found; this benchmark needs Keras 3"
    if keras.backend.backend() != "torch":
        return f"Keras runs on its {keras.backend.backend()} backend, not torch"
    return None


class Runner:
    """Holds a model and its data; subclasses fill in ``train_step`` and ``predict``."""

    def __init__(self, spec: ModelSpec, batch: int, infer_batch: int, seed: int = 0):
        self.spec = spec
        self.x, self.y = random_batch(spec, batch, seed)
        self.x_infer, _ = random_batch(spec, infer_batch, seed + 1)

    def train_step(self):
        raise NotImplementedError

    def predict(self):
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- minicnn
def minicnn_model(spec: ModelSpec, seed: int = 0):
    """The spec as a compiled ``minicnn.Sequential`` (Adam, sparse categorical cross-entropy)."""
    import minicnn
    from minicnn import layers

    stack = [layers.Input(spec.input_shape)]
    for layer in spec.layers:
        if isinstance(layer, Conv):
            stack.append(layers.Conv2D(layer.filters, layer.kernel, padding=layer.padding, activation="relu"))
        elif isinstance(layer, Pool):
            stack.append(layers.MaxPooling2D(layer.size))
        elif isinstance(layer, Flatten):
            stack.append(layers.Flatten())
        else:
            stack.append(layers.Dense(layer.units, activation=layer.activation))
    model = minicnn.Sequential(stack, seed=seed)
    model.compile(optimizer=minicnn.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    return model


class MinicnnRunner(Runner):
    def __init__(self, spec, batch, infer_batch, seed=0):
        super().__init__(spec, batch, infer_batch, seed)
        self.model = minicnn_model(spec, seed)

    def train_step(self):
        return self.model.train_on_batch(self.x, self.y)

    def predict(self):
        return self.model.predict(self.x_infer, batch_size=len(self.x_infer))


# ---------------------------------------------------------------------------------------------------- naive
class NaiveRunner(Runner):
    def __init__(self, spec, batch, infer_batch, seed=0):
        super().__init__(spec, batch, infer_batch, seed)
        self.model = naive.from_spec(spec, np.random.default_rng(seed))
        self.x, self.x_infer = naive.to_nchw(self.x), naive.to_nchw(self.x_infer)

    def train_step(self):
        return self.model.train_step(self.x, self.y)

    def predict(self):
        return self.model.predict(self.x_infer)


# ---------------------------------------------------------------------------------------------------- PyTorch
def torch_model(spec: ModelSpec, seed: int = 0):
    """The spec as a ``torch.nn.Sequential``; the last Dense outputs logits (softmax lives in the loss)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    modules = []
    H, W, C = spec.input_shape
    for layer in spec.layers:
        if isinstance(layer, Conv):
            modules += [nn.Conv2d(C, layer.filters, layer.kernel, padding=layer.padding), nn.ReLU()]
            C = layer.filters
        elif isinstance(layer, Pool):
            modules.append(nn.MaxPool2d(layer.size))
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
        else:
            modules.append(nn.LazyLinear(layer.units))
            if layer.activation == "relu":
                modules.append(nn.ReLU())
    model = nn.Sequential(*modules)
    model(torch.zeros(1, spec.input_shape[2], H, W))  # materialise the lazy Dense layers
    return model


class TorchRunner(Runner):
    def __init__(self, spec, batch, infer_batch, seed=0, channels_last=False):
        import torch

        super().__init__(spec, batch, infer_batch, seed)
        self.torch = torch
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = torch_model(spec, seed).to(memory_format=fmt)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)
        self.loss = torch.nn.CrossEntropyLoss()
        self.xt = torch.from_numpy(naive.to_nchw(self.x)).contiguous(memory_format=fmt)
        self.yt = torch.from_numpy(self.y)
        self.xt_infer = torch.from_numpy(naive.to_nchw(self.x_infer)).contiguous(memory_format=fmt)

    def train_step(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(self.xt), self.yt)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def predict(self):
        with self.torch.inference_mode():
            return self.torch.softmax(self.model(self.xt_infer), dim=1)


# ---------------------------------------------------------------------------------------------------- Keras
def keras_model(spec: ModelSpec, seed: int = 0):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(seed)
    stack = [keras.Input(spec.input_shape)]
    for layer in spec.layers:
        if isinstance(layer, Conv):
            stack.append(keras.layers.Conv2D(layer.filters, layer.kernel, padding=layer.padding, activation="relu"))
        elif isinstance(layer, Pool):
            stack.append(keras.layers.MaxPooling2D(layer.size))
        elif isinstance(layer, Flatten):
            stack.append(keras.layers.Flatten())
        else:
            stack.append(keras.layers.Dense(layer.units, activation=layer.activation))
    model = keras.Sequential(stack)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    return model


class KerasRunner(Runner):
    def __init__(self, spec, batch, infer_batch, seed=0):
        super().__init__(spec, batch, infer_batch, seed)
        self.model = keras_model(spec, seed)

    def train_step(self):
        return self.model.train_on_batch(self.x, self.y)

    def predict(self):
        return self.model.predict_on_batch(self.x_infer)


def make_runner(framework: str, spec: ModelSpec, batch: int, infer_batch: int, seed: int = 0) -> Runner:
    if framework == "minicnn":
        return MinicnnRunner(spec, batch, infer_batch, seed)
    if framework == "naive":
        return NaiveRunner(spec, batch, infer_batch, seed)
    if framework in ("torch", "torch_cl"):
        return TorchRunner(spec, batch, infer_batch, seed, channels_last=framework == "torch_cl")
    if framework == "keras":
        return KerasRunner(spec, batch, infer_batch, seed)
    raise ValueError(f"unknown framework {framework!r}; choose one of {FRAMEWORKS}")
