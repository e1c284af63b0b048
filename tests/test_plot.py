"""minicnn.plot: every figure renders headless to PNG, without warnings, with the panels and marks it promises."""

import warnings

import numpy as np
import pytest
from matplotlib.colors import same_color
from matplotlib.figure import Figure

import minicnn
from minicnn import layers, plot
from minicnn.callbacks import History
from minicnn.kernels.im2col import im2col
from minicnn.kernels.shapes import padding_amounts


@pytest.fixture(autouse=True)
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def render(fig, tmp_path, name):
    """Save as PNG (the Agg renderer, no display) and check a real file came out."""
    assert isinstance(fig, Figure)
    assert fig.canvas.manager is None  # never registered with pyplot, so nothing is shown or kept alive
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.exists() and path.stat().st_size > 1000
    return path


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


@pytest.fixture
def model():
    # the 'numpy' backend needs no Numba compilation, which keeps these tests fast
    return minicnn.Sequential(
        [
            layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
            layers.MaxPooling2D(2),
            layers.Conv2D(6, 2, activation="relu"),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(5, activation="softmax"),
        ],
        seed=0,
        device="numpy",
    )


# ---------------------------------------------------------------------------------------------- training curves
def make_history(epochs=4):
    h = History()
    h.on_train_begin()
    for e in range(epochs):
        h.on_epoch_end(
            e,
            {"loss": 1.0 / (e + 1), "accuracy": 0.5 + 0.1 * e, "val_loss": 1.2 / (e + 1), "val_accuracy": 0.4 + e / 20},
        )
    return h


def test_training_curves_from_history_and_dict(tmp_path):
    h = make_history(4)
    for source in (h, h.history):
        fig = plot.training_curves(source)
        render(fig, tmp_path, "curves")
        assert len(fig.axes) == 2
        loss_ax, acc_ax = fig.axes
        assert loss_ax.get_title() == "Loss" and acc_ax.get_title() == "Accuracy"
        for ax in fig.axes:
            assert ax.get_xlabel() == "Epoch" and ax.get_ylabel()
            assert ax.get_legend() is not None
            train_line = ax.get_lines()[0]
            np.testing.assert_array_equal(train_line.get_xdata(), [1, 2, 3, 4])  # epochs are 1-based
        np.testing.assert_allclose(loss_ax.get_lines()[0].get_ydata(), h.history["loss"])


def test_training_curves_loss_only_and_empty(tmp_path):
    fig = plot.training_curves({"loss": [0.9, 0.5, 0.4]})
    render(fig, tmp_path, "loss_only")
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="no 'loss' or 'accuracy'"):
        plot.training_curves({})


# ---------------------------------------------------------------------------------------------- image grid
def test_image_grid_marks_mistakes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 12, 12, 1), dtype=np.uint8)
    labels = np.arange(10) % 3
    predictions = labels.copy()
    wrong = [1, 4, 7]
    predictions[wrong] = (predictions[wrong] + 1) % 3
    fig = plot.image_grid(images, labels, predictions, class_names=["cat", "dog", "bird"], ncols=4)
    render(fig, tmp_path, "grid")
    axes = image_axes(fig)
    assert len(axes) == 10
    for i, ax in enumerate(axes):
        is_red = same_color(ax.title.get_color(), plot.MISTAKE_COLOR)
        assert is_red == (i in wrong)
        assert same_color(ax.spines["left"].get_edgecolor(), plot.MISTAKE_COLOR) == (i in wrong)
    names = ["cat", "dog", "bird"]
    assert axes[1].get_title() == f"{names[labels[1]]} / {names[predictions[1]]}"
    assert "3 mistakes" in fig.get_suptitle()


@pytest.mark.parametrize(
    "images",
    [
        np.linspace(0, 1, 6 * 5 * 5).reshape(6, 5, 5),  # grayscale float in [0, 1]
        np.linspace(-3, 3, 6 * 5 * 5 * 3).reshape(6, 5, 5, 3),  # standardised RGB: stretched
        np.zeros((6, 5, 5, 3), np.uint8),
    ],
)
def test_image_grid_shapes_and_limits(tmp_path, images):
    fig = plot.image_grid(images, predictions=np.eye(4)[np.arange(6) % 4], max_images=4, ncols=3)
    render(fig, tmp_path, "grid_shapes")
    axes = image_axes(fig)
    assert len(axes) == 4  # max_images
    assert [ax.get_title() for ax in axes] == ["0", "1", "2", "3"]  # one-hot predictions, argmax taken
    assert not any(same_color(ax.title.get_color(), plot.MISTAKE_COLOR) for ax in axes)


