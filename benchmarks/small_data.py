"""Small real data: loading photos, training from scratch with and without augmentation, and the demo.

``python -m benchmarks.small_data [--quick] [--only load,cats_dogs,cifar,demo] [--epochs N] [--out DIR]``

* ``load``: the time to decode and resize the 600 cats-vs-dogs photos (400 in ``train/``, 200 in
  ``validation/``, JPEGs of 80 to 500 pixels a side) to 64x64 with ``image_folder(...).load()``, median of 3.
* ``cats_dogs``: ``zoo.build('photos', (64, 64, 3), 2)`` trained from scratch on the 400 training photos and
  validated on the 200 others after every epoch, once plain and once with ``augment=True`` (random horizontal
  flips, rotations up to 0.05 of a turn and zooms up to 10 %), Adam 1e-3, batch 32, the same epochs for both.
* ``cifar``: ``zoo.build('cifar', (32, 32, 3), 10)`` on the CIFAR-10 JPEG subset (1000 train, 1000 test) that
  ``load_cifar10()`` falls back to without the binary version, plain and augmented, the same way.
* ``demo``: ``python -m minicnn demo`` in a subprocess: its wall time (start-up included) and the validation
  accuracy it prints.

Every run starts from ``minicnn.set_random_seed(0)``. The models are built with ``seed=None``, so each
augmentation layer draws its own generator from the model's seeded one (deterministic, and independent of the
others). Training curves go to ``DIR/*.png``; the Markdown table (experiment, augmentation, epochs, train time,
best and final validation accuracy) ends the output and goes to ``DIR/small_data.md``, followed by a verdict
on augmentation that counts a difference only beyond two standard errors of a difference of two accuracies on
the same validation set (about 7 points with 200 images, 3 with 1000).

``--quick`` uses a few dozen images and one or two epochs (a smoke check of the harness, not a result).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import minicnn
from minicnn import datasets, zoo

SEED = 0
BATCH = 32
EXPERIMENTS = ("load", "cats_dogs", "cifar", "demo")
EPOCHS = {"cats_dogs": 30, "cifar": 15, "demo": 8}
QUICK_EPOCHS = {"cats_dogs": 1, "cifar": 1, "demo": 1}
QUICK_SIZES = {"cats_dogs": (32, 32), "cifar": (100, 100)}  # (train, validation) images in a quick run


def data_root(path) -> Path:
    """The shared data folder: ``--data``, else ``$MINICNN_DATA_DIR``."""
    value = path or os.environ.get("MINICNN_DATA_DIR")
    if not value:
        raise FileNotFoundError("MINICNN_DATA_DIR is not set (or pass --data DIR)")
    root = Path(value).expanduser()
    if not (root / "cats-vs-dogs" / "train").is_dir():
        raise FileNotFoundError(f"{root / 'cats-vs-dogs' / 'train'} does not exist")
    return root


def load_cats_dogs(root: Path):
    """``(x_train, y_train), (x_val, y_val)``: uint8 (N, 64, 64, 3), labels 0 = cats, 1 = dogs."""
    train = datasets.image_folder(root / "cats-vs-dogs" / "train", image_size=(64, 64))
    val = datasets.image_folder(root / "cats-vs-dogs" / "validation", image_size=(64, 64))
    return train.load(), val.load()


def load_cifar_subset(root: Path):
    """``load_cifar10()`` with ``$MINICNN_DATA_DIR`` = ``root``: the 1000 + 1000 JPEG subset when no binary version
    is on disk. A full binary copy, if there is one, is cut to the same size (the first 100 images per class)."""
    saved = os.environ.get("MINICNN_DATA_DIR")
    os.environ["MINICNN_DATA_DIR"] = str(root)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (x, y), (xv, yv) = datasets.load_cifar10()
    finally:
        if saved is None:
            del os.environ["MINICNN_DATA_DIR"]
        else:
            os.environ["MINICNN_DATA_DIR"] = saved
    for w in caught:
        print(f"(load_cifar10: {w.message})")
    if len(x) > 1000:
        print(f"load_cifar10 found the full set ({len(x)} + {len(xv)} images): using 100 per class of each split")
        keep, keep_v = _balanced(y, 1000), _balanced(yv, 1000)
        (x, y), (xv, yv) = (x[keep], y[keep]), (xv[keep_v], yv[keep_v])
    return (x, y), (xv, yv)


def time_loading(root: Path, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        (x, _), (xv, _) = load_cats_dogs(root)
        seconds.append(time.perf_counter() - started)
        print(f"loaded {len(x) + len(xv)} photos at 64x64 in {seconds[-1]:.2f} s", flush=True)
    n = len(x) + len(xv)
    median = statistics.median(seconds)
    return {"images": n, "repeats": repeats, "seconds": median, "images_per_s": n / median, "all": seconds}


def train(name: str, input_shape, n_classes: int, data, augment: bool, epochs: int, plot_dir: Path, tag: str):
    """Train one zoo model from a fixed seed; returns its row of the table and its History."""
    (x, y), (xv, yv) = data
    minicnn.set_random_seed(SEED)
    model = zoo.build(name, input_shape, n_classes, augment=augment)
    model.compile(optimizer=minicnn.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    label = "with" if augment else "without"
    print(f"\n== {tag}: zoo '{name}' {label} augmentation, {len(x)} train / {len(xv)} validation, {epochs} epochs")
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=2, validation_data=(xv, yv))
    seconds = time.perf_counter() - started
    val = history.history["val_accuracy"]
    save_curves(history, plot_dir / f"{tag.split()[0].lower().replace('-', '_')}_{'aug' if augment else 'plain'}.png")
    return {
        "experiment": f"{tag} (zoo '{name}', {len(x)}/{len(xv)})",
        "augmentation": "yes" if augment else "no",
        "epochs": epochs,
        "seconds": seconds,
        "best": max(val),
        "best_epoch": int(np.argmax(val)) + 1,
        "final": val[-1],
        "n_val": len(xv),
    }, history


def save_curves(history, path: Path) -> None:
    try:
        from minicnn import plot

        fig = plot.training_curves(history)
    except (ImportError, AttributeError):  # an older minicnn without plot.training_curves: plain matplotlib
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.8))
        for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                ax.plot(np.arange(1, len(history.history[key]) + 1), history.history[key], style, label=key)
            ax.set_xlabel("epoch")
            ax.legend()
    fig.savefig(path, dpi=100)
    print(f"training curves saved to {path}")


def save_comparison(histories: dict, path: Path, title: str) -> None:
    """Both runs of one experiment in one figure: validation accuracy and loss, plain against augmented."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for augment, history in histories.items():
        h = history.history
        epochs = np.arange(1, len(h["loss"]) + 1)
        name = "augmented" if augment else "plain"
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            (line,) = ax.plot(epochs, h[f"val_{metric}"], "-", label=f"{name}, validation")
            ax.plot(epochs, h[metric], ":", color=line.get_color(), label=f"{name}, training")
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    print(f"comparison saved to {path}")


