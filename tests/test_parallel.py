"""Data parallelism (minicnn.parallel): a batch cut into slices that threads run at once gives the same step."""

import os
import time

import numpy as np
import pytest

import minicnn
from minicnn import layers, losses, parallel
from minicnn.kernels import cpu

# With MINICNN_NUMBA_PARALLEL=1 the engine's loops already use every core, and minicnn.parallel never splits.
splits = pytest.mark.skipif(cpu.PARALLEL, reason="MINICNN_NUMBA_PARALLEL=1: the engine's loops use every core")


@pytest.fixture(autouse=True)
def three_threads(monkeypatch):
    """Three slices whatever the machine has (Python threads run on one core too), and the mode put back."""
    monkeypatch.setattr(parallel, "threads", lambda: 3)
    yield
    minicnn.set_parallel("auto")


def conv_model(seed=0, last="softmax", wide=False, dropout=False):
    stack = [
        layers.Conv2D(
            32 if wide else 4,
            3,
            padding="same" if wide else "valid",
            activation="relu",
            input_shape=(16, 16, 32) if wide else (8, 8, 1),
        ),
    ]
    if wide:  # a second 32 -> 32 'same' layer on a 16x16 map: the engine runs it by Winograd
        stack.append(layers.Conv2D(32, 3, padding="same", activation="relu"))
    stack += [layers.MaxPooling2D(), layers.Flatten()]
    stack += [layers.Dropout(0.2, seed=1)] if dropout else []
    stack += [layers.Dense(3, activation=last)]
    return minicnn.Sequential(stack, seed=seed)


def data(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 3, n)


def counting(monkeypatch):
    """Count the steps and predictions that ran split."""
    calls = {"train": 0, "predict": 0}
    fb, fw = parallel.forward_backward, parallel.forward

    def forward_backward(*args):
        calls["train"] += 1
        return fb(*args)

    def forward(*args):
        calls["predict"] += 1
        return fw(*args)

    monkeypatch.setattr(parallel, "forward_backward", forward_backward)
    monkeypatch.setattr(parallel, "forward", forward)
    return calls


def two_steps(model, x, y, mode, loss="sparse_categorical_crossentropy"):
    minicnn.set_parallel(mode)
    model.compile(optimizer="adam", loss=loss)
    results = [model.train_on_batch(x, y) for _ in range(2)]
    return results, model.get_weights(), model.predict(x, batch_size=len(x)), model.evaluate(x, y, verbose=0)


