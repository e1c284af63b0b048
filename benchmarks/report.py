"""The results as a Markdown report and a bar chart. Nothing here measures: it formats what the run recorded."""

from __future__ import annotations

import math

from .frameworks import LABELS

DASH = "—"


def fmt(v, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (no exponent for everyday sizes); ``—`` for missing/NaN."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return DASH
    v = float(v)
    if v == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(v)))
    decimals = max(digits - 1 - magnitude, 0)
    return f"{v:,.{decimals}f}".replace(",", "")


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def ratio(a, b) -> str:
    return fmt(a / b) if a and b else DASH


# ---------------------------------------------------------------------------------------------------- sections
def machine_section(r: dict) -> list[str]:
    m = r["machine"]
    blas = "; ".join(
        " ".join(str(info.get(k, "")) for k in ("internal_api", "version", "architecture", "threading_layer")).strip()
        + f" ({info.get('prefix', '')}, {info.get('user_api', '')})"
        for info in m["blas"]
    )
    env = ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in m["blas_env"].items())
    if m["blas_env_unset_by_harness"]:
        env += f" (the calling environment had {m['blas_env_unset_by_harness']}; unset for this run)"
    if "blas_spin" in m:  # recorded since the harness shortens OpenBLAS's spin
        env += f", OPENBLAS_THREAD_TIMEOUT={m['blas_spin'] or 'unset (28)'}: " + (
            "settled turns stop OpenBLAS's workers" if m["settle_stops_blas"] else "settled turns wait its workers out"
        )
    lines = [
        "## Machine and libraries",
        "",
        f"- CPU: {m['cpu']}; cores available: {m['cores']} (os.cpu_count: {m['os_cpu_count']}); {m['platform']}",
        f"- BLAS / OpenMP as threadpoolctl reports them: {blas}",
        f"- BLAS environment: {env}",
        f"- Numba threading layer: {m['numba_threading_layer']}",
        f"- Load average (1, 5, 15 min) at start: {', '.join(fmt(x, 2) for x in m['load_average_start'])}; "
        f"at end: {', '.join(fmt(x, 2) for x in r.get('load_average_end', []))}",
        f"- Mode: {'quick (tiny batches and repeats: checks the harness, not the speed)' if r['quick'] else 'full'}; "
        f"run took {fmt(r.get('wall_seconds'))} s ("
        + ", ".join(f"{k} {fmt(v)} s" for k, v in r.get("section_seconds", {}).items())
        + ")",
        "",
    ]
    lines += table(["library", "version"], [[k, v] for k, v in m["versions"].items()])
    peak = r["gemm_peak"]
    lines += [f"GEMM peak (float32 {peak['n']}^3 NumPy matmul, median of repeats), the yardstick for GFLOP/s:", ""]
    lines += table(["threads", "GFLOP/s"], [[t, fmt(v)] for t, v in peak.items() if t != "n"])
    return lines


def kernels_section(k: dict) -> list[str]:
    s = k["settings"]
    lines = [
        "## Kernels",
        "",
        f"Median milliseconds of one call (interleaved, {s['repeats']} repeats after {s['warmup']} warm-up). "
        "PyTorch: the faster of NCHW and channels-last (`cl`). Loop reference: timed on "
        f"N={s['reference_batch']} and scaled to the batch (it is linear in N), single-threaded, only where one "
        f"sample takes under {s['reference_budget_macs']:.0e} multiply-adds. Ratios: time / PyTorch's time "
        "(above 1 = slower than PyTorch). On more than one thread each timed call starts on settled thread pools "
        "after 30 ms of untimed calls (see `benchmarks/timing.py`). Upstream gradients are random, but a conv layer "
        "that a max pooling follows gets the one training gives it, zero except at the pooling windows' winners where "
        "the ReLU passed (its label says how much is nonzero; `benchmarks/kernels.py`).",
        "",
    ]
    if not s.get("with_torch", True):
        lines += ["PyTorch is not importable here, so its columns and the ratios are empty (—).", ""]
    for n_threads in s["threads"]:
        rows = [r for r in k["rows"] if r["threads"] == n_threads]
        title = f"### {n_threads} thread{'s' if n_threads > 1 else ''}"
        lines += [title, ""]
        header = ["model", "layer", "op", "N", "minicnn ms", "NumPy im2col ms", "PyTorch ms", "loop ref ms"]
        header += ["minicnn ÷ PyTorch", "im2col ÷ PyTorch"]
        if n_threads > 1:
            header.append("2-thread efficiency")
        body = []
        for r in rows:
            sec = r["seconds"]
            for op in ("fwd", "bwd"):
                torch_ms, layout = best_torch(sec, op)
                ref = sec.get("reference", {}).get(op)
                ref_cell = fmt(ref * 1e3) if ref is not None else ("skipped" if "reference_skipped" in r else DASH)
                cells = [
                    r["model"],
                    r["layer"],
                    op,
                    r["batch"],
                    fmt(sec["minicnn"][op] * 1e3),
                    fmt(sec["numpy"][op] * 1e3),
                    f"{fmt(torch_ms)} {layout}".strip(),
                    ref_cell,
                    ratio(sec["minicnn"][op] * 1e3, torch_ms),
                    ratio(sec["numpy"][op] * 1e3, torch_ms),
                ]
                if n_threads > 1:
                    cells.append(fmt(r["efficiency"], 2))
                body.append(cells)
        lines += table(header, body)
    lines += issue_table(k)
    return lines


