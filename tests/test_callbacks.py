"""Keras callbacks, driven by hand on a tiny fake model in the order ``fit`` calls them."""

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from minicnn import progress
from minicnn.callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    TerminateOnNaN,
)


class FakeOptimizer:
    def __init__(self, learning_rate=0.01):
        self.learning_rate = learning_rate


class FakeModel:
    """What callbacks may touch: stop_training, optimizer.learning_rate, get/set_weights and save."""

    def __init__(self):
        self.stop_training = False
        self.optimizer = FakeOptimizer()
        self.weights = [np.zeros((2, 2)), np.zeros(2)]
        self.saved = []

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def save(self, path):
        with open(path, "w") as f:
            f.write("model")
        self.saved.append(str(path))


def fit(callbacks, epoch_logs, model=None, steps=2, batch_loss=None, verbose=0):
    """Drive the hooks like ``Model.fit``: epoch ``e`` ends with ``epoch_logs[e]``; its weights are all ``e``.

    Stops after the epoch in which a callback sets ``model.stop_training``; returns the model and the epochs run.
    """
    model = model or FakeModel()
    cbs = CallbackList(callbacks, model=model, params={"epochs": len(epoch_logs), "steps": steps, "verbose": verbose})
    cbs.on_train_begin()
    ran = []
    for epoch, logs in enumerate(epoch_logs):
        cbs.on_epoch_begin(epoch)
        for batch in range(steps):
            cbs.on_train_batch_begin(batch)
            loss = batch_loss(epoch, batch) if batch_loss else logs.get("loss", 1.0)
            cbs.on_train_batch_end(batch, {"loss": loss, "accuracy": 0.5})
            if model.stop_training:
                break
        model.weights = [np.full_like(w, epoch) for w in model.weights]
        cbs.on_epoch_end(epoch, dict(logs))
        ran.append(epoch)
        if model.stop_training:
            break
    cbs.on_train_end()
    return model, ran


def val_losses(*values):
    return [{"loss": 1.0, "val_loss": v} for v in values]


# ------------------------------------------------------------------------------------------------ base
def test_base_callback_hooks_do_nothing_and_list_dispatches_in_order():
    calls = []

    class Recorder(Callback):
        def __getattribute__(self, name):
            if name.startswith("on_"):
                return lambda *args: calls.append((name, *args[:-1]))
            return super().__getattribute__(name)

    cbs = CallbackList([Callback(), Recorder()], model="m", params={"epochs": 1})
    assert cbs.callbacks[1].model == "m" and cbs.callbacks[1].params == {"epochs": 1}
    for hook in ["on_train_begin", "on_test_begin", "on_test_end", "on_predict_begin", "on_predict_end"]:
        getattr(cbs, hook)()
    cbs.on_epoch_begin(0)
    cbs.on_train_batch_begin(3)
    cbs.on_train_batch_end(3, {"loss": 1.0})
    cbs.on_epoch_end(0, {"loss": 1.0})
    cbs.on_train_end()
    assert [c[0] for c in calls] == [
        "on_train_begin", "on_test_begin", "on_test_end", "on_predict_begin", "on_predict_end",
        "on_epoch_begin", "on_train_batch_begin", "on_train_batch_end", "on_epoch_end", "on_train_end",
    ]  # fmt: skip
    assert calls[5] == ("on_epoch_begin", 0) and calls[7] == ("on_train_batch_end", 3)


