"""Keras callbacks: objects that ``fit`` calls at fixed points of training.

``fit`` calls, in this order::

    set_model(model); set_params({"epochs": ..., "steps": ..., "verbose": ...})
    on_train_begin(logs)
    for each epoch:   on_epoch_begin(epoch, logs)
                      for each batch: on_train_batch_begin(batch, logs); on_train_batch_end(batch, logs)
                      on_epoch_end(epoch, logs)
    on_train_end(logs)

``epoch`` and ``batch`` count from 0. Batch logs hold the running means over the epoch so far
(``{"loss": ..., "accuracy": ...}``); epoch logs add ``val_loss``, ``val_accuracy`` and ``learning_rate``.
A callback acts on the model through ``model.stop_training``, ``model.optimizer.learning_rate``,
``model.get_weights()`` / ``set_weights()`` and ``model.save(path)``.
"""

from __future__ import annotations

import csv
import inspect
import math
import numbers
import os
import warnings

import numpy as np

from minicnn.progress import Progbar


class Callback:
    """Base class: every hook does nothing. ``self.model`` and ``self.params`` are set by ``fit``."""

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = dict(params)

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...


class CallbackList:
    """Calls each hook on every callback in order, all with the same ``logs`` dict.

    Sharing one dict lets a callback add to the logs (``learning_rate``) before later ones (``History``) see
    them. ``add_history`` / ``add_progbar`` append a ``History`` / ``ProgbarLogger`` unless one is given.
    """

    def __init__(self, callbacks=None, model=None, params=None, add_history=False, add_progbar=False):
        self.callbacks = list(callbacks or [])
        if add_history and not any(isinstance(c, History) for c in self.callbacks):
            self.callbacks.append(History())
        if add_progbar and not any(isinstance(c, ProgbarLogger) for c in self.callbacks):
            self.callbacks.append(ProgbarLogger())
        self.history = next((c for c in self.callbacks if isinstance(c, History)), None)
        if model is not None:
            self.set_model(model)
        if params is not None:
            self.set_params(params)

    def set_model(self, model) -> None:
        for c in self.callbacks:
            c.set_model(model)

    def set_params(self, params: dict) -> None:
        for c in self.callbacks:
            c.set_params(params)

    def _call(self, hook: str, *args, logs=None) -> None:
        logs = _plain_floats(logs)
        for c in self.callbacks:
            getattr(c, hook)(*args, logs)

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs=logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs=logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._call("on_train_batch_begin", batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self._call("on_train_batch_end", batch, logs=logs)

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", logs=logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._call("on_test_batch_begin", batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        self._call("on_test_batch_end", batch, logs=logs)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", logs=logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", logs=logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._call("on_predict_batch_begin", batch, logs=logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._call("on_predict_batch_end", batch, logs=logs)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is the list of per-epoch losses. ``fit`` returns it."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """A progress bar per epoch under an ``Epoch 3/10`` header; ``verbose`` 1: the bar, 2: one line, 0: nothing.

    ``verbose=None`` takes ``params["verbose"]``. An optional ``params["batch_size"]`` adds samples/s.
    """

    def __init__(self, verbose: int | None = None):
        super().__init__()
        self.verbose = verbose
        self.progbar: Progbar | None = None
        self.seen = 0

    def _verbose(self) -> int:
        return self.verbose if self.verbose is not None else self.params.get("verbose", 1)

    def on_epoch_begin(self, epoch, logs=None):
        verbose, epochs = self._verbose(), self.params.get("epochs", 1)
        if verbose and epochs > 1:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        self.progbar = Progbar(self.params.get("steps"), verbose=verbose, batch_size=self.params.get("batch_size"))
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen = batch + 1
        self._update(self.seen, logs, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.progbar.target is None:  # unknown length: the epoch was as long as the batches seen
            self.progbar.target = self.seen
        self._update(self.progbar.target, logs, finalize=True)

    def _update(self, current: int, logs, finalize: bool) -> None:
        logs = logs or {}
        self.progbar.stateful_metrics.update(logs)  # the logs are already running means: show them as given
        self.progbar.update(current, list(logs.items()), finalize=finalize)


def _monitor_op(monitor: str, mode: str, owner: str):
    """``np.greater`` or ``np.less``: ``mode`` 'auto' maximises accuracy-like metrics and minimises the rest."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner} mode must be 'auto', 'min' or 'max'; got {mode!r}")
    if mode == "auto":
        mode = "max" if any(word in monitor for word in ("acc", "auc")) else "min"
    return np.greater if mode == "max" else np.less


class _Monitor(Callback):
    """Reads ``logs[monitor]`` and warns once, naming the keys there are, when it is missing."""

    def __init__(self, monitor: str):
        super().__init__()
        self.monitor = monitor
        self._warned = False

    def get_monitor_value(self, logs):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None and not self._warned:
            warnings.warn(
                f"{type(self).__name__} is conditioned on metric '{self.monitor}', which is not in the logs. "
                f"Available metrics are: {', '.join(logs) or 'none'}",
                stacklevel=2,
            )
            self._warned = True
        return value


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``baseline``: training also stops if the metric has not beaten it within ``patience`` epochs.
    ``restore_best_weights``: at the end of training, set the weights of the best epoch, whether or not
    training stopped early. Epochs before ``start_from_epoch`` are ignored (a warm-up).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
        verbose: int = 0,
    ):
        super().__init__(monitor)
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.verbose = verbose
        self.monitor_op = _monitor_op(monitor, mode, "EarlyStopping")
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _is_improvement(self, value, reference) -> bool:
        if reference is None:
            return True
        # "better by more than min_delta": value - delta < reference when minimising, + when maximising
        delta = self.min_delta if self.monitor_op is np.greater else -self.min_delta
        return bool(self.monitor_op(value - delta, reference))

    def on_epoch_end(self, epoch, logs=None):
        value = self.get_monitor_value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()  # until something beats it, this epoch is the best
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(value, self.baseline):
                self.wait = 0
                return
            # better than before but still short of the baseline: patience keeps running out
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model after each epoch with ``model.save(filepath)``.

    ``filepath`` may hold ``str.format`` fields from the epoch (1-based) and the logs, e.g.
    ``"ckpt/model-{epoch:02d}-{val_loss:.2f}.safetensors"``. ``save_best_only``: save only when ``monitor``
    improves on the best value so far.
    """

    def __init__(
        self,
        filepath,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        verbose: int = 0,
    ):
        super().__init__(monitor)
        self.filepath = os.fspath(filepath)
        self.save_best_only = save_best_only
        self.verbose = verbose
        self.monitor_op = _monitor_op(monitor, mode, "ModelCheckpoint")
        self.best = -np.inf if self.monitor_op is np.greater else np.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self._format_path(epoch, logs)
        if self.save_best_only:
            value = self.get_monitor_value(logs)
            if value is None:
                return
            if not self.monitor_op(value, self.best):
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(
                    f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {value:.5f}, "
                    f"saving model to {path}"
                )
            self.best = value
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.model.save(path)

    def _format_path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format_map({**logs, "epoch": epoch + 1})
        except (KeyError, IndexError) as e:
            raise ValueError(
                f"ModelCheckpoint cannot fill in filepath {self.filepath!r} ({type(e).__name__}: {e}); "
                f"its fields may be epoch and the epoch logs: {', '.join(logs)}"
            ) from None


class LearningRateScheduler(Callback):
    """At each epoch's start set ``model.optimizer.learning_rate = schedule(epoch, lr)`` (``epoch`` from 0).

    ``schedule(epoch)`` with one argument is accepted too, as in Keras.
    """

    def __init__(self, schedule, verbose: int = 0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.model.optimizer.learning_rate)
        new_lr = self.schedule(epoch, lr) if _takes_two_args(self.schedule) else self.schedule(epoch)
        if not isinstance(new_lr, numbers.Real) or isinstance(new_lr, bool):
            raise ValueError(f"the schedule of LearningRateScheduler must return a float; got {new_lr!r}")
        self.model.optimizer.learning_rate = float(new_lr)
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(new_lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs.

    After a reduction, wait ``cooldown`` epochs before counting again; never go below ``min_lr``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        verbose: int = 0,
    ):
        super().__init__(monitor)
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau factor must be between 0 and 1 (exclusive); got {factor}")
        self.factor = factor
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.verbose = verbose
        self.monitor_op = _monitor_op(monitor, mode, "ReduceLROnPlateau")
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.best = -np.inf if self.monitor_op is np.greater else np.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _is_improvement(self, value) -> bool:
        if self.monitor_op is np.greater:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        lr = float(self.model.optimizer.learning_rate)
        if logs is not None:
            logs["learning_rate"] = lr
        value = self.get_monitor_value(logs)
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(value):
            self.best = value
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and lr > self.min_lr:
                new_lr = max(lr * self.factor, self.min_lr)
                self.model.optimizer.learning_rate = new_lr
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                self.cooldown_counter = self.cooldown
                self.wait = 0


class CSVLogger(Callback):
    """Write the epoch logs to a CSV file: a header, then ``epoch`` and the sorted log keys, one row per epoch."""

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self.keys: list[str] | None = None
        self._file = None
        self._writer = None
        self._write_header = True

    def on_train_begin(self, logs=None):
        self._write_header = not (self.append and os.path.exists(self.filename) and os.path.getsize(self.filename))
        # newline="": the csv module writes its own line ends
        self._file = open(self.filename, "a" if self.append else "w", newline="", encoding="utf-8")
        self._writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._writer is None:
            self.keys = sorted(logs)
            self._writer = csv.writer(self._file, delimiter=self.separator)
            if self._write_header:
                self._writer.writerow(["epoch", *self.keys])
        self._writer.writerow([epoch, *(logs.get(key, "NA") for key in self.keys)])
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite."""

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            where = f"Epoch {self._epoch + 1}, batch {batch}"
            print(
                f"{where}: invalid loss ({loss}), terminating training. A lower learning rate or inputs "
                "scaled to [0, 1] usually help."
            )
            self.model.stop_training = True


def _takes_two_args(fn) -> bool:
    try:
        inspect.signature(fn).bind(0, 0.0)
    except TypeError:
        return False
    except ValueError:  # no signature to inspect (some builtins): assume the Keras 2-argument form
        return True
    return True


def _plain_floats(logs):
    """NumPy scalars in the logs become Python numbers, so they print and compare plainly."""
    if logs is None:
        return {}
    for key, value in logs.items():
        if isinstance(value, np.generic):
            logs[key] = value.item()
    return logs