def best_torch(sec: dict, op: str) -> tuple[float | None, str]:
    """The faster PyTorch layout for this op, in ms, and its tag (``cl`` for channels-last)."""
    options = [(sec[name][op] * 1e3, tag) for name, tag in (("torch", ""), ("torch_cl", "cl")) if name in sec]
    return min(options) if options else (None, "")


def issue_table(k: dict) -> list[str]:
    batch = k["settings"]["issue_batch"]
    rows = [r for r in k["rows"] if r["kind"] == "conv" and r["batch"] == batch and r["model"] in ("R", "C")]
    lines = [
        f"### Conv forward + backward at batch {batch}: MNIST-shaped (R) and CIFAR-shaped (C)",
        "",
        "Forward + backward milliseconds per layer; loop reference as above (N="
        f"{k['settings']['reference_batch']}, scaled); ratios to PyTorch's time.",
        "",
    ]
    header = ["layer", "threads", "loop ref ms", "NumPy im2col ms", "minicnn CPU engine ms", "PyTorch ms"]
    header += ["loop ref ÷ PyTorch", "NumPy ÷ PyTorch", "Numba ÷ PyTorch", "2-thread efficiency"]
    body = []
    for r in rows:
        sec = r["seconds"]

        def both(name, sec=sec):
            return sec[name]["fwd"] * 1e3 + sec[name]["bwd"] * 1e3 if name in sec else None

        torch_ms = min((both(n) for n in ("torch", "torch_cl") if n in sec), default=None)
        ref = both("reference")
        body.append(
            [
                f"{r['model']} {r['layer']}",
                r["threads"],
                fmt(ref) if ref is not None else ("skipped" if "reference_skipped" in r else DASH),
                fmt(both("numpy")),
                fmt(both("minicnn")),
                fmt(torch_ms),
                ratio(ref, torch_ms),
                ratio(both("numpy"), torch_ms),
                ratio(both("minicnn"), torch_ms),
                fmt(r["efficiency"], 2),
            ]
        )
    return lines + table(header, body)


def merged_results(row: dict) -> dict:
    """One row's results with PyTorch's two layouts merged into the faster, per quantity."""
    res = dict(row["results"])
    for quantity in ("train", "infer"):
        layouts = [(res[n][f"{quantity}_sps"], n) for n in ("torch", "torch_cl") if n in res]
        if layouts:
            sps, name = max(layouts)
            res.setdefault("torch_best", {})
            res["torch_best"].update({k: v for k, v in res[name].items() if k.startswith(quantity)})
            res["torch_best"][f"{quantity}_layout"] = "cl" if name == "torch_cl" else "NCHW"
    return res


def _turns_text(turns: dict | None) -> str:
    """What each turn of a contender ran inside, if anything (``models.TURNS``)."""
    if not turns:
        return ""
    said = ", ".join(f"{LABELS.get(fw, fw)}'s inside `{ctx}`" for fw, ctx in turns.items())
    return (
        f" Turns run as the framework's own training loop runs its steps: {said}, as `fit` runs its batches "
        "(BLAS held on one thread from step to step, not set and put back at each; on one thread it does nothing)."
    )