def test_callback_list_shares_logs_and_turns_numpy_scalars_into_floats():
    seen = []

    class Adds(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["extra"] = 1

    class Reads(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(dict(logs))

    CallbackList([Adds(), Reads()]).on_epoch_end(0, {"loss": np.float32(0.5)})
    assert seen == [{"loss": 0.5, "extra": 1}] and type(seen[0]["loss"]) is float


def test_callback_list_adds_history_and_progbar_once():
    history = History()
    cbs = CallbackList([history], add_history=True, add_progbar=True)
    assert cbs.history is history
    assert [type(c) for c in cbs.callbacks] == [History, ProgbarLogger]


# ------------------------------------------------------------------------------------------------ History
def test_history_records_every_epoch():
    history = History()
    model, _ = fit([history], [{"loss": 1.0, "accuracy": 0.5}, {"loss": 0.5, "accuracy": 0.75}])
    assert history.history == {"loss": [1.0, 0.5], "accuracy": [0.5, 0.75]}
    assert history.epoch == [0, 1]
    assert history.params == {"epochs": 2, "steps": 2, "verbose": 0}
    assert model.history is history


# ------------------------------------------------------------------------------------------------ EarlyStopping
def test_early_stopping_stops_after_patience_epochs_without_improvement():
    stop = EarlyStopping(patience=2)
    model, ran = fit([stop], val_losses(1.0, 0.8, 0.9, 0.85, 0.7, 0.6))
    assert ran == [0, 1, 2, 3] and stop.stopped_epoch == 3 and model.stop_training
    assert stop.best == 0.8 and stop.best_epoch == 1


def test_early_stopping_patience_0_stops_at_the_first_bad_epoch():
    stop = EarlyStopping()
    _, ran = fit([stop], val_losses(1.0, 0.9, 0.95, 0.1))
    assert ran == [0, 1, 2] and stop.stopped_epoch == 2


def test_early_stopping_restores_the_best_weights_when_it_stops(capsys):
    stop = EarlyStopping(patience=1, restore_best_weights=True, verbose=1)
    model, ran = fit([stop], val_losses(1.0, 0.5, 0.7, 0.9, 0.1))
    assert ran == [0, 1, 2]
    assert all((w == 1).all() for w in model.weights)  # the weights at the end of epoch 1
    out = capsys.readouterr().out
    assert "Epoch 3: early stopping" in out and "best epoch: 2." in out


def test_early_stopping_restores_the_best_weights_without_an_early_stop():
    stop = EarlyStopping(patience=10, restore_best_weights=True)
    model, ran = fit([stop], val_losses(1.0, 0.5, 0.3, 0.4, 0.6))
    assert ran == [0, 1, 2, 3, 4] and stop.stopped_epoch == 0 and not model.stop_training
    assert all((w == 2).all() for w in model.weights)


def test_early_stopping_min_delta():
    # improvements of 0.05 are not improvements by more than 0.1
    stop = EarlyStopping(min_delta=0.1, patience=2)
    _, ran = fit([stop], val_losses(1.0, 0.95, 0.9, 0.5))
    assert ran == [0, 1, 2] and stop.best == 1.0


def test_early_stopping_mode_max_and_auto():
    stop = EarlyStopping(monitor="val_accuracy", patience=1)  # auto: accuracy is maximised
    logs = [{"val_accuracy": a} for a in (0.5, 0.6, 0.55, 0.7)]
    _, ran = fit([stop], logs)
    assert ran == [0, 1, 2] and stop.best == 0.6
    stop = EarlyStopping(monitor="score", mode="max", patience=1)
    _, ran = fit([stop], [{"score": s} for s in (1, 2, 3, 2, 1)])
    assert ran == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="mode must be 'auto', 'min' or 'max'"):
        EarlyStopping(mode="maximum")


def test_early_stopping_baseline_and_start_from_epoch():
    # never beats the baseline of 0.5: stops once patience runs out even though it keeps improving
    stop = EarlyStopping(baseline=0.5, patience=2)
    _, ran = fit([stop], val_losses(0.9, 0.8, 0.7, 0.6))
    assert ran == [0, 1]
    # beats it at epoch 1: from then on only the usual patience
    stop = EarlyStopping(baseline=0.5, patience=2)
    _, ran = fit([stop], val_losses(0.9, 0.4, 0.45, 0.3, 0.5, 0.6, 0.1))
    assert ran == [0, 1, 2, 3, 4, 5]
    # patience 0 does not stop an improving run
    stop = EarlyStopping(patience=0)
    _, ran = fit([stop], val_losses(0.9, 0.8, 0.7))
    assert ran == [0, 1, 2]
    # epochs 0 and 1 are a warm-up: their bad values do not count
    stop = EarlyStopping(start_from_epoch=2)
    _, ran = fit([stop], val_losses(0.1, 0.9, 0.8, 0.7, 0.75))
    assert ran == [0, 1, 2, 3, 4]


def test_early_stopping_warns_once_about_a_missing_metric():
    stop = EarlyStopping(monitor="val_loss", patience=0)
    with pytest.warns(UserWarning, match="'val_loss'.*Available metrics are: loss, accuracy") as record:
        model, ran = fit([stop], [{"loss": 1.0, "accuracy": 0.5}] * 3)
    assert len(record) == 1 and ran == [0, 1, 2] and not model.stop_training


def test_early_stopping_can_be_reused():
    stop = EarlyStopping(patience=0)
    fit([stop], val_losses(1.0, 2.0))
    _, ran = fit([stop], val_losses(5.0, 4.0, 3.0))
    assert ran == [0, 1, 2] and stop.stopped_epoch == 0


# ------------------------------------------------------------------------------------------------ ModelCheckpoint
def test_checkpoint_formats_the_filename_from_epoch_and_logs(tmp_path):
    pattern = str(tmp_path / "ckpt" / "model-{epoch:02d}-{val_loss:.2f}.safetensors")
    model, _ = fit([ModelCheckpoint(pattern)], val_losses(0.912, 0.5))
    assert [p.rsplit("/", 1)[-1] for p in model.saved] == ["model-01-0.91.safetensors", "model-02-0.50.safetensors"]
    assert (tmp_path / "ckpt" / "model-02-0.50.safetensors").exists()  # the folder is created


def test_checkpoint_save_best_only(tmp_path, capsys):
    check = ModelCheckpoint(tmp_path / "e{epoch}.st", save_best_only=True, verbose=1)
    model, _ = fit([check], val_losses(1.0, 1.2, 0.8, 0.8, 0.5))
    assert [p.rsplit("/", 1)[-1] for p in model.saved] == ["e1.st", "e3.st", "e5.st"]
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from inf to 1.00000, saving model to" in out
    assert "Epoch 2: val_loss did not improve from 1.00000" in out


def test_checkpoint_mode_max(tmp_path):
    model, _ = fit(
        [ModelCheckpoint(tmp_path / "e{epoch}.st", monitor="val_accuracy", save_best_only=True)],
        [{"val_accuracy": a} for a in (0.5, 0.4, 0.9)],
    )
    assert [p.rsplit("/", 1)[-1] for p in model.saved] == ["e1.st", "e3.st"]


def test_checkpoint_unknown_field_names_the_available_keys(tmp_path):
    with pytest.raises(ValueError, match=r"'val_acc'.*fields may be epoch and the epoch logs: loss, val_loss"):
        fit([ModelCheckpoint(str(tmp_path / "{val_acc:.2f}.st"))], val_losses(1.0))


def test_checkpoint_best_only_without_the_metric_warns_and_skips(tmp_path):
    with pytest.warns(UserWarning, match="val_accuracy"):
        model, _ = fit(
            [ModelCheckpoint(tmp_path / "m.st", monitor="val_accuracy", save_best_only=True)], val_losses(1.0)
        )
    assert model.saved == []


# ------------------------------------------------------------------------------------------------ learning rate
def test_scheduler_sets_the_learning_rate_at_each_epoch_begin(capsys):
    seen = []

    class Spy(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(self.model.optimizer.learning_rate)

    history = History()
    schedule = LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5, verbose=1)
    model, _ = fit([schedule, Spy(), history], val_losses(1, 1, 1, 1))
    assert seen == [0.01, 0.01, 0.005, 0.0025]
    assert model.optimizer.learning_rate == 0.0025
    assert history.history["learning_rate"] == [0.01, 0.01, 0.005, 0.0025]
    assert "Epoch 3: LearningRateScheduler setting learning rate to 0.005." in capsys.readouterr().out


def test_scheduler_accepts_a_one_argument_schedule_and_checks_the_result():
    model, _ = fit([LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))], val_losses(1, 1))
    assert model.optimizer.learning_rate == 0.05
    with pytest.raises(ValueError, match="must return a float; got 'fast'"):
        fit([LearningRateScheduler(lambda epoch, lr: "fast")], val_losses(1))