@splits
@pytest.mark.parametrize("fused", [True, False])
def test_split_step_equals_the_whole_batch_step(monkeypatch, fused):
    # fused: softmax + cross-entropy from the logits; else a linear output and a loss from logits, whose
    # dL/d(output) the model weights itself
    last, loss = (
        ("softmax", "sparse_categorical_crossentropy")
        if fused
        else ("linear", losses.SparseCategoricalCrossentropy(from_logits=True))
    )
    x, y = data(10, (8, 8, 1))  # 10 = 3 + 3 + 4: uneven slices
    calls = counting(monkeypatch)
    whole = two_steps(conv_model(last=last), x, y, "blas", loss)
    assert calls == {"train": 0, "predict": 0}
    split = two_steps(conv_model(last=last), x, y, "batch", loss)
    assert calls == {"train": 2, "predict": 2}  # predict and evaluate
    assert split[3] == pytest.approx(whole[3], rel=1e-5)  # evaluate's loss, from the slices' logits when fused
    for (loss_w, out_w), (loss_s, out_s) in zip(whole[0], split[0], strict=True):
        assert loss_s == pytest.approx(loss_w, rel=1e-5)
        np.testing.assert_allclose(out_s, out_w, rtol=1e-5, atol=1e-6)
    for w_whole, w_split in zip(whole[1], split[1], strict=True):
        np.testing.assert_allclose(w_split, w_whole, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(split[2], whole[2], rtol=1e-5, atol=1e-6)


def test_forward_macs_counts_the_direct_convolution_and_dense_multiply_adds():
    narrow, wide = conv_model(), conv_model(wide=True)
    # 4 filters of 3x3x1 at 6x6 outputs; 2x2 pooling leaves 3x3x4 = 36 inputs to Dense(3)
    assert parallel.forward_macs(narrow.layers) == 6 * 6 * 4 * 9 + 36 * 3
    # two 32 -> 32 'same' 3x3 layers at 16x16 (the engine runs them by Winograd: the count is the direct one's)
    assert parallel.forward_macs(wide.layers) == 2 * 16 * 16 * 32 * 9 * 32 + 8 * 8 * 32 * 3


@splits
def test_auto_splits_when_each_slice_has_enough_work(monkeypatch):
    wide, narrow = conv_model(wide=True), conv_model()
    monkeypatch.setattr(parallel, "MIN_SLICE_MACS", 4 * parallel.forward_macs(wide.layers))
    assert parallel.slices(wide, 12) == 3  # 4 samples a slice: enough
    assert parallel.slices(wide, 11) == 1  # 11 / 3 a slice: too little, so one slice on one core
    assert parallel.slices(narrow, 12) == 1
    monkeypatch.setattr(parallel, "MIN_SLICE_MACS", 0)
    assert parallel.slices(wide, 2) == 2  # no more slices than samples
    minicnn.set_parallel("blas")
    assert parallel.slices(wide, 12) == 0  # not sliced: BLAS's threads
    monkeypatch.setattr(parallel, "threads", lambda: 1)
    minicnn.set_parallel("batch")
    assert parallel.slices(wide, 12) == 0  # one core: nothing to share
    monkeypatch.setattr(parallel, "threads", lambda: 3)
    monkeypatch.setattr(parallel, "MIN_SLICE_MACS", 10**12)
    assert parallel.slices(narrow, 12) == 3  # 'batch' splits whatever the work
    # the same step through the Winograd layers, whole and split by 'auto'
    monkeypatch.setattr(parallel, "MIN_SLICE_MACS", 0)
    x, y = data(6, (16, 16, 32))
    calls = counting(monkeypatch)
    whole = two_steps(conv_model(wide=True), x, y, "blas")
    split = two_steps(conv_model(wide=True), x, y, "auto")
    assert calls == {"train": 2, "predict": 2}
    # Adam moves each weight by about lr = 1e-3 a step however small its gradient, so the rounding of a small
    # gradient (the slices add up in another order, and F(4x4, 3x3) rounds ~10x more than the direct sum) can show
    # as a fraction of a step: atol 1e-4, a tenth of one.
    for w_whole, w_split in zip(whole[1], split[1], strict=True):
        np.testing.assert_allclose(w_split, w_whole, rtol=1e-4, atol=1e-4)


@splits
@pytest.mark.parametrize("dropout", [False, True])
def test_auto_runs_a_small_step_as_one_slice_on_one_core(monkeypatch, dropout):
    from threadpoolctl import threadpool_info

    x, y = data(10, (8, 8, 1))
    calls = counting(monkeypatch)
    seen = []  # (jobs in the call, BLAS's thread counts inside a job)
    run = parallel.run

    def spy(fn, jobs):
        def job(*args):
            seen.append((len(jobs), {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}))
            return fn(*args)

        return run(job, jobs)

    monkeypatch.setattr(parallel, "run", spy)
    whole = two_steps(conv_model(dropout=dropout), x, y, "blas")
    assert calls == {"train": 0, "predict": 0}
    # a tiny model, far below MIN_SLICE_MACS: one slice, drawing the layers' own dropout masks
    one = two_steps(conv_model(dropout=dropout), x, y, "auto")
    assert calls == {"train": 2, "predict": 2}
    assert seen and all(jobs == 1 and blas_threads <= {1} for jobs, blas_threads in seen)
    for (loss_w, out_w), (loss_1, out_1) in zip(whole[0], one[0], strict=True):
        assert loss_1 == pytest.approx(loss_w, rel=1e-6)
        np.testing.assert_allclose(out_1, out_w, rtol=1e-6, atol=1e-7)
    for w_whole, w_one in zip(whole[1], one[1], strict=True):
        np.testing.assert_allclose(w_one, w_whole, rtol=1e-5, atol=1e-7)


def _tasks() -> int:
    """Threads of this process, Python's or not (OpenBLAS's workers are not)."""
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_run_stops_openblas_spinning_workers_before_the_jobs():
    from threadpoolctl import ThreadpoolController, threadpool_limits

    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    if not any(lib.internal_api == "openblas" and lib.threading_layer == "pthreads" for lib in blas):
        pytest.skip("NumPy's BLAS is not OpenBLAS with pthreads workers")
    a = np.ones((256, 256), np.float32)
    parallel.run(lambda: None, [(), ()])  # the job threads exist from now on
    with threadpool_limits(limits=2):
        if max(lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers) < 2:
            pytest.skip("OpenBLAS runs on one thread here (one core, or OPENBLAS_NUM_THREADS=1): no workers")
        a @ a  # a multi-threaded product: OpenBLAS's worker is now up (and spinning)
        before = _tasks()
        inside = parallel.run(_tasks, [(), ()])
        b = a @ a  # its next multi-threaded product starts the workers again
    assert max(inside) < before
    np.testing.assert_array_equal(b, np.full((256, 256), 256, np.float32))


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


@splits
def test_a_loop_holds_blas_on_one_thread_and_puts_it_back_at_its_end():
    from threadpoolctl import threadpool_limits

    x, y = data(24, (8, 8, 1))
    minicnn.set_parallel("batch")
    model = conv_model(seed=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    seen = []

    class Watch(minicnn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(_blas_threads())  # between two split steps of fit
            if fail and batch == 1:
                raise KeyboardInterrupt

        def on_epoch_end(self, epoch, logs=None):
            seen.append(_blas_threads())  # after the validation pass: the inner hold did not put BLAS back

    with threadpool_limits(limits=2):
        before = _blas_threads()
        if before < 2:
            pytest.skip("BLAS runs on one thread here (one core, or OPENBLAS_NUM_THREADS=1)")
        fail = False
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Watch()], validation_data=(x, y))
        assert seen == [1] * 8 and _blas_threads() == before  # held through fit and its validation, then put back
        model.train_on_batch(x, y)
        model.predict(x, batch_size=8)
        model.evaluate(x, y, batch_size=8, verbose=0)
        assert _blas_threads() == before  # a lone step puts it back itself; predict and evaluate at their end
        fail = True
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, batch_size=8, verbose=0, callbacks=[Watch()])
        assert _blas_threads() == before and parallel._held is None and parallel._holds == 0