def models_section(m: dict, peak: dict) -> list[str]:
    s = m["settings"]
    lines = [
        "## Models: training and inference throughput",
        "",
        "Samples per second: training = one full step (forward, loss, backward, Adam) at the model's batch; "
        "inference = one forward pass over the inference batch. Medians of "
        f"{s['repeats']} interleaved repeats after {s['warmup']} warm-up. GFLOP/s counts conv and Dense FLOPs "
        "(backward = 2 x forward) of the direct convolution, the same count for every framework: minicnn runs its "
        "wide 3x3 layers by Winograd's algorithm, which does 2.25-4x fewer multiplications there, so for it the "
        "figure is an effective rate. '% peak' is against the GEMM peak on the same threads measured at the start of "
        "the run; '% peak, interleaved' against the same matmul timed in turn with these training steps (the "
        "'GEMM interleaved' column; see `benchmarks/models.py`). Ratios: samples/s / "
        "PyTorch's (below 1 = slower than PyTorch). PyTorch: the faster of NCHW and channels-last, per column. "
        "On more than one thread each timed call starts on settled thread pools after 30 ms of untimed calls (see "
        "`benchmarks/timing.py`)." + _turns_text(s.get("turns")),
        "",
    ]
    order = ["minicnn", "torch_best", "keras", "naive"]
    names = {**LABELS, "torch_best": "PyTorch"}
    for n_threads in s["threads"]:
        rows = [r for r in m["rows"] if r["threads"] == n_threads]
        lines += [f"### {n_threads} thread{'s' if n_threads > 1 else ''}", ""]
        if n_threads > 1:
            probe = ", ".join(f"{r['model']}: {fmt(r['efficiency'], 2)}" for r in rows)
            lines += [f"2-thread efficiency probe before each model: {probe}", ""]
        header = ["model", "batch", "framework", "train samples/s", "train ÷ PyTorch", "train GFLOP/s", "% peak"]
        header += ["GEMM interleaved GFLOP/s", "% peak, interleaved"]
        header += ["infer samples/s", "infer ÷ PyTorch", "infer GFLOP/s"]
        body = []
        for r in rows:
            res = merged_results(r)
            torch_res = res.get("torch_best", {})
            for fw in order:
                if fw not in res:
                    reason = m["skipped"].get("torch" if fw == "torch_best" else fw)
                    if reason:
                        body.append([r["model"], r["batch"], names[fw], f"not run: {reason}"] + [DASH] * 8)
                    continue
                x = res[fw]
                name = names[fw]
                if fw == "torch_best":
                    name += f" ({x['train_layout']} / {x['infer_layout']})"
                body.append(
                    [
                        r["model"],
                        r["batch"],
                        name,
                        fmt(x["train_sps"]),
                        ratio(x["train_sps"], torch_res.get("train_sps")),
                        fmt(x["train_gflops"]),
                        fmt(100 * x["train_gflops"] / peak[n_threads]),
                        fmt(r.get("gemm_gflops")),
                        fmt(100 * x["train_gflops"] / r["gemm_gflops"]) if r.get("gemm_gflops") else DASH,
                        fmt(x["infer_sps"]),
                        ratio(x["infer_sps"], torch_res.get("infer_sps")),
                        fmt(x["infer_gflops"]),
                    ]
                )
        lines += table(header, body)
    return lines


def memory_section(mem: dict) -> list[str]:
    lines = [
        "## Peak memory of a training step",
        "",
        "Each framework and model in a fresh process. 'RSS before': resident memory with the model built and "
        "one throwaway step taken on a batch of one (so JIT compilation is not counted). 'Peak RSS delta': the "
        "peak over the training steps minus that (method in the last column); the first measured step creates the "
        "optimizer state and gradients. minicnn's steps run as `fit` runs them: on Linux with two cores the "
        "second slice in a worker process, whose private memory ('of it, workers') is added to the peak. "
        "'tracemalloc peak': NumPy engines only, the peak of NumPy arrays allocated during one later step "
        "(this process's).",
        "",
    ]
    body = []
    for r in mem["rows"]:
        if "error" in r:
            body.append([r["model"], LABELS.get(r["framework"], r["framework"]), r["batch"], r["error"]] + [DASH] * 4)
            continue
        body.append(
            [
                r["model"],
                LABELS.get(r["framework"], r["framework"]),
                r["batch"],
                fmt(r["rss_before_mib"]),
                fmt(r["peak_delta_mib"]),
                fmt(r.get("workers_mib")),
                fmt(r.get("tracemalloc_step_peak_mib")),
                r["rss_method"],
            ]
        )
    header = ["model", "framework", "batch", "RSS before MiB", "peak RSS delta MiB", "of it, workers MiB"]
    header += ["tracemalloc peak MiB"]
    lines += table(header + ["RSS method"], body)
    for fw, reason in mem.get("skipped", {}).items():
        lines += [f"- {LABELS.get(fw, fw)}: not run: {reason}"]
    return lines + [""]


