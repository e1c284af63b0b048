"""How every number in the report is taken: interleaved repeats, medians, thread limits, and the machine.

* **Warm-up excluded.** Each contender runs ``warmup`` times before any clock starts (Numba compiles, PyTorch and
  Keras build their graphs and caches, NumPy's allocator settles).
* **Interleaved.** Contenders take turns, A B C A B C ..., and each round starts one place later than the last
  (B C A, C A B, ...), so a burst of load from another process lands on all of them, not on whoever ran then.
* **Medians.** Each contender's figure is the median of its ``repeats`` timings, which a few disturbed runs do
  not move; all timings are kept in the JSON next to the report.
* **Threads.** ``threads(n)`` limits every pool a contender may use: PyTorch's (``torch.set_num_threads``),
  Numba's (``numba.set_num_threads``) and BLAS/OpenMP's (threadpoolctl). One-thread figures hold on a shared
  machine; two-thread figures drop when another guest is busy, so each two-thread block is measured next to a
  ``parallel_efficiency`` probe: a fixed NumPy matmul timed on 1 and 2 threads, ``t1 / (2 t2)``, 1.0 = perfect.
* **Settled turns (more than one thread).** A thread pool keeps its workers spinning for a while after each
  parallel call: OpenBLAS's (NumPy's BLAS: minicnn and the naive engine) for 2^28 clock cycles by default (about
  0.11 s), PyTorch's OpenMP threads for about 10 ms (measured as process CPU time during a sleep after a call).
  Taking turns straight away, the next contender would share its cores with the last one's spinning threads: in
  two runs PyTorch trained R on 2 threads at 1,150 and 1,890 samples/s taking turns straight away, at 2,260 and
  2,920 with a 0.15 s pause between turns. So before each timed call ``settle()`` waits until every pool sleeps,
  and the contender makes untimed calls for 30 ms (``wake()``) to wake its own, as they are in a training loop
  that runs alone.
  ``python -m benchmarks`` shortens OpenBLAS's spin for its run to 2^22 cycles (``OPENBLAS_THREAD_TIMEOUT=22``,
  about 2 ms; read when NumPy loads OpenBLAS, so set before that), and ``settle()``'s 20 ms pause covers it. Where
  the spin is the default, ``settle()`` stops OpenBLAS's workers instead, and the next call starts new ones. That
  is what the harness did before, and on a 2-core Xeon VM a new worker could start on its caller's core and stay
  there for up to a scheduler tick: the timed call after the untimed one took 4-8 ms instead of 0.1-0.5 (a
  (21632, 9) @ (9, 16) product, median of 15: 4.15 against 0.12 ms; S's first convolution: 7.9 against 0.37).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from . import BLAS_SPIN

try:
    import torch
except ImportError:  # the report says so; minicnn and the naive engine are measured anyway
    torch = None


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def threads(n: int):
    """Limit PyTorch, Numba and every BLAS/OpenMP pool of this process to ``n`` threads, then restore them."""
    import numba
    from threadpoolctl import threadpool_limits

    old_numba = numba.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        numba.set_num_threads(old_numba)
        if torch is not None:
            torch.set_num_threads(old_torch)


def interleaved(
    contenders: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    settled: bool = False,
    turns: dict[str, Callable[[], contextlib.AbstractContextManager]] | None = None,
) -> dict[str, list]:
    """Time each callable ``repeats`` times, in rotating turns, after ``warmup`` untimed calls each.
    ``settled``: before each timed call, ``settle()``, then ``wake()`` (for runs on more than one thread).
    ``turns``: for some contenders, a context to run each of their turns in (the wake calls and the timed call;
    ``settle()`` comes first): ``minicnn.parallel.hold_blas``, so that minicnn's steps run as ``fit`` runs its
    batches, with BLAS held on one thread from step to step rather than set and put back at each.

    Returns ``{name: [seconds, ...]}``.
    """
    names = list(contenders)
    turns = turns or {}
    for name in names:
        with turns.get(name, contextlib.nullcontext)():
            for _ in range(warmup):
                contenders[name]()
    times: dict[str, list] = {name: [] for name in names}
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            if settled:
                settle()
            with turns.get(name, contextlib.nullcontext)():
                if settled:
                    wake(contenders[name])
                t0 = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - t0)
    return times


OPENMP_SPIN_SECONDS = 0.02  # PyTorch's OpenMP workers go to sleep about 10 ms after their last parallel region
stop_blas_in_settle = True  # main() sets it False when OpenBLAS was loaded with the short spin


def short_blas_spin() -> bool:
    """Whether ``OPENBLAS_THREAD_TIMEOUT`` asks for at most ``BLAS_SPIN`` (OpenBLAS reads 0 or unset as its
    default, 28, and raises anything below 4 to 4)."""
    try:
        value = int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "0"))
    except ValueError:
        return False
    return 0 < value <= int(BLAS_SPIN)


def settle() -> None:
    """Send this process's thread pools to sleep, so that whoever runs next has the cores to itself.

    OpenMP's workers, which cannot be told, are waited out; so are OpenBLAS's, when their spin is short (see the
    module's text). Otherwise OpenBLAS is told to stop its workers (``minicnn.parallel.stop_blas_workers``; its
    next multi-threaded call starts them again).
    """
    if stop_blas_in_settle:
        from minicnn.parallel import stop_blas_workers

        stop_blas_workers()
    time.sleep(OPENMP_SPIN_SECONDS)


WAKE_SECONDS = 0.03  # untimed calls after settle() (see wake)


def wake(call: Callable[[], object]) -> None:
    """Untimed calls of ``call`` after ``settle()``, for at least ``WAKE_SECONDS``, so that the timed call finds
    the contender as a training loop that runs alone keeps it.

    One call wakes a pool, but on the 2-core Xeon VM the kernel could put a woken worker (OpenBLAS's or PyTorch's
    OpenMP one) on its caller's core, where the two took turns until the scheduler moved it, a tick or two later:
    after one untimed call, the timed call of a (21632, 9) @ (9, 16) product took 2.09 ms instead of 0.1 (median
    of 15; S's first convolution 2.04 against 0.33). And after the pause a whole step takes a few calls to come
    back to speed: R's training steps on two threads, the first to the eighth after settle() (medians of 15
    rounds), minicnn 10.8, 9.6, 8.95, then 8.65-8.9 ms; PyTorch 17.4, 16.4, 16.0, then 15.6-15.9. 30 ms is three
    or four such steps of minicnn's and two of PyTorch's; a longer call is made once."""
    end = time.perf_counter() + WAKE_SECONDS
    call()
    while time.perf_counter() < end:
        call()


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def matmul_seconds(n: int, n_threads: int, repeats: int = 5) -> float:
    """Median seconds of one float32 ``(n, n) @ (n, n)`` NumPy matmul on ``n_threads`` BLAS threads."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    with threads(n_threads):
        return median(interleaved({"matmul": lambda: a @ b}, repeats)["matmul"])


