"""Per-kernel timings: conv, max-pool and Dense, forward and backward, for every layer of the reference models.

For each layer of S, R and C, at that model's batch size, the same random arrays go to:

* ``minicnn``: the default CPU kernels, ``minicnn.kernels.cpu`` (blocked im2col + BLAS, Numba col2im and pooling);
* ``numpy``: ``minicnn.kernels.im2col`` (NumPy strided-view im2col + BLAS);
* ``torch`` and ``torch_cl``: PyTorch's own CPU kernels (``aten`` ops, no autograd bookkeeping), on NCHW and on
  channels-last memory; the table shows the faster of the two and says which;
* ``reference``: the loop twins of ``minicnn.kernels.reference``, timed once on a batch of ``REFERENCE_BATCH``
  and scaled to the full batch (their time is linear in N), and only where one sample's multiply-adds stay under
  a budget, so a quick run stays quick.

Upstream gradients are random, except for a conv layer that a max pooling follows: it gets the gradient training
gives it (``pooled_dout``), zero except at each pooling window's winner, and there only where the ReLU passed a
positive output (17-22% of it nonzero in these layers; the table's layer label gives it), so that the kernels that
skip dout's zeros (``kernels/sparse.py``) run here as they do in training. A backward timing reuses one forward's
cache, so it measures the backward pass alone.

Each conv layer that a 2x2 max pooling follows also gets a row for the pair, convolution + ReLU + pooling, forward
and back, as a model runs it: minicnn's engine as one pair of kernels (``conv2d_relu_maxpool2x2_forward`` /
``_backward``, ``minicnn.layers.fused``), the others as three ops in turn (PyTorch's convolution, ReLU and
max pooling with indices; the NumPy engine's and the loop reference's layers). Its dx is computed only where the
model needs it (not for a first layer), and its upstream gradient is a random one of the pooled output.

Each row is timed on 1 thread and on all cores (interleaved, medians; see ``timing``). The conv layers at batch 64
(R's, and C's re-run at 64) also make the summary asked for in an early issue: conv forward + backward, MNIST- and
CIFAR-shaped.
"""

from __future__ import annotations

import time

import numpy as np

from minicnn.kernels import cpu, im2col, reference

from . import timing
from .specs import MODELS, Conv, Dense, Flatten, Pool, walk

CONTENDERS = ("minicnn", "numpy", "torch", "torch_cl")
LABELS = {
    "minicnn": "minicnn (CPU engine)",
    "numpy": "NumPy im2col",
    "torch": "PyTorch",
    "reference": "loop reference",
}
REFERENCE_BATCH = 1
ISSUE_BATCH = 64


def pooled_dout(x, w, b, pad, size: int, rng) -> np.ndarray:
    """The upstream gradient of a conv + ReLU layer that a ``size`` x ``size`` max pooling follows, as training gives
    it: a random gradient of the pooled map goes back to each window's winner only (``maxpool2d_backward``), then
    the ReLU keeps it where the layer's output was positive."""
    y, _ = cpu.conv2d_forward(x, w, b, (1, 1), pad, activation="relu")
    y = np.array(y)  # a copy: the engine's buffers are reused by the next call
    pooled, cache = cpu.maxpool2d_forward(y, (size, size), (size, size), (0, 0, 0, 0))
    g = rng.standard_normal(pooled.shape, dtype=np.float32)
    dout = np.array(cpu.maxpool2d_backward(g, cache))
    dout[y <= 0] = 0
    return dout


