"""Pictures of what a network sees, learns and gets wrong: NumPy arrays in, ``matplotlib`` Figures out.

Every function returns a ``matplotlib.figure.Figure`` built directly (no ``pyplot``), so nothing needs a display
and nothing is shown: a notebook shows the returned figure, a script saves it::

    fig = plot.training_curves(history)
    fig.savefig("curves.png")

=========================================  =================================================================
``training_curves(history)``               loss and accuracy per epoch, training and validation
``image_grid(images, labels, predictions)``  a grid of images titled "true / pred"; mistakes in red
``conv_filters(layer)``                    a Conv2D layer's filters, one tile each, on one colour scale
``feature_maps(model, image)``             what every layer outputs for one image, a row per layer
``confusion_matrix(y_true, y_pred)``       counts (or row fractions) of true class x predicted class
``confusion_counts(y_true, y_pred, n)``    the same matrix as a plain array (no drawing)
``im2col_layout(H, W, C, kernel_size)``    how im2col turns the patches of a small input into matrix rows
``benchmark_bars(table, title, ylabel)``   grouped bars: {group: {contender: value}}
=========================================  =================================================================
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from minicnn.kernels.im2col import im2col
from minicnn.kernels.shapes import output_size, padding_amounts, pair

__all__ = [
    "training_curves",
    "image_grid",
    "conv_filters",
    "feature_maps",
    "confusion_matrix",
    "confusion_counts",
    "im2col_indices",
    "im2col_layout",
    "benchmark_bars",
]

# One look for every figure: sizes in points, legible at the default 100 dpi.
DPI = 100
SUPTITLE_SIZE = 13
TITLE_SIZE = 11
LABEL_SIZE = 10
TICK_SIZE = 9
SMALL_SIZE = 8
MISTAKE_COLOR = "tab:red"
CORRECT_COLOR = "black"
DIVERGING_CMAP = "RdBu_r"  # weights: blue negative, white zero, red positive
SEQUENTIAL_CMAP = "viridis"  # activations and counts


def _figure(width: float, height: float) -> Figure:
    # constrained layout is the modern tight_layout: it also makes room for colorbars and suptitles
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _style(ax, title=None, xlabel=None, ylabel=None) -> None:
    if title is not None:
        ax.set_title(title, fontsize=TITLE_SIZE)
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _host(a) -> np.ndarray:
    """A NumPy copy of ``a``, wherever it lives (a CUDA device array has ``copy_to_host``)."""
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return np.asarray(a)


# ---------------------------------------------------------------------------------------------- training curves
def training_curves(history) -> Figure:
    """Loss and accuracy per epoch (1-based), training solid and validation dashed.

    ``history``: the ``History`` that ``fit`` returns, or its ``history.history`` dict of per-epoch lists
    (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``). One panel per metric that is there: loss, accuracy.
    The best validation epoch (lowest ``val_loss``, highest ``val_accuracy``) is marked with a star.
    """
    logs = history.history if hasattr(history, "history") else history
    if not isinstance(logs, dict):
        raise TypeError(f"training_curves expects a History or its dict of lists; got {type(history).__name__}")
    logs = {("accuracy" if k == "acc" else "val_accuracy" if k == "val_acc" else k): v for k, v in logs.items()}
    metrics = [m for m in ("loss", "accuracy") if logs.get(m) or logs.get(f"val_{m}")]
    if not metrics:
        raise ValueError(
            "training_curves: the history has no 'loss' or 'accuracy' values; got keys "
            f"{sorted(logs) or 'none'} (train with model.fit(...) first)"
        )
    offset = 1
    epochs_seen = getattr(history, "epoch", None)
    if epochs_seen:
        offset = int(epochs_seen[0]) + 1  # fit(initial_epoch=k) numbers its epochs from k + 1

    fig = _figure(5.0 * len(metrics), 3.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        best = np.argmin if metric == "loss" else np.argmax
        for key, label, style in ((metric, "training", "-"), (f"val_{metric}", "validation", "--")):
            values = logs.get(key)
            if not values:
                continue
            values = np.asarray(values, dtype=float)
            epochs = np.arange(offset, offset + len(values))
            marker = "o" if len(values) <= 30 else None
            ax.plot(epochs, values, style, marker=marker, markersize=4, label=label)
            if key.startswith("val_") and np.isfinite(values).any():
                i = int(best(np.where(np.isfinite(values), values, _worst(metric))))
                ax.plot(epochs[i], values[i], "*", color="black", markersize=12, label=f"best: epoch {epochs[i]}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        name = "Loss" if metric == "loss" else "Accuracy"
        _style(ax, title=name, xlabel="Epoch", ylabel=name.lower())
        ax.legend(fontsize=TICK_SIZE)
    return fig


def _worst(metric: str) -> float:
    return np.inf if metric == "loss" else -np.inf


# ---------------------------------------------------------------------------------------------- image grid
def _as_class_ids(y, what: str) -> np.ndarray:
    """Integer class ids from ids (N,), one-hot labels or predicted probabilities (N, K)."""
    y = _host(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    y = y.reshape(len(y), -1)[:, 0] if y.ndim > 1 else y
    if y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"{what} must be class ids or (N, classes) scores; got non-integer floats")
    return y.astype(np.int64)


def _class_name(i: int, class_names) -> str:
    if class_names is not None and 0 <= i < len(class_names):
        return str(class_names[i])
    return str(i)


def _displayable(images: np.ndarray) -> tuple[np.ndarray, dict]:
    """Images as (N, H, W) or (N, H, W, 3) and the ``imshow`` arguments that show them faithfully."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(
            f"expected images of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3); got {images.shape}"
            + (": add a batch axis, e.g. image[None]" if images.ndim == 2 else "")
        )
    gray = images.ndim == 3
    if images.dtype == np.uint8:
        x, low, high = images, 0, 255
    else:
        x, low, high = images.astype(np.float32), 0.0, 1.0
        if np.nanmin(x) < 0.0 or np.nanmax(x) > 1.0:  # standardised or 0..255 floats: stretch each image to [0, 1]
            axes = tuple(range(1, x.ndim))
            lo, hi = np.nanmin(x, axis=axes, keepdims=True), np.nanmax(x, axis=axes, keepdims=True)
            x = (x - lo) / np.maximum(hi - lo, 1e-12)
    show = {"interpolation": "nearest"}
    if gray:
        show.update(cmap="gray", vmin=low, vmax=high)
    return x, show


