"""What runs inside the subprocesses of ``memory.py``: one measurement per fresh Python, printed as one JSON line.

    python -m benchmarks.child memory <framework> <model> <batch> <steps>
    python -m benchmarks.child coldstart <framework> <model> <batch>
    python -m benchmarks.child slice <framework> <model> <batch> <start> <end> <passes>

A fresh process per measurement, because memory figures of one process are polluted by everything it ran before
(allocator pools, JIT compilers, other frameworks' libraries), and because a cold start is only cold once.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
import tracemalloc


def rss_kib(field: str = "VmRSS") -> int | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark) of this process, in KiB, from /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def private_kib(pid: int) -> int:
    """Memory that process ``pid`` alone holds (Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup), in KiB:
    for a forked worker, what it allocated and the pages it copied on writing, not what it shares with its parent."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory(framework: str, model: str, batch: int, steps: int) -> dict:
    """Peak resident memory added by ``steps`` training steps, and (NumPy engines) tracemalloc's peak of a step.

    A throwaway model takes one step on a batch of one first, so that JIT compilation (Numba compiles per dtype
    and rank, not per shape) is not counted, while the memory it leaves in the allocator's free lists stays small
    (a full-size warm-up would leave the step's own arrays there, and the measured steps would reuse them
    unseen). The measured model's first step is counted: it creates the optimizer state and the gradients.
    """
    from .frameworks import make_runner
    from .specs import MODELS

    spec = MODELS[model]
    make_runner(framework, spec, 1, 1).train_step()
    runner = make_runner(framework, spec, batch, 1)
    before = rss_kib()
    method = "VmHWM after reset via /proc/self/clear_refs, minus VmRSS before"
    if not reset_peak() or before is None:
        method = "getrusage ru_maxrss (the lifetime peak of the process) minus VmRSS before"
        before = before or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hold = contextlib.nullcontext()
    if framework == "minicnn":  # its steps as fit runs them: on Linux with 2 cores, the second slice in a worker
        from minicnn import parallel, workers

        hold = parallel.hold_blas()
    with hold:
        for _ in range(steps):
            runner.train_step()
    peak = rss_kib("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"rss_before_mib": before / 1024, "peak_delta_mib": (peak - before) / 1024, "rss_method": method}
    if framework == "minicnn":
        pool = workers._pools.get(id(runner.model))
        private = sum(private_kib(pid) for pid in pool.pids) / 1024 if pool is not None else 0.0
        out["workers_mib"] = private  # what the workers hold that this process does not: counted in the peak
        out["peak_delta_mib"] += private
        if pool is not None:
            out["rss_method"] += ", plus the worker processes' private memory after the steps (smaps_rollup)"
    if framework in ("minicnn", "naive"):  # their arrays are NumPy's, which tracemalloc sees
        hold = parallel.hold_blas() if framework == "minicnn" else contextlib.nullcontext()
        with hold:
            runner.train_step()  # BLAS held from here on, as in fit: the traced step allocates only its own
            tracemalloc.start()
            runner.train_step()
        out["tracemalloc_step_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def coldstart(framework: str, model: str, batch: int) -> dict:
    """Seconds to import the framework, build the model, and take the first, second and a later training step."""
    marks = {}
    t = time.perf_counter()
    if framework == "minicnn":
        import minicnn  # noqa: F401
    else:
        import torch  # noqa: F401
    marks["import"] = time.perf_counter() - t
    from .frameworks import make_runner
    from .specs import MODELS

    t = time.perf_counter()
    runner = make_runner(framework, MODELS[model], batch, 1)
    marks["build"] = time.perf_counter() - t
    for name in ("first_step", "second_step", "third_step"):
        t = time.perf_counter()
        runner.train_step()
        marks[name] = time.perf_counter() - t
    return marks


def slice_passes(framework: str, model: str, batch: int, start: int, end: int, passes: int) -> list[float]:
    """Seconds of each of ``passes`` forward and backward passes over batch[start:end] (``slices.py``), started
    when the parent answers this process's 'ready' with 'go'."""
    from .frameworks import make_runner
    from .slices import timed_passes
    from .specs import MODELS

    runner = make_runner(framework, MODELS[model], batch, 1)
    timed_passes(runner, start, end, 3)  # compile or load the kernels, fill the buffer pool
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("benchmarks.child slice: expected 'go' on stdin")
    return timed_passes(runner, start, end, passes)


if __name__ == "__main__":
    task, framework, model, batch, *rest = sys.argv[1:]
    if task == "memory":
        result = memory(framework, model, int(batch), int(rest[0]))
    elif task == "slice":
        result = slice_passes(framework, model, int(batch), *map(int, rest))
    else:
        result = coldstart(framework, model, int(batch))
    print(json.dumps(result))
