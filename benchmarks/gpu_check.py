"""The one script to run on a lent GPU: is the CUDA backend right there, and how fast is it against PyTorch?

In order, each part on its own (one failing part does not stop the others; what is done is saved at once):

1. the GPU and the versions of everything involved;
2. every CUDA kernel against the NumPy backend (or the CPU maths) on fresh random inputs at realistic sizes,
   as relative errors;
3. the SGEMM against cuBLAS (``torch.matmul``, fp32, TF32 off) at 1024^3 and 4096^3, and at the shapes a CNN's
   training step multiplies, in TFLOP/s and % of cuBLAS; then other tiles and split-K (``--skip sweep``: not);
4. training throughput of two small CNNs at batch 64, 256 and 1024: minicnn on CUDA against PyTorch on CUDA and
   against minicnn with every kernel launched through numba's dispatcher (``Kernel.through_numba``), timed in
   turns, and minicnn's CPU path on the same model;
5. a profile of one training step: kernel launches, what one launch costs (both ways), GPU busy time against wall time
   (PyTorch's profiler sees numba's kernels too), and where Python spends the step (cProfile);
6. minicnn without its caching allocator, in a child process (``--skip pool``: not);
7. ``pytest tests/test_cuda.py`` on the real GPU (no simulator).

A short table is printed last; with ``$OUT`` set, ``gpu_check.json`` and ``gpu_check.log`` are written there.
``--markdown FILE.json`` prints a run's tables as Markdown (``benchmarks/GPU_RESULTS.md``).

Run it from the repository root. On the lent machines (numpy 2.5 there breaks numba-cuda; see GPU.md), with a
numpy 2.4 wheel carried in ``.whl/``:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py

minicnn need not be installed: the script maps ``minicnn.kernels`` to ``kernels/`` as the installed package does.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORKDIR = REPO  # where child processes start
LOG: list[str] = []
RESULTS: dict = {}


def say(*parts) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    LOG.append(line)


def make_minicnn_importable() -> None:
    """``minicnn.kernels`` lives in ``kernels/`` (pyproject's package-dir), which an install maps into place.
    Without an install, build that layout from symlinks in a temporary folder and put it first on the path, for
    this process and (through ``PYTHONPATH``) for the processes the tests start."""
    import tempfile

    global WORKDIR
    probe = subprocess.run(
        [sys.executable, "-c", "import minicnn.kernels"], cwd=tempfile.gettempdir(), capture_output=True
    )
    if probe.returncode == 0:
        return  # installed (editable or not): imports work as they are
    shim = Path(tempfile.mkdtemp(prefix="minicnn-path-")) / "minicnn"
    shim.mkdir()
    for entry in (REPO / "minicnn").iterdir():
        (shim / entry.name).symlink_to(entry)
    (shim / "kernels").symlink_to(REPO / "kernels")
    sys.path.insert(0, str(shim.parent))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim.parent), os.environ.get("PYTHONPATH")) if p)
    WORKDIR = shim.parent  # a child started in REPO would find REPO/minicnn (without kernels) first


def section(title: str):
    """Run a part, log its failure with the traceback, and go on."""

    def wrap(f):
        def run(*args, **kwargs):
            say(f"\n=== {title} ===")
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            except Exception:
                say(f"FAILED: {title}\n{traceback.format_exc()}")
                RESULTS.setdefault("failures", []).append(title)
                return None
            finally:
                say(f"({title}: {time.perf_counter() - start:.1f} s)")
                save()  # what is done so far survives a timeout of a later part

        return run

    return wrap


# ---------------------------------------------------------------------------------------------------- 1. versions
@section("GPU and versions")
def environment() -> dict:
    import minicnn.kernels.cuda as kcuda

    problem = kcuda.cuda_status()
    if problem:
        raise RuntimeError(problem)
    import numba
    from numba import cuda

    from minicnn.backend import get_backend
    from minicnn.kernels import cuda_memory

    get_backend("cuda")  # installs the caching allocator, which must come before the first CUDA context

    dev = cuda.get_current_device()
    name = getattr(dev, "name", "CUDA simulator")
    info = {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": ".".join(map(str, dev.compute_capability)),
        "sms": getattr(dev, "MULTIPROCESSOR_COUNT", None),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_cuda": _version("numba-cuda"),
        "cuda_driver": _try(lambda: ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))),
        "cuda_runtime": _try(lambda: ".".join(map(str, cuda.runtime.get_version()))),
        "caching_allocator": cuda_memory.is_active(),
        "cpu": _cpu_name(),
        "cpu_threads": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
    except ImportError:
        info["torch"] = None
    for k, v in info.items():
        say(f"{k:20s} {v}")
    RESULTS["environment"] = info
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _try(f):
    try:
        return f()
    except Exception as e:
        return f"? ({type(e).__name__})"


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------------- 2. tests
@section("tests/test_cuda.py on the GPU")
def run_tests() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    cmd = [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_cuda.py"), "--rootdir", str(REPO)]
    cmd += ["-c", str(REPO / "pyproject.toml"), "-q", "-p", "no:cacheprovider", "-rfEs", "-m", "not slow"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=WORKDIR, env=env, capture_output=True, text=True, timeout=240)
    tail = (done.stdout + done.stderr).strip().splitlines()
    for line in tail[-25:]:
        say("  " + line)
    RESULTS["pytest"] = {"returncode": done.returncode, "summary": tail[-1] if tail else "", "seconds": 0.0}
    RESULTS["pytest"]["seconds"] = round(time.perf_counter() - start, 1)


# ---------------------------------------------------------------------------------------------------- 3. kernels
def _err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


SIZES = {  # realistic sizes, and the tiny ones of --smoke (this script checked under the simulator)
    "gemm": ((1000, 300, 500), (20, 9, 13)),
    "conv": (
        [
            ((64, 28, 28, 32), 3, 64, (1, 1), "same"),
            ((64, 15, 15, 16), 5, 32, (2, 2), "same"),
            ((64, 13, 13, 32), 3, 64, (1, 1), "valid"),
        ],
        [
            ((2, 6, 6, 3), 3, 4, (1, 1), "same"),
            ((2, 7, 7, 2), 5, 3, (2, 2), "same"),
            ((2, 6, 6, 2), 3, 4, (1, 1), "valid"),
        ],
    ),
    "dense": ((256, 3136, 128), (8, 20, 6)),
    "pool": ((64, 28, 28, 32), (2, 6, 6, 3)),
    "pool_odd": ((64, 11, 11, 64), (2, 5, 7, 3)),  # a row and a column past the last 2x2 window (R's second pool)
    "activation": ((64, 26, 26, 32), (2, 3, 3, 4)),
    "rows": ((1024, 10), (6, 10)),
    "params": (3136 * 128, 50),
}


@section("CUDA kernels vs CPU at realistic sizes")
def check_kernels(smoke: bool = False) -> None:
    from minicnn.backend import get_backend
    from minicnn.kernels import activations, losses, updates
    from minicnn.kernels import im2col as cpu
    from minicnn.kernels.cuda_gemm import gemm
    from minicnn.kernels.shapes import padding_amounts

    size = {k: v[1] if smoke else v[0] for k, v in SIZES.items()}
    bk, host = get_backend("cuda"), get_backend("numpy")
    rng = np.random.default_rng(2024)
    rows = []

    def record(name, got, want, tol=1e-5):
        err = _err(bk.to_numpy(got), want)
        rows.append({"kernel": name, "rel_err": err, "ok": err < tol})
        say(f"  {name:48s} rel err {err:.2e} {'ok' if err < tol else 'FAIL'}")

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    M, N, K = size["gemm"]
    a, b = r(M, K), r(K, N)
    for ta, tb in [(False, False), (False, True), (True, False)]:
        A, B = (a.T.copy() if ta else a), (b.T.copy() if tb else b)
        got = gemm(bk.asarray(A), bk.asarray(B), ta, tb)
        record(f"gemm {'t' if ta else 'n'}{'t' if tb else 'n'} {M}x{N}x{K}", got, a @ b)

    for x_shape, k, F, stride, padding in size["conv"]:
        x, w, bias = r(*x_shape), r(k, k, x_shape[3], F) * 0.1, r(F)
        pad = padding_amounts(x_shape[1], x_shape[2], k, k, stride, padding)
        want, cache = cpu.conv2d_forward(x, w, bias, stride, pad)
        out, dcache = bk.conv2d_forward(bk.asarray(x), bk.asarray(w), bk.asarray(bias), stride, pad)
        tag = f"conv2d {x_shape} k{k} s{stride[0]} {padding}"
        record(tag + " fwd", out, want)
        fused = bk.conv2d_forward(bk.asarray(x), bk.asarray(w), bk.asarray(bias), stride, pad, activation="relu")[0]
        record(tag + " fwd + relu", fused, np.maximum(want, 0))
        dout = r(*want.shape)
        for name, got, ref in zip(
            ("dx", "dw", "db"),
            bk.conv2d_backward(bk.asarray(dout), dcache),
            cpu.conv2d_backward(dout, cache),
            strict=True,
        ):
            record(f"{tag} {name}", got, ref, tol=1e-4 if name != "dx" else 1e-5)

    n, d, m = size["dense"]
    x, w, bias = r(n, d), r(d, m) * 0.02, r(m)
    want, cache = cpu.dense_forward(x, w, bias)
    out, dcache = bk.dense_forward(bk.asarray(x), bk.asarray(w), bk.asarray(bias))
    record(f"dense {n}x{d} -> {m} fwd", out, want)
    fused = bk.dense_forward(bk.asarray(x), bk.asarray(w), bk.asarray(bias), activation="relu")[0]
    record(f"dense {n}x{d} -> {m} fwd + relu", fused, np.maximum(want, 0))
    dout = r(n, m)
    for name, got, ref in zip(
        ("dx", "dw", "db"), bk.dense_backward(bk.asarray(dout), dcache), cpu.dense_backward(dout, cache), strict=True
    ):
        record(f"dense {name}", got, ref)

    for kind in ("maxpool2d", "avgpool2d"):
        for pool, stride, padding, shape in [
            ((2, 2), (2, 2), "valid", size["pool"]),
            ((2, 2), (2, 2), "valid", size["pool_odd"]),
            ((3, 3), (2, 2), "same", size["pool"]),
        ]:
            x = r(*shape)
            pad = padding_amounts(x.shape[1], x.shape[2], *pool, stride, padding)
            want, cache = getattr(cpu, kind + "_forward")(x, pool, stride, pad)
            out, dcache = getattr(bk, kind + "_forward")(bk.asarray(x), pool, stride, pad)
            what = f"{kind} pool{pool[0]} s{stride[0]} {padding} {x.shape[1]}x{x.shape[2]}"
            record(f"{what} fwd", out, want)
            dout = r(*want.shape)
            dx = getattr(bk, kind + "_backward")(bk.asarray(dout), dcache)
            record(f"{what} bwd", dx, getattr(cpu, kind + "_backward")(dout, cache))

    for name in ("relu", "sigmoid", "tanh", "softmax", "leaky_relu"):
        shape = size["rows"] if name == "softmax" else size["activation"]
        x, dout = r(*shape) * 3, r(*shape)
        y, cache = activations.activation_forward(name, x)
        dy, dcache = bk.activation_forward(name, bk.asarray(x))
        record(f"{name} fwd", dy, y)
        record(
            f"{name} bwd",
            bk.activation_backward(name, bk.asarray(dout), dcache),
            activations.activation_backward(name, dout, cache),
        )

    x = r(*size["activation"])
    y, mask = host.dropout_forward(x, 0.5, np.random.default_rng(5))
    dy, dmask = bk.dropout_forward(bk.asarray(x), 0.5, np.random.default_rng(5))
    record("dropout mask (same draws as CPU)", dmask, mask, tol=1e-12)

    z, labels = r(*size["rows"]) * 2, rng.integers(0, 10, size["rows"][0])
    probs = activations.softmax(z)
    targets = activations.softmax(r(*size["rows"]))
    sig = 1 / (1 + np.exp(-z))
    for name, pred, y in [
        ("softmax_cross_entropy", z, labels),
        ("softmax_cross_entropy", z, targets),
        ("cross_entropy", probs, labels),
        ("sigmoid_binary_cross_entropy", z, rng.random(z.shape).astype(np.float32)),
        ("binary_cross_entropy", sig, rng.random(z.shape).astype(np.float32)),
    ]:
        loss, grad = getattr(losses, name)(pred, y)
        dloss, dgrad = getattr(bk, name)(bk.asarray(pred), y)
        record(f"{name} loss", np.float64(dloss), loss)
        record(f"{name} grad", dgrad, grad)

    p, g = r(size["params"]), r(size["params"])
    for name, state, kwargs in [
        ("sgd_update", 1, dict(lr=0.01, momentum=0.9, nesterov=True)),
        ("adam_update", 2, dict(lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, t=3, weight_decay=0.004)),
        ("rmsprop_update", 1, dict(lr=1e-3, rho=0.9, epsilon=1e-7)),
    ]:
        st = [np.abs(r(p.size)) * 0.01 for _ in range(state)]
        dp, dst = bk.asarray(p), [bk.asarray(s) for s in st]
        hp = p.copy()
        getattr(updates, name)(hp, g, *st, **kwargs)
        getattr(bk, name)(dp, bk.asarray(g), *dst, **kwargs)
        record(name, dp, hp)

    RESULTS["kernels"] = rows


# ---------------------------------------------------------------------------------------------------- 4. GEMM
def _time(f, sync, warmup=2, min_seconds=0.5, max_reps=200) -> float:
    """Seconds per call of ``f``, after ``warmup`` calls (JIT compilation included there)."""
    return _interleaved({"f": f}, sync, warmup=warmup, repeats=1, min_seconds=min_seconds, max_reps=max_reps)["f"]


def _interleaved(funcs: dict, sync, warmup=2, warmup_seconds=0.3, repeats=5, min_seconds=0.1, max_reps=200) -> dict:
    """Median seconds per call of each function, timed in turns (A B A B ...) so that a change of GPU clock or
    load hits all alike. Each is first called ``warmup`` times and for at least ``warmup_seconds`` (JIT compiling,
    and a GPU that idled during it ramps its clocks back up); a repeat is at least ``min_seconds`` of calls."""
    for f in funcs.values():
        start, calls = time.perf_counter(), 0
        while calls < warmup or time.perf_counter() - start < warmup_seconds:
            f()
            sync()
            calls += 1
    runs: dict = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, f in funcs.items():
            reps, start = 0, time.perf_counter()
            while reps < max_reps and (reps < 3 or time.perf_counter() - start < min_seconds):
                f()
                reps += 1
            sync()
            runs[name].append((time.perf_counter() - start) / reps)
    return {name: float(np.median(t)) for name, t in runs.items()}


def _time_one_gemm(M, N, K, ta, tb, tile=None, split_k=None):
    """Seconds per product for minicnn's SGEMM and for torch.matmul on the same operands (interleaved medians),
    and their difference."""
    import torch
    from numba import cuda

    from minicnn.kernels.cuda_gemm import gemm

    a = torch.randn((K, M) if ta else (M, K), device="cuda")
    b = torch.randn((N, K) if tb else (K, N), device="cuda")
    da, db = cuda.as_cuda_array(a), cuda.as_cuda_array(b)
    out = cuda.device_array((M, N), dtype=np.float32)
    a_, b_ = (a.T if ta else a), (b.T if tb else b)

    def sync():
        cuda.synchronize()
        torch.cuda.synchronize()

    t = _interleaved(
        {"ours": lambda: gemm(da, db, ta, tb, out=out, tile=tile, split_k=split_k), "theirs": lambda: a_ @ b_}, sync
    )
    return t["ours"], t["theirs"], _err(out.copy_to_host(), torch.matmul(a_, b_).cpu().numpy())


@section("SGEMM vs cuBLAS (fp32, TF32 off)")
def time_gemm(with_sweep: bool = True) -> None:
    import torch

    from minicnn.kernels.cuda_gemm import Tile, choose_split_k, choose_tile

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    cases = [  # (label, M, N, K, trans_a, trans_b)
        ("square 1024^3", 1024, 1024, 1024, False, False),
        ("square 4096^3", 4096, 4096, 4096, False, False),
        ("conv2 fwd, batch 256: cols @ w", 256 * 11 * 11, 64, 288, False, False),
        ("conv2 dw, batch 256: cols^T @ dout", 288, 64, 256 * 11 * 11, True, False),
        ("conv2 dcols, batch 256: dout @ w^T", 256 * 11 * 11, 288, 64, False, True),
        ("fc1 fwd, batch 1024", 1024, 128, 1600, False, False),
        ("C conv2 fwd, batch 256: cols @ w", 256 * 32 * 32, 32, 288, False, False),
    ]
    for label, M, N, K, ta, tb in cases:
        ours, theirs, err = _time_one_gemm(M, N, K, ta, tb)
        flops = 2.0 * M * N * K
        tile = choose_tile(M, N)
        row = {
            "case": label,
            "M": M,
            "N": N,
            "K": K,
            "tile": f"{tile.bm}x{tile.bn}/{tile.tm}x{tile.tn}",
            "split_k": choose_split_k(M, N, K, tile),
            "minicnn_tflops": flops / ours / 1e12,
            "cublas_tflops": flops / theirs / 1e12,
            "pct_of_cublas": 100 * theirs / ours,
            "rel_err": err,
        }
        rows.append(row)
        say(
            f"  {label:38s} {row['minicnn_tflops']:6.2f} TFLOP/s vs cuBLAS {row['cublas_tflops']:6.2f}"
            f" ({row['pct_of_cublas']:5.1f} %)  tile {row['tile']} split {row['split_k']}  err {err:.1e}"
        )
    RESULTS["gemm"] = rows

    if not with_sweep:
        return
    sweep = []  # other tiles and split-K on the square products: is the default the best one here?
    for n, tile, split in SWEEP:
        ours, theirs, err = _time_one_gemm(n, n, n, False, False, tile=Tile(*tile), split_k=split)
        row = {"tile": "x".join(map(str, tile)), "split_k": split, "n": n, "tflops": 2.0 * n**3 / ours / 1e12}
        row["pct_of_cublas"], row["rel_err"] = 100 * theirs / ours, err
        sweep.append(row)
        tag = f"tile {row['tile']} split {split} {n}^3"
        say(f"  {tag:36s} {row['tflops']:6.2f} TFLOP/s ({row['pct_of_cublas']:5.1f} %)")
    M, N, K = 256 * 11 * 11, 64, 288  # a narrow product: R's conv2 forward at batch 256
    for entry in NARROW_TILES:
        ours, theirs, err = _time_one_gemm(M, N, K, False, False, tile=Tile(*entry))
        row = {"tile": "x".join(map(str, entry)), "n": f"{M}x{N}x{K}", "tflops": 2.0 * M * N * K / ours / 1e12}
        row["pct_of_cublas"], row["rel_err"] = 100 * theirs / ours, err
        sweep.append(row)
        say(f"  tile {row['tile']:14s} {row['n']}: {row['tflops']:6.2f} TFLOP/s ({row['pct_of_cublas']:5.1f} %)")
    for M, N, K, ta in [(256 * 32 * 32, 32, 288, False), (288, 32, 256 * 32 * 32, True)]:  # C's conv2 fwd, dw
        for entry in TILES_32:
            ours, theirs, err = _time_one_gemm(M, N, K, ta, False, tile=Tile(*entry))
            label = f"{M}x{N}x{K}" + (" (A^T)" if ta else "")
            row = {"tile": "x".join(map(str, entry)), "n": label, "tflops": 2.0 * M * N * K / ours / 1e12}
            row["pct_of_cublas"], row["rel_err"] = 100 * theirs / ours, err
            sweep.append(row)
            say(f"  tile {row['tile']:14s} {label}: {row['tflops']:6.2f} TFLOP/s ({row['pct_of_cublas']:5.1f} %)")
    RESULTS["gemm_tile_sweep"] = sweep


SWEEP = [  # (n, (bm, bn, bk, tm, tn), split_k)
    *[(1024, (128, 128, 8, 8, 8), s) for s in (1, 2, 4, 8)],
    *[(1024, (64, 64, 8, 4, 4), s) for s in (1, 2, 4)],
    (1024, (128, 128, 16, 8, 8), 4),
    (4096, (128, 128, 16, 8, 8), 1),
    (4096, (64, 64, 8, 4, 4), 1),
]
NARROW_TILES = [(64, 64, 8, 4, 4), (64, 64, 16, 4, 4), (128, 64, 8, 8, 4), (128, 64, 16, 8, 4), (128, 32, 8, 8, 2)]
TILES_32 = [(64, 64, 8, 4, 4), (128, 32, 8, 4, 4), (128, 32, 16, 4, 4), (256, 32, 8, 8, 4), (256, 32, 16, 8, 4)]


# ---------------------------------------------------------------------------------------------------- 5. models
MODELS = {
    # name: (input shape, [(kind, arg)...]) -- the same network is built in minicnn and in PyTorch
    "R": ((28, 28, 1), [("conv", 32), ("pool", 2), ("conv", 64), ("pool", 2), ("flatten", 0), ("dense", 128)]),
    "C": (
        (32, 32, 3),
        [
            ("conv", 32),
            ("conv", 32),
            ("pool", 2),
            ("conv", 64),
            ("conv", 64),
            ("pool", 2),
            ("flatten", 0),
            ("dense", 256),
        ],
    ),
}


def _minicnn_model(name, device="cuda"):
    import minicnn
    from minicnn import layers

    shape, spec = MODELS[name]
    stack = [layers.Input(shape)]
    for kind, arg in spec:
        if kind == "conv":
            stack.append(layers.Conv2D(arg, 3, activation="relu", padding="same" if name == "C" else "valid"))
        elif kind == "pool":
            stack.append(layers.MaxPooling2D(arg))
        elif kind == "flatten":
            stack.append(layers.Flatten())
        else:
            stack.append(layers.Dense(arg, activation="relu"))
    stack.append(layers.Dense(10, activation="softmax"))
    model = minicnn.Sequential(stack, seed=0, device=device)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _torch_model(name):
    import torch
    from torch import nn

    shape, spec = MODELS[name]
    H, W, C = shape
    mods, c, size = [], C, H
    for kind, arg in spec:
        if kind == "conv":
            same = name == "C"
            mods += [nn.Conv2d(c, arg, 3, padding=1 if same else 0), nn.ReLU()]
            c, size = arg, size if same else size - 2
        elif kind == "pool":
            mods.append(nn.MaxPool2d(arg))
            size //= arg
        elif kind == "flatten":
            mods.append(nn.Flatten())
            c = c * size * size
        else:
            mods += [nn.Linear(c, arg), nn.ReLU()]
            c = arg
    mods.append(nn.Linear(c, 10))
    model = nn.Sequential(*mods).cuda()
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def _batch(name, batch):
    rng = np.random.default_rng(0)
    return rng.random((batch, *MODELS[name][0]), dtype=np.float32), rng.integers(0, 10, batch)


def _minicnn_step(name, batch, device="cuda"):
    """A function that takes one ``train_on_batch`` step of reference model ``name`` on ``device``, with the batch
    already there."""
    x, y = _batch(name, batch)
    model = _minicnn_model(name, device)
    dx, dy = model.backend.asarray(x), model.backend.asarray(y, np.int64)
    return lambda: model.train_on_batch(dx, dy)


def _torch_step(name, batch):
    import torch
    import torch.nn.functional as F

    x, y = _batch(name, batch)
    tmodel, opt = _torch_model(name)
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().cuda()
    ty = torch.from_numpy(y).cuda()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(tmodel(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()  # one host copy per step, as minicnn's float loss

    return step


def _through_numba(step):
    """``step`` with every kernel launched through numba's dispatcher rather than ``cuda_launch.Kernel``'s path
    (what each launch cost before that path)."""
    from minicnn.kernels.cuda_launch import Kernel

    def run():
        Kernel.through_numba = True
        try:
            return step()
        finally:
            Kernel.through_numba = False

    return run


def _sync_both():
    import torch
    from numba import cuda

    cuda.synchronize()
    torch.cuda.synchronize()


@section("training throughput: minicnn CUDA vs PyTorch CUDA (fp32, Adam, random data), and minicnn's CPU path")
def time_models(batches=(64, 256, 1024)) -> None:
    """Samples per second of a full training step, minicnn and PyTorch timed in turns (medians of 5)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name in MODELS:
        for batch in batches:
            contenders = {"ours": _minicnn_step(name, batch), "theirs": _torch_step(name, batch)}
            contenders["ours_numba_launch"] = _through_numba(_minicnn_step(name, batch))
            t = _interleaved(contenders, _sync_both)
            ours, theirs = t["ours"], t["theirs"]
            cpu = _time(_minicnn_step(name, batch, "cpu"), lambda: None, warmup=1, min_seconds=0.3, max_reps=5)
            row = {
                "model": name,
                "batch": batch,
                "minicnn_samples_per_s": batch / ours,
                "torch_samples_per_s": batch / theirs,
                "ratio_to_torch": theirs / ours,
                "minicnn_numba_launch_samples_per_s": batch / t["ours_numba_launch"],
                "minicnn_cpu_samples_per_s": batch / cpu,
            }
            rows.append(row)
            say(
                f"  model {name} batch {batch:5d}: minicnn {row['minicnn_samples_per_s']:9.0f}/s, "
                f"torch {row['torch_samples_per_s']:9.0f}/s ({row['ratio_to_torch']:.2f}x), "
                f"launched through numba {row['minicnn_numba_launch_samples_per_s']:9.0f}/s, "
                f"minicnn CPU {row['minicnn_cpu_samples_per_s']:7.0f}/s"
            )
    RESULTS["models"] = rows


@section("profile of a training step at batch 256: launches, GPU busy time, kernels")
def profile_steps(batch=256, steps=5) -> None:
    """Where a step's time goes: how many kernels it launches (counted at numba's dispatcher), what one launch
    costs from Python, and how much of the wall time the GPU is busy (kernel times from the CUDA profiler that
    PyTorch wraps, CUPTI, which sees numba's kernels too)."""
    import torch
    from numba import cuda

    from minicnn.kernels import cuda_elementwise
    from minicnn.kernels.cuda_launch import Kernel

    one = cuda.device_array(1, np.float32)
    cuda_elementwise.fill_kernel[1, 1](one, 0)
    cuda.synchronize()
    for through_numba in (True, False):
        Kernel.through_numba = through_numba
        t0 = time.perf_counter()
        for _ in range(1000):
            cuda_elementwise.fill_kernel[1, 1](one, 0)
        cuda.synchronize()
        launch_us = (time.perf_counter() - t0) * 1e3
        how = "through numba's dispatcher" if through_numba else "through cuda_launch.Kernel"
        say(f"  one launch from Python, {how} (1 thread, 2 arguments): {launch_us:.1f} us")
        RESULTS["launch_us_numba" if through_numba else "launch_us"] = launch_us
    Kernel.through_numba = False

    rows = RESULTS["profile"] = []
    for name in MODELS:
        x, y = _batch(name, batch)
        model = _minicnn_model(name)
        dx, dy = model.backend.asarray(x), model.backend.asarray(y, np.int64)
        for _ in range(3):
            model.train_on_batch(dx, dy)
        cuda.synchronize()
        launches = _count_launches(lambda m=model, dx=dx, dy=dy: m.train_on_batch(dx, dy))
        cuda.synchronize()
        row = {"model": name, "batch": batch, "launches_per_step": launches}
        try:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                t0 = time.perf_counter()
                for _ in range(steps):
                    model.train_on_batch(dx, dy)
                cuda.synchronize()
                wall = (time.perf_counter() - t0) / steps
            kernels = [e for e in prof.key_averages() if _device_us(e) > 0]
            busy = sum(_device_us(e) for e in kernels) / steps / 1e6
            row.update(wall_ms=wall * 1e3, gpu_busy_ms=busy * 1e3, busy_pct=100 * busy / wall)
            row["kernels"] = sorted(
                ({"kernel": e.key[:60], "calls": e.count // steps, "us": _device_us(e) / steps} for e in kernels),
                key=lambda k: -k["us"],
            )[:12]
        except Exception as e:  # the profiler is a bonus: the launch count stands without it
            row["profiler_error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
        row["python_top"] = _python_profile(lambda m=model, dx=dx, dy=dy: m.train_on_batch(dx, dy), steps=20)
        head = f"  model {name}: {row['launches_per_step']} launches per step"
        if "wall_ms" not in row:
            say(f"{head} ({row.get('profiler_error')})")
            continue
        say(f"{head}, wall {row['wall_ms']:.2f} ms, GPU busy {row['gpu_busy_ms']:.2f} ms ({row['busy_pct']:.0f} %)")
        for k in row["kernels"]:
            say(f"      {k['us']:8.1f} us  x{k['calls']:<3d} {k['kernel']}")

        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            tmodel, opt = _torch_model(name)
            tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().cuda()
            ty = torch.from_numpy(y).cuda()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
                opt.step()
            torch.cuda.synchronize()
        tk = [e for e in prof.key_averages() if _device_us(e) > 0]
        row["torch_kernels_per_step"] = sum(e.count for e in tk) / steps
        row["torch_gpu_busy_ms"] = sum(_device_us(e) for e in tk) / steps / 1e3
        say(
            f"    PyTorch: {row['torch_kernels_per_step']:.0f} kernels per step, "
            f"GPU busy {row['torch_gpu_busy_ms']:.2f} ms"
        )


def _python_profile(f, steps: int) -> list[str]:
    """The Python functions where ``steps`` calls of ``f`` spend their time (cProfile, by own time), printed."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        f()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(22)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()][-24:]
    for ln in lines:
        say("    | " + ln[:150])
    return lines


def _count_launches(f) -> int | None:
    """How many kernels ``f()`` launches: counted at numba's dispatcher, plus those ``cuda_launch.Kernel``
    launched without it (None where the dispatcher cannot be hooked)."""
    from numba.cuda import dispatcher

    from minicnn.kernels.cuda_launch import Kernel

    owner = getattr(dispatcher, "CUDADispatcher", None)
    if owner is None or not hasattr(owner, "call"):
        return None
    count, original, fast = [0], owner.call, Kernel.launches

    def counting(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)

    owner.call = counting
    try:
        f()
    finally:
        owner.call = original
    return count[0] + Kernel.launches - fast


def _device_us(event) -> float:
    """Total device time of a profiler row, in microseconds (the attribute was renamed across versions)."""
    for attr in ("device_time_total", "cuda_time_total", "self_device_time_total"):
        v = getattr(event, attr, None)
        if v:
            return float(v)
    return 0.0


@section("without the caching allocator (MINICNN_CUDA_POOL=0, in a child process)")
def pool_on_off(cases=(("R", 256), ("C", 256))) -> None:
    """minicnn's training throughput with numba's own allocator; the figures with the caching allocator are those
    of ``time_models``."""
    rows = []
    for pool in ("0",):
        env = dict(os.environ, MINICNN_CUDA_POOL=pool)
        spec = ",".join(f"{n}:{b}" for n, b in cases)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-models", spec]
        done = subprocess.run(cmd, cwd=WORKDIR, env=env, capture_output=True, text=True, timeout=120)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[{")]
        if done.returncode or not lines:
            raise RuntimeError(f"child with MINICNN_CUDA_POOL={pool} failed:\n{done.stderr[-2000:]}")
        for row in json.loads(lines[-1]):
            row["pool"] = pool == "1"
            rows.append(row)
            say(
                f"  pool {'on ' if row['pool'] else 'off'} model {row['model']} batch {row['batch']}: "
                f"{row['samples_per_s']:9.0f} samples/s (allocator active: {row['allocator_active']})"
            )
    RESULTS["pool_on_off"] = rows


def child_models(spec: str) -> None:
    """``--child-models R:256,C:256``: minicnn CUDA training throughput only, one JSON line on stdout."""
    from minicnn.backend import get_backend
    from minicnn.kernels import cuda_memory

    get_backend("cuda")
    rows = []
    for item in spec.split(","):
        name, batch = item.split(":")
        seconds = _interleaved({"ours": _minicnn_step(name, int(batch))}, _sync_both)["ours"]
        rows.append({"model": name, "batch": int(batch), "samples_per_s": int(batch) / seconds})
    for row in rows:
        row["allocator_active"] = cuda_memory.is_active()
    print(json.dumps(rows))


# ---------------------------------------------------------------------------------------------------- report
def summary() -> None:
    say("\n=== summary ===")
    env = RESULTS.get("environment") or {}
    say(f"GPU: {env.get('gpu')}  numba-cuda {env.get('numba_cuda')}  torch {env.get('torch')}")
    if "pytest" in RESULTS:
        say(f"pytest tests/test_cuda.py: rc {RESULTS['pytest']['returncode']}  {RESULTS['pytest']['summary']}")
    if "kernels" in RESULTS:
        bad = [r["kernel"] for r in RESULTS["kernels"] if not r["ok"]]
        worst = max(r["rel_err"] for r in RESULTS["kernels"])
        say(f"kernel checks: {len(RESULTS['kernels']) - len(bad)}/{len(RESULTS['kernels'])} ok, worst {worst:.1e}")
        for b in bad:
            say(f"  FAIL {b}")
    for r in RESULTS.get("gemm", []):
        say(f"gemm {r['case']:38s} {r['minicnn_tflops']:6.2f} TFLOP/s  {r['pct_of_cublas']:5.1f} % of cuBLAS")
    for r in RESULTS.get("models", []):
        say(
            f"model {r['model']} batch {r['batch']:5d}  minicnn {r['minicnn_samples_per_s']:9.0f}/s  "
            f"{r['ratio_to_torch']:.2f}x torch ({r['torch_samples_per_s']:.0f}/s)  "
            f"via numba {r.get('minicnn_numba_launch_samples_per_s', 0):.0f}/s  "
            f"CPU {r['minicnn_cpu_samples_per_s']:.0f}/s"
        )
    for r in RESULTS.get("profile", []):
        say(
            f"profile {r['model']}: {r['launches_per_step']} launches/step, wall {r.get('wall_ms', 0):.2f} ms, "
            f"GPU busy {r.get('gpu_busy_ms', 0):.2f} ms; torch {r.get('torch_kernels_per_step', 0):.0f} kernels, "
            f"busy {r.get('torch_gpu_busy_ms', 0):.2f} ms"
        )
    if RESULTS.get("failures"):
        say("parts that failed: " + ", ".join(RESULTS["failures"]))
    save()


def save() -> None:
    """Write ``gpu_check.json`` and ``gpu_check.log`` to ``$OUT`` (when set)."""
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "gpu_check.json").write_text(json.dumps(RESULTS, indent=2, default=_jsonable))
        Path(out, "gpu_check.log").write_text("\n".join(LOG) + "\n")


def markdown(results: dict) -> str:
    """The tables of a run (``gpu_check.json``) as Markdown, for ``benchmarks/GPU_RESULTS.md``."""
    env = results.get("environment", {})
    out = [
        f"GPU: **{env.get('gpu')}** (compute capability {env.get('compute_capability')}, {env.get('sms')} SMs), "
        f"CUDA driver {env.get('cuda_driver')}; CPU: {env.get('cpu')}, {env.get('cpu_threads')} threads. "
        f"Python {env.get('python')}, numpy {env.get('numpy')}, numba {env.get('numba')}, "
        f"numba-cuda {env.get('numba_cuda')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}); "
        f"caching allocator: {env.get('caching_allocator')}.",
        "",
    ]
    if "pytest" in results:
        out += [f"`tests/test_cuda.py` on the GPU (no simulator): {results['pytest']['summary']}.", ""]
    if "kernels" in results:
        ks = results["kernels"]
        worst = max(ks, key=lambda r: r["rel_err"])
        out += [
            f"CUDA kernels against the CPU on fresh random inputs at realistic sizes: "
            f"{sum(r['ok'] for r in ks)}/{len(ks)} within tolerance; largest relative error "
            f"{worst['rel_err']:.1e} ({worst['kernel']}).",
            "",
        ]
    if "gemm" in results:
        out += ["### SGEMM against cuBLAS (fp32, TF32 off; interleaved medians)", ""]
        out += ["| product | M x N x K | tile / split-K | minicnn TFLOP/s | cuBLAS TFLOP/s | % of cuBLAS |"]
        out += ["|---|---|---|---|---|---|"]
        for r in results["gemm"]:
            out.append(
                f"| {r['case']} | {r['M']} x {r['N']} x {r['K']} | {r['tile']} / {r['split_k']} | "
                f"{r['minicnn_tflops']:.2f} | {r['cublas_tflops']:.2f} | {r['pct_of_cublas']:.1f} |"
            )
        out.append("")
    if "gemm_tile_sweep" in results:
        out += ["Other tiles (bm x bn x bk x tm x tn) and split-K on the same products:", ""]
        out += ["| tile | split-K | product | TFLOP/s | % of cuBLAS |", "|---|---|---|---|---|"]
        for r in results["gemm_tile_sweep"]:
            n = r["n"]
            product = f"{n}^3" if isinstance(n, int) else n
            out.append(
                f"| {r['tile']} | {r.get('split_k', 'auto')} | {product} | {r['tflops']:.2f} | "
                f"{r['pct_of_cublas']:.1f} |"
            )
        out.append("")
    if "models" in results:
        out += ["### Training throughput, samples/s (fp32, Adam, random data; minicnn and PyTorch interleaved)", ""]
        out += [
            "| model | batch | minicnn CUDA | PyTorch CUDA | minicnn / PyTorch | minicnn CUDA, launched through "
            "numba | minicnn CPU (this host) |"
        ]
        out += ["|---|---|---|---|---|---|---|"]
        for r in results["models"]:
            via = r.get("minicnn_numba_launch_samples_per_s")
            out.append(
                f"| {r['model']} | {r['batch']} | {r['minicnn_samples_per_s']:,.0f} | "
                f"{r['torch_samples_per_s']:,.0f} | {r['ratio_to_torch']:.2f} | "
                + (f"{via:,.0f}" if via else "-")
                + f" | {r['minicnn_cpu_samples_per_s']:,.0f} |"
            )
        out.append("")
    if "pool_on_off" in results:
        on = {(r["model"], r["batch"]): r["minicnn_samples_per_s"] for r in results.get("models", [])}
        out += ["Without the caching allocator (`MINICNN_CUDA_POOL=0`, a child process):", ""]
        out += [
            "| model | batch | samples/s, numba's allocator | samples/s, caching (table above) |",
            "|---|---|---|---|",
        ]
        for r in results["pool_on_off"]:
            with_pool = on.get((r["model"], r["batch"]))
            out.append(
                f"| {r['model']} | {r['batch']} | {r['samples_per_s']:,.0f} | "
                + (f"{with_pool:,.0f} |" if with_pool else "- |")
            )
        out.append("")
    if "profile" in results:
        out += ["### Profile of one training step at batch 256", ""]
        if "launch_us_numba" in results:
            out += [
                f"One kernel launch from Python (2 arguments): {results['launch_us_numba']:.1f} us through numba's "
                f"dispatcher, {results['launch_us']:.1f} us through `cuda_launch.Kernel`.",
                "",
            ]
        elif "launch_us" in results:
            out += [f"One numba.cuda kernel launch from Python costs {results['launch_us']:.1f} us (2 arguments).", ""]
        for r in results["profile"]:
            out.append(
                f"- **{r['model']}**: {r['launches_per_step']} kernel launches per step; wall "
                f"{r.get('wall_ms', float('nan')):.2f} ms, GPU busy {r.get('gpu_busy_ms', float('nan')):.2f} ms "
                f"({r.get('busy_pct', float('nan')):.0f} %). PyTorch: {r.get('torch_kernels_per_step', 0):.0f} "
                f"kernels, GPU busy {r.get('torch_gpu_busy_ms', float('nan')):.2f} ms."
            )
            for k in r.get("kernels", [])[:8]:
                name = k["kernel"].split("[")[0].replace("::_3clocals_3e", ".<locals>").replace("minicnn::", "")
                out.append(f"  - {k['us']:.1f} us in {k['calls']} x `{name}`")
        out.append("")
    return "\n".join(out)


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


def main() -> int:
    make_minicnn_importable()
    if "--markdown" in sys.argv:
        print(markdown(json.loads(Path(sys.argv[sys.argv.index("--markdown") + 1]).read_text())))
        return 0
    if "--child-models" in sys.argv:
        child_models(sys.argv[sys.argv.index("--child-models") + 1])
        return 0
    smoke = "--smoke" in sys.argv  # tiny sizes, no tests and no timings: this script, under the simulator
    start = time.perf_counter()
    if environment() is None:
        summary()
        return 1
    check_kernels(smoke)  # --skip sweep,pool: without the tile sweep and the allocator-off child (a short run)
    skip = set(sys.argv[sys.argv.index("--skip") + 1].split(",")) if "--skip" in sys.argv else set()
    if not smoke:  # the timings first: they are what this script is for, if time runs out
        time_gemm(with_sweep="sweep" not in skip)
        time_models()
        profile_steps()
        if "pool" not in skip:
            pool_on_off()
        run_tests()
    RESULTS["seconds"] = round(time.perf_counter() - start, 1)
    summary()
    return 1 if RESULTS.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
