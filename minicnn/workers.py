"""Slices of a training step in worker processes that share the weights, as PyTorch's DistributedDataParallel does.

``minicnn.parallel`` cuts a training batch into slices, one per core. Threads of one process can run them, but they
share one interpreter: each layer's Python runs under the GIL, one thread at a time, and a thread whose kernel
returns while the other runs Python waits for it. On the 2-core development machine two slices of the MNIST model
R (32 images each) at once took 1.11-1.20x as long a pass in two threads as in two processes (the benchmarks'
``slices`` section, eight runs), and in one pair of scratch runs more CPU time too (4.5-4.6 against 4.0-4.1 ms a
pass: the Python objects that both threads touch move between the cores' caches). So in a loop of steps (``fit``,
the benchmarks' turns: a ``minicnn.parallel.hold_blas`` block) on Linux, the slices after the first run in worker
processes:

* **The weights are shared, not copied.** Before the fork every layer's ``params[key]`` moves into one shared
  memory mapping (``mmap``, ``MAP_SHARED``): the optimizer's in-place update in this process is what a worker
  reads at its next step. Beside them lie the workers' gradients, one set per worker.
* **A worker is this process, forked**: the model, its layers, the compiled kernels; nothing to import or build.
  It waits on a pipe for its slice (x and y in the mapping; the loss weight, the random layers' generators), runs
  ``Sequential._forward_backward`` on it and answers (loss, outputs). After each step of its backward pass it
  copies that step's gradients into the mapping and counts the step there.
* **One step**: copy each worker's slice into the mapping and send it the slice's shapes, run the first slice here,
  then the optimizer's step, the last layer's weights first: each layer's as soon as the workers have counted its
  backward step, their gradients added to this slice's, in slice order, as the threads' sum does. The same numbers,
  bit for bit; but while the workers still run their first layers' backward passes, which take the longest, this
  process already updates the last ones', the Dense layers' (most of the weights of a small CNN) among them. At
  the end, the answers (on x86; elsewhere the answers come first: see ``STORES_IN_ORDER``). Each side waits for
  the other awake for a while (``SPIN``) before it sleeps.
  An error in a worker stops the optimizer's step where it has got to: the layers it has updated stay updated.
* **A worker is the model as it was at the fork.** Each step compares the model with that: its layers, their
  settings (``get_config``), their weight arrays, the loss. If anything changed, the workers are closed and forked
  anew. They also end with the model, at exit, or by ``close(model)``; a worker whose pipe closes exits.

Threads run the slices everywhere else: outside a loop (a lone ``train_on_batch``), off Linux (macOS and Windows
have no safe ``fork``), and with ``PROCESSES = False``.
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import platform
import signal
import sys
import time
import warnings
import weakref
from multiprocessing.connection import Pipe

import numpy as np

PROCESSES = sys.platform.startswith("linux") and hasattr(os, "fork")  # False: slices run on threads (comparisons)

# Waking a process that sleeps on its pipe took 0.05-0.1 ms on the development VM, twice a step. So each side waits
# for the other awake first, polling the pipe, for up to SPIN (a step's gap in fit: Adam, the next batch); then it
# sleeps. R's step on two cores, two models in turn (8 rounds): 3-11% faster than sleeping at once.
SPIN = 0.002
# A worker copies a step's gradients into the mapping, then counts the step there; the parent, seeing the count,
# reads the gradients. x86 processors make one core's stores visible to the others in the order they were made, so
# that is safe there. Other processors (ARM's) may show the count first: there the parent reads the workers'
# answers (through the pipe, which orders everything before it) before the optimizer's step.
STORES_IN_ORDER = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_pools: dict[int, Workers] = {}  # id(model) -> its workers


class Workers:
    """k - 1 forked workers for slices 2..k of ``model``'s training steps."""

    def __init__(self, model, k: int, room: int):
        from minicnn import parallel

        self.k, self.room = k, room
        params = [(layer, key) for layer in model.layers for key in layer.params]
        trainable = [(i, key) for i, layer in enumerate(model.layers) if layer.trainable for key in layer.params]
        sizes = [model.layers[i].params[key].nbytes for i, key in trainable]
        head = -(-8 * (k - 1) // 64) * 64  # the workers' counters, then the weights from a cache line's start
        total = head + sum(p.nbytes for layer, key in params for p in [layer.params[key]])
        total += (k - 1) * (sum(sizes) + room)
        self.memory = mmap.mmap(-1, max(total, 1))  # anonymous and shared: a forked child sees the same pages
        # per worker, how many backward steps it has run and copied the gradients of, since its fork
        self.counters = [np.ndarray((1,), np.int64, self.memory, 8 * w) for w in range(k - 1)]
        self.steps_done = 0  # the same count, as this process expects it after the last step (set as a step
        # starts, not as its optimizer's step ends: an optimizer that stops early must not leave it behind)
        offset = head
        for layer, key in params:  # the weights move into the mapping; the model keeps them there
            p = layer.params[key]
            shared = np.ndarray(p.shape, p.dtype, self.memory, offset)
            shared[...] = p
            layer.params[key] = shared
            offset += p.nbytes
        # per worker, id(layer) -> {key: that layer's gradient in the mapping}; a forked worker's layers are the same
        # objects at the same addresses, so the worker and this process look them up alike
        self.grads: list[dict[int, dict]] = []
        for _ in range(k - 1):
            own: dict[int, dict] = {}
            for (i, key), size in zip(trainable, sizes, strict=True):
                p = model.layers[i].params[key]
                own.setdefault(id(model.layers[i]), {})[key] = np.ndarray(p.shape, p.dtype, self.memory, offset)
                offset += size
            self.grads.append(own)
        self.inputs = []  # per worker, the offset of ``room`` bytes for its slice of x and y
        for _ in range(k - 1):
            self.inputs.append(offset)
            offset += room
        self.signature = signature(model)  # after the move: the new arrays
        parallel.shutdown_threads()  # fork a process with one thread: nothing held by a thread that isn't there
        parallel.stop_blas_workers()
        self.pids, self.pipes = [], []
        gc.freeze()  # the worker's collections leave what was there alone, rather than write to (copy) its pages
        try:
            for w in range(k - 1):
                here, there = Pipe()
                with warnings.catch_warnings():  # Python 3.12+ warns when any thread runs: see _serve, which is safe
                    warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
                    pid = os.fork()
                if pid == 0:  # the worker
                    here.close()
                    for pool in _pools.values():  # other models' pipes: their workers must see EOF when those close
                        pool._close_pipes()
                    for earlier in self.pipes:
                        earlier.close()
                    _serve(model, there, self.grads[w], self.counters[w], self.memory, self.inputs[w])  # no return
                there.close()
                self.pids.append(pid)
                self.pipes.append(here)
        except BaseException:  # e.g. no fork (out of memory, a process limit): the workers forked so far end
            _end(None, self, self.pipes, self.pids)
            raise
        finally:
            gc.unfreeze()
        self._finalizer = weakref.finalize(model, _end, id(model), self, self.pipes, self.pids)

    def forward_backward(self, model, copies, x, y, bounds, apply):
        """The slices' passes: slice 0 here through ``copies[0]``, the others in the workers; then ``apply`` (the
        optimizer's step) on the whole batch's gradients, each layer's as soon as the workers' parts of it are in
        (``_gradients``), which fills each layer's ``grads``. Returns [(weighted loss, outputs)] in slice order."""
        n = len(x)
        answers = []
        try:  # whatever happens here (an error, Ctrl-C), no answer may be left in a pipe for the next step
            for w, (layers, (s, e)) in enumerate(zip(copies[1:], bounds[1:], strict=True)):
                xs = np.ndarray(x[s:e].shape, x.dtype, self.memory, self.inputs[w])
                ys = np.ndarray(y[s:e].shape, y.dtype, self.memory, self.inputs[w] + _y_offset(xs))
                xs[...], ys[...] = x[s:e], y[s:e]  # into the mapping: 100 KB through the pipe took 0.12 ms
                generators = {i: layer.rng for i, layer in enumerate(layers) if hasattr(layer, "rng")}
                pid, pipe = self.pids[w], self.pipes[w]
                try:
                    _send(pipe, (xs.shape, xs.dtype.str, ys.shape, ys.dtype.str, (e - s) / n, generators))
                except OSError as err:  # BrokenPipeError: the worker is gone
                    raise RuntimeError(f"the slice worker process {pid} ended: {err}") from err
            s, e = bounds[0]
            first = model._forward_backward(copies[0], x[s:e], y[s:e], weight=(e - s) / n)
            for i, layer in enumerate(model.layers):
                for key, g in copies[0][i].grads.items():
                    layer.grads[key] = g
            steps = model._steps(model.layers, model._first_trainable)[::-1]  # in the order the backward pass runs
            base, self.steps_done = self.steps_done, self.steps_done + len(steps)  # the counts this step ends at
            if STORES_IN_ORDER:
                apply(self._gradients(model, steps, base))
            for pid, pipe in zip(self.pids, self.pipes, strict=True):
                try:
                    _wait(pipe)
                    answers.append(_recv(pipe))
                except (EOFError, OSError):
                    answers.append(_ended(pid))
            if not STORES_IN_ORDER and not any(a[0] == "error" for a in answers):
                apply(self._gradients(model, steps, base))  # every count is in: nothing to wait for
        finally:
            if len(answers) < len(self.pipes) or any(a[0] == "error" for a in answers):
                close(model)
        errors = [a[1] for a in answers if a[0] == "error"]
        if errors:
            raise _failed(errors[0])
        results = [(first[0] * (e - s) / n, first[1])]
        results += [(loss * (e - s) / n, out) for (_, loss, out), (s, e) in zip(answers, bounds[1:], strict=True)]
        return results

    def _gradients(self, model, steps, base: int):
        """The optimizer's (key, weights, gradient) items, the last layer's first. For each of ``steps`` (of the
        backward pass, in its order; the workers' counts stood at ``base`` before them), as soon as every worker has
        run it and copied its gradients into the mapping, they are added to this process's (in slice order, as the
        threads' sum) and the step's weights go to the optimizer: while the workers still run their first layers'
        backward passes, the optimizer updates the last layers' weights here, the Dense layers' (most of R's
        weights) among them."""
        for done, step in enumerate(steps, base + 1):
            trainable = [layer for layer in _layers_of(step) if layer.trainable]
            for w in range(len(self.pids)):
                self._wait_for(w, done)
                for layer in trainable:
                    for key, g in self.grads[w].get(id(layer), {}).items():
                        layer.grads[key] += g
            for layer in trainable:
                for key in layer.params:
                    yield f"{layer.name}/{key}", layer.params[key], layer.grads[key]

    def _wait_for(self, w: int, done: int) -> None:
        """Until worker w has run ``done`` backward steps since its fork (its counter in the mapping). A message on
        its pipe before that is an error, or the end of the worker: raised."""
        counter, pipe = self.counters[w], self.pipes[w]
        end = time.perf_counter() + SPIN
        while counter[0] < done:  # awake for up to SPIN, then in short sleeps on the pipe
            # the worker counts its last step before it answers: a message with the count still short is no answer
            if pipe.poll(0 if time.perf_counter() < end else 0.0002) and counter[0] < done:
                try:
                    answer = _recv(pipe)
                except (EOFError, OSError):
                    answer = _ended(self.pids[w])
                raise _failed(answer[1])

    def close(self) -> None:
        self._finalizer()

    def _close_pipes(self) -> None:
        for pipe in self.pipes:
            pipe.close()


def signature(model) -> tuple:
    """What a worker copied at its fork and must still match: the loss, each layer, its settings, its arrays."""
    return (
        id(model.loss),
        model._first_trainable,
        tuple((id(layer), layer.get_config(), *map(id, layer.params.values())) for layer in model.layers),
    )


def _y_offset(xs) -> int:
    """Where a slice of y starts in a worker's room, after its slice of x (a multiple of 64 bytes)."""
    return -(-xs.nbytes // 64) * 64


def pool(model, k: int, x, y, bounds) -> Workers:
    """``model``'s k - 1 workers, forked on first use and again whenever the model changed, or a slice of this
    batch does not fit in the room they have for one."""
    room = max(_y_offset(x[s:e]) + y[s:e].nbytes for s, e in bounds[1:])
    workers = _pools.get(id(model))
    if workers is not None and (workers.k != k or workers.room < room or workers.signature != signature(model)):
        close(model)
        workers = None
    if workers is None:
        workers = _pools[id(model)] = Workers(model, k, room)
    return workers


def close(model) -> None:
    """End ``model``'s workers, if it has any."""
    workers = _pools.pop(id(model), None)
    if workers is not None:
        workers.close()


def _end(key: int, workers: Workers, pipes, pids) -> None:
    """Close the pipes (each worker then exits) and wait for the workers."""
    if _pools.get(key) is workers:
        del _pools[key]
    for pipe in pipes:
        pipe.close()
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _ended(pid: int) -> tuple:
    """The answer that stands for a worker that is gone."""
    return ("error", f"the slice worker process {pid} ended")


def _failed(message: str) -> RuntimeError:
    """The error the caller sees when a worker's slice failed."""
    return RuntimeError(f"a slice of the training step failed in its worker process: {message}")


def _layers_of(step) -> tuple:
    """The layers a step of a pass runs: a fused pair's two (``layers.fused``), or the layer itself."""
    return getattr(step, "layers", (step,))


def _send(pipe, message) -> None:
    """``pipe.send`` with plain pickle: ``Connection.send`` builds multiprocessing's pickler for every message, which
    copies the table of every reducer registered with it (PyTorch registers its own when imported)."""
    pipe.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _recv(pipe):
    return pickle.loads(pipe.recv_bytes())


def _wait(pipe) -> None:
    """Wait for a message on ``pipe`` awake for up to SPIN seconds, then asleep (in ``recv``)."""
    end = time.perf_counter() + SPIN
    while not pipe.poll(0) and time.perf_counter() < end:
        pass


def _serve(model, pipe, grads, counter, memory, offset: int) -> None:
    """The worker's loop: a slice in (its shapes and dtypes through the pipe, its numbers in the mapping at
    ``offset``), its pass, (loss, outputs) out. After each step of its backward pass it copies that step's
    gradients into the mapping and counts the step in ``counter``, so that the parent can add them up and update
    those weights while this pass goes on. Ends the process, without Python's exit handlers (they belong to the
    parent), when the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then closes the pipe
    warnings.simplefilter("ignore")  # the parent's same pass shows any warning once

    def after_step(step):
        for layer in _layers_of(step):
            for key, g in grads.get(id(layer), {}).items():
                g[...] = layer.grads[key]
        counter[0] += 1  # after the copies: the parent reads them once it sees the count

    try:
        while True:
            try:
                _wait(pipe)
                x_shape, x_dtype, y_shape, y_dtype, weight, generators = _recv(pipe)
            except (EOFError, OSError):
                break
            try:
                x = np.ndarray(x_shape, x_dtype, memory, offset)
                y = np.ndarray(y_shape, y_dtype, memory, offset + _y_offset(x))
                for i, rng in generators.items():
                    model.layers[i].rng = rng
                loss, out = model._forward_backward(model.layers, x, y, weight=weight, after_step=after_step)
                _send(pipe, ("ok", loss, out))
            except BaseException as e:  # noqa: BLE001 - everything goes back to the parent, which raises it
                _send(pipe, ("error", f"{type(e).__name__}: {e}"))
    finally:
        os._exit(0)