def test_scheduler_does_not_hide_type_errors_inside_the_schedule():
    def schedule(epoch, lr):
        return lr + "oops"

    with pytest.raises(TypeError):
        fit([LearningRateScheduler(schedule)], val_losses(1))


def test_plateau_reduces_after_patience_then_cools_down():
    model = FakeModel()
    model.optimizer.learning_rate = 1.0
    rates = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(self.model.optimizer.learning_rate)

    plateau = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=2)
    # Keras's counting: best 1.0 at epoch 0; 1, 2 no better -> halve at 2; the cooldown counter runs down at
    # 3 and 4, and 4 already counts as a bad epoch again; 5 -> halve; 6 cools down
    fit([plateau, Spy()], val_losses(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), model=model)
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_plateau_min_delta_and_min_lr():
    model = FakeModel()
    model.optimizer.learning_rate = 0.1
    plateau = ReduceLROnPlateau(factor=0.1, patience=1, min_delta=0.01, min_lr=0.005)
    # improvements of 0.001 are below min_delta: every epoch after the first counts as a plateau
    fit([plateau], val_losses(1.0, 0.999, 0.998, 0.997, 0.996), model=model)
    assert model.optimizer.learning_rate == 0.005


def test_plateau_logs_the_learning_rate_and_resets_on_train_begin(capsys):
    history = History()
    plateau = ReduceLROnPlateau(monitor="val_accuracy", patience=0, verbose=1)
    model, _ = fit([plateau, history], [{"val_accuracy": 0.5}, {"val_accuracy": 0.4}, {"val_accuracy": 0.6}])
    assert history.history["learning_rate"] == [0.01, 0.01, 0.001]
    assert math.isclose(model.optimizer.learning_rate, 0.001)
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.001" in capsys.readouterr().out
    plateau.on_train_begin()
    assert plateau.best == -np.inf and plateau.wait == 0
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.0)


