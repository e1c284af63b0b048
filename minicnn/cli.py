"""The ``minicnn`` command: train an image classifier and let it sort photos, from a shell.

    minicnn demo                                   train on the embedded shapes set, save model and curves
    minicnn train DATA [--epochs N ...]            DATA: shapes | mnist | fashion_mnist | cifar10 | a folder
    minicnn evaluate MODEL DATA [--plot cm.png]    accuracy, per-class precision/recall, confusion matrix
    minicnn predict MODEL PATH... [--top 3] [--csv out.csv] [--sort-into DIR]
    minicnn summary MODEL
    minicnn bench [--quick] [--out DIR]            the benchmark suite (needs the repository's benchmarks/)

Only the public API is used here: what the CLI does, a program can do too.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import minicnn
from minicnn import datasets, zoo

BUILTIN = ("shapes", "mnist", "fashion_mnist", "cifar10")


class CLIError(Exception):
    """An error the user can act on: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------- data
def load_data(spec: str, image_size: int, color_mode: str, validation_split: float, seed: int):
    """``(x_train, y_train), (x_val, y_val), class_names`` for a built-in name or a folder of class folders."""
    if spec == "shapes":
        (x, y), (xt, yt) = datasets.load_shapes(seed=seed)
        return (x, y), (xt, yt), list(datasets.SHAPES_CLASSES)
    if spec in ("mnist", "fashion_mnist", "fashion-mnist"):
        loader = datasets.load_mnist if spec == "mnist" else datasets.load_fashion_mnist
        (x, y), (xt, yt) = loader()
        names = [str(i) for i in range(10)] if spec == "mnist" else list(datasets.FASHION_MNIST_CLASSES)
        return (x[..., None], y), (xt[..., None], yt), names
    if spec == "cifar10":
        (x, y), (xt, yt) = datasets.load_cifar10()
        return (x, y), (xt, yt), list(datasets.CIFAR10_CLASSES)
    folder = Path(spec)
    if not folder.is_dir():
        raise CLIError(f"DATA must be one of {', '.join(BUILTIN)} or a folder of class folders; got {spec!r}")
    size = (image_size, image_size)
    if validation_split:
        train, val = datasets.image_folder(folder, size, color_mode, validation_split, "both", seed)
        return train.load(), val.load(), list(train.class_names)
    ds = datasets.image_folder(folder, size, color_mode)
    x, y = ds.load()
    return (x, y), (x[:0], y[:0]), list(ds.class_names)


def _color_mode(model) -> str:
    return "grayscale" if model.input_shape[-1] == 1 else "rgb"


