"""End to end: training and inference throughput of the reference models S, R and C, in every framework.

* **Training**: samples/s of one full step (forward, loss, backward, Adam update) at the model's batch size.
* **Inference**: samples/s of one forward pass over ``INFERENCE_BATCH`` (256) samples, gradients off.

Contenders: minicnn, PyTorch on NCHW and on channels-last memory (the table shows the faster and says which),
Keras 3 on its PyTorch backend, and the naive NumPy engine (``benchmarks.naive``). All of one model take turns
(interleaved, medians, warm-up excluded; see ``timing``), on 1 thread and on all cores.

**Achieved GFLOP/s** = the analytic FLOPs of the work (``specs``: conv and Dense only, backward = 2 x forward)
divided by its median time, read against this machine's GEMM peak on the same number of threads, measured in the
same run (``timing.gemm_peak``: a float32 1024^3 NumPy matmul). The count is the direct convolution's, for every
framework; where an engine does less arithmetic (minicnn's Winograd layers, ``kernels/winograd.py``) its figure is
an effective rate.

**The yardstick, interleaved.** That peak is taken once, at the start of the run, and the speed of this machine's
cores drifts by more than the margins of the targets (C's 1-thread training step, the same code, measured from 251
to 375 ms in runs minutes apart). So the same matmul (64^3 in ``--quick``) also takes its turns among the
frameworks' training steps, and each row records that peak too, ``gemm_gflops``: the model's rate read against the
speed the cores had while it ran. The report shows both.

**minicnn's turns run as ``fit`` runs its batches**: inside ``minicnn.parallel.hold_blas()`` (its untimed calls
and its timed one), which holds BLAS on one thread from the first step that splits or runs on one core to the
turn's end. A lone ``train_on_batch`` sets BLAS to one thread and puts it back at every call: on the 2-core Xeon
VM, S's training step on two threads, settled and woken as here, medians of 15 turns each way in turn, took 2.27
ms lone against 2.06 held (R's 8.31 against 8.28). The MNIST epoch (``mnist_epoch``) runs minicnn's turns so too.
On one thread nothing is split and the hold does nothing.
"""

from __future__ import annotations

from minicnn import parallel

from . import frameworks, timing
from .specs import INFERENCE_BATCH, MODELS, forward_flops, training_flops

TURNS = {"minicnn": parallel.hold_blas}  # minicnn's turns, as ``fit`` runs them (above)


def run(quick: bool = False, unavailable: dict | None = None, thread_counts=None, log=print) -> dict:
    """Time every available framework on S, R and C, on each of ``thread_counts`` (default: 1 and all cores).
    ``unavailable``: ``{framework: reason}`` to leave out.

    Returns ``{"rows": [...], "skipped": {framework: reason}, "settings": {...}}``; one row per model and
    thread count, with samples/s and GFLOP/s of each framework.
    """
    unavailable = dict(unavailable or {})
    repeats, warmup = (1, 1) if quick else (7, 2)
    infer_batch = 8 if quick else INFERENCE_BATCH
    thread_counts = thread_counts or sorted({1, timing.cores()})
    rows = []
    for name, spec in MODELS.items():
        batch = min(spec.batch, 8) if quick else spec.batch
        runners = {}
        for fw in frameworks.FRAMEWORKS:
            if fw in unavailable:
                continue
            try:
                runners[fw] = frameworks.make_runner(fw, spec, batch, infer_batch)
            except Exception as e:  # a framework that cannot build this model is reported, not fatal
                unavailable[fw] = f"{type(e).__name__}: {e}"
        train_flops, infer_flops = training_flops(spec, batch), forward_flops(spec, infer_batch)
        gemm, gemm_flops = timing.matmul_call(64 if quick else 1024)
        for n_threads in thread_counts:
            efficiency = timing.parallel_efficiency() if n_threads > 1 else None
            with timing.threads(n_threads):
                settled = n_threads > 1
                steps = {fw: r.train_step for fw, r in runners.items()} | {"gemm": gemm}
                train = timing.interleaved(steps, repeats, warmup, settled, TURNS)
                infer = timing.interleaved(
                    {fw: r.predict for fw, r in runners.items()}, repeats, warmup, settled, TURNS
                )
            row = {
                "model": name,
                "batch": batch,
                "infer_batch": infer_batch,
                "threads": n_threads,
                "efficiency": efficiency,
                "gemm_gflops": gemm_flops / timing.median(train.pop("gemm")) / 1e9,
                "train_gflop": train_flops / 1e9,
                "infer_gflop": infer_flops / 1e9,
                "results": {},
            }
            for fw in runners:
                t_train, t_infer = timing.median(train[fw]), timing.median(infer[fw])
                row["results"][fw] = {
                    "train_sps": batch / t_train,
                    "infer_sps": infer_batch / t_infer,
                    "train_gflops": train_flops / t_train / 1e9,
                    "infer_gflops": infer_flops / t_infer / 1e9,
                    "train_seconds": train[fw],
                    "infer_seconds": infer[fw],
                }
            rows.append(row)
            log(f"  models   {name} batch={batch} threads={n_threads}")
    return {
        "rows": rows,
        "skipped": unavailable,
        "settings": {
            "repeats": repeats,
            "warmup": warmup,
            "threads": thread_counts,
            "turns": {fw: f"{turn.__module__}.{turn.__name__}()" for fw, turn in TURNS.items()},
        },
    }
