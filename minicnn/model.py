"""Sequential: a stack of layers trained by mini-batch gradient descent, with Keras's methods and names.

One training step, as data flows (``train_on_batch``):

1. the batch goes to the backend's device as float32;
2. each layer's ``forward(x, training=True)`` keeps what its ``backward`` needs;
3. the loss returns the mean loss and dL/d(output). When the last layer ends in softmax (sigmoid) and the loss is
   cross-entropy, the two are fused: dL/dz = (p - y) / N, computed from the logits z, which is exact and never
   inf/NaN, and the last layer's activation backward is skipped;
4. each layer's ``backward(dout)`` in reverse fills its ``grads`` and returns dL/d(its input);
5. the optimizer updates every ``params[key]`` in place from ``grads[key]``.

In 2 and 4 a Conv2D(relu) and the MaxPooling2D(2) after it run as one step, on an engine with a kernel for the
pair (``layers.fused``): the same maths, without writing the convolution's full output.

Shapes, dtypes, NaNs and labels are checked once, at the edge (``fit``, ``evaluate``, ``predict``); the loop
itself assumes valid input.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from minicnn import callbacks as callbacks_module
from minicnn import losses as losses_module
from minicnn import optimizers as optimizers_module
from minicnn import parallel
from minicnn.backend import get_backend
from minicnn.layers import fused
from minicnn.layers.base import Layer, LinearActivationLayer, _fmt
from minicnn.layers.core import InputLayer
from minicnn.utils import new_rng


class NotBuiltError(ValueError):
    pass


class Sequential:
    """``Sequential([layers.Conv2D(16, 3, activation='relu', input_shape=(28, 28, 1)), ...])``, as Keras.

    ``seed`` fixes this model's generator (initial weights, shuffling, dropout); ``device`` picks the backend
    (``'cpu'`` by default, ``'cuda'`` for the GPU; see ``minicnn.set_device``).
    """

    def __init__(self, layers=None, name: str | None = None, seed: int | None = None, device: str | None = None):
        self.name = name or "sequential"
        self.layers: list[Layer] = []
        self.rng = new_rng(seed)
        self.backend = get_backend(device)
        self.input_shape: tuple | None = None
        self.built = False
        self.optimizer = None
        self.loss = None
        self.metrics: list[str] = []
        self.stop_training = False
        self.class_names: list[str] | None = None
        self.history = None
        self._first_trainable = 0
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------------------------------------ building
    def add(self, layer: Layer) -> None:
        """Append a layer. An ``Input`` or a first layer with ``input_shape`` builds the model at once."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a minicnn layer; got {type(layer).__name__}")
        if isinstance(layer, InputLayer):
            if self.layers:
                raise ValueError("Input(...) must come first in a Sequential model")
            self.input_shape = layer.input_shape
            return
        if any(existing.name == layer.name for existing in self.layers):
            raise ValueError(f"{self.name}: two layers are named '{layer.name}'; layer names must be unique")
        self.layers.append(layer)
        if len(self.layers) == 1 and layer.input_shape is not None and self.input_shape is None:
            self.input_shape = layer.input_shape
        if self.built:
            self._build_layer(layer, self.layers[-2].output_shape if len(self.layers) > 1 else self.input_shape)
            self._mark_input_gradients()
        elif self.input_shape is not None:
            self.build(self.input_shape)

    def build(self, input_shape) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (with or without the batch axis)."""
        input_shape = tuple(input_shape)
        if input_shape and input_shape[0] is None:
            input_shape = input_shape[1:]
        self.input_shape = tuple(int(d) for d in input_shape)
        shape = self.input_shape
        for layer in self.layers:
            self._build_layer(layer, shape)
            shape = layer.output_shape
        self.built = bool(self.layers)
        self._mark_input_gradients()

    def _mark_input_gradients(self) -> None:
        """Backward stops at the first layer with weights: what comes before it (rescaling, augmentation) has
        nothing to learn, and the gradient with respect to the input images is never used."""
        first = next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))
        for i, layer in enumerate(self.layers):
            layer.need_input_gradient = i > first
            layer.may_overwrite_dout = True  # each dout comes from the loss or the layer above, for this step only
        self._first_trainable = first

    def _build_layer(self, layer: Layer, shape: tuple) -> None:
        layer.backend = self.backend
        if layer.input_shape is not None and layer is not self.layers[0] and tuple(layer.input_shape) != shape:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}' was given input_shape={layer.input_shape}, "
                f"but the layer before it outputs {shape}"
            )
        layer.build(shape, self.rng)

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise NotBuiltError(
                f"{what}: model '{self.name}' has not been built yet, so its weights do not exist. Give the first "
                "layer an input_shape=(H, W, C) (or start with layers.Input(shape)), call model.build(input_shape), "
                "or fit it on data first."
            )

    @property
    def output_shape(self) -> tuple:
        self._require_built("output_shape")
        return self.layers[-1].output_shape

    def to(self, device: str) -> Sequential:
        """Move weights and optimizer state to ``device`` ('cpu' or 'cuda'); returns the model."""
        self.backend = get_backend(device)
        for layer in self.layers:
            layer.to_backend(self.backend)
        for obj in (self.optimizer, self.loss):
            if obj is not None:
                if hasattr(obj, "to_backend"):
                    obj.to_backend(self.backend)
                else:
                    obj.backend = self.backend
        return self

    # ------------------------------------------------------------------------------------------------ compile
    def compile(self, optimizer="adam", loss=None, metrics=None) -> None:
        """Choose the optimizer, the loss and the metrics (only ``'accuracy'``/``'acc'`` is computed)."""
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = losses_module.get(loss)
        self.optimizer.backend = self.backend
        self.loss.backend = self.backend
        self.metrics = []
        for m in metrics or []:
            if str(m).lower() not in ("accuracy", "acc"):
                raise ValueError(f"unknown metric {m!r}; minicnn computes 'accuracy'")
            self.metrics.append("accuracy")

    def _require_compiled(self, what: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(
                f"{what}: compile the model first, e.g. model.compile(optimizer='adam', "
                "loss='sparse_categorical_crossentropy', metrics=['accuracy'])"
            )

    # ------------------------------------------------------------------------------------------------ one step
    def _forward(self, x, training: bool, layers=None):
        layers = self.layers if layers is None else layers
        for layer in layers:  # the last pass's activations: free them before this pass allocates its own
            layer.cache = None
        for step in self._steps(layers):
            x = step.forward(x, training=training)
        return x

    @staticmethod
    def _steps(layers, first: int = 0) -> list:
        """What a pass over ``layers[first:]`` runs: the layers, each Conv2D(relu) and the MaxPooling2D(2) after it
        as one step (``layers.fused``); the last layer always on its own (the loss reads it)."""
        return [*fused.steps(layers[first:-1]), *layers[-1:]]

    def _fused(self) -> bool:
        last = self.layers[-1]
        fuses_with = getattr(self.loss, "fuses_with", None)
        return (
            fuses_with is not None
            and not getattr(self.loss, "from_logits", False)
            and isinstance(last, LinearActivationLayer)
            and last.activation == fuses_with
        )

    def train_on_batch(self, x, y):
        """One gradient step on a batch already on the device. Returns (loss, output probabilities).

        On several cores the batch may be cut into slices that threads run at once (``minicnn.parallel``)."""
        k = parallel.slices(self, len(x))
        if k:  # the slices' passes, then the optimizer's step (in worker processes, as the gradients come in)
            loss, out = parallel.forward_backward(self, x, y, k, self.optimizer.apply_gradients)
        else:
            loss, out = self._forward_backward(self.layers, x, y)
            self.optimizer.apply_gradients(self._trainable_items())
        return float(loss), out

    def _forward_backward(self, layers, x, y, weight: float = 1.0, after_step=None):
        """Steps 2-4 above through ``layers`` (this model's, or one thread's copies of them), dL/d(output) scaled
        by ``weight``; ``after_step(step)``, if given, after each step's backward pass. Returns (the mean loss over
        x, the outputs)."""
        out = self._forward(x, training=True, layers=layers)
        last = layers[-1]
        if self._fused():
            loss, dz = self.loss.forward_from_logits(last.logits, y)
            dout = last.backward(dz * weight if weight != 1 else dz, skip_activation=True)
        else:
            loss, dout = self.loss.forward(out, y)
            dout = last.backward(dout * weight if weight != 1 else dout)
        if after_step is not None:
            after_step(last)
        for step in reversed(self._steps(layers, self._first_trainable)[:-1]):  # the same steps as _forward's
            dout = step.backward(dout)
            if after_step is not None:
                after_step(step)
        return loss, out

    def _trainable_items(self):
        for layer in self.layers:
            if layer.trainable:
                for key, p in layer.params.items():
                    yield f"{layer.name}/{key}", p, layer.grads[key]

    # ------------------------------------------------------------------------------------------------ fit
    def fit(
        self,
        x=None,
        y=None,
        batch_size: int | None = 32,
        epochs: int = 1,
        verbose="auto",
        callbacks=None,
        validation_split: float = 0.0,
        validation_data=None,
        shuffle: bool = True,
        initial_epoch: int = 0,
    ):
        """Train for ``epochs`` passes over (x, y); returns a ``History`` (``history.history['loss']``, ...).

        ``x`` may also be a dataset with a ``batches(batch_size, shuffle, seed)`` method (``datasets.image_folder``),
        which streams from disk. ``validation_split`` holds out that fraction, shuffled and stratified by class
        (not the last rows, as Keras does, which on class-sorted data gives a one-class validation set).
        """
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"fit: batch_size must be a positive int; got {batch_size}")
        streaming = _is_dataset(x)
        if streaming:
            if validation_split:
                raise ValueError("fit: validation_split needs arrays; for a dataset pass validation_data")
            self._adopt_class_names(x)
            n = len(x)
            self._ensure_built_from_dataset(x)
        else:
            x, y = self._check_xy(x, y, "fit")
            if validation_split:
                if validation_data is not None:
                    raise ValueError("fit: give validation_split or validation_data, not both")
                if not 0.0 < validation_split < 1.0:
                    raise ValueError(f"fit: validation_split must be in (0, 1); got {validation_split}")
                train_idx, val_idx = stratified_split(y, validation_split, self.rng)
                validation_data = (x[val_idx], y[val_idx])
                x, y = x[train_idx], y[train_idx]
            n = len(x)
        if validation_data is not None and not _is_dataset(validation_data):
            validation_data = self._check_xy(*validation_data[:2], "fit (validation_data)")

        verbose = 1 if verbose == "auto" else int(verbose)
        steps = math.ceil(n / batch_size)
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose=verbose))
        cbs.append(history)
        cb = callbacks_module.CallbackList(
            cbs, model=self, params={"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size}
        )
        self.stop_training = False
        cb.on_train_begin({})
        with parallel.hold_blas():  # BLAS on one thread through every split step (minicnn.parallel)
            for epoch in range(initial_epoch, epochs):
                cb.on_epoch_begin(epoch, {})
                totals = _Running()
                for step, (xb, yb) in enumerate(self._train_batches(x, y, batch_size, shuffle, streaming)):
                    cb.on_train_batch_begin(step, {})
                    loss, out = self.train_on_batch(xb, yb)
                    if not math.isfinite(loss):
                        message = (
                            f"Epoch {epoch + 1}, batch {step}: the loss became {loss}; training stopped. "
                            "Lower the learning rate, scale the inputs (e.g. x / 255) or check the labels."
                        )
                        warnings.warn(message, RuntimeWarning, stacklevel=2)
                        self.stop_training = True
                    totals.add(len(yb), loss, self._accuracy(out, yb))
                    cb.on_train_batch_end(step, totals.logs(self.metrics))
                    if self.stop_training:
                        break
                logs = totals.logs(self.metrics)
                if validation_data is not None:
                    val = self.evaluate(*_as_pair(validation_data), batch_size=batch_size, verbose=0, return_dict=True)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                logs["learning_rate"] = float(self.optimizer.learning_rate)
                cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        cb.on_train_end({})
        self.history = history
        return history

    def _train_batches(self, x, y, batch_size, shuffle, streaming):
        if streaming:
            seed = int(self.rng.integers(2**31)) if shuffle else None
            n_outputs = int(np.prod(self.output_shape))
            for xb, yb in x.batches(batch_size, shuffle=shuffle, seed=seed):
                yb = self.loss.check_targets(np.asarray(yb), n_outputs)
                yield self.backend.asarray(xb, np.float32), self._device_labels(yb)
            return
        order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))
        for start in range(0, len(x), batch_size):
            idx = np.sort(order[start : start + batch_size]) if shuffle else order[start : start + batch_size]
            yield self.backend.asarray(x[idx], np.float32), self._device_labels(y[idx])

    def _device_labels(self, y):
        return self.backend.asarray(y, y.dtype)

    def _accuracy(self, out, y) -> float | None:
        if not self.metrics:
            return None
        p = self.backend.to_numpy(out)
        y = self.backend.to_numpy(y)
        if type(self.loss).__name__ == "BinaryCrossentropy":
            threshold = 0.0 if getattr(self.loss, "from_logits", False) else 0.5
            return float(np.mean((p > threshold) == (y > 0.5)))
        predicted = p.reshape(len(p), -1).argmax(axis=1)
        truth = y.argmax(axis=1) if y.ndim == 2 else y.reshape(-1)
        return float(np.mean(predicted == truth))

    # ------------------------------------------------------------------------------------------------ evaluate
    def evaluate(self, x=None, y=None, batch_size: int = 32, verbose="auto", return_dict: bool = False):
        """Loss (and accuracy) over (x, y) in batches: ``loss`` or ``[loss, accuracy]``, or a dict."""
        self._require_compiled("evaluate")
        totals = _Running()
        if _is_dataset(x):
            self._ensure_built_from_dataset(x)
            batches = (
                (self.backend.asarray(xb, np.float32), self._device_labels(yb))
                for xb, yb in x.batches(batch_size, shuffle=False)
            )
        else:
            x, y = self._check_xy(x, y, "evaluate")
            batches = self._train_batches(x, y, batch_size, shuffle=False, streaming=False)
        with parallel.hold_blas():
            for xb, yb in batches:
                out, logits = self._predict_batch(xb, keep_logits=self._fused())
                loss, _ = self.loss.forward(out, yb) if logits is None else self.loss.forward_from_logits(logits, yb)
                totals.add(len(yb), float(loss), self._accuracy(out, yb))
        logs = totals.logs(self.metrics)
        if verbose and verbose != "auto":
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        return logs["loss"] if not self.metrics else [logs["loss"], logs["accuracy"]]

    # ------------------------------------------------------------------------------------------------ predict
    def predict(self, x, batch_size: int = 32, verbose=0) -> np.ndarray:
        """Outputs (probabilities, for a softmax model) for any number of samples, one batch in memory at a time.

        ``x``: an array (N, *input_shape), or a dataset with ``batches()``. Returns a NumPy float32 array.
        """
        if _is_dataset(x):
            self._ensure_built_from_dataset(x)
            chunks = (xb for xb, _ in x.batches(batch_size, shuffle=False))
        else:
            x = self._check_x(x, "predict")
            chunks = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
        with parallel.hold_blas():
            outs = [
                self.backend.to_numpy(self._predict_batch(self.backend.asarray(xb, np.float32))[0]) for xb in chunks
            ]
        if not outs:
            return np.zeros((0, *self.output_shape), np.float32)
        return np.concatenate([np.asarray(o, np.float32) for o in outs])

    def _predict_batch(self, x, keep_logits: bool = False):
        """(outputs, the last layer's logits if ``keep_logits`` else None) for one batch, split over threads when
        ``minicnn.parallel`` says so."""
        k = parallel.slices(self, len(x))
        if k:
            return parallel.forward(self, x, k, keep_logits)
        out = self._forward(x, training=False)
        return out, (self.layers[-1].logits if keep_logits else None)

    def __call__(self, x, training: bool = False):
        return self.predict(x) if not training else self._forward(self.backend.asarray(x, np.float32), True)

    # ------------------------------------------------------------------------------------------------ checks
    def _check_x(self, x, where: str) -> np.ndarray:
        if isinstance(x, list | tuple):
            x = np.asarray(x)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{where}: x must be a NumPy array (N, H, W, C); got {type(x).__name__}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"{where}: x must hold numbers; got dtype {x.dtype}")
        if len(x) == 0:
            raise ValueError(f"{where}: x is empty (shape {x.shape}); there is nothing to {where.split()[0]}")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int(np.size(x) - np.isfinite(x).sum())
            raise ValueError(f"{where}: x contains {bad} NaN or inf value(s); clean or impute them first")
        if not self.built:
            if not self.layers:
                raise ValueError(f"{where}: the model has no layers")
            self.build(x.shape[1:])
        first = self.layers[0]
        expected = (None, *self.input_shape)
        if x.ndim != len(expected) or tuple(x.shape[1:]) != self.input_shape:
            hint = ""
            if x.ndim == len(expected) - 1 and tuple(x.shape[1:]) == self.input_shape[:-1]:
                hint = ": add a channel axis, e.g. x[..., None]"
            raise ValueError(
                f"{where}: {type(first).__name__} '{first.name}' expects input of shape {_fmt(expected)} "
                f"(rank {len(expected)}); got {tuple(x.shape)}{hint}"
            )
        return x

    def _check_xy(self, x, y, where: str):
        x = self._check_x(x, where)
        if y is None:
            raise ValueError(f"{where}: y (the labels) is missing")
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"{where}: x and y have different lengths: {len(x)} samples and {len(y)} labels")
        n_outputs = int(np.prod(self.output_shape))
        y = self.loss.check_targets(y, n_outputs)
        return x, y

    def _ensure_built_from_dataset(self, ds) -> None:
        if not self.built:
            xb, _ = next(iter(ds.batches(1, shuffle=False)))
            self.build(np.asarray(xb).shape[1:])

    def _adopt_class_names(self, ds) -> None:
        names = getattr(ds, "class_names", None)
        if names:
            self.class_names = list(names)

    def profile(self, x, y, batch_size: int = 32, steps: int = 10, print_fn=print) -> dict:
        """Time each layer's forward and backward over a few training steps; see ``minicnn.profiler``."""
        from minicnn.profiler import profile

        return profile(self, x, y, batch_size=batch_size, steps=steps, print_fn=print_fn)

    # ------------------------------------------------------------------------------------------------ weights
    def get_weights(self) -> list[np.ndarray]:
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights) -> None:
        weights = list(weights)
        expected = sum(len(layer.params) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"set_weights: model '{self.name}' has {expected} weight arrays; got {len(weights)}")
        i = 0
        for layer in self.layers:
            layer.set_weights(weights[i : i + len(layer.params)])
            i += len(layer.params)

    def count_params(self) -> int:
        self._require_built("count_params")
        return sum(layer.count_params() for layer in self.layers)

    def summary(self, print_fn=print) -> None:
        """A table of layers, output shapes and parameter counts, with totals (Keras's counts)."""
        self._require_built("summary")
        rows = [
            (
                f"{layer.name} ({type(layer).__name__})",
                _fmt((None, *layer.output_shape)).replace("N", "None"),
                f"{layer.count_params():,}",
            )
            for layer in self.layers
        ]
        w = [
            max(len(h), *(len(r[i]) for r in rows)) + 2
            for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))
        ]
        line = "-" * (sum(w) + 2)
        text = [
            f'Model: "{self.name}"',
            line,
            f"{'Layer (type)':<{w[0]}} {'Output Shape':<{w[1]}} {'Param #':>{w[2]}}",
            "=" * len(line),
        ]
        text += [f"{a:<{w[0]}} {b:<{w[1]}} {c:>{w[2]}}" for a, b, c in rows]
        total = self.count_params()
        trainable = sum(layer.count_params() for layer in self.layers if layer.trainable)
        text += [
            "=" * len(line),
            f"Total params: {total:,} ({_bytes(total * 4)})",
            f"Trainable params: {trainable:,} ({_bytes(trainable * 4)})",
            f"Non-trainable params: {total - trainable:,} ({_bytes((total - trainable) * 4)})",
            line,
        ]
        print_fn("\n".join(text))

    # ------------------------------------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config: dict, device: str | None = None) -> Sequential:
        from minicnn.layers import registry

        model = cls(name=config.get("name"), device=device)
        for spec in config["layers"]:
            try:
                layer_cls = registry()[spec["class_name"]]
            except KeyError:
                raise ValueError(f"unknown layer type {spec['class_name']!r} in the model config") from None
            model.add(layer_cls.from_config(spec["config"]))
        if not model.built and config.get("input_shape") is not None:
            model.build(config["input_shape"])
        return model

    def save(self, path) -> None:
        """Write architecture, weights, optimizer state and class names to one ``.safetensors`` file, atomically."""
        from minicnn.saving import save_model

        save_model(self, path)

    def __repr__(self) -> str:
        return f"<Sequential '{self.name}': {len(self.layers)} layers>"