def coldstart_section(c: dict) -> list[str]:
    lines = [
        "## Cold start",
        "",
        f"A fresh process imports the framework, builds model {c['model']} and takes three training steps at "
        f"batch {c['batch']}, on one thread. minicnn twice, with `NUMBA_CACHE_DIR` pointing at the same new, "
        "empty folder: cold (compiles every Numba kernel it touches) then warm (loads them). Seconds.",
        "",
    ]
    header = ["framework", "Numba cache", "process wall", "import", "build", "first step", "second step"]
    header += ["third step"]
    body = [
        [
            LABELS.get(r["framework"], r["framework"]),
            r["numba_cache"],
            fmt(r["wall"]),
            fmt(r["import"]),
            fmt(r["build"]),
            fmt(r["first_step"]),
            fmt(r["second_step"]),
            fmt(r["third_step"]),
        ]
        for r in c["rows"]
    ]
    lines += table(header, body)
    for fw, reason in c.get("skipped", {}).items():
        lines += [f"- {LABELS.get(fw, fw)}: not run: {reason}", ""]
    return lines


def mnist_section(e: dict) -> list[str]:
    lines = ["## One MNIST epoch: model R, minicnn vs PyTorch", ""]
    if "skipped" in e:
        return lines + [f"Not run: {e['skipped']}", ""]
    what = "A partial epoch (quick run)" if e["partial_epoch"] else "One epoch"
    lines += [
        f"{what}: {e['samples']} training images, batch {e['batch']}, Adam, {e['threads']} threads, the same "
        f"initial weights and batch order, the two frameworks taking turns of {e.get('turn', 1)} batches, each turn "
        "starting on settled threads (see `benchmarks/timing.py`). Test accuracy on "
        f"{e['test_samples']} images. 2-thread efficiency probe before / after: {fmt(e['efficiency_before'], 2)} / "
        f"{fmt(e['efficiency_after'], 2)}.",
        "",
    ]
    sps, torch_sps = e["samples_per_second"], e["samples_per_second"]["torch"]
    body = [
        [LABELS[fw], fmt(sps[fw]), fmt(e["seconds"][fw]), ratio(sps[fw], torch_sps), fmt(e["accuracy"][fw], 4)]
        for fw in ("minicnn", "torch")
    ]
    return lines + table(["framework", "samples/s", "seconds", "÷ PyTorch", "test accuracy"], body)


def slices_section(sl: dict) -> list[str]:
    lines = ["## Two cores: where the split training step loses time", ""]
    if "skipped" in sl:
        return lines + [f"Not run: {sl['skipped']}", ""]
    lines += [
        "Each model's training batch cut in two slices, as minicnn's 'batch' split runs it on two cores (see "
        "`benchmarks/slices.py`). One slice's forward and backward pass alone; the two slices at once in two "
        "processes (what the cores cost each other) and in two threads of one process (what sharing one "
        "interpreter costs: the layers' Python runs under the GIL); the whole training step split in two as `fit` "
        "runs it (the second slice in a worker process: `minicnn.workers`; the slower slice, the gradient sum, "
        "Adam), the same with the second slice on a thread, and on one core. Median ms, the contenders taking "
        f"turns. 2-thread efficiency probe after: {fmt(sl.get('efficiency'), 2)}.",
        "",
    ]
    header = ["model", "batch", "slice", "passes x rounds", "alone ms", "2 processes ms", "2 threads ms"]
    header += ["'batch' step ms", "'batch' step, threads ms", "one-core step ms", "processes ÷ alone"]
    header += ["threads ÷ processes", "step ÷ processes", "threads step ÷ step"]
    body = [
        [
            r["model"],
            r["batch"],
            r["slice"],
            f"{r['passes']} x {r['rounds']}",
            fmt(r["alone_ms"]),
            fmt(r["processes_ms"]),
            fmt(r["threads_ms"]),
            fmt(r["batch_ms"]),
            fmt(r.get("batch_threads_ms")),
            fmt(r["one_core_ms"]),
            ratio(r["processes_ms"], r["alone_ms"]),
            ratio(r["threads_ms"], r["processes_ms"]),
            ratio(r["batch_ms"], r["processes_ms"]),
            ratio(r.get("batch_threads_ms"), r["batch_ms"]),
        ]
        for r in sl["rows"]
    ]
    return lines + table(header, body)