# ------------------------------------------------------------------------------------------------ CSVLogger
def test_csv_logger_writes_a_header_and_a_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    logger = CSVLogger(path)
    logs = [{"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6}, {"loss": 0.25, "accuracy": 0.9, "val_loss": 0.4}]
    fit([logger], logs)
    assert path.read_text() == "epoch,accuracy,loss,val_loss\n0,0.8,0.5,0.6\n1,0.9,0.25,0.4\n"
    assert logger._file is None


def test_csv_logger_flushes_each_epoch_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    logger = CSVLogger(path, separator=";")
    cbs = CallbackList([logger], model=FakeModel())
    cbs.on_train_begin()
    cbs.on_epoch_end(0, {"loss": 1.0})
    assert path.read_text() == "epoch;loss\n0;1.0\n"  # readable while training runs
    cbs.on_epoch_end(1, {})
    cbs.on_train_end()
    assert path.read_text().endswith("1;NA\n")

    fit([CSVLogger(path, separator=";", append=True)], [{"loss": 0.5}])
    assert path.read_text() == "epoch;loss\n0;1.0\n1;NA\n0;0.5\n"  # no second header
    fit([CSVLogger(tmp_path / "new.csv", append=True)], [{"loss": 0.5}])
    assert (tmp_path / "new.csv").read_text() == "epoch,loss\n0,0.5\n"


# ------------------------------------------------------------------------------------------------ TerminateOnNaN
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_terminate_on_nan_stops_at_the_bad_batch(capsys, bad):
    model, ran = fit(
        [TerminateOnNaN()], val_losses(1, 1, 1), steps=4, batch_loss=lambda e, b: bad if (e, b) == (1, 2) else 0.5
    )
    assert model.stop_training and ran == [0, 1]
    assert f"Epoch 2, batch 2: invalid loss ({bad}), terminating training" in capsys.readouterr().out


def test_terminate_on_nan_leaves_finite_losses_alone():
    model, ran = fit([TerminateOnNaN()], val_losses(1, 1), batch_loss=lambda e, b: 1e30)
    assert not model.stop_training and ran == [0, 1]


# ------------------------------------------------------------------------------------------------ ProgbarLogger
@pytest.fixture
def clock(monkeypatch):
    """The progress bar's clock advances 10 ms each time it is read."""
    fake = SimpleNamespace(t=0.0)

    def perf_counter():
        fake.t += 0.01
        return fake.t

    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=perf_counter))
    return fake