class Case:
    """One layer at one batch size, with its random input, weights and upstream gradient (NHWC); ``pool``: the size
    of the max pooling that follows the layer, if one does."""

    def __init__(self, model: str, shape, batch: int, seed: int = 0, pool: int = 0, fused: bool = False, need_dx=True):
        rng = np.random.default_rng(seed)
        self.model, self.label, self.batch = model, shape.label, batch
        self.layer, self.pad = shape.layer, shape.pad
        self.kind = {Conv: "conv", Pool: "maxpool", Dense: "dense"}[type(shape.layer)]
        self.need_dx, self.pool = need_dx, pool
        if fused:  # the conv layer, its ReLU and the 2x2 max pooling after it, as one row
            self.kind = "conv+pool"
            self.label += f" + ReLU + maxpool {pool}x{pool}" + ("" if need_dx else " (no dx)")
        self.x = rng.standard_normal((batch, *shape.in_shape), dtype=np.float32)
        self.dout = rng.standard_normal((batch, *shape.out_shape), dtype=np.float32)
        if self.kind in ("conv", "conv+pool"):
            k, C, F = shape.layer.kernel, shape.in_shape[2], shape.layer.filters
            self.w = rng.standard_normal((k, k, C, F), dtype=np.float32) * np.float32(1 / np.sqrt(k * k * C))
            self.b = rng.standard_normal(F, dtype=np.float32)
            self.macs_per_sample = shape.forward_flops_per_sample / 2
            if fused:
                Ho, Wo, _ = shape.out_shape
                self.dout = rng.standard_normal((batch, Ho // pool, Wo // pool, F), dtype=np.float32)
            elif pool:
                self.dout = pooled_dout(self.x, self.w, self.b, self.pad, pool, rng)
                self.label += f" (dout behind max pool: {np.count_nonzero(self.dout) / self.dout.size:.0%} nonzero)"
        elif self.kind == "dense":
            D, M = shape.in_shape[0], shape.layer.units
            self.w = rng.standard_normal((D, M), dtype=np.float32) * np.float32(1 / np.sqrt(D))
            self.b = rng.standard_normal(M, dtype=np.float32)
            self.macs_per_sample = shape.forward_flops_per_sample / 2
        else:
            self.macs_per_sample = float(np.prod(shape.out_shape)) * shape.layer.size**2  # comparisons

    @property
    def key(self):
        """What makes two cases the same work per sample (the loop reference is timed once per key)."""
        return (self.kind, self.x.shape[1:], getattr(self, "w", np.empty(0)).shape, self.pad, self.need_dx)

    # ------------------------------------------------------------------------------------------------ NumPy engines
    def numpy_pair(self, module, x=None, dout=None):
        """(forward, backward) callables for a kernel module with minicnn's signatures."""
        x = self.x if x is None else x
        dout = self.dout if dout is None else dout
        if self.kind == "conv+pool":
            return self._conv_relu_pool_pair(module, x, dout)
        if self.kind == "conv":
            args = (x, self.w, self.b, (1, 1), self.pad)
            fwd, bwd = module.conv2d_forward, module.conv2d_backward
        elif self.kind == "dense":
            args = (x, self.w, self.b)
            fwd, bwd = module.dense_forward, module.dense_backward
        else:
            s = self.layer.size
            args = (x, (s, s), (s, s), (0, 0, 0, 0))
            fwd, bwd = module.maxpool2d_forward, module.maxpool2d_backward
        _, cache = fwd(*args)
        return (lambda: fwd(*args)), (lambda: bwd(dout, cache))

    def _conv_relu_pool_pair(self, module, x, dout):
        """The pair as one kernel where ``module`` has it (the CPU engine), else its three layers in turn."""
        args, s, no_pad = (x, self.w, self.b, (1, 1), self.pad), self.pool, (0, 0, 0, 0)
        if hasattr(module, "conv2d_relu_maxpool2x2_forward"):
            _, cache = module.conv2d_relu_maxpool2x2_forward(*args)
            return (
                lambda: module.conv2d_relu_maxpool2x2_forward(*args),
                lambda: module.conv2d_relu_maxpool2x2_backward(dout, cache, False, self.need_dx),
            )

        def forward():
            z, conv_cache = module.conv2d_forward(*args)
            y = np.maximum(z, 0)
            out, pool_cache = module.maxpool2d_forward(y, (s, s), (s, s), no_pad)
            return out, (conv_cache, y, pool_cache)

        _, (conv_cache, y, pool_cache) = forward()

        def backward():
            dz = module.maxpool2d_backward(dout, pool_cache) * (y > 0)
            return module.conv2d_backward(dz, conv_cache, need_dx=self.need_dx)

        return forward, backward

    # ------------------------------------------------------------------------------------------------ PyTorch
    def torch_pair(self, channels_last: bool):
        import torch
        import torch.nn.functional as F

        aten = torch.ops.aten
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def image(a):  # NHWC NumPy -> NCHW tensor, in the chosen memory format
            return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=fmt)

        if self.kind == "dense":
            x, dout = torch.from_numpy(self.x), torch.from_numpy(self.dout)
            wt = torch.from_numpy(np.ascontiguousarray(self.w.T))  # nn.Linear keeps (out, in)
            b = torch.from_numpy(self.b)

            def dense_backward():
                return dout.mm(wt), dout.t().mm(x), dout.sum(0)

            return (lambda: F.linear(x, wt, b)), dense_backward
        x, dout = image(self.x), image(self.dout)
        if self.kind in ("conv", "conv+pool"):
            w = torch.from_numpy(self.w).permute(3, 2, 0, 1).contiguous(memory_format=fmt)
            b = torch.from_numpy(self.b)
            pt, pb, pl, pr = self.pad
            if pt != pb or pl != pr:  # asymmetric 'same' padding: pad explicitly, as Keras would
                x = F.pad(x, (pl, pr, pt, pb)).contiguous(memory_format=fmt)
                pt = pl = 0
            pad = [pt, pl]
            F_ = w.shape[0]

            def conv_backward(dz=dout, need_dx=True):
                return aten.convolution_backward(
                    dz, x, w, [F_], [1, 1], pad, [1, 1], False, [0, 0], 1, [need_dx, True, True]
                )

            if self.kind == "conv":
                return (lambda: F.conv2d(x, w, b, padding=pad)), conv_backward
            s = [self.pool] * 2

            def forward():  # convolution, ReLU, max pooling: PyTorch's three ops
                y = torch.relu(F.conv2d(x, w, b, padding=pad))
                return y, aten.max_pool2d_with_indices(y, s, s, [0, 0], [1, 1], False)

            y, (_, idx) = forward()

            def backward():
                dy = aten.max_pool2d_with_indices_backward(dout, y, s, s, [0, 0], [1, 1], False, idx)
                return conv_backward(aten.threshold_backward(dy, y, 0), self.need_dx)

            return forward, backward
        s = [self.layer.size] * 2
        _, idx = aten.max_pool2d_with_indices(x, s, s, [0, 0], [1, 1], False)

        def pool_backward():
            return aten.max_pool2d_with_indices_backward(dout, x, s, s, [0, 0], [1, 1], False, idx)

        return (lambda: aten.max_pool2d_with_indices(x, s, s, [0, 0], [1, 1], False)), pool_backward

    def contenders(self, with_torch: bool) -> dict:
        out = {"minicnn": self.numpy_pair(cpu), "numpy": self.numpy_pair(im2col)}
        if with_torch:
            out["torch"] = self.torch_pair(channels_last=False)
            if self.kind != "dense":
                out["torch_cl"] = self.torch_pair(channels_last=True)
        return out

    def reference_seconds_per_sample(self) -> dict:
        """The loop twins on ``REFERENCE_BATCH`` samples, one timing each, divided by that batch."""
        x, dout = self.x[:REFERENCE_BATCH], self.dout[:REFERENCE_BATCH]
        fwd, bwd = self.numpy_pair(reference, x, dout)
        out = {}
        for name, fn in (("fwd", fwd), ("bwd", bwd)):
            t0 = time.perf_counter()
            fn()
            out[name] = (time.perf_counter() - t0) / REFERENCE_BATCH
        return out


def cases(batch: int | None = None) -> list[Case]:
    """Every conv, pool and Dense layer of S, R and C at its model's batch (or ``batch``), each conv + ReLU + pool
    pair as well, then C's convs at 64."""
    out = []
    for name, spec in MODELS.items():
        shapes = walk(spec)
        first_conv = min(i for i, shape in enumerate(shapes) if isinstance(shape.layer, Conv))
        for i, shape in enumerate(shapes):
            if not isinstance(shape.layer, Flatten):
                pool = _pool_after(shapes, i)
                out.append(Case(name, shape, batch or spec.batch, pool=pool))
                if isinstance(shape.layer, Conv) and pool == 2:
                    n = batch or spec.batch
                    out.append(Case(name, shape, n, pool=pool, fused=True, need_dx=i > first_conv))
    issue_batch = batch or ISSUE_BATCH
    shapes = walk(MODELS["C"])
    for i, shape in enumerate(shapes):
        if isinstance(shape.layer, Conv) and issue_batch != (batch or MODELS["C"].batch):
            out.append(Case("C", shape, issue_batch, pool=_pool_after(shapes, i)))
    return out


def _pool_after(shapes, i: int) -> int:
    """The size of the max pooling right after layer i, or 0."""
    after = shapes[i + 1].layer if i + 1 < len(shapes) else None
    return after.size if isinstance(after, Pool) else 0


def run(quick: bool = False, with_torch: bool = True, thread_counts=None, log=print) -> dict:
    """Time every case on each of ``thread_counts`` (default: 1 and all cores).

    Returns ``{"rows": [...], "settings": {...}}``."""
    batch = 2 if quick else None
    repeats = 2 if quick else 9
    reference_budget = 3e4 if quick else 1e7  # multiply-adds per sample the loop reference may take on
    thread_counts = thread_counts or sorted({1, timing.cores()})
    rows = []
    reference_done: dict = {}
    for case in cases(batch):
        pairs = case.contenders(with_torch)
        callables = {}
        for name, (fwd, bwd) in pairs.items():
            callables[f"{name} fwd"] = fwd
            callables[f"{name} bwd"] = bwd
        for n_threads in thread_counts:
            efficiency = timing.parallel_efficiency() if n_threads > 1 else None
            with timing.threads(n_threads):
                times = timing.interleaved(callables, repeats, settled=n_threads > 1)
            row = {
                "model": case.model,
                "layer": case.label,
                "kind": case.kind,
                "batch": case.batch,
                "threads": n_threads,
                "efficiency": efficiency,
                "seconds": {
                    name: {op: timing.median(times[f"{name} {op}"]) for op in ("fwd", "bwd")} for name in pairs
                },
                "all_seconds": times,
            }
            if n_threads == thread_counts[0]:
                if case.macs_per_sample > reference_budget:
                    row["reference_skipped"] = (
                        f"{case.macs_per_sample:.3g} multiply-adds per sample > budget {reference_budget:.0e}"
                    )
                else:
                    if case.key not in reference_done:  # C's convs at two batch sizes share one timing
                        with timing.threads(1):
                            reference_done[case.key] = case.reference_seconds_per_sample()
                    row["seconds"]["reference"] = {op: t * case.batch for op, t in reference_done[case.key].items()}
            rows.append(row)
            log(f"  kernels  {case.model} {case.label:<40} N={case.batch:<4} threads={n_threads}")
    return {
        "rows": rows,
        "settings": {
            "repeats": repeats,
            "warmup": 1,
            "reference_batch": REFERENCE_BATCH,
            "reference_budget_macs": reference_budget,
            "issue_batch": batch or ISSUE_BATCH,
            "with_torch": with_torch,
            "threads": thread_counts,
        },
    }