class _Running:
    """Sample-weighted running means of loss and accuracy over an epoch (what the progress bar shows)."""

    def __init__(self):
        self.n = 0
        self.loss = 0.0
        self.correct = 0.0

    def add(self, n: int, loss: float, accuracy: float | None) -> None:
        self.n += n
        self.loss += loss * n
        if accuracy is not None:
            self.correct += accuracy * n

    def logs(self, metrics) -> dict:
        logs = {"loss": self.loss / max(self.n, 1)}
        if "accuracy" in metrics:
            logs["accuracy"] = self.correct / max(self.n, 1)
        return logs


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Indices (train, validation): ``fraction`` of each class held out at random, the rest kept for training.

    Stratifying keeps the class balance in both parts even when ``y`` is sorted by class.
    """
    labels = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else np.round(y.reshape(len(y), -1)[:, 0])
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val.append(idx[: int(round(fraction * len(idx)))])
    val_idx = np.sort(np.concatenate(val))
    if len(val_idx) == 0 or len(val_idx) == len(y):
        raise ValueError(f"validation_split={fraction} leaves an empty training or validation set for {len(y)} samples")
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return train_idx, val_idx


def _is_dataset(x) -> bool:
    return hasattr(x, "batches") and not isinstance(x, np.ndarray)


def _as_pair(data):
    return (data, None) if _is_dataset(data) else data[:2]


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.2f} GB"
