"""minicnn's benchmarks: how fast it is, against what, and on which machine. Every figure comes from a run.

    python -m benchmarks [--quick] [--out DIR] [--only kernels,models,memory,coldstart,mnist,slices]
    minicnn bench ...                      (the CLI calls ``benchmarks.main(argv)``)

Sections (each in its own module, whose docstring says what is measured and how):

* ``kernels``: conv / max-pool / Dense forward and backward, layer by layer: minicnn's Numba kernels, NumPy im2col,
  PyTorch and the loop reference;
* ``models``: training and inference samples/s and GFLOP/s of the reference models S, R and C in minicnn, PyTorch,
  Keras 3 (torch backend) and a naive NumPy engine (``naive.py``, the baseline);
* ``memory`` and ``coldstart``: peak memory of a training step, and the first steps with Numba's cache cold and
  warm, each in fresh subprocesses;
* ``mnist``: one epoch of model R on real MNIST, minicnn vs PyTorch, with test accuracy;
* ``slices``: R's and C's training step on two cores taken apart: one slice of the batch alone, two at once in two
  processes and in two threads, the whole step split and on one core.

Output, in ``--out`` (default ``bench-out/``): ``report.md``, ``benchmarks.png`` and ``results.json`` (every
timing, not only the medians). ``--quick`` runs everything on tiny batches with two repeats: it checks the harness
end to end in seconds, and its figures are not benchmarks.

If ``OPENBLAS_CORETYPE`` or ``OPENBLAS_L2_SIZE`` is set, NumPy's BLAS may be pinned to a slower kernel than the
CPU supports, which would handicap minicnn and NumPy but not PyTorch (it brings MKL). The run then restarts
itself in a subprocess without them, and the report says so (``--keep-blas-env`` keeps them instead); the BLAS
kernel in use is always recorded, as threadpoolctl reports it. The run also shortens how long OpenBLAS's idle
workers spin before they sleep (``OPENBLAS_THREAD_TIMEOUT=22``: about 2 ms, not 0.1 s), so that between turns they
are waited out rather than stopped (``timing``, settled turns); the report's BLAS line says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SECTIONS = ("kernels", "models", "memory", "coldstart", "mnist", "slices")
BLAS_SPIN = "22"  # OPENBLAS_THREAD_TIMEOUT for a run: idle OpenBLAS workers spin 2^22 cycles (~2 ms), not 2^28


def parse_args(argv=None, prog: str = "python -m benchmarks") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny batches and repeats: check the harness, fast")
    parser.add_argument("--out", default="bench-out", help="folder for report.md, benchmarks.png, results.json")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections to run (default: all of {SECTIONS})"
    )
    parser.add_argument(
        "--threads",
        default=None,
        help="comma-separated thread counts for the kernels and models sections (default: 1 and all cores); "
        "on a shared machine, '1' gives the figures that hold",
    )
    parser.add_argument(
        "--keep-blas-env",
        action="store_true",
        help="run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as set, instead of restarting without them",
    )
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.threads is not None:
        try:
            args.threads = sorted({int(t) for t in args.threads.split(",")})
        except ValueError:
            parser.error(f"--threads takes comma-separated ints, e.g. 1,2; got {args.threads!r}")
        if args.threads[0] < 1:
            parser.error("--threads: thread counts must be at least 1")
    return args


def _restart_without_blas_env(argv: list[str]) -> int:
    from .timing import BLAS_ENV

    repo = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    env["MINICNN_BENCH_UNSET"] = ", ".join(f"{k}={os.environ[k]}" for k in BLAS_ENV if k in os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    print(f"benchmarks: restarting without {env['MINICNN_BENCH_UNSET']}", file=sys.stderr, flush=True)
    return subprocess.call([sys.executable, "-m", "benchmarks", *argv, "--keep-blas-env"], env=env)


def _shorten_blas_spin() -> bool:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` to ``BLAS_SPIN`` for this process and its children (unless it is set), if
    NumPy has not loaded OpenBLAS yet, which reads it then (``timing.settle`` says why). Returns whether OpenBLAS
    runs with a spin short enough for ``settle`` to wait out. Under ``minicnn bench`` and in-process tests NumPy
    is loaded already, with whatever spin the variable said then: ``settle`` stops the workers instead."""
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_SPIN)
    from .timing import short_blas_spin

    return short_blas_spin()


def main(argv=None, prog: str = "python -m benchmarks") -> int:
    """Run the chosen sections and write the report; returns 0, or 1 if a section failed (the report says why).

    ``argv``: the arguments (default ``sys.argv[1:]``); ``prog``: the command name shown in ``--help``
    (``minicnn bench`` passes its own).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    waits_out_blas = _shorten_blas_spin()
    from .timing import BLAS_ENV

    if not args.keep_blas_env and any(k in os.environ for k in BLAS_ENV):
        return _restart_without_blas_env(argv)

    from . import frameworks, kernels, memory, mnist_epoch, models, report, slices, timing

    timing.stop_blas_in_settle = not waits_out_blas

    def log(message):
        print(message, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_keras = "models" in args.sections or "memory" in args.sections
    unavailable = {fw: why for fw, why in frameworks.available(check_keras).items() if why}
    results = {"quick": args.quick, "sections": args.sections, "machine": timing.machine(), "errors": {}}
    log(f"benchmarks: {'quick' if args.quick else 'full'} run of {', '.join(args.sections)} -> {out}/")
    results["gemm_peak"] = timing.gemm_peak(1024, repeats=3 if args.quick else 7)
    runners = {
        "kernels": lambda: kernels.run(args.quick, "torch" not in unavailable, args.threads, log=log),
        "models": lambda: models.run(args.quick, unavailable, args.threads, log=log),
        "memory": lambda: memory.run_memory(args.quick, unavailable, log=log),
        "coldstart": lambda: memory.run_coldstart(args.quick, unavailable, log=log),
        "mnist": lambda: mnist_epoch.run(args.quick, log=log),
        "slices": lambda: slices.run(args.quick, log=log),
    }
    results["section_seconds"] = {}
    for name in args.sections:
        t_section = time.perf_counter()
        try:
            results[name] = runners[name]()
        except Exception as e:  # one broken section must not lose the others' figures
            results["errors"][name] = f"{type(e).__name__}: {e}"
            log(f"benchmarks: section {name} failed: {results['errors'][name]}")
        results["section_seconds"][name] = time.perf_counter() - t_section
    results["machine"]["numba_threading_layer"] = timing.numba_threads()
    results["load_average_end"] = os.getloadavg()
    results["wall_seconds"] = time.perf_counter() - t0

    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "report.md").write_text(report.markdown(results))
    if "models" in results:
        report.chart(results, out / "benchmarks.png")
    log(f"benchmarks: wrote {out / 'report.md'} in {results['wall_seconds']:.0f} s")
    return 1 if results["errors"] else 0
