"""Peak memory of a training step, and cold start, each measured in fresh subprocesses (``benchmarks.child``).

**Memory**, per framework and model, in its own process: resident memory (RSS) just before the measured model's
first training step, then the peak RSS over a few steps minus that (Linux: the high-water mark ``VmHWM`` is reset
through ``/proc/self/clear_refs`` first; elsewhere ``getrusage``'s lifetime ``ru_maxrss``). For the NumPy engines
(minicnn, naive) also tracemalloc's peak during one later step: what the step allocates on top of the weights and
optimizer state, counted array by array. PyTorch's allocator is invisible to tracemalloc, so only RSS there.

**Cold start**: a process that imports minicnn, builds model R (S in a quick run) and takes its first training
steps, run twice with ``NUMBA_CACHE_DIR`` pointing at the same new, empty folder: the first run compiles every
Numba kernel it touches (cold), the second loads them from that folder (warm). Wall time of the whole process
(interpreter start included) and the split: import, build, first step, second step, third step; all on one
thread. PyTorch, which compiles nothing at run time, is the yardstick.
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
# Cold start runs on one thread: compiling is serial anyway, and one-thread figures hold on a shared machine.
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _child(args: list, extra_env: dict | None = None, timeout: float = 900) -> tuple[dict, float]:
    """Run ``python -m benchmarks.child *args``; returns (its JSON result, the process's wall seconds)."""
    env = dict(os.environ, **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", *map(str, args)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        raise RuntimeError(f"benchmarks.child {' '.join(map(str, args))} failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def run_memory(quick: bool = False, unavailable: dict | None = None, log=print) -> dict:
    """Peak memory of training steps for every available framework (PyTorch once: NCHW) and model."""
    from .specs import MODELS

    unavailable = unavailable or {}
    models = ["S"] if quick else list(MODELS)
    wanted = ["minicnn", "naive", "torch", "keras"]
    steps = 2 if quick else 3
    rows, skipped = [], {fw: unavailable[fw] for fw in wanted if fw in unavailable}
    for fw in ("torch", "keras") if quick else ():
        skipped.setdefault(fw, "left out of quick runs (importing it takes seconds)")
    for model in models:
        batch = min(MODELS[model].batch, 8) if quick else MODELS[model].batch
        for fw in wanted:
            if fw in skipped:
                continue
            try:
                result, _ = _child(["memory", fw, model, batch, steps])
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                result = {"error": str(e)}
            rows.append({"model": model, "framework": fw, "batch": batch, "steps": steps, **result})
            log(f"  memory   {model} {fw}")
    return {"rows": rows, "skipped": skipped}


def run_coldstart(quick: bool = False, unavailable: dict | None = None, log=print) -> dict:
    """minicnn's first steps with the Numba cache cold, then warm; PyTorch's for comparison."""
    unavailable = unavailable or {}
    model, batch = ("S", 8) if quick else ("R", 64)
    rows = []
    with tempfile.TemporaryDirectory(prefix="minicnn-numba-cache-") as cache:
        for state in ("cold", "warm"):
            marks, wall = _child(["coldstart", "minicnn", model, batch], {"NUMBA_CACHE_DIR": cache, **ONE_THREAD})
            rows.append({"framework": "minicnn", "numba_cache": state, "wall": wall, **marks})
            log(f"  coldstart minicnn ({state} Numba cache)")
    if "torch" in unavailable or quick:
        skipped = {"torch": unavailable.get("torch", "left out of quick runs (importing PyTorch takes seconds)")}
    else:
        marks, wall = _child(["coldstart", "torch", model, batch], ONE_THREAD)
        rows.append({"framework": "torch", "numba_cache": "n/a", "wall": wall, **marks})
        skipped = {}
        log("  coldstart torch")
    return {"rows": rows, "model": model, "batch": batch, "skipped": skipped}