def image_grid(images, labels=None, predictions=None, class_names=None, ncols: int = 8, max_images: int = 32) -> Figure:
    """The first ``max_images`` images in a grid, ``ncols`` wide, one axes each.

    images: (N, H, W), (N, H, W, 1) or (N, H, W, 3), uint8 (0..255) or float (0..1 as is; other ranges are
    stretched per image). labels / predictions: class ids (N,), or (N, K) one-hot or scores (argmax taken).
    Titles read "true / pred" (or just the one given), with ``class_names`` when given. A wrong prediction gets a
    red title and a red frame.
    """
    images = _host(images)
    if ncols < 1 or max_images < 1:
        raise ValueError(f"image_grid: ncols and max_images must be >= 1; got {ncols} and {max_images}")
    n_total = len(images)
    n = min(n_total, max_images)
    if n == 0:
        raise ValueError("image_grid: no images to show (got an empty array)")
    images, show = _displayable(images[:n])
    true = _as_class_ids(labels, "labels")[:n] if labels is not None else None
    pred = _as_class_ids(predictions, "predictions")[:n] if predictions is not None else None
    for y, what in ((true, "labels"), (pred, "predictions")):
        if y is not None and len(y) < n:
            raise ValueError(f"image_grid: {len(y)} {what} for {n} images")

    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    title_lines = (true is not None) + (pred is not None)
    fig = _figure(1.45 * ncols + 0.2, (1.45 + 0.18 * title_lines) * nrows + 0.45)
    mistakes = 0
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(images[i], **show)
        _no_ticks(ax)
        wrong = true is not None and pred is not None and true[i] != pred[i]
        mistakes += bool(wrong)
        parts = [_class_name(int(y[i]), class_names) for y in (true, pred) if y is not None]
        if parts:
            color = MISTAKE_COLOR if wrong else CORRECT_COLOR
            title = " / ".join(parts) if len(" / ".join(parts)) <= 18 else " /\n".join(parts)  # long: two lines
            ax.set_title(title, fontsize=SMALL_SIZE + 1, color=color, fontweight="bold" if wrong else None)
        for spine in ax.spines.values():
            spine.set_color(MISTAKE_COLOR if wrong else "0.8")
            spine.set_linewidth(3 if wrong else 0.8)
    head = f"{n} of {n_total} images" if n < n_total else f"{n} images"
    if true is not None and pred is not None:
        head += f": titles are true / predicted, {mistakes} mistake{'s' * (mistakes != 1)} in red"
    fig.suptitle(head, fontsize=TITLE_SIZE)
    return fig