def test_progbar_logger_verbose_1(capsys, clock):
    logs = [{"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7, "learning_rate": 0.01}] * 3
    fit([ProgbarLogger()], logs, steps=5, verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/3" and lines[2] == "Epoch 2/3" and lines[4] == "Epoch 3/3"
    assert lines[1].startswith("5/5 " + "━" * 30)
    # the batch logs were running means (accuracy 0.5); the line ends with the epoch's logs as given
    assert lines[1].endswith(
        "- loss: 0.5000 - accuracy: 0.8000 - val_loss: 0.6000 - val_accuracy: 0.7000 - learning_rate: 0.0100"
    )


def test_progbar_logger_verbose_2_and_0(capsys, clock):
    fit([ProgbarLogger(verbose=2)], val_losses(0.5, 0.25), steps=3)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Epoch 1/2"
    assert out.splitlines()[3].startswith("3/3 - 0s - ") and out.count("\n") == 4
    assert out.splitlines()[3].endswith("- loss: 1.0000 - accuracy: 0.5000 - val_loss: 0.2500")
    fit([ProgbarLogger()], val_losses(0.5), verbose=0)
    assert capsys.readouterr().out == ""


def test_progbar_logger_single_epoch_unknown_steps_and_batch_size(capsys, clock):
    logger = ProgbarLogger(verbose=2)
    cbs = CallbackList([logger], model=FakeModel(), params={"epochs": 1, "steps": None, "batch_size": 10})
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    for batch in range(7):
        cbs.on_train_batch_end(batch, {"loss": 1.0})
    cbs.on_epoch_end(0, {"loss": 0.9})
    out = capsys.readouterr().out
    assert out.startswith("7/7 - 0s - ") and "samples/s" in out and out.endswith("- loss: 0.9000\n")


def test_progbar_logger_does_not_warn(clock):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit([ProgbarLogger(verbose=1)], val_losses(0.5), verbose=1)


def test_everything_together_in_one_fit(tmp_path, clock, capsys):
    history = History()
    callbacks = [
        TerminateOnNaN(),
        ReduceLROnPlateau(patience=1),
        EarlyStopping(patience=2, restore_best_weights=True),
        ModelCheckpoint(tmp_path / "best.st", save_best_only=True),
        CSVLogger(tmp_path / "log.csv"),
        ProgbarLogger(verbose=2),
        history,
    ]
    model, ran = fit(callbacks, val_losses(1.0, 0.5, 0.6, 0.7, 0.1))
    assert ran == [0, 1, 2, 3]
    assert capsys.readouterr().out.count("2/2 - ") == 4  # one line per epoch run
    assert history.history["learning_rate"] == [0.01, 0.01, 0.01, 0.001]
    assert all((w == 1).all() for w in model.weights)
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 5
