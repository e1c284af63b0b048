"""Does minicnn learn what it should? Test accuracy on real data against the numbers Keras users expect.

``python -m benchmarks.accuracy [--quick] [--only mnist,fashion_mnist,random_labels] [--out DIR]``

=================  ==============================================================  =========  ============
task               model and data                                                  epochs     target
=================  ==============================================================  =========  ============
``mnist``          conv32-pool-conv64-pool-fc128-fc10 on MNIST 60000 / 10000       2          >= 0.985
``fashion_mnist``  the same model on Fashion-MNIST 60000 / 10000                   3          >= 0.89
``random_labels``  Conv2D(16) -> Flatten -> Dense(10) on 2000 random images with   5          0.1 +- 0.05
                   random labels, tested on 1000 fresh ones
=================  ==============================================================  =========  ============

Pixels are ``x / 255`` with a channel axis; Adam with Keras's defaults, batch 64; seeds fixed with
``minicnn.set_random_seed``. The random-label task is the sanity check in the other direction: a model that can
memorise its training set (train accuracy near 1) must still score chance, 1/10, on fresh noise; the target
band is five binomial standard errors (sqrt(0.1 * 0.9 / 1000) = 0.0095) either side of 0.1.

``--quick`` trains on small subsets (seconds each, for CI smoke checks) with targets to match, and skips the
real-data tasks, rather than downloading, when ``$MINICNN_DATA_DIR`` is not set. The last line of the output and
``DIR/accuracy.md`` hold the Markdown table: task, epochs, train time, samples/s, test accuracy, target, pass/fail.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import minicnn
from minicnn import layers

SEED = 0
BATCH = 64
TASKS = ("mnist", "fashion_mnist", "random_labels")

# (train samples, test samples, epochs, lowest passing accuracy, highest passing accuracy); None: all of them.
FULL = {
    "mnist": (None, None, 2, 0.985, 1.0),
    "fashion_mnist": (None, None, 3, 0.89, 1.0),
    "random_labels": (2000, 1000, 5, 0.05, 0.15),
}
QUICK = {
    "mnist": (1024, 1000, 1, 0.60, 1.0),
    "fashion_mnist": (1024, 1000, 1, 0.50, 1.0),
    "random_labels": (512, 1000, 2, 0.05, 0.15),
}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "random_labels": "random images, random labels"}


def mnist_model() -> minicnn.Sequential:
    """The classic Keras MNIST CNN, compiled: conv32-pool-conv64-pool-fc128-fc10, Adam, sparse cross-entropy."""
    model = minicnn.Sequential(
        [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.MaxPooling2D(),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def seed_model() -> minicnn.Sequential:
    """The 16-filter model of the package docstring: Conv2D(16) -> Flatten -> Dense(10, softmax), compiled."""
    model = minicnn.Sequential(
        [
            layers.Conv2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def scaled(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (x[..., None] / np.float32(255)).astype(np.float32)


def load(task: str, quick: bool):
    """``(x_train, y_train), (x_test, y_test)`` for a task, scaled, with a channel axis."""
    if task == "random_labels":
        n_train, n_test = (QUICK if quick else FULL)[task][:2]
        rng = np.random.default_rng(SEED)
        x = rng.random((n_train + n_test, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, n_train + n_test).astype(np.uint8)
        return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    if quick and not os.environ.get("MINICNN_DATA_DIR"):
        raise FileNotFoundError("MINICNN_DATA_DIR is not set (a quick run does not download)")
    from minicnn import datasets

    loader = datasets.load_mnist if task == "mnist" else datasets.load_fashion_mnist
    (x, y), (xt, yt) = loader()
    n_train, n_test = (QUICK if quick else FULL)[task][:2]
    return (scaled(x[:n_train]), y[:n_train]), (scaled(xt[:n_test]), yt[:n_test])


def run_task(task: str, quick: bool) -> dict:
    """Train and test one task; returns one row of the table (numbers, not strings)."""
    _, _, epochs, low, high = (QUICK if quick else FULL)[task]
    (x, y), (xt, yt) = load(task, quick)
    print(f"\n== {TITLES[task]}: {len(x)} training and {len(xt)} test samples, {epochs} epoch(s)", flush=True)
    minicnn.set_random_seed(SEED)
    model = seed_model() if task == "random_labels" else mnist_model()
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(xt, yt, batch_size=500, verbose=0)
    print(f"test accuracy {accuracy:.4f} (train accuracy in the last epoch {history.history['accuracy'][-1]:.4f})")
    return {
        "task": f"{TITLES[task]} ({len(x)}/{len(xt)})",
        "epochs": epochs,
        "seconds": seconds,
        "samples_per_s": len(x) * epochs / seconds,
        "accuracy": float(accuracy),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "target": f">= {low:.3f}" if high >= 1.0 else f"{low:.2f} .. {high:.2f}",
        "passed": low <= accuracy <= high,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| task | epochs | train time (s) | samples/s | test accuracy | target | pass/fail |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['task']} | | | | | | skipped: {r['skipped']} |")
            continue
        lines.append(
            f"| {r['task']} | {r['epochs']} | {r['seconds']:.1f} | {r['samples_per_s']:.0f} | {r['accuracy']:.4f} "
            f"| {r['target']} | {'pass' if r['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subsets, seconds per task")
    parser.add_argument("--only", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--out", type=Path, help="also write the table to DIR/accuracy.md")
    args = parser.parse_args(argv)
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(args.only) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    return args


def main(argv=None) -> int:
    """Run the tasks, print the table (and write it with ``--out``); exit status 1 when a task misses its target."""
    args = parse_args(argv)
    rows = []
    for task in args.only:
        try:
            rows.append(run_task(task, args.quick))
        except FileNotFoundError as e:  # no data on disk: say so in the table instead of failing the rest
            print(f"\n== {TITLES[task]}: skipped, {e}")
            rows.append({"task": TITLES[task], "skipped": str(e).splitlines()[0]})
    mode = "quick (small subsets)" if args.quick else "full"
    table = f"## Accuracy, {mode}\n\n{markdown(rows)}\n"
    print("\n" + table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "accuracy.md").write_text(table)
        print(f"table written to {args.out / 'accuracy.md'}")
    return 0 if all(r.get("passed", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