# The targets of the issue that asked for this benchmark (a CPU engine that beats PyTorch on small CNNs).
TRAIN_TARGETS = {"S": 1.5, "R": 1.3, "C": 1.0}  # training samples/s ÷ PyTorch's
INFER_TARGET = 1.0  # inference samples/s ÷ PyTorch's, every model
PEAK_TARGET = {"R": 65.0, "C": 65.0}  # training GFLOP/s, % of the GEMM peak on the same threads
WARM_START_SECONDS = 2.0  # import + build + first training step, Numba's cache warm
# A start-of-run GEMM peak on n threads below SHARED_CORES_SCALING * n times the 1-thread peak was measured while
# another guest had some of the cores (uncontended, this machine's 2-thread peak is 1.8-2.0x its 1-thread one):
# read against it, a model's share of the peak reads far too high (R 91%, C 155% in one run). Such a row is shown
# but not counted; the interleaved peak, measured beside the model's own steps, still is.
SHARED_CORES_SCALING = 0.75


def _met(met: bool) -> str:
    return "yes" if met else "**no**"


def cores_were_shared(gemm_peak: dict, n: int) -> bool:
    """Whether the start-of-run GEMM peak on n threads scaled too little over one thread's to be a yardstick
    (``SHARED_CORES_SCALING``)."""
    one, many = gemm_peak.get(1), gemm_peak.get(n)
    return n > 1 and bool(one and many) and many < SHARED_CORES_SCALING * n * one


def targets_section(r: dict) -> list[str]:
    """Each target against this run's figures: the same numbers as the tables below, read off the same results."""
    rows = []

    def add(what, threads, value, target, met, unit=""):
        rows.append([what, threads, f"{fmt(value)}{unit}", target, met if isinstance(met, str) else _met(met)])

    models = r.get("models")
    if models and "rows" in models:
        for row in models["rows"]:
            res = merged_results(row)
            mine, torch_res = res.get("minicnn"), res.get("torch_best")
            if not mine or not torch_res:
                continue
            name, n = row["model"], row["threads"]
            train = mine["train_sps"] / torch_res["train_sps"]
            add(f"{name} training ÷ PyTorch", n, train, f"≥ {TRAIN_TARGETS[name]}", train >= TRAIN_TARGETS[name])
            infer = mine["infer_sps"] / torch_res["infer_sps"]
            add(f"{name} inference ÷ PyTorch", n, infer, f"≥ {INFER_TARGET}", infer >= INFER_TARGET)
            if name in PEAK_TARGET:
                peaks = {"start of run": r["gemm_peak"][n], "interleaved": row.get("gemm_gflops")}
                for when, peak in peaks.items():
                    if peak:
                        share = 100 * mine["train_gflops"] / peak
                        target = PEAK_TARGET[name]
                        met = share >= target
                        if when == "start of run" and cores_were_shared(r["gemm_peak"], n):
                            met = f"not counted: that peak was {fmt(peak / r['gemm_peak'][1])}x one thread's"
                        add(f"{name} training, % of GEMM peak ({when})", n, share, f"≥ {target:.0f}", met)
    memory = r.get("memory")
    if memory and "rows" in memory:
        delta = {(m["model"], m["framework"]): m.get("peak_delta_mib") for m in memory["rows"]}
        for (model, fw), mib in delta.items():
            theirs = delta.get((model, "torch"))
            if fw == "minicnn" and mib is not None and theirs is not None:
                add(
                    f"{model} training-step peak memory, MiB (PyTorch: {fmt(theirs)})",
                    DASH,
                    mib,
                    "≤ PyTorch's",
                    mib <= theirs,
                )
    cold = r.get("coldstart")
    if cold and "rows" in cold:
        for c in cold["rows"]:
            if c["framework"] == "minicnn" and c["numba_cache"] == "warm":
                start = c["import"] + c["build"] + c["first_step"]
                add(
                    "cold start, warm Numba cache: import + build + first step",
                    1,
                    start,
                    f"< {WARM_START_SECONDS:.0f}",
                    start < WARM_START_SECONDS,
                    " s",
                )
    if not rows:
        return []
    lines = [
        "## Against the targets",
        "",
        "The issue's targets, read off this run's tables below (PyTorch at its faster layout). Two-thread figures "
        "move with the load another guest puts on the cores: read them with their efficiency probes. A "
        "start-of-run GEMM peak on n threads below "
        f"{SHARED_CORES_SCALING:g} x n times one thread's was taken while the cores were shared: a share of it is "
        "shown but not counted.",
        "",
    ]
    if r.get("quick"):
        lines += ["**Quick run**: tiny batches and single repeats check the harness; these figures say nothing.", ""]
    return lines + table(["figure", "threads", "this run", "target", "met"], rows) + [""]