# ---------------------------------------------------------------------------------------------- conv filters
def conv_filters(layer_or_kernel, channel=None, ncols: int | None = None) -> Figure:
    """The filters of a Conv2D layer, one tile per filter, on one colour scale centred at 0.

    ``layer_or_kernel``: a Conv2D layer (its ``params['kernel']``) or a kernel array (kh, kw, C, F).
    ``channel``: ``None`` shows the filters as RGB when C == 3 (0 is mid-grey, each colour channel scaled by the
    largest |w|), else the mean over the C input channels; an int shows that input channel only; ``'all'`` shows
    every input channel, one row per filter and one column per channel.
    Non-RGB tiles use a diverging colormap (blue < 0 < red) with one shared scale and one colorbar.
    ``ncols``: tiles per row (default up to 8; ``'all'`` always puts C per row).
    """
    name = getattr(layer_or_kernel, "name", None)
    params = getattr(layer_or_kernel, "params", None)
    if params is not None:
        if "kernel" not in params:
            raise ValueError(f"conv_filters: layer '{name}' has no 'kernel' weights (is it a built Conv2D?)")
        w = _host(params["kernel"])
    else:
        w = _host(layer_or_kernel)
    if w.ndim != 4:
        raise ValueError(f"conv_filters expects a Conv2D layer or a kernel of shape (kh, kw, C, F); got {w.shape}")
    w = w.astype(np.float64)
    kh, kw, C, F = w.shape
    what = f"'{name}': " if name else ""
    vmax = float(np.abs(w).max()) or 1.0

    if channel is None and C == 3:
        tiles = [0.5 + 0.5 * w[..., f] / vmax for f in range(F)]  # (kh, kw, 3) in [0, 1], 0 -> grey
        subtitle = "RGB; mid-grey = 0"
        return _tile_figure(tiles, [str(f) for f in range(F)], ncols, f"{what}{F} filters {kh}x{kw}x{C} ({subtitle})")
    if channel == "all":
        if F * C > 256:
            raise ValueError(
                f"conv_filters: channel='all' would draw {F}x{C} = {F * C} tiles; pick one input channel "
                "(channel=0) or the mean (channel=None)"
            )
        tiles = [w[:, :, c, f] for f in range(F) for c in range(C)]
        titles = [f"f{f} c{c}" for f in range(F) for c in range(C)]
        head = f"{what}{F} filters {kh}x{kw}x{C}: row = filter, column = input channel"
        return _tile_figure(tiles, titles, C, head, vmax=vmax, label="weight")
    if channel is None:
        tiles = [w[..., f].mean(axis=2) for f in range(F)]
        shown = "" if C == 1 else f" (mean over the {C} input channels)"
        vmax = float(np.abs(np.stack(tiles)).max()) or 1.0
    else:
        if not isinstance(channel, int | np.integer) or not 0 <= channel < C:
            raise ValueError(f"conv_filters: channel must be None, 'all' or an int in [0, {C}); got {channel!r}")
        tiles = [w[:, :, channel, f] for f in range(F)]
        shown = f" (input channel {channel})"
    head = f"{what}{F} filters {kh}x{kw}x{C}{shown}"
    label = "mean weight" if channel is None and C > 1 else "weight"
    return _tile_figure(tiles, [str(f) for f in range(F)], ncols, head, vmax=vmax, label=label)