# ---------------------------------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    minicnn.set_random_seed(args.seed)
    if args.device:
        minicnn.set_device(args.device)
    if args.parallel:
        minicnn.set_parallel(args.parallel)
    (x, y), (xv, yv), names = load_data(args.data, args.image_size, args.color_mode, args.validation_split, args.seed)
    print(f"data: {len(x)} training and {len(xv)} validation images of shape {x.shape[1:]}, {len(names)} classes")
    model = zoo.build(args.model, x.shape[1:], len(names), augment=args.augment, seed=args.seed)
    model.class_names = names
    model.compile(
        optimizer=minicnn.optimizers.Adam(args.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if args.verbose:
        model.summary()
    started = time.perf_counter()
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=args.verbose,
        validation_data=(xv, yv) if len(xv) else None,
    )
    seconds = time.perf_counter() - started
    model.save(args.out)
    print(f"trained in {seconds:.1f} s; model saved to {args.out}")
    if len(xv):
        loss, acc = model.evaluate(xv, yv, batch_size=256, verbose=0)
        print(f"validation accuracy: {acc:.4f} (loss {loss:.4f})")
    if args.plot:
        from minicnn import plot

        plot.training_curves(history).savefig(args.plot, dpi=100)
        print(f"training curves saved to {args.plot}")
    return 0


def cmd_demo(args) -> int:
    args.data, args.model, args.image_size, args.color_mode = "shapes", "small", 32, "rgb"
    args.validation_split, args.augment, args.learning_rate = 0.0, False, 2e-3
    return cmd_train(args)


def cmd_evaluate(args) -> int:
    model = _load(args.model)
    size = model.input_shape[0]
    _, (x, y), names = (
        load_data(args.data, size, _color_mode(model), 0.0, args.seed)
        if args.data in BUILTIN
        else (None, _folder_arrays(args.data, model), None)
    )
    names = model.class_names or names or [str(i) for i in range(int(np.prod(model.output_shape)))]
    probs = model.predict(x, batch_size=args.batch_size)
    predicted = probs.argmax(axis=1)
    from minicnn import plot

    counts = plot.confusion_counts(y, predicted, len(names))
    print(f"accuracy: {np.mean(predicted == y):.4f} on {len(y)} images")
    print(classification_report(counts, names))
    print("confusion matrix (rows: true, columns: predicted)")
    print(matrix_text(counts, names))
    if args.plot:
        plot.confusion_matrix(y, predicted, class_names=names).savefig(args.plot, dpi=100)
        print(f"confusion matrix saved to {args.plot}")
    return 0


def _folder_arrays(folder, model):
    if not Path(folder).is_dir():
        raise CLIError(f"DATA must be one of {', '.join(BUILTIN)} or a folder of class folders; got {folder!r}")
    ds = datasets.image_folder(folder, model.input_shape[:2], _color_mode(model), class_names=model.class_names)
    return ds.load()


def cmd_predict(args) -> int:
    model = _load(args.model)
    names = model.class_names or [str(i) for i in range(int(np.prod(model.output_shape)))]
    paths = []
    for p in args.paths:
        if Path(p).is_dir():
            paths += datasets.list_images(p)
        elif Path(p).exists():
            paths.append(str(p))
        else:
            raise CLIError(f"no such file or folder: {p}")
    if not paths:
        raise CLIError("no images (.jpg, .jpeg, .png) found in the given paths")
    top = max(1, min(args.top, len(names)))
    writer = None
    if args.csv:
        csv_file = open(args.csv, "w", newline="")  # noqa: SIM115  (closed below, after streaming)
        writer = csv.writer(csv_file)
        writer.writerow(["path", *[f"{kind}{k + 1}" for k in range(top) for kind in ("label", "probability")]])
    bar = minicnn.progress.Progbar(len(paths), unit_name="image", verbose=1 if args.progress else 0, file=sys.stderr)
    bad_all, done, sorted_counts = [], 0, {}
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        x, ok, bad = datasets.load_images(chunk, model.input_shape[:2], _color_mode(model))
        bad_all += bad
        if ok:
            probs = model.predict(x, batch_size=args.batch_size)
            for path, p in zip(ok, probs, strict=True):
                best = np.argsort(-p)[:top]
                print(path + "\t" + "\t".join(f"{names[k]} {p[k]:.3f}" for k in best))
                if writer:
                    writer.writerow([path, *[v for k in best for v in (names[k], f"{p[k]:.6f}")]])
                if args.sort_into:
                    label = names[best[0]]
                    _copy_into(path, Path(args.sort_into) / _safe(label))
                    sorted_counts[label] = sorted_counts.get(label, 0) + 1
        done += len(chunk)
        bar.update(done)
    if writer:
        csv_file.close()
        print(f"predictions written to {args.csv}", file=sys.stderr)
    if args.sort_into:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(sorted_counts.items()))
        print(
            f"copied {sum(sorted_counts.values())} images into {args.sort_into} ({summary}); originals untouched",
            file=sys.stderr,
        )
    if bad_all:
        print(f"skipped {len(bad_all)} unreadable file(s):", file=sys.stderr)
        for path in bad_all:
            print(f"  {path}", file=sys.stderr)
    return 0


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in label).strip() or "unnamed"


