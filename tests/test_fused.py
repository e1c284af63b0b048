"""A Conv2D(relu) and the MaxPooling2D(2) after it run as one kernel: where it applies, and that training and
prediction come out as with the two layers one after the other."""

import numpy as np
import pytest

import minicnn
from minicnn import layers
from minicnn.layers import fused
from minicnn.testing import relative_error


def model(*first, seed=0):
    return minicnn.Sequential([*first, layers.Flatten(), layers.Dense(3)], seed=seed)


def conv(**kwargs):
    return layers.Conv2D(4, 3, **{"activation": "relu", **kwargs})


def wide(**kwargs):  # 32 channels in and out: a 3x3 layer that Winograd's algorithm runs
    return layers.Conv2D(32, 3, **{"activation": "relu", **kwargs})


def kinds(m):
    return [type(step).__name__ for step in fused.steps(m.layers[:-1])]


def test_a_conv_relu_and_its_2x2_pooling_are_one_step():
    m = model(conv(input_shape=(9, 9, 1)), layers.MaxPooling2D())
    assert kinds(m) == ["ConvReLUMaxPool", "Flatten"]
    m = model(layers.Rescaling(1 / 255, input_shape=(9, 9, 3)), conv(), layers.MaxPooling2D(2))
    assert kinds(m) == ["Rescaling", "ConvReLUMaxPool", "Flatten"]
    m = model(conv(input_shape=(12, 12, 1)), conv(), layers.MaxPooling2D())  # the second conv needs its dx
    assert kinds(m) == ["Conv2D", "ConvReLUMaxPool", "Flatten"]
    m = model(conv(input_shape=(20, 20, 1)), layers.MaxPooling2D(), conv(), layers.MaxPooling2D())
    assert kinds(m) == ["ConvReLUMaxPool", "ConvReLUMaxPool", "Flatten"]


@pytest.mark.parametrize(
    "first",
    [
        lambda: [conv(input_shape=(9, 9, 1), activation=None), layers.MaxPooling2D()],  # no ReLU
        lambda: [conv(input_shape=(9, 9, 1), trainable=False), layers.MaxPooling2D()],  # frozen: no backward
        lambda: [conv(input_shape=(9, 9, 1)), layers.MaxPooling2D(3)],
        lambda: [conv(input_shape=(9, 9, 1)), layers.MaxPooling2D(2, strides=1)],
        lambda: [conv(input_shape=(9, 9, 1)), layers.MaxPooling2D(padding="same")],
        lambda: [conv(input_shape=(9, 9, 1)), layers.AveragePooling2D()],
    ],
)
def test_other_layers_run_one_by_one(first):
    assert "ConvReLUMaxPool" not in kinds(model(*first()))


def test_not_on_engines_without_the_kernel():
    m = model(conv(input_shape=(9, 9, 1)), layers.MaxPooling2D())
    m.to("numpy")
    assert "ConvReLUMaxPool" not in kinds(m)


@pytest.mark.parametrize(
    "shape, first",
    [
        ((12, 12, 1), lambda: [conv(padding="same"), layers.MaxPooling2D()]),
        ((11, 13, 3), lambda: [conv(padding="same"), layers.MaxPooling2D()]),  # a last row/column outside the windows
        ((13, 14, 2), lambda: [conv(), conv(), layers.MaxPooling2D()]),  # the pair's conv needs dx
        ((14, 15, 3), lambda: [wide(), wide(), layers.MaxPooling2D()]),  # Winograd; dx sparse or by col2im
        ((12, 12, 2), lambda: [wide(), wide(padding="same"), layers.MaxPooling2D()]),  # Winograd; dx by Winograd
    ],
)
def test_fused_training_and_prediction_match_the_layers_one_by_one(shape, first, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.random((20, *shape), dtype=np.float32), rng.integers(0, 3, 20)
    results = {}
    for fuse in (True, False):
        monkeypatch.setattr(fused, "FUSE", fuse)
        m = model(layers.InputLayer(shape), *first(), seed=1)
        m.compile("adam", "sparse_categorical_crossentropy")
        history = m.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        assert ("ConvReLUMaxPool" in kinds(m)) == fuse
        results[fuse] = history.history["loss"], m.get_weights(), m.predict(x, verbose=0)
    (loss_a, w_a, p_a), (loss_b, w_b, p_b) = results[True], results[False]
    assert np.allclose(loss_a, loss_b, rtol=1e-5)
    assert all(relative_error(a, b) < 1e-5 for a, b in zip(w_a, w_b, strict=True))
    assert relative_error(p_a, p_b) < 1e-5


def test_profile_times_the_fused_pair_as_one_step_and_every_other_layer_apart(capsys):
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 10, 10, 1), dtype=np.float32), rng.integers(0, 3, 16)
    m = model(layers.Rescaling(0.5, input_shape=(10, 10, 1)), conv(), layers.MaxPooling2D(), conv(padding="same"))
    m.compile("adam", "sparse_categorical_crossentropy")
    result = m.profile(x, y, batch_size=16, steps=3)
    names = [name for name, _, _ in result["layers"]]
    rescaling, conv_1, pool, conv_2, flatten, dense = (layer.name for layer in m.layers)
    assert names == [rescaling, f"{conv_1} + {pool}", conv_2, flatten, dense]
    times = {name: (f, b) for name, f, b in result["layers"]}
    assert times[rescaling][1] == 0  # nothing to learn before the first layer with weights: no backward
    assert all(f > 0 for f, _ in times.values()) and all(times[name][1] > 0 for name in names[1:])
    assert result["step"] >= sum(f + b for f, b in times.values()) + result["loss"] + result["optimizer"]
    printed = capsys.readouterr().out
    assert f"{conv_1} + {pool}" in printed and "samples/s" in printed