def _tile_figure(tiles, titles, ncols, head, vmax=None, label="weight") -> Figure:
    """One small axes per tile; with ``vmax``, a diverging colormap on [-vmax, vmax] and a colorbar."""
    n = len(tiles)
    ncols = min(ncols or min(8, n), n)
    nrows = math.ceil(n / ncols)
    side = 1.0 if n > 16 else 1.3
    fig = _figure(side * ncols + (1.0 if vmax is not None else 0.2), (side + 0.25) * nrows + 0.5)
    axes = []
    im = None
    for i, (tile, title) in enumerate(zip(tiles, titles, strict=True)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        if vmax is None:
            ax.imshow(np.clip(tile, 0.0, 1.0), interpolation="nearest")
        else:
            im = ax.imshow(tile, cmap=DIVERGING_CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=SMALL_SIZE)
        _no_ticks(ax)
        axes.append(ax)
    if im is not None:
        bar = fig.colorbar(im, ax=axes, shrink=0.9 if nrows > 1 else 1.0, aspect=25 * max(1, nrows) ** 0.5)
        bar.ax.tick_params(labelsize=SMALL_SIZE)
        bar.set_label(label, fontsize=SMALL_SIZE + 1)
    fig.suptitle(head, fontsize=TITLE_SIZE)
    return fig


# ---------------------------------------------------------------------------------------------- feature maps
def feature_maps(model, image, max_channels: int = 16) -> Figure:
    """What each layer of ``model`` outputs for one ``image``, one row per layer, the input first.

    image: (H, W, C) (or (H, W) for one channel, or (1, H, W, C)), in the scale the model was trained on.
    The image runs through ``model.layers`` one at a time with ``training=False``. Layers with an (H, W, C)
    output show their first ``max_channels`` channels on one colour scale per row; layers with a flat output
    (Dense) show a bar per unit. Layers whose output equals their input at inference (Flatten, Dropout) add
    nothing to see and are listed at the bottom instead.
    """
    if not getattr(model, "built", False) or not getattr(model, "layers", None):
        raise ValueError("feature_maps: the model has no built layers; give the first layer an input_shape")
    x = _host(image)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[..., None]
    expected = tuple(model.input_shape)
    if tuple(x.shape) != expected:
        raise ValueError(
            f"feature_maps: the model takes images of shape {expected}; got {tuple(image.shape)}"
            + (" (pass one image, e.g. x_test[0], not a batch)" if x.ndim == 4 else "")
        )
    backend = getattr(model, "backend", None)
    to_device = (lambda a: backend.asarray(a, np.float32)) if backend is not None else (lambda a: a)
    to_host = backend.to_numpy if backend is not None else np.asarray

    rows = [("input", x.astype(np.float32))]
    skipped = []
    out = to_device(x[None].astype(np.float32))
    previous = x.astype(np.float32)
    for layer in model.layers:
        out = layer.forward(out, training=False)
        value = _host(to_host(out))[0]
        if value.size == previous.size and np.array_equal(value.ravel(), previous.ravel()):
            skipped.append(layer.name)
        else:
            rows.append((layer.name, value))
        previous = value

    n_cols = max(min(max_channels, v.shape[-1]) if v.ndim == 3 else 1 for _, v in rows)
    n_cols = max(n_cols, 6)
    fig = _figure(1.15 * n_cols + 1.1, 1.75 * len(rows) + (0.3 if skipped else 0.0))
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1))
    class_names = getattr(model, "class_names", None)
    for sub, (name, value) in zip(subfigs, rows, strict=True):
        shape = "(" + ", ".join(str(d) for d in value.shape) + ")"
        if value.ndim == 3 and name == "input":
            ax = sub.subplots(1, 1)
            images, show = _displayable(value[None] if value.shape[-1] in (1, 3) else value[None, ..., :1])
            ax.imshow(images[0], **show)
            _no_ticks(ax)
            _row_title(sub, f"input  {shape}")
        elif value.ndim == 3:
            k = min(max_channels, value.shape[-1])
            axes = np.atleast_1d(sub.subplots(1, n_cols))
            low, high = float(value[..., :k].min()), float(value[..., :k].max())
            im = None
            for c, ax in enumerate(axes):
                if c >= k:
                    ax.set_visible(False)
                    continue
                im = ax.imshow(value[..., c], cmap=SEQUENTIAL_CMAP, vmin=low, vmax=high, interpolation="nearest")
                ax.set_title(f"ch {c}", fontsize=SMALL_SIZE)
                _no_ticks(ax)
            bar = sub.colorbar(im, ax=list(axes[:k]), aspect=12, pad=0.01)
            bar.ax.tick_params(labelsize=SMALL_SIZE)
            more = f", channels 0-{k - 1} of {value.shape[-1]}" if k < value.shape[-1] else ""
            _row_title(sub, f"{name}  {shape}{more}")
            for extra in axes[k:]:
                sub.delaxes(extra)
        else:
            flat = value.ravel()
            ax = sub.subplots(1, 1)
            ax.bar(np.arange(len(flat)), flat, color="tab:blue", width=0.8 if len(flat) <= 64 else 1.0)
            ax.axhline(0.0, color="0.4", linewidth=0.8)
            xlabel = "unit"
            if class_names is not None and len(class_names) == len(flat) and len(flat) <= 30:
                ax.set_xticks(
                    np.arange(len(flat)), [str(c) for c in class_names], rotation=30, ha="right", rotation_mode="anchor"
                )
                xlabel = "class"
            elif len(flat) <= 30:
                ax.set_xticks(np.arange(len(flat)))
            _style(ax, xlabel=xlabel, ylabel="value")
            ax.set_xlim(-0.7, len(flat) - 0.3)
            _row_title(sub, f"{name}  {shape}")
    if skipped:
        fig.supxlabel("not shown (output = input): " + ", ".join(skipped), x=0.005, ha="left", fontsize=SMALL_SIZE)
    return fig