def _copy_into(src: str, folder: Path) -> Path:
    """Copy (never move) ``src`` into ``folder``, adding ``_1``, ``_2`` ... when the name is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / Path(src).name
    k = 1
    while dest.exists():
        dest = folder / f"{Path(src).stem}_{k}{Path(src).suffix}"
        k += 1
    shutil.copy2(src, dest)
    return dest


def cmd_summary(args) -> int:
    model = _load(args.model)
    model.summary()
    if model.class_names:
        print(f"classes: {', '.join(model.class_names)}")
    if model.optimizer is not None:
        print(f"optimizer: {model.optimizer!r}, {model.optimizer.iterations} steps taken; loss: {model.loss!r}")
    return 0


def cmd_bench(args) -> int:
    try:
        import benchmarks
    except ImportError:
        raise CLIError("the benchmarks come with the repository: install it with pip install -e '.[bench]'") from None
    return int(benchmarks.main(args.rest, prog="minicnn bench") or 0)


def _load(path):
    if not Path(path).is_file():
        raise CLIError(f"no such model file: {path}")
    return minicnn.load_model(path)


# ---------------------------------------------------------------------------------------------------- reports
def classification_report(counts: np.ndarray, names) -> str:
    """Per-class precision (of the predictions of that class, how many were right) and recall (of the images of
    that class, how many were found), from a confusion matrix with true classes as rows."""
    width = max(len("class"), *(len(n) for n in names))
    lines = [f"{'class':<{width}}  precision  recall  support"]
    for k, name in enumerate(names):
        tp, predicted, actual = counts[k, k], counts[:, k].sum(), counts[k].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        lines.append(f"{name:<{width}}  {precision:9.3f}  {recall:6.3f}  {actual:7d}")
    return "\n".join(lines)


def matrix_text(counts: np.ndarray, names) -> str:
    width = max(5, *(len(str(v)) for v in counts.ravel()), *(len(n[:10]) for n in names)) + 1
    head = " " * 11 + "".join(f"{n[:10]:>{width}}" for n in names)
    rows = [f"{n[:10]:<11}" + "".join(f"{v:>{width}}" for v in row) for n, row in zip(names, counts, strict=True)]
    return "\n".join([head, *rows])


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minicnn", description="Train CNNs on images and sort photos with them.")
    sub = parser.add_subparsers(dest="command", required=True)

    def training_options(p, out_default):
        p.add_argument("--epochs", type=int, default=10)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--learning-rate", type=float, default=1e-3)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=out_default, help="where to save the trained model (.safetensors)")
        p.add_argument("--plot", help="save the training curves to this PNG")
        p.add_argument("--device", choices=["cpu", "cuda"], help="where to train (default: cpu)")
        p.add_argument(
            "--parallel",
            choices=["auto", "blas", "batch"],
            help="several cores: BLAS threads, or each thread a slice of the batch (default: auto)",
        )
        p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])

    demo = sub.add_parser("demo", help="train a small CNN on the embedded shapes set (no download)")
    training_options(demo, "minicnn-demo.safetensors")
    demo.set_defaults(func=cmd_demo, epochs=8, plot="minicnn-demo-curves.png")

    train = sub.add_parser("train", help="train a model on a dataset or a folder of class folders")
    train.add_argument("data", help=f"{' | '.join(BUILTIN)} | a folder with one subfolder per class")
    train.add_argument("--model", default="small", choices=sorted(zoo.ARCHITECTURES))
    train.add_argument("--image-size", type=int, default=64, help="folders: images are resized to this square size")
    train.add_argument("--color-mode", default="rgb", choices=["rgb", "grayscale"])
    train.add_argument("--augment", action="store_true", help="random flips, rotations and zooms while training")
    train.add_argument("--validation-split", type=float, default=0.2, help="folders: fraction held out")
    training_options(train, "model.safetensors")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="accuracy, per-class precision/recall and confusion matrix")
    ev.add_argument("model")
    ev.add_argument("data", help=f"{' | '.join(BUILTIN)} (its test split) | a folder of class folders")
    ev.add_argument("--plot", help="save the confusion matrix to this PNG")
    ev.add_argument("--batch-size", type=int, default=128)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="label images; optionally copy them into one folder per class")
    pr.add_argument("model")
    pr.add_argument("paths", nargs="+", help="image files or folders (walked recursively)")
    pr.add_argument("--top", type=int, default=1, help="show the K most likely classes")
    pr.add_argument("--csv", help="also write the predictions to this CSV file")
    pr.add_argument("--sort-into", help="copy each image into DIR/<predicted class>/ (originals are never moved)")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--no-progress", dest="progress", action="store_false")
    pr.set_defaults(func=cmd_predict)

    sm = sub.add_parser("summary", help="print a saved model's layers and parameter counts")
    sm.add_argument("model")
    sm.set_defaults(func=cmd_summary)

    bench = sub.add_parser("bench", help="run the benchmark suite (python -m benchmarks)", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # Everything after 'bench' is for the benchmark suite's own parser. (argparse's REMAINDER would refuse a
        # first argument that starts with '-', such as --quick.)
        args = argparse.Namespace(command="bench", func=cmd_bench, rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, FileNotFoundError, ValueError) as err:
        print(f"minicnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