@splits
def test_random_layers_split_with_a_generator_per_slice_and_stay_reproducible(monkeypatch):
    x, y = data(12, (8, 8, 1))
    calls = counting(monkeypatch)
    minicnn.set_parallel("batch")
    runs = []
    for _ in range(2):
        model = conv_model(seed=5, dropout=True)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        history = model.fit(x, y, batch_size=6, epochs=2, verbose=0)
        runs.append((model.get_weights(), history.history["loss"], model.predict(x)))
    assert calls == {"train": 8, "predict": 2}  # 2 batches x 2 epochs x 2 runs; predict once per run
    assert runs[0][1] == runs[1][1] and all(np.isfinite(runs[0][1]))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same threads: the same masks, the same weights
    # each slice's Dropout has its own generator, drawn from the layer's: the copies never share one
    model = conv_model(seed=5, dropout=True)
    dropout = model.layers[-2]
    before = dropout.rng.bit_generator.state
    copies = parallel.replicas(model.layers, 3, training=True)
    rngs = [c[-2].rng for c in copies]
    assert len({id(r) for r in rngs}) == 3 and all(r is not dropout.rng for r in rngs)
    assert dropout.rng.bit_generator.state != before
    assert all(c[-2].rng is dropout.rng for c in parallel.replicas(model.layers, 3))  # predict: untouched


@splits
def test_fit_with_split_batches_matches_fit_with_whole_ones(monkeypatch):
    x, y = data(40, (8, 8, 1))
    calls = counting(monkeypatch)
    weights = {}
    for mode in ("blas", "batch"):
        minicnn.set_parallel(mode)
        model = conv_model(seed=3)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # 16, 16, 8: the last batch is short
        weights[mode] = (model.get_weights(), history.history["loss"])
    assert calls["train"] == 6  # 3 batches x 2 epochs, all split in 'batch' mode, none in 'blas'
    np.testing.assert_allclose(weights["batch"][1], weights["blas"][1], rtol=1e-5)
    for a, b in zip(weights["batch"][0], weights["blas"][0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_nothing_splits_when_the_engine_loops_use_every_core(monkeypatch):
    monkeypatch.setattr(cpu, "PARALLEL", True)
    monkeypatch.setattr(parallel, "threads", lambda: 2)  # cores to split over, were it not for the engine's loops
    for mode in parallel.MODES:
        minicnn.set_parallel(mode)
        assert parallel.slices(conv_model(wide=True), 12) == 0


def test_set_parallel_names_the_choices():
    with pytest.raises(ValueError, match=r"set_parallel: mode must be one of \('auto', 'blas', 'batch'\); got 'gpu'"):
        minicnn.set_parallel("gpu")
    minicnn.set_parallel("BATCH")
    assert minicnn.get_parallel() == "batch"


def test_bounds_cover_the_batch_evenly():
    assert parallel.bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert parallel.bounds(2, 2) == [(0, 1), (1, 2)]


def test_an_error_in_any_slice_reaches_the_caller_after_every_slice_ended():
    ended = []

    def job(i):
        try:
            if i == 1:
                raise ValueError("slice 1 failed")
            return i
        finally:
            ended.append(i)

    with pytest.raises(ValueError, match="slice 1 failed"):
        parallel.run(job, [(0,), (1,), (2,)])
    assert sorted(ended) == [0, 1, 2]
    ended.clear()
    with pytest.raises(ValueError, match="slice 1 failed"):
        parallel.run(job, [(1,), (0,), (2,)])  # the failing job on the calling thread
    assert sorted(ended) == [0, 1, 2]
    assert parallel.run(job, [(0,), (2,)]) == [0, 2]


@splits
@pytest.mark.parametrize("late", [0, 2])
def test_split_step_adds_up_the_gradients_whichever_slice_ends_last(monkeypatch, late):
    # the last slice to end adds up the gradients, on its own thread: the calling thread's (late = 0) or another's
    x, y = data(12, (8, 8, 1))
    whole = two_steps(conv_model(seed=4), x, y, "blas")
    model = conv_model(seed=4)
    real = model._forward_backward
    slept = []

    def slow_pass(layers, xs, ys, weight=1.0):
        if np.shares_memory(xs, x[4 * late : 4 * late + 4]):
            slept.append(late)
            time.sleep(0.05)
        return real(layers, xs, ys, weight)

    monkeypatch.setattr(model, "_forward_backward", slow_pass)
    split = two_steps(model, x, y, "batch")
    assert slept == [late, late]  # one slow slice in each of the two steps
    for w_whole, w_split in zip(whole[1], split[1], strict=True):
        np.testing.assert_allclose(w_split, w_whole, rtol=1e-4, atol=1e-6)