def _row_title(sub, text: str) -> None:
    sub.suptitle(text, x=0.005, ha="left", fontsize=LABEL_SIZE, fontweight="bold")


# ---------------------------------------------------------------------------------------------- confusion
def confusion_counts(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """``counts[i, j]`` = how many samples of true class ``i`` were predicted as class ``j``.

    y_true, y_pred: class ids (N,) (or (N, K) one-hot / scores, argmax taken). ``n_classes`` defaults to the
    largest id + 1. Returns an int64 array (n_classes, n_classes): rows are true classes, columns predicted,
    so the diagonal holds the correct predictions and ``counts.sum(axis=1)`` the class sizes.
    """
    t = _as_class_ids(y_true, "y_true")
    p = _as_class_ids(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"confusion_counts: y_true has {len(t)} labels but y_pred has {len(p)}")
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    for y, what in ((t, "y_true"), (p, "y_pred")):
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"confusion_counts: {what} holds ids outside [0, {n_classes}): {y.min()}..{y.max()}")
    # each (true, pred) pair gets one bin of a flat n*n histogram
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix(y_true, y_pred, class_names=None, normalize: bool = False) -> Figure:
    """The confusion matrix as a heat map: rows true class, columns predicted, each cell annotated.

    ``normalize=True`` divides each row by its class size, so a cell is the fraction of that class predicted
    as the column's class (the diagonal is each class's recall). The title gives the overall accuracy.
    """
    n = len(class_names) if class_names is not None else None
    counts = confusion_counts(y_true, y_pred, n)
    n = len(counts)
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    if normalize:
        values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        vmax, label, fmt = 1.0, "fraction of the true class", "{:.2f}"
    else:
        values = counts
        vmax, label, fmt = max(int(counts.max()), 1), "count", "{:d}"
    side = min(max(4.5, 0.55 * n + 2.5), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    bar = fig.colorbar(im, ax=ax, shrink=0.85)
    bar.set_label(label, fontsize=LABEL_SIZE)
    bar.ax.tick_params(labelsize=TICK_SIZE)
    if n <= 30:
        cell_font = TICK_SIZE if n <= 12 else SMALL_SIZE - (n > 20)
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                text = "0" if v == 0 else fmt.format(int(v) if not normalize else float(v))
                dark = v > 0.55 * vmax
                ax.text(j, i, text, ha="center", va="center", fontsize=cell_font, color="white" if dark else "black")
    ticks = np.arange(n)
    long_names = max(len(s) for s in names) > 3
    if long_names:
        ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else float("nan")
    head = f"Confusion matrix{' (row-normalised)' if normalize else ''}: accuracy {accuracy:.1%} of {total}"
    _style(ax, title=head, xlabel="Predicted", ylabel="True")
    return fig


# ---------------------------------------------------------------------------------------------- im2col
def im2col_indices(H: int = 4, W: int = 4, C: int = 1, kernel_size=3, stride=1, padding: str = "valid"):
    """The input and its im2col matrix with each cell replaced by its number, as ``im2col_layout`` draws them.

    Cells are numbered 1..H*W*C in memory order (row, column, channel: NHWC), so 0 can only be zero padding.
    Returns ``(cells, cols)``: cells (H + pad, W + pad, C), the padded numbered input; cols (Ho*Wo, kh*kw*C),
    ``kernels.im2col.im2col`` of those numbers: row ``i*Wo + j`` lists the patch of output position (i, j).
    """
    kh, kw = pair(kernel_size, "kernel_size")
    stride = pair(stride, "stride")
    pad = padding_amounts(H, W, kh, kw, stride, padding)
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"im2col: a {kh}x{kw} window does not fit a {H}x{W} input with padding '{padding}'")
    x = np.arange(1, H * W * C + 1, dtype=np.float64).reshape(1, H, W, C)
    cols = im2col(x, kh, kw, stride, pad).astype(np.int64)
    pt, pb, pl, pr = pad
    cells = np.pad(x[0], ((pt, pb), (pl, pr), (0, 0))).astype(np.int64)
    return cells, cols