def matmul_call(n: int = 1024) -> tuple[Callable[[], object], float]:
    """The yardstick as a contender: a callable that runs one float32 ``(n, n) @ (n, n)`` matmul, and its FLOPs.
    ``models`` times it in turn with the frameworks, so that every GFLOP/s figure can also be read against a peak
    measured under the same load as it was."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return (lambda: np.matmul(a, b, out=out)), 2.0 * n**3


def gemm_peak(n: int = 1024, repeats: int = 5) -> dict:
    """This machine's GEMM speed, the yardstick for every GFLOP/s figure: ``2 n^3 / t`` on 1 and all cores."""
    flops = 2.0 * n**3
    out = {"n": n}
    for n_threads in sorted({1, cores()}):
        out[n_threads] = flops / matmul_seconds(n, n_threads, repeats) / 1e9
    return out


def parallel_efficiency(n: int = 384, repeats: int = 7) -> float:
    """``t(1 thread) / (2 t(2 threads))`` for a fixed float32 matmul, the two thread counts taking turns:
    ~1 on an idle machine, well below when another guest shares the cores."""
    from threadpoolctl import threadpool_limits

    if cores() < 2:
        return float("nan")
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    times: dict[int, list] = {1: [], 2: []}
    for r in range(repeats + 1):
        for k in (1, 2) if r % 2 == 0 else (2, 1):
            with threadpool_limits(limits=k, user_api="blas"):
                t0 = time.perf_counter()
                a @ a
                if r > 0:  # the first round is the warm-up
                    times[k].append(time.perf_counter() - t0)
    return median(times[1]) / (2.0 * median(times[2]))


# ---------------------------------------------------------------------------------------------------- the machine
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # pin a BLAS kernel: see benchmarks/__init__.py


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict]:
    """What threadpoolctl sees loaded in this process: BLAS libraries and OpenMP runtimes."""
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads")
    return [{k: info.get(k) for k in keep if info.get(k) is not None} for info in threadpool_info()]


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("minicnn", "numpy", "numba", "torch", "keras", "threadpoolctl", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": cores(),
        "os_cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "blas": blas_info(),
        "blas_env": {k: os.environ.get(k) for k in BLAS_ENV},
        "blas_env_unset_by_harness": os.environ.get("MINICNN_BENCH_UNSET", ""),
        "blas_spin": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "settle_stops_blas": stop_blas_in_settle,
        "load_average_start": os.getloadavg(),
        "versions": versions(),
    }


def numba_threads() -> str:
    """Which Numba threading layer ran minicnn's parallel loops, if any did (call after the benchmarks)."""
    import numba

    from minicnn.kernels import cpu

    parallel = getattr(cpu, "PARALLEL", True)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process
        layer = "none started"
    return f"{layer} (minicnn.kernels.cpu.PARALLEL = {parallel})"
