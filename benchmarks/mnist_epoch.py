"""One epoch of model R on real MNIST: minicnn against PyTorch, in one run, then test accuracy of both.

Both start from the same weights (minicnn's initial weights copied into the PyTorch model) and see the same
batches of 64 in the same shuffled order, with Adam (learning rate 1e-3) on all cores. The two take turns, TURN
batches at a time (minicnn, PyTorch, then PyTorch, minicnn, ...), so whatever else loads the machine loads both
alike; before each turn ``timing.settle()`` sends the other's thread pools to sleep (see ``timing``: taking turns
batch by batch, each framework ran next to the other's spinning threads). Each timed step includes gathering its
batch from that framework's copy of the data (NHWC float32 for minicnn, an NCHW tensor for PyTorch) and a full
``train_on_batch`` / optimizer step; shuffling and progress bars are left out of both. minicnn's turns run as
``fit`` runs its batches, inside ``minicnn.parallel.hold_blas()`` (BLAS on one thread from the turn's first split
step to its end). Samples/s = training samples / summed step seconds. Accuracy: argmax of each model on the
10,000 test images.

The data: ``minicnn.datasets.load_mnist()`` (it looks in ``$MINICNN_DATA_DIR/mnist``), else the four IDX ``.gz``
files read directly from that folder. A quick run uses the first 128 training and 500 test images.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import time
from pathlib import Path

import numpy as np

from . import timing
from .frameworks import minicnn_model, torch_model
from .models import TURNS
from .specs import MODELS

BATCH = 64
TURN = 20  # batches per turn: the first batch of a turn starts its framework's threads again (about 2 ms)


IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte.gz", 16),
    "y_train": ("train-labels-idx1-ubyte.gz", 8),
    "x_test": ("t10k-images-idx3-ubyte.gz", 16),
    "y_test": ("t10k-labels-idx1-ubyte.gz", 8),
}


def load_mnist(download: bool):
    """``(x_train, y_train), (x_test, y_test)`` as uint8 arrays.

    From ``$MINICNN_DATA_DIR/mnist`` when the four files are there (read directly: an IDX file is a header of
    ``offset`` bytes, then the raw bytes); else, if ``download``, through ``minicnn.datasets.load_mnist()``
    (its cache, or a download); else FileNotFoundError.
    """
    folder = Path(os.environ.get("MINICNN_DATA_DIR", "")) / "mnist"
    if os.environ.get("MINICNN_DATA_DIR") and all((folder / name).exists() for name, _ in IDX_FILES.values()):
        a = {}
        for key, (name, offset) in IDX_FILES.items():
            with gzip.open(folder / name) as f:
                a[key] = np.frombuffer(f.read(), np.uint8, offset=offset)
        return (a["x_train"].reshape(-1, 28, 28), a["y_train"]), (a["x_test"].reshape(-1, 28, 28), a["y_test"])
    if not download:
        raise FileNotFoundError(f"no MNIST IDX files in {folder} (set MINICNN_DATA_DIR); a quick run does not download")
    from minicnn import datasets

    return datasets.load_mnist()


def copy_weights_to_torch(model, net) -> None:
    """minicnn weights -> the same network in PyTorch: conv kernels (kh, kw, C, F) -> (F, C, kh, kw); Dense
    kernels transposed, and the first Dense's rows reordered from (H, W, C) flatten order to PyTorch's (C, H, W)."""
    import torch

    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    denses = [m for m in net if isinstance(m, torch.nn.Linear)]
    chw = None
    with torch.no_grad():
        for layer in model.layers:
            kind = type(layer).__name__
            if kind == "Conv2D":
                m = convs.pop(0)
                m.weight.copy_(torch.from_numpy(layer.params["kernel"].transpose(3, 2, 0, 1).copy()))
                m.bias.copy_(torch.from_numpy(layer.params["bias"]))
            elif kind == "Flatten":
                H, W, C = layer.input_shape
                chw = (C, H, W)
            elif kind == "Dense":
                w = layer.params["kernel"]
                if chw is not None:
                    C, H, W = chw
                    w = w.reshape(H, W, C, -1).transpose(2, 0, 1, 3).reshape(C * H * W, -1)
                    chw = None
                m = denses.pop(0)
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                m.bias.copy_(torch.from_numpy(layer.params["bias"]))


def run(quick: bool = False, log=print) -> dict:
    """Train one epoch of R with both frameworks, taking turns; returns samples/s and accuracies."""
    try:
        import torch
    except ImportError as e:
        return {"skipped": f"PyTorch not importable ({e})"}
    try:
        (x_train, y_train), (x_test, y_test) = load_mnist(download=not quick)
    except (FileNotFoundError, OSError) as e:
        return {"skipped": f"MNIST not available: {e}"}
    if quick:
        (x_train, y_train), (x_test, y_test) = (x_train[:128], y_train[:128]), (x_test[:500], y_test[:500])

    x = (x_train.astype(np.float32) / 255)[..., None]
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    y = y_train.astype(np.int64)
    yt = torch.from_numpy(y)

    spec = MODELS["R"]
    loss_fn = torch.nn.CrossEntropyLoss()
    n_threads = timing.cores()
    with timing.threads(n_threads):  # warm-up on throwaway models: Numba loads its kernels, PyTorch its primitives
        minicnn_model(spec, seed=0).train_on_batch(x[:BATCH], y[:BATCH])
        loss_fn(torch_model(spec, seed=0)(xt[:BATCH]), yt[:BATCH]).backward()
    model = minicnn_model(spec, seed=0)
    net = torch_model(spec, seed=0)
    copy_weights_to_torch(model, net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

    def minicnn_step(idx):
        model.train_on_batch(x[idx], y[idx])

    def torch_step(idx):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt[idx]), yt[idx])
        loss.backward()
        optimizer.step()

    efficiency_before = timing.parallel_efficiency()
    order = np.random.default_rng(0).permutation(len(x))
    seconds = {"minicnn": 0.0, "torch": 0.0}
    steps = {"minicnn": minicnn_step, "torch": torch_step}
    batches = [np.sort(order[start : start + BATCH]) for start in range(0, len(x), BATCH)]
    with timing.threads(n_threads):
        for k, first in enumerate(range(0, len(batches), TURN)):
            for name in ("minicnn", "torch") if k % 2 == 0 else ("torch", "minicnn"):
                timing.settle()
                with TURNS.get(name, contextlib.nullcontext)():  # minicnn's, as fit runs its batches
                    for idx in batches[first : first + TURN]:
                        t0 = time.perf_counter()
                        steps[name](idx)
                        seconds[name] += time.perf_counter() - t0
    efficiency_after = timing.parallel_efficiency()

    x_eval = (x_test.astype(np.float32) / 255)[..., None]
    accuracy = {"minicnn": float(np.mean(model.predict(x_eval, batch_size=1000).argmax(1) == y_test))}
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(x_eval.transpose(0, 3, 1, 2))))
    accuracy["torch"] = float((logits.argmax(1).numpy() == y_test).mean())
    log("  mnist    one epoch of R, minicnn and PyTorch")
    return {
        "samples": len(x),
        "test_samples": len(x_test),
        "batch": BATCH,
        "turn": TURN,
        "threads": n_threads,
        "efficiency_before": efficiency_before,
        "efficiency_after": efficiency_after,
        "seconds": seconds,
        "samples_per_second": {k: len(x) / s for k, s in seconds.items()},
        "accuracy": accuracy,
        "partial_epoch": quick,
    }