def markdown(r: dict) -> str:
    lines = [
        "# minicnn benchmarks",
        "",
        "Every figure below was measured in this run (`python -m benchmarks"
        + (" --quick" if r["quick"] else "")
        + "`); how each is taken is in the docstrings of `benchmarks/*.py`: warm-up excluded, contenders "
        "interleaved, medians over repeats, 1 thread and all cores reported apart.",
        "",
    ]
    lines += machine_section(r)
    lines += targets_section(r)
    builders = {
        "kernels": kernels_section,
        "models": lambda x: models_section(x, r["gemm_peak"]),
        "memory": memory_section,
        "coldstart": coldstart_section,
        "mnist": mnist_section,
        "slices": slices_section,
    }
    for name in r["sections"]:
        if name in r.get("errors", {}):
            lines += [f"## {name}", "", f"This section failed: {r['errors'][name]}", ""]
        else:
            lines += builders[name](r[name])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- the chart
def chart(r: dict, path) -> None:
    """Samples/s of every framework on S, R and C: training and inference, 1 thread and all cores (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib import ticker

    m = r["models"]
    thread_counts = m["settings"]["threads"]
    fws = ["minicnn", "torch_best", "keras", "naive"]
    names = {**LABELS, "torch_best": "PyTorch (best layout)"}
    fig, axes = plt.subplots(2, len(thread_counts), figsize=(6.5 * len(thread_counts), 9), squeeze=False)
    for col, n_threads in enumerate(thread_counts):
        rows = [row for row in m["rows"] if row["threads"] == n_threads]
        models = [row["model"] for row in rows]
        merged = [merged_results(row) for row in rows]
        for row_i, (quantity, title) in enumerate((("train", "Training"), ("infer", "Inference"))):
            ax = axes[row_i][col]
            present = [fw for fw in fws if any(fw in res for res in merged)]
            width = 0.8 / max(len(present), 1)
            for i, fw in enumerate(present):
                values = [res[fw][f"{quantity}_sps"] if fw in res else 0 for res in merged]
                xs = np.arange(len(models)) + (i - (len(present) - 1) / 2) * width
                bars = ax.bar(xs, values, width, label=names[fw])
                ax.bar_label(bars, [fmt(v, 2) for v in values], fontsize=7, rotation=90, padding=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt(v, 1)))
            ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: fmt(v, 1) if f"{v:e}"[0] in "25" else ""))
            ax.set_xticks(range(len(models)), [f"model {x}" for x in models])
            ax.set_ylabel("samples / second (log scale)")
            probe = ""
            if n_threads > 1:
                probe = "\n2-thread efficiency probe: " + ", ".join(
                    f"{x['model']} {fmt(x['efficiency'], 2)}" for x in rows
                )
            ax.set_title(f"{title}, {n_threads} thread{'s' if n_threads > 1 else ''}{probe}", fontsize=10)
            ax.margins(y=0.25)
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    cpu = r["machine"]["cpu"]
    fig.suptitle(f"minicnn vs PyTorch, Keras 3 and a naive NumPy engine, on {cpu}" + (" (quick run)" * r["quick"]))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
