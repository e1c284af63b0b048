"""Slices in worker processes (minicnn.workers): the same training as on threads, bit for bit, and workers that
follow the model, report their errors and end with it."""

import gc
import os
import signal

import numpy as np
import pytest

import minicnn
from minicnn import layers, parallel, workers
from minicnn.kernels import cpu

pytestmark = [
    pytest.mark.skipif(not workers.PROCESSES, reason="worker processes are forked on Linux only"),
    pytest.mark.skipif(cpu.PARALLEL, reason="MINICNN_NUMBA_PARALLEL=1: the engine's loops use every core"),
]


@pytest.fixture(autouse=True)
def three_slices(monkeypatch):
    """Three slices (two workers) whatever the machine has, in 'batch' mode, and the settings put back."""
    monkeypatch.setattr(parallel, "threads", lambda: 3)
    monkeypatch.setattr(workers, "PROCESSES", workers.PROCESSES)  # the tests set it; monkeypatch puts it back
    minicnn.set_parallel("batch")
    yield
    minicnn.set_parallel("auto")


def model_and_data(seed=0, dropout=True):
    stack = [layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), layers.MaxPooling2D(), layers.Flatten()]
    stack += [layers.Dropout(0.2, seed=1)] if dropout else []
    stack += [layers.Dense(3, activation="softmax")]
    model = minicnn.Sequential(stack, seed=seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    return model, rng.normal(size=(30, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 30)


def fit(processes: bool, change=None):
    """Two fits of the same model (``change(model)`` between them), its slices in workers or on threads: the
    weights, the losses, and the workers' process ids after each fit (None: no workers)."""
    workers.PROCESSES = processes
    model, x, y = model_and_data()
    losses = model.fit(x, y, batch_size=12, epochs=2, verbose=0).history["loss"]  # 12, 12, 6: a short slice
    pids = [_pids(model)]
    if change is not None:
        change(model)
    losses += model.fit(x, y, batch_size=12, epochs=1, verbose=0).history["loss"]
    return model.get_weights(), losses, pids + [_pids(model)]


def _pids(model):
    pool = workers._pools.get(id(model))
    return None if pool is None else tuple(pool.pids)


def assert_same(a, b):
    assert a[1] == b[1]
    for wa, wb in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_slices_in_workers_train_as_slices_on_threads_bit_for_bit():
    in_workers, on_threads = fit(True), fit(False)
    assert in_workers[2][0] is not None and on_threads[2] == [None, None]
    assert in_workers[2][0] == in_workers[2][1]  # the same workers from fit to fit
    assert_same(in_workers, on_threads)  # Dropout's masks too: each slice's generator goes to its worker


def freeze_first(model):
    model.layers[0].trainable = False


def new_weights(model):
    model.set_weights([np.full_like(w, 0.01) for w in model.get_weights()])


def new_rate(model):
    model.layers[3].rate = 0.5  # a setting that no array shows, but get_config does


@pytest.mark.parametrize("change", [freeze_first, new_weights, new_rate])
def test_workers_are_forked_again_when_the_model_changes(change):
    in_workers, on_threads = fit(True, change), fit(False, change)
    before, after = in_workers[2]
    assert before is not None and after is not None and not set(before) & set(after)
    assert_same(in_workers, on_threads)


def test_workers_are_forked_again_for_a_new_loss():
    runs = []
    for processes in (True, False):
        workers.PROCESSES = processes
        model, x, y = model_and_data()
        model.fit(x, y, batch_size=12, epochs=1, verbose=0)
        model.compile(optimizer=model.optimizer, loss="categorical_crossentropy")
        model.fit(x, np.eye(3, dtype=np.float32)[y], batch_size=12, epochs=1, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_error_in_a_worker_reaches_the_caller_and_the_next_fit_forks_new_ones(monkeypatch):
    model, x, y = model_and_data(dropout=False)
    real = model._forward_backward

    def failing(layers, xs, ys, weight=1.0, after_step=None):
        if os.getpid() != parent:
            raise FloatingPointError("a slice failed on purpose")
        return real(layers, xs, ys, weight, after_step)

    parent = os.getpid()
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)  # workers forked before the fault: they do not have it
    old = workers._pools[id(model)]
    model._forward_backward = failing
    model.layers[0].trainable = False  # a change: the workers are forked again, with the fault
    with pytest.raises(RuntimeError, match="failed in its worker process: FloatingPointError: a slice failed"):
        model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert id(model) not in workers._pools  # closed, not left with an answer in a pipe
    for pid in old.pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped
    model._forward_backward = real
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert id(model) in workers._pools


@pytest.mark.parametrize("in_order", [True, False])
def test_the_optimizers_step_waits_for_the_workers_gradients_either_way(monkeypatch, in_order):
    # x86: the step starts as the workers' counts come in; elsewhere after their answers: the same training
    monkeypatch.setattr(workers, "STORES_IN_ORDER", in_order)
    assert_same(fit(True), fit(False))


def test_an_error_in_the_middle_of_a_workers_backward_pass_is_reported():
    # the parent updates each layer's weights as the worker's gradients come in: an error after the worker has
    # counted some of its backward steps must still reach the caller, not leave it waiting for the rest
    model, x, y = model_and_data(dropout=False)
    real = model._forward_backward
    parent = os.getpid()

    def failing(layers, xs, ys, weight=1.0, after_step=None):
        if os.getpid() == parent or after_step is None:
            return real(layers, xs, ys, weight, after_step)
        done = []

        def after(step):
            after_step(step)
            done.append(step)
            if len(done) == 2:  # Dense and Flatten counted, the convolution and pooling not
                raise FloatingPointError("failed after two steps")

        return real(layers, xs, ys, weight, after)

    model._forward_backward = failing  # before the first fit: the workers are forked with it
    with pytest.raises(RuntimeError, match="FloatingPointError: failed after two steps"):
        model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert id(model) not in workers._pools
    model._forward_backward = real
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert id(model) in workers._pools


def test_a_killed_worker_is_reported_and_the_next_fit_forks_new_ones():
    model, x, y = model_and_data()
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    pid = workers._pools[id(model)].pids[1]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with pytest.raises(RuntimeError, match=f"the slice worker process {pid} ended"):
        model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert id(model) not in workers._pools
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert pid not in workers._pools[id(model)].pids


def test_workers_end_with_their_model():
    model, x, y = model_and_data()
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    pids = list(workers._pools[id(model)].pids)
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, 0)  # alive, waiting for the next step
    del model
    gc.collect()
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # ended and reaped
    assert workers._pools == {}


def test_a_lone_step_runs_its_slices_on_threads():
    model, x, y = model_and_data()
    model.train_on_batch(x[:12], y[:12])
    assert id(model) not in workers._pools


def test_a_step_too_small_to_split_forks_no_worker():
    minicnn.set_parallel("auto")  # this model's slices would get too little work: one slice, on this process
    model, x, y = model_and_data()
    assert parallel.slices(model, 12) == 1
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    assert id(model) not in workers._pools


def test_no_fork_falls_back_to_threads_with_a_warning(monkeypatch):
    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.warns(UserWarning, match=r"no worker processes \(\[Errno 11\] Resource temporarily unavailable\)"):
        in_threads_after_all = fit(True)
    assert in_threads_after_all[2] == [None, None] and not workers.PROCESSES
    assert_same(in_threads_after_all, fit(False))
