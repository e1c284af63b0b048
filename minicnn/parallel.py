"""Several cores for one step: split each matrix product, or split the batch.

On a machine with more than one core there are two ways to share a training step between them:

* ``'blas'``: one thread runs the step, and BLAS splits each matrix product over the cores. Nothing to set up,
  and large products scale. But what lies around the products (im2col, the Winograd transforms, pooling) runs
  on one core; a Winograd layer's products are 16 or 36 small ones that split badly; and half of each block's data is
  left in the other core's cache by one product and must come back for the next pass. Small products lose more
  than they gain: on the 2-core development machine, in fresh processes, the small model S's step (batch 32)
  took 8.0 ms with ``'blas'`` against 2.7 on one core, and the MNIST model R's (batch 32) 68 ms against 13.
* ``'batch'``: data parallelism, as PyTorch's DistributedDataParallel does across processes. The batch is cut
  into one slice per thread; each thread runs the whole forward and backward pass on its slice, with its own copy
  of the layers (sharing the weights) and BLAS on one thread, so each core keeps its own images in its own
  cache. The slices' gradients, each weighted by slice / batch, add up to the gradient of the whole batch's mean
  loss, and the optimizer takes one step: the same step as ``'blas'``, up to rounding. Each slice also pays fixed
  costs: starting the jobs, the layers' Python (one thread at a time, under the GIL), adding up the gradients.
  Same machine, interleaved: the CIFAR model C's step (batch 128) took 162-191 ms against 226-248 with
  ``'blas'``, and R's (batch 64) 16.4-18.3 ms against 17.1-21.1.
  Where the split loses time on a given machine, ``python -m benchmarks --only slices`` measures: one slice
  alone, two slices at once in two processes (what the cores cost each other) and in two threads (what sharing
  one interpreter costs), and the split step (the slower slice, the gradient sum, Adam).
  In a loop of steps (``fit``: a ``hold_blas`` block) on Linux the slices after the first run in worker processes
  instead of threads (``minicnn.workers``): forked copies of the process that share the weights through shared
  memory, each with an interpreter of its own. The same step, bit for bit; on the development machine R's step
  on two cores took 5.19-6.48 ms that way against 5.93-7.17 on threads (the ``slices`` section, eight runs; less
  in seven of them), C's 72.1-94.8 against 75.3-98.9.
* ``'auto'``, the default: ``'batch'`` when each slice gets at least ``MIN_SLICE_MACS`` multiply-adds of forward
  work (C at 128 on two threads: 1,600 million; R at 64: 84 million; R at 32: 42 million, 9.7 ms a step against
  13.2 on one core), else the whole step on one core, as one slice (S at 32: 3 million a slice, 2.7 ms against
  3.5 split; R at 16: 21 million, 7.2 against 7.8).

One trap on the way: after a multi-threaded product OpenBLAS's idle workers spin for about 0.1 s before they
sleep, and on two cores the spinning worker takes a core's share from one of the jobs (R's step: 25-29 ms
against 17-18). So ``run`` stops them first (``stop_blas_workers``).

Setting BLAS to one thread and back costs something too: putting the count back starts OpenBLAS's worker again,
which the next step stops. A loop of steps therefore holds BLAS on one thread from its first split step to its
end (``hold_blas``, which ``fit``, ``evaluate`` and ``predict`` use): a callback that runs NumPy products in
between runs them on one thread. A lone ``train_on_batch`` puts BLAS back as it found it.

Only the default CPU engine splits, and only when it runs its loops on one thread (``kernels.cpu.PARALLEL``
off). Random layers (Dropout, Random*) draw their masks per slice, from generators seeded by theirs: the same
seed gives the same training for the same number of threads, though with two or more slices not the same masks
as an unsplit step.
``threads()``, the number of slices, is Numba's thread count: what ``numba.set_num_threads`` sets (all cores
unless told otherwise).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor, wait

import numba
import numpy as np

from minicnn import workers

MODES = ("auto", "blas", "batch")
MIN_SLICE_MACS = 25_000_000  # forward multiply-adds per slice, below which 'auto' runs the step on one core

_mode = "auto"
_executor: ThreadPoolExecutor | None = None
_workers = 0
_blas = None  # threadpoolctl's controller, made on first use (it looks through the loaded libraries: ~3 ms)
_holds = 0  # how many ``hold_blas`` blocks this process is in
_held = None  # their limit of BLAS to one thread, from the first split step inside them to the end of the last


def set_parallel(mode: str) -> None:
    """How a step uses several cores: ``'auto'`` (default), ``'blas'`` or ``'batch'`` (see the module's text)."""
    global _mode
    mode = str(mode).lower()
    if mode not in MODES:
        raise ValueError(f"set_parallel: mode must be one of {MODES}; got {mode!r}")
    _mode = mode


def get_parallel() -> str:
    return _mode


def threads() -> int:
    return numba.get_num_threads()


def forward_macs(layers) -> int:
    """Multiply-adds of one sample's forward pass in the Conv2D and Dense layers (the direct convolution's count,
    whatever algorithm the engine runs)."""
    from minicnn.layers.conv import Conv2D
    from minicnn.layers.dense import Dense

    total = 0
    for layer in layers:
        if isinstance(layer, Conv2D):
            C, (Ho, Wo, F), (kh, kw) = layer.input_shape[-1], layer.output_shape, layer.kernel_size
            total += Ho * Wo * F * kh * kw * C
        elif isinstance(layer, Dense):
            total += layer.input_shape[-1] * layer.units
    return total


def slices(model, n: int) -> int:
    """How a batch of ``n`` uses the cores. 0: whole, on this thread, with BLAS on every core (``'blas'``). k >= 1:
    cut into k slices that k threads run at once, each with BLAS on one thread; k = 1 is the whole batch on this
    thread and one core."""
    if threads() < 2 or _mode == "blas" or model.backend.name != "cpu":
        return 0
    from minicnn.kernels import cpu

    if cpu.PARALLEL:  # its loops already use every core
        return 0
    k = min(threads(), n)
    if _mode == "auto" and forward_macs(model.layers) * n / k < MIN_SLICE_MACS:
        return 1  # too little work to share out
    return k


def bounds(n: int, k: int) -> list[tuple[int, int]]:
    """k slices [s, e) of range(n), as even as can be."""
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def replicas(layers, k: int, training: bool = False) -> list[list]:
    """k copies of the layers for k threads: each copy shares its layer's ``params`` (the same arrays) and has its
    own ``cache`` and ``grads``. In training, a random layer's copy (Dropout, Random*) also gets its own generator,
    seeded from the layer's, copy after copy: two threads never draw from one generator, and a seed still gives
    the same masks (for the same number of threads). A single copy keeps the layer's generator: one slice draws
    the masks of the unsplit step."""
    copies = []
    for _ in range(k):
        twins = []
        for layer in layers:
            twin = object.__new__(type(layer))  # copy.copy(layer), less its general machinery: 14 against 58 us
            twin.__dict__.update(layer.__dict__)  # for R's 16 copies a step
            twin.cache, twin.grads = None, {}
            if training and hasattr(layer, "rng") and k > 1:  # one slice draws from the layer's own, as unsplit
                twin.rng = np.random.default_rng(layer.rng.integers(2**63))
            twins.append(twin)
        copies.append(twins)
    return copies


def run(fn, jobs: list[tuple]) -> list:
    """``[fn(*job) for job in jobs]``, each job on its own thread (the first on this one), with BLAS on one thread
    meanwhile. The compiled kernels and NumPy's products release the GIL, so the jobs run at once. Returns only
    when every job has ended; an exception in any of them is raised here."""
    global _executor, _workers
    if _executor is None or _workers < len(jobs) - 1:
        if _executor is not None:
            _executor.shutdown(wait=False)
        _workers = max(1, len(jobs) - 1)
        _executor = ThreadPoolExecutor(_workers, thread_name_prefix="minicnn")
    if _hold_now():
        return _run_jobs(fn, jobs)
    with _blas_controller().limit(limits=1):
        stop_blas_workers()
        return _run_jobs(fn, jobs)


def _hold_now() -> bool:
    """Inside a ``hold_blas`` block: BLAS on one thread from its first split step on (True); else False."""
    global _held
    if _holds and _held is None:  # the first split step of a loop that holds BLAS on one thread
        _held = _blas_controller().limit(limits=1)
        stop_blas_workers()
    return _held is not None


def shutdown_threads() -> None:
    """End the idle threads that ``run`` keeps for its jobs (before a fork: ``minicnn.workers``)."""
    global _executor, _workers
    if _executor is not None:
        _executor.shutdown(wait=True)
        _executor, _workers = None, 0


def _run_jobs(fn, jobs: list[tuple]) -> list:
    futures = [_executor.submit(fn, *job) for job in jobs[1:]]
    try:
        first = fn(*jobs[0])
    finally:
        wait(futures)  # even when this thread's job failed: no job outlives the BLAS limit
    return [first] + [f.result() for f in futures]


@contextlib.contextmanager
def hold_blas():
    """Within this block, BLAS stays on one thread from the first split step (``run``) to the block's end,
    rather than each step setting it and putting it back. Blocks nest; the outermost puts BLAS back.

    ``fit``, ``evaluate`` and ``predict`` run their batches inside one. On the 2-core development machine, the
    two ways taking turns in one process (medians of ten epochs each), a step in ``fit`` took: S's (batch 32, one
    slice) 1.52 against 1.77 and 2.13 against 2.35 ms; R's (batch 64, two slices) 3-7% less in five of seven
    such runs, as long in one, 2% more in one; C's as long."""
    global _holds, _held
    _holds += 1
    try:
        yield
    finally:
        _holds -= 1
        if _holds == 0 and _held is not None:
            held, _held = _held, None
            held.restore_original_limits()


def _blas_controller():
    """threadpoolctl's handle on the BLAS libraries loaded in this process, made on first use."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    return _blas


def stop_blas_workers() -> None:
    """Stop OpenBLAS's idle worker threads (``run`` does so before its jobs start; the benchmarks before each
    timed call).

    After a multi-threaded product, and when its thread count is set (as the limit in ``run`` does, which also
    starts workers stopped before), OpenBLAS's pthreads workers wait for the next job by spinning, about 0.1 s
    (``OPENBLAS_THREAD_TIMEOUT``), before they sleep. On a 2-core machine that spinning thread takes a core's
    share from the jobs: R's halves each ran about 1.3x slower than alone, and the step took 25-29 ms instead
    of 17-18. ``blas_thread_shutdown_`` (which OpenBLAS also calls at exit) ends the workers; its next
    multi-threaded product starts them again.
    """
    for lib in _blas_controller().lib_controllers:
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) == "pthreads":
            shutdown = getattr(lib.dynlib, "blas_thread_shutdown_", None)
            if shutdown is not None:
                shutdown()


def forward_backward(model, x, y, k: int, apply):
    """``model``'s forward and backward pass on k slices of the batch at once; fills each layer's ``grads`` with
    the whole batch's gradient, and calls ``apply`` (the optimizer's ``apply_gradients``) on the (key, weights,
    gradient) items. Returns (the batch's mean loss, the outputs).

    The last slice to end adds up the gradients, at once: this thread, if another slice ends after its own, would
    first have to wake up (about 0.2 ms on the development machine, as long as the sum itself for R)."""
    n = len(x)
    copies = replicas(model.layers, k, training=True)
    if k > 1 and workers.PROCESSES and _holds and _hold_now():  # a loop of steps: slices 2..k in worker processes
        cuts = bounds(n, k)
        try:
            pool = workers.pool(model, k, x, y, cuts)
        except OSError as e:  # no fork here: threads from now on
            workers.PROCESSES = False
            warnings.warn(f"minicnn.parallel: no worker processes ({e}); the slices run on threads", stacklevel=3)
        else:
            results = pool.forward_backward(model, copies, x, y, cuts, apply)
            return sum(loss for loss, _ in results), np.concatenate([out for _, out in results])
    running = k  # slices not yet ended
    lock = threading.Lock()

    def job(layers, s, e):
        nonlocal running
        loss, out = model._forward_backward(layers, x[s:e], y[s:e], weight=(e - s) / n)
        with lock:
            running -= 1
            last = running == 0
        if last:
            add_up_gradients()
        return loss * (e - s) / n, out

    def add_up_gradients():
        for i, layer in enumerate(model.layers):
            for key, g in copies[0][i].grads.items():  # the slices' weighted gradients add up to the batch's
                for other in copies[1:]:
                    g += other[i].grads[key]
                layer.grads[key] = g

    results = run(job, [(layers, s, e) for layers, (s, e) in zip(copies, bounds(n, k), strict=True)])
    apply(model._trainable_items())
    return sum(loss for loss, _ in results), np.concatenate([out for _, out in results])


def forward(model, x, k: int, keep_logits: bool = False):
    """``model``'s inference forward pass on k slices of ``x`` at once: (outputs, the last layer's logits if
    ``keep_logits`` else None)."""

    def job(layers, s, e):
        out = model._forward(x[s:e], training=False, layers=layers)
        return out, (layers[-1].logits if keep_logits else None)

    copies = replicas(model.layers, k)
    results = run(job, [(layers, s, e) for layers, (s, e) in zip(copies, bounds(len(x), k), strict=True)])
    out = np.concatenate([out for out, _ in results])
    return out, (np.concatenate([z for _, z in results]) if keep_logits else None)