def run_pair(name, input_shape, n_classes, data, epochs, out: Path, tag: str) -> list[dict]:
    rows, histories = [], {}
    for augment in (False, True):
        row, histories[augment] = train(name, input_shape, n_classes, data, augment, epochs, out, tag)
        rows.append(row)
    stem = tag.split()[0].lower().replace("-", "_")
    save_comparison(histories, out / f"{stem}_comparison.png", f"{tag}: with and without augmentation")
    return rows


def run_demo(out: Path, quick: bool) -> dict:
    """``python -m minicnn demo`` as a user runs it; wall time and the accuracies it prints."""
    epochs = QUICK_EPOCHS["demo"] if quick else EPOCHS["demo"]
    cmd = [sys.executable, "-m", "minicnn", "demo", "--out", str(out / "demo.safetensors")]
    cmd += ["--plot", str(out / "demo.png"), "--verbose", "2", "--epochs", str(epochs)]
    print(f"\n== minicnn demo: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    print(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"minicnn demo exited with status {done.returncode}: {done.stderr.strip()[-500:]}")
    final = re.search(r"validation accuracy:\s*([0-9.]+)", done.stdout)
    if final is None:
        raise RuntimeError("minicnn demo printed no 'validation accuracy:' line")
    per_epoch = [float(v) for v in re.findall(r"val_accuracy:\s*([0-9.]+)", done.stdout)]
    trained = re.search(r"trained in ([0-9.]+) s", done.stdout)
    return {
        "experiment": "`minicnn demo` (shapes, zoo 'small', 2000/500)",
        "augmentation": "no",
        "epochs": epochs,
        "seconds": seconds,
        "train_seconds": float(trained.group(1)) if trained else float("nan"),
        "best": max(per_epoch) if per_epoch else float(final.group(1)),
        "final": float(final.group(1)),
        "n_val": 500,
    }


def markdown(rows: list[dict], loading: dict | None) -> str:
    lines = []
    if loading is not None:
        lines += [
            "| loading | images | repeats | median time (s) | images/s |",
            "|---|---:|---:|---:|---:|",
            f"| cats-vs-dogs, `image_folder(..., (64, 64)).load()`, train + validation | {loading['images']} "
            f"| {loading['repeats']} | {loading['seconds']:.2f} | {loading['images_per_s']:.0f} |",
            "",
        ]
    lines += [
        "| experiment | augmentation | epochs | train time (s) | best val acc | final val acc |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['experiment']} | | | | | skipped: {r['skipped']} |")
            continue
        best = f"{r['best']:.4f}" + (f" (epoch {r['best_epoch']})" if "best_epoch" in r else "")
        time_note = f" (wall, {r['train_seconds']:.1f} in fit)" if "train_seconds" in r else ""
        lines.append(
            f"| {r['experiment']} | {r['augmentation']} | {r['epochs']} | {r['seconds']:.1f}{time_note} "
            f"| {best} | {r['final']:.4f} |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict]) -> str:
    """One sentence per experiment: does augmentation help, beyond the noise of the validation set?"""
    out = []
    pairs = {}
    for r in rows:
        if "skipped" not in r and r["experiment"].startswith(("cats-vs-dogs", "CIFAR")):
            pairs.setdefault(r["experiment"], {})[r["augmentation"]] = r
    for name, pair in pairs.items():
        if set(pair) != {"yes", "no"}:
            continue
        plain, aug = pair["no"], pair["yes"]
        p = (plain["final"] + aug["final"]) / 2
        noise = 2 * math.sqrt(2 * p * (1 - p) / plain["n_val"])  # two standard errors of a difference
        d_final, d_best = aug["final"] - plain["final"], aug["best"] - plain["best"]
        if d_final > noise:
            word = "helps"
        elif d_final < -noise:
            word = "hurts"
        else:
            word = "makes no difference beyond noise"
        out.append(
            f"- {name}: augmentation {word} (final {d_final * 100:+.1f} points, best {d_best * 100:+.1f} points; "
            f"noise level +-{noise * 100:.1f} points on {plain['n_val']} validation images)"
        )
    return "\n".join(out)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_data", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few dozen images, one or two epochs")
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help=f"comma-separated subset of {EXPERIMENTS}")
    parser.add_argument("--epochs", type=int, help="override the epochs of cats_dogs and cifar")
    parser.add_argument("--data", help="the shared data folder (default: $MINICNN_DATA_DIR)")
    parser.add_argument("--out", type=Path, help="folder for the PNGs and small_data.md (default: a temp folder)")
    args = parser.parse_args(argv)
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(args.only) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.gettempdir()) / "minicnn-small-data"
    out.mkdir(parents=True, exist_ok=True)
    epochs = dict(QUICK_EPOCHS if args.quick else EPOCHS)
    if args.epochs:
        epochs.update(cats_dogs=args.epochs, cifar=args.epochs)
    rows, loading = [], None
    needs_data = [e for e in args.only if e in ("load", "cats_dogs", "cifar")]
    root = None
    if needs_data:
        try:
            root = data_root(args.data)
        except FileNotFoundError as e:
            print(f"skipping {', '.join(needs_data)}: {e}")
            rows += [{"experiment": e_, "skipped": str(e)} for e_ in needs_data if e_ != "load"]

    if root is not None and "load" in args.only:
        print("\n== loading the cats-vs-dogs photos at 64x64", flush=True)
        loading = time_loading(root, repeats=1 if args.quick else 3)
    if root is not None and "cats_dogs" in args.only:
        (x, y), (xv, yv) = load_cats_dogs(root)
        if args.quick:
            n, nv = QUICK_SIZES["cats_dogs"]
            keep, keep_v = _balanced(y, n), _balanced(yv, nv)
            (x, y), (xv, yv) = (x[keep], y[keep]), (xv[keep_v], yv[keep_v])
        rows += run_pair("photos", (64, 64, 3), 2, ((x, y), (xv, yv)), epochs["cats_dogs"], out, "cats-vs-dogs")
    if root is not None and "cifar" in args.only:
        (x, y), (xv, yv) = load_cifar_subset(root)
        if args.quick:
            n, nv = QUICK_SIZES["cifar"]
            keep, keep_v = _balanced(y, n), _balanced(yv, nv)
            (x, y), (xv, yv) = (x[keep], y[keep]), (xv[keep_v], yv[keep_v])
        rows += run_pair("cifar", (32, 32, 3), 10, ((x, y), (xv, yv)), epochs["cifar"], out, "CIFAR-10 subset")
    if "demo" in args.only:
        rows.append(run_demo(out, args.quick))

    mode = "quick (a smoke check, not a result)" if args.quick else "full"
    table = f"## Small data, {mode}\n\n{markdown(rows, loading)}\n"
    said = verdict(rows)
    if said:
        table += f"\nDoes augmentation help here?\n\n{said}\n"
    print("\n" + table)
    (out / "small_data.md").write_text(table)
    print(f"table and curves written to {out}")
    return 0


def _balanced(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n // classes`` images of each class, in order."""
    classes = np.unique(y)
    per = max(1, n // len(classes))
    return np.sort(np.concatenate([np.flatnonzero(y == c)[:per] for c in classes]))


if __name__ == "__main__":
    sys.exit(main())