def _cell_colors(n_cells: int) -> np.ndarray:
    """A distinct light colour per cell number 1..n (index 0, the padding, is light grey)."""
    hues = matplotlib.colormaps["hsv"](np.linspace(0.0, 1.0, n_cells, endpoint=False))[:, :3]
    light = 0.5 * hues + 0.5  # pastel, so black numbers stay readable
    return np.vstack([[0.9, 0.9, 0.9], light])


def im2col_layout(
    H: int = 4, W: int = 4, C: int = 1, kernel_size=3, stride=1, padding: str = "valid", highlight=(0, 1)
) -> Figure:
    """A teaching drawing of im2col: the numbered input beside the matrix its patches become.

    Left: the input, one grid per channel, each cell numbered (grey 0s are zero padding). Right: the im2col matrix
    (rows = the Ho*Wo output positions, columns = the kh*kw*C entries of a patch), each entry coloured like the
    input cell it was copied from. The patches of the rows in ``highlight`` are outlined on both sides, so the
    stride between consecutive rows shows. The numbers come from running ``kernels.im2col.im2col`` on the cell
    numbers (``im2col_indices``); convolution is then ``cols @ kernel.reshape(kh*kw*C, F)``.
    """
    cells, cols = im2col_indices(H, W, C, kernel_size, stride, padding)
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    Hp, Wp, _ = cells.shape
    pad = padding_amounts(H, W, kh, kw, (sh, sw), padding)
    Ho, Wo = output_size(H, W, kh, kw, (sh, sw), pad)
    rows, width = cols.shape
    if rows * width > 1600 or Hp * Wp * C > 400:
        raise ValueError(
            f"im2col_layout is a drawing for small inputs; a {H}x{W}x{C} input with a {kh}x{kw} kernel gives a "
            f"{rows}x{width} matrix: try H, W <= 8 and C <= 3"
        )
    colors = _cell_colors(H * W * C)
    outline = ["black", "tab:purple", "tab:orange", "tab:green"]
    highlight = [r for r in highlight if 0 <= r < rows][: len(outline)]

    cell = 0.42  # inches per drawn cell, the same in every panel, so a patch and its row line up by eye
    fig = _figure(cell * (C * Wp + width) + 1.3 * C + 2.0, cell * max(Hp, rows) + 2.2)
    grid = fig.add_gridspec(1, C + 1, width_ratios=[Wp] * C + [width])
    small = SMALL_SIZE if max(Hp, rows) > 12 or H * W * C >= 100 else TICK_SIZE

    def draw(ax, numbers):
        ax.imshow(colors[numbers], interpolation="nearest")
        for (i, j), v in np.ndenumerate(numbers):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=small, color="0.45" if v == 0 else "black")
        ax.set_xticks(np.arange(-0.5, numbers.shape[1], 1), minor=True)
        ax.set_yticks(np.arange(-0.5, numbers.shape[0], 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        ax.tick_params(labelsize=SMALL_SIZE)

    for c in range(C):
        ax = fig.add_subplot(grid[0, c])
        draw(ax, cells[..., c])
        ax.set_xticks(np.arange(Wp), [str(j - pad[2]) for j in range(Wp)])
        ax.set_yticks(np.arange(Hp), [str(i - pad[0]) for i in range(Hp)])
        for k, r in enumerate(highlight):
            i, j = divmod(r, Wo)
            ax.add_patch(_outline((j * sw - 0.5, i * sh - 0.5), kw, kh, outline[k], k))
        name = f"input channel {c}" if C > 1 else "input"
        _style(ax, title=f"{name} {H}x{W}" + ("\n+ zero padding" if any(pad) else ""), xlabel="column", ylabel="row")
        ax.title.set_fontsize(LABEL_SIZE)

    ax = fig.add_subplot(grid[0, C])
    draw(ax, cols)
    ax.set_yticks(np.arange(rows), [f"({i},{j})" for i in range(Ho) for j in range(Wo)])
    entries = [(p, q, c) for p in range(kh) for q in range(kw) for c in range(C)]
    col_labels = [f"{p},{q}" if C == 1 else f"{p},{q},{c}" for p, q, c in entries]
    ax.set_xticks(np.arange(width), col_labels, rotation=90 if C > 1 or width > 12 else 0)
    for k, r in enumerate(highlight):
        ax.add_patch(_outline((-0.5, r - 0.5), width, 1, outline[k], k))
    _style(
        ax,
        title=f"im2col matrix: {rows} rows (Ho*Wo = {Ho}*{Wo}) x {width} columns (kh*kw*C = {kh}*{kw}*{C})",
        xlabel="patch entry (p, q" + (", c)" if C > 1 else ")"),
        ylabel="output position (i, j)",
    )
    ax.title.set_fontsize(LABEL_SIZE)
    fig.suptitle(
        f"im2col: {kh}x{kw} kernel, stride {(sh, sw) if sh != sw else sh}, padding '{padding}': "
        "each patch becomes one row",
        fontsize=TITLE_SIZE,
    )
    shown = " and ".join(f"({r // Wo},{r % Wo})" for r in highlight)
    several = len(highlight) > 1
    note = (
        "Colours follow the input cells: a cell inside several patches is copied into several rows "
        "(im2col's memory cost).\n"
        f"Outlined: the patch{'es' * several} of output position{'s' * several} {shown} and "
        f"{'their rows' if several else 'its row'}. Then out = cols @ kernel.reshape({kh * kw * C}, F)."
    )
    if highlight:
        fig.supxlabel(note, fontsize=SMALL_SIZE + 1)
    return fig


def _outline(corner, width, height, color, k) -> Rectangle:
    # above the white grid lines, not clipped at the axes edge; the k-th outline inset a little, so none hides another
    inset = 0.08 * k
    x, y = corner
    return Rectangle(
        (x + inset, y + inset),
        width - 2 * inset,
        height - 2 * inset,
        fill=False,
        lw=3.0 - 0.5 * k,
        ec=color,
        zorder=5,
        clip_on=False,
    )


# ---------------------------------------------------------------------------------------------- benchmarks
def benchmark_bars(table: dict, title: str, ylabel: str, log: bool = False, fmt: str = "{:.3g}") -> Figure:
    """Grouped bars: ``table = {group: {contender: value}}``, one cluster per group, one colour per contender.

    Contenders keep the order they first appear in; a missing or non-finite value leaves its slot empty and is
    marked "n/a". Each bar is labelled with ``fmt.format(value)``; ``log=True`` uses a log-scaled value axis.
    """
    if not table:
        raise ValueError("benchmark_bars: the table is empty; expected {group: {contender: value}}")
    groups = [str(g) for g in table]
    contenders: list[str] = []
    for row in table.values():
        for name in row:
            if name not in contenders:
                contenders.append(name)
    n_g, n_c = len(groups), len(contenders)
    width = 0.8 / n_c
    fig = _figure(max(6.0, 0.5 + n_g * (0.35 * n_c + 0.5)), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n_g)
    finite = [float(v) for row in table.values() for v in row.values() if v is not None and np.isfinite(v)]
    top = max(finite, default=1.0)
    for k, name in enumerate(contenders):
        values = np.array(
            [
                float(row[name]) if row.get(name) is not None and np.isfinite(row[name]) else np.nan
                for row in table.values()
            ]
        )
        positions = x - 0.4 + width * (k + 0.5)
        ok = np.isfinite(values)
        bars = ax.bar(positions[ok], values[ok], width * 0.92, label=str(name), color=f"C{k}")
        ax.bar_label(bars, [fmt.format(v) for v in values[ok]], fontsize=SMALL_SIZE, padding=2)
        for pos in positions[~ok]:  # at the foot of the axes, whatever the scale
            ax.text(pos, 0.01, "n/a", ha="center", va="bottom", fontsize=SMALL_SIZE, transform=ax.get_xaxis_transform())
    if log:
        ax.set_yscale("log")
        ax.set_ylim(top=top * 3.0)
    else:
        ax.set_ylim(0, top * 1.15)
    ax.set_xticks(x, groups)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _style(ax, title=title, ylabel=ylabel)
    fig.legend(fontsize=TICK_SIZE, loc="outside right upper")  # outside, so it never hides a bar
    return fig