def test_image_grid_rejects_a_single_image():
    with pytest.raises(ValueError, match="batch axis"):
        plot.image_grid(np.zeros((5, 5)))


# ---------------------------------------------------------------------------------------------- conv filters
def test_conv_filters_of_a_layer(tmp_path, model):
    conv = model.layers[0]
    fig = plot.conv_filters(conv)
    render(fig, tmp_path, "filters")
    tiles = image_axes(fig)
    assert len(tiles) == 4 and len(fig.axes) == 4 + 1  # one tile per filter, one colorbar
    w = np.asarray(conv.params["kernel"])
    v = np.abs(w).max()
    for f, ax in enumerate(tiles):
        image = ax.images[0]
        assert image.get_clim() == pytest.approx((-v, v))  # shared scale, centred at 0
        np.testing.assert_allclose(image.get_array(), w[:, :, 0, f])
    assert conv.name in fig.get_suptitle()


def test_conv_filters_channels(tmp_path, model):
    kernel = np.asarray(model.layers[2].params["kernel"])  # (2, 2, 4, 6)
    fig = plot.conv_filters(kernel)  # mean over the 4 input channels
    render(fig, tmp_path, "filters_mean")
    np.testing.assert_allclose(image_axes(fig)[5].images[0].get_array(), kernel[..., 5].mean(axis=2), rtol=1e-6)
    fig = plot.conv_filters(kernel, channel=2)
    np.testing.assert_allclose(image_axes(fig)[5].images[0].get_array(), kernel[:, :, 2, 5])
    fig = plot.conv_filters(kernel[:, :, :3, :2], channel="all")
    render(fig, tmp_path, "filters_all")
    assert len(image_axes(fig)) == 2 * 3  # a row per filter, a column per input channel
    with pytest.raises(ValueError, match="channel"):
        plot.conv_filters(kernel, channel=4)


def test_conv_filters_rgb(tmp_path):
    kernel = np.random.default_rng(1).normal(size=(3, 3, 3, 5))
    fig = plot.conv_filters(kernel)
    render(fig, tmp_path, "filters_rgb")
    assert len(fig.axes) == 5  # RGB tiles: no colorbar
    tile = image_axes(fig)[0].images[0].get_array()
    assert tile.shape == (3, 3, 3)
    np.testing.assert_allclose(tile, 0.5 + 0.5 * kernel[..., 0] / np.abs(kernel).max())


# ---------------------------------------------------------------------------------------------- feature maps
def test_feature_maps(tmp_path, model):
    image = np.random.default_rng(2).random((8, 8, 1)).astype(np.float32)
    fig = plot.feature_maps(model, image, max_channels=3)
    render(fig, tmp_path, "feature_maps")
    rows = fig.subfigs
    titles = [sub.get_suptitle() for sub in rows]
    # input, conv2d, max_pooling2d, conv2d_1, dense; flatten and dropout change nothing and are listed instead
    assert len(rows) == 5
    assert titles[0].startswith("input")
    for title, layer in zip(titles[1:], [model.layers[i] for i in (0, 1, 2, 5)], strict=True):
        assert title.startswith(f"{layer.name}  ({', '.join(map(str, layer.output_shape))})")
    assert model.layers[3].name in fig.get_supxlabel() and model.layers[4].name in fig.get_supxlabel()
    maps = [len(image_axes(sub)) for sub in rows]
    assert maps == [1, 3, 3, 3, 0]  # max_channels=3 of 4, 4 and 6 channels
    assert len(rows[-1].axes[0].patches) == 5  # the Dense row: one bar per unit
    # the drawn maps are the layers' real outputs
    out = model.layers[0].forward(image[None], training=False)
    np.testing.assert_allclose(image_axes(rows[1])[2].images[0].get_array(), np.asarray(out)[0, :, :, 2])


def test_feature_maps_checks_the_image(model):
    with pytest.raises(ValueError, match=r"\(8, 8, 1\)"):
        plot.feature_maps(model, np.zeros((9, 9, 1)))
    fig = plot.feature_maps(model, np.zeros((8, 8)))  # a grayscale (H, W) image gets its channel axis
    assert len(fig.subfigs) >= 2


