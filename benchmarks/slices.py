"""Two cores, two slices: where a training step loses time on its way from one core to two.

On two cores minicnn cuts a training batch into two slices and two threads run them at once (``minicnn.parallel``,
'batch'). If the cores did not slow each other, each slice would take as long as it does alone and the step little
more. This section takes the step apart, for R and C at their training batch, the contenders taking turns:

* **alone**: one slice's forward and backward pass (half the batch) on this thread, the other core idle;
* **2 processes**: the two slices at once, each in a fresh Python process of its own (BLAS on one thread): what
  the cores cost each other (their shared cache and memory, another guest on the host), with no interpreter shared;
* **2 threads**: the two slices at once on two threads of this process, as the 'batch' step runs them. Against
  processes, this is what sharing one interpreter costs: each layer's Python runs under the GIL, one thread at a
  time, and a thread whose kernel returns while the other thread runs Python waits for it;
* **'batch' step**: the whole training step as ``fit`` takes it on two cores: the two slices at once, the second in a
  worker process (``minicnn.workers``; on Linux), the gradient sum and Adam;
* **'batch' step on threads**: the same with the second slice on a thread of this process, as before the workers;
* **one-core step**: the whole batch on one thread.

A pass is ``Sequential._forward_backward``, what ``minicnn.parallel`` runs on each slice: this section takes that
internal step apart, so it calls it directly (the other sections use only the public API). Slices run free (each
thread or process repeats its pass, not waiting for the other); the pass timings of both are pooled. Figures:
median milliseconds per pass or step. The passes take no optimizer step, so the weights stay as built (the
processes build the same model, weights and batch from the same seed); the steps run on a model of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PASS_SECONDS = 0.5  # each contender's share of a round, full run


def timed_passes(runner, start: int, end: int, passes: int, layers=None) -> list[float]:
    """Seconds of each of ``passes`` forward and backward passes of ``runner``'s model over its batch[start:end]."""
    model = runner.model
    x, y = runner.x[start:end], runner.y[start:end]
    layers = model.layers if layers is None else layers
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        model._forward_backward(layers, x, y)
        times.append(time.perf_counter() - t0)
    return times


def _two_processes(model: str, batch: int, passes: int) -> list[float]:
    """Both slices' passes, each slice in its own ``python -m benchmarks.child slice`` process. Each child builds its
    model and warms up, says 'ready', and starts its passes when told 'go', so that the two run at once. Their
    stderr goes to files, which a chatty child cannot fill up and block on, as it could a pipe nobody reads."""
    env = dict(os.environ, **ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    half = batch // 2
    children, errors = [], []
    try:
        for s, e in ((0, half), (half, batch)):
            errors.append(tempfile.TemporaryFile("w+"))
            args = ["slice", "minicnn", model, batch, s, e, passes]
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.child", *map(str, args)],
                    env=env,
                    cwd=REPO,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors[-1],
                    text=True,
                )
            )
        for child, err in zip(children, errors, strict=True):
            line = child.stdout.readline().strip()
            if line != "ready":
                if not line:  # its stdout closed: it has ended, and its traceback is in the file
                    child.wait()
                raise RuntimeError(f"benchmarks.child slice {model} did not start: {line or _last_line(err)}")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        times = []
        for child, err in zip(children, errors, strict=True):
            out, _ = child.communicate(timeout=600)
            if child.returncode != 0:
                raise RuntimeError(f"benchmarks.child slice {model} failed: {_last_line(err)}")
            times += json.loads(out.strip().splitlines()[-1])
        return times
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for err in errors:
            err.close()


def _last_line(f) -> str:
    f.seek(0)
    return (f.read().strip().splitlines() or ["(nothing on stderr)"])[-1]


def _two_threads(runner, copies, half: int, batch: int, passes: int) -> list[float]:
    """Both slices' passes at once, on two threads of this process (``minicnn.parallel.run``, BLAS on one thread),
    each slice through its own copy of the layers, as the 'batch' step runs them."""
    from minicnn import parallel

    jobs = [(runner, 0, half, passes, copies[0]), (runner, half, batch, passes, copies[1])]
    return [t for part in parallel.run(timed_passes, jobs) for t in part]


def _steps(runner, n_threads: int, steps: int, processes: bool = True) -> list[float]:
    """Seconds of each of ``steps`` training steps (after one untimed) on ``n_threads`` threads, in a loop as ``fit``
    runs its batches (``minicnn.parallel.hold_blas``): on two, the 'batch' split, its second slice in a worker
    process (``minicnn.workers``, on Linux) or, ``processes=False``, on a thread; on one, ``minicnn.parallel.slices``
    is 0 and the step runs whole."""
    import minicnn
    from minicnn import parallel, workers

    from . import timing

    minicnn.set_parallel("batch")
    before = workers.PROCESSES
    workers.PROCESSES = processes and before
    try:
        with timing.threads(n_threads), parallel.hold_blas():
            runner.train_step()
            out = []
            for _ in range(steps):
                t0 = time.perf_counter()
                runner.train_step()
                out.append(time.perf_counter() - t0)
    finally:
        workers.PROCESSES = before
    return out


def run(quick: bool = False, log=print) -> dict:
    """Time the contenders above for each model; returns ``{"rows": [...], "efficiency": probe}`` (or
    ``{"skipped": why}`` on one core)."""
    import minicnn
    from minicnn import parallel

    from . import frameworks, timing
    from .specs import MODELS

    if timing.cores() < 2:
        return {"skipped": "one core: there is nothing to split"}
    rows = []
    mode = minicnn.get_parallel()
    try:
        for name in ("R",) if quick else ("R", "C"):
            spec = MODELS[name]
            batch = 8 if quick else spec.batch
            half = batch // 2
            passes_runner = frameworks.make_runner("minicnn", spec, batch, 1)  # never stepped: weights as built
            step_runner = frameworks.make_runner("minicnn", spec, batch, 1)
            copies = parallel.replicas(passes_runner.model.layers, 2, training=True)
            with timing.threads(1):
                one = timing.median(timed_passes(passes_runner, 0, half, 3))  # warm-up, and a pass's length
            with timing.threads(2):
                _two_threads(passes_runner, copies, half, batch, 2)  # warm-up: the copies' buffers
            passes = 3 if quick else max(5, min(60, round(PASS_SECONDS / one)))
            rounds = 1 if quick else 3
            keys = ("alone", "processes", "threads", "batch", "batch_threads", "one_core")
            times: dict[str, list[float]] = {k: [] for k in keys}
            for r in range(rounds):
                with timing.threads(1):
                    times["alone"] += timed_passes(passes_runner, 0, half, passes)
                times["processes"] += _two_processes(name, batch, passes)
                with timing.threads(2):
                    times["threads"] += _two_threads(passes_runner, copies, half, batch, passes)
                times["batch"] += _steps(step_runner, 2, passes)
                times["batch_threads"] += _steps(step_runner, 2, passes, processes=False)
                times["one_core"] += _steps(step_runner, 1, passes)
                so_far = ", ".join(f"{k} {1e3 * timing.median(v):.2f}" for k, v in times.items())
                log(f"slices: {name} round {r + 1}: {so_far}")
            rows.append(
                {"model": name, "batch": batch, "slice": half, "passes": passes, "rounds": rounds}
                | {f"{k}_ms": 1e3 * timing.median(v) for k, v in times.items()}
                | {"times": times}
            )
    finally:
        minicnn.set_parallel(mode)
    return {"rows": rows, "efficiency": timing.parallel_efficiency()}