# ---------------------------------------------------------------------------------------------- confusion matrix
def test_confusion_counts_by_hand():
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    expected = np.array(
        [
            [1, 1, 0],  # two 0s: one right, one called 1
            [0, 1, 0],  # one 1: right
            [1, 0, 2],  # three 2s: one called 0, two right
        ]
    )
    np.testing.assert_array_equal(plot.confusion_counts(y_true, y_pred, 3), expected)
    np.testing.assert_array_equal(plot.confusion_counts(y_true, y_pred), expected)  # n_classes inferred
    np.testing.assert_array_equal(plot.confusion_counts(np.eye(3)[y_true], np.eye(3)[y_pred] * 0.9, 3), expected)
    counts = plot.confusion_counts(y_true, y_pred, 4)
    assert counts.shape == (4, 4) and counts[3].sum() == 0 and counts.sum() == 6
    with pytest.raises(ValueError, match="outside"):
        plot.confusion_counts([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="6 labels but"):
        plot.confusion_counts(y_true, y_pred[:-1], 3)


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix(tmp_path, normalize):
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    fig = plot.confusion_matrix(y_true, y_pred, class_names=["a", "b", "c"], normalize=normalize)
    render(fig, tmp_path, "confusion")
    assert len(fig.axes) == 2  # the matrix and its colorbar
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Predicted" and ax.get_ylabel() == "True"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9
    expected = ["1", "1", "0", "0", "1", "0", "1", "0", "2"]
    if normalize:
        expected = ["0.50", "0.50", "0", "0", "1.00", "0", "0.33", "0", "0.67"]
    assert texts == expected
    assert "66.7%" in ax.get_title()


# ---------------------------------------------------------------------------------------------- im2col
@pytest.mark.parametrize(
    "H, W, C, k, stride, padding",
    [(4, 4, 1, 3, 1, "valid"), (5, 5, 2, 3, 2, "same"), (4, 5, 1, (2, 3), (1, 2), "valid"), (3, 3, 3, 2, 1, "same")],
)
def test_im2col_layout_matrix_is_im2col_of_the_cell_numbers(tmp_path, H, W, C, k, stride, padding):
    fig = plot.im2col_layout(H, W, C, kernel_size=k, stride=stride, padding=padding)
    render(fig, tmp_path, "im2col")
    assert len(fig.axes) == C + 1  # one grid per input channel, then the matrix

    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    pad = padding_amounts(H, W, kh, kw, (sh, sw), padding)
    numbers = np.arange(1, H * W * C + 1, dtype=np.float64).reshape(1, H, W, C)
    expected = im2col(numbers, kh, kw, (sh, sw), pad)

    matrix_ax = fig.axes[-1]
    drawn = np.array([int(t.get_text()) for t in matrix_ax.texts]).reshape(expected.shape)
    np.testing.assert_array_equal(drawn, expected)
    _, cols = plot.im2col_indices(H, W, C, k, stride, padding)
    np.testing.assert_array_equal(cols, expected)
    # each matrix entry is coloured like the input cell it came from
    colours = matrix_ax.images[0].get_array()
    input_ax = fig.axes[0]
    cell_colour = {
        int(t.get_text()): input_ax.images[0].get_array()[int(t.get_position()[1]), int(t.get_position()[0])]
        for t in input_ax.texts
    }
    for (i, j), v in np.ndenumerate(drawn):
        if v in cell_colour:
            np.testing.assert_allclose(colours[i, j], cell_colour[v])


def test_im2col_layout_refuses_big_inputs():
    with pytest.raises(ValueError, match="small inputs"):
        plot.im2col_layout(28, 28, 3)


# ---------------------------------------------------------------------------------------------- benchmarks
def test_benchmark_bars(tmp_path):
    table = {
        "conv forward": {"numpy": 4.0, "numba": 2.0, "torch": 1.0},
        "maxpool": {"numpy": 1.2, "numba": 0.3},  # no torch number: an n/a slot
    }
    for log in (False, True):
        fig = plot.benchmark_bars(table, "Kernel time", "ms per call", log=log)
        render(fig, tmp_path, "bench")
        ax = fig.axes[0]
        assert len(fig.axes) == 1
        assert len(ax.patches) == 5
        assert ax.get_title() == "Kernel time" and ax.get_ylabel() == "ms per call"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["conv forward", "maxpool"]
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["numpy", "numba", "torch"]
        assert "n/a" in [t.get_text() for t in ax.texts]
