"""Augmentation: the Numba resampler against its loop twin and against NumPy, and the layers' contract
(identity at inference, seeded, Keras-shaped arguments and configs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.kernels import augment
from minicnn.layers.preprocessing import (
    RandomContrast,
    RandomFlip,
    RandomRotation,
    RandomTranslation,
    RandomZoom,
    Rescaling,
)
from minicnn.testing import check_layer_gradients, relative_error

NP_PAD_MODE = {"reflect": "symmetric", "wrap": "wrap", "nearest": "edge", "constant": "constant"}


def images(shape=(4, 9, 9, 3), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------------- kernels
@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 3),
    H=st.integers(1, 8),
    W=st.integers(1, 8),
    C=st.integers(1, 3),
    angle=st.floats(-np.pi, np.pi),
    zoom=st.floats(0.5, 2.0),
    shift=st.tuples(st.floats(-6, 6), st.floats(-6, 6)),
    fill_mode=st.sampled_from(augment.FILL_MODES),
    interpolation=st.sampled_from(augment.INTERPOLATIONS),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_numba_kernel_matches_loop_twin(N, H, W, C, angle, zoom, shift, fill_mode, interpolation, dtype):
    x = images((N, H, W, C), dtype, seed=H * 10 + W)
    # Compose rotation, zoom and translation so every entry of the matrix is exercised.
    m = augment.rotation_matrices(np.full(N, angle), H, W)
    m[:, :, :2] *= zoom
    m[:, :, 2] += shift
    args = (m, fill_mode, 0.25, interpolation)
    fast, slow = augment.affine_sample(x, *args), augment.affine_sample_reference(x, *args)
    assert fast.dtype == x.dtype and fast.shape == x.shape
    assert relative_error(fast, slow) < 1e-5


@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_transform_is_exact(fill_mode, dtype):
    x = images(dtype=dtype)
    m = augment.translation_matrices(np.zeros(4), np.zeros(4))
    np.testing.assert_array_equal(augment.affine_sample(x, m, fill_mode), x)
    np.testing.assert_array_equal(augment.affine_sample_reference(x, m, fill_mode), x)


def test_quarter_turn_is_rot90():
    # Positive angles turn the picture counter-clockwise, as np.rot90(image) (k=1) does.
    x = images((2, 7, 7, 3))
    for k, angle in ((1, np.pi / 2), (2, np.pi), (-1, -np.pi / 2)):
        m = augment.rotation_matrices(np.full(2, angle), 7, 7)
        np.testing.assert_allclose(augment.affine_sample(x, m), np.rot90(x, k, axes=(1, 2)), atol=1e-6)


@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
def test_integer_shifts_read_the_border_like_np_pad(fill_mode):
    # An integer shift lands on pixel centres, so the result is a window of the padded image.
    x, p = images((1, 5, 6, 2)), 13
    extra = {"constant_values": 0.5} if fill_mode == "constant" else {}
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=NP_PAD_MODE[fill_mode], **extra)
    for dy, dx in ((3, -2), (-7, 11), (12, 0), (-13, -13)):
        m = augment.translation_matrices([dy], [dx])
        expected = padded[:, p - dy : p - dy + 5, p - dx : p - dx + 6]
        np.testing.assert_array_equal(augment.affine_sample(x, m, fill_mode, 0.5), expected)


def test_zoom_matrix_convention():
    # Zoom 2 about the centre reads every other pixel around the middle: the picture shrinks (zoom out).
    m = augment.zoom_matrices([2.0], [2.0], 5, 5)
    x = images((1, 5, 5, 1))
    np.testing.assert_array_equal(augment.affine_sample(x, m, "constant")[0, 1:4, 1:4], x[0, ::2, ::2])


def test_flip_and_contrast():
    x = images()
    h, v = np.array([True, False, True, False]), np.array([True, True, False, False])
    out = augment.flip(x, h, v)
    expected = [np.flip(x[n], [a for a, m in ((1, h[n]), (0, v[n])) if m]) for n in range(4)]
    np.testing.assert_array_equal(out, np.stack(expected))
    c = np.array([0.5, 1.0, 1.5, 2.0])
    y = augment.adjust_contrast(x, c)
    mean = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) * c[:, None, None, None] + mean, atol=1e-6)
    np.testing.assert_allclose(y.mean(axis=(1, 2)), mean[:, 0, 0], atol=1e-6)


# ---------------------------------------------------------------------------------------------------- layers
def all_layers(seed=1):
    return [
        RandomFlip(seed=seed),
        RandomFlip("horizontal", seed=seed),
        RandomRotation(0.2, seed=seed),
        RandomRotation((-0.1, 0.3), fill_mode="constant", fill_value=0.5, seed=seed),
        RandomTranslation(0.2, (-0.1, 0.3), fill_mode="wrap", seed=seed),
        RandomZoom(0.3, seed=seed),
        RandomZoom((-0.3, -0.1), (0.1, 0.2), fill_mode="nearest", interpolation="nearest", seed=seed),
        RandomContrast(0.5, seed=seed),
        RandomContrast((0.2, 0.8), value_range=None, seed=seed),
    ]


@pytest.mark.parametrize("layer", all_layers(), ids=lambda layer: type(layer).__name__)
def test_identity_at_inference_active_in_training(layer):
    x = images()
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = layer(x, training=True)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not np.array_equal(y, x)
    assert layer.backward(y) is y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seeded_reproducibility(dtype):
    x = images(dtype=dtype)
    for a, b, c in zip(all_layers(seed=7), all_layers(seed=7), all_layers(seed=8), strict=True):
        ya, yb, yc = a(x, training=True), b(x, training=True), c(x, training=True)
        assert ya.dtype == dtype
        np.testing.assert_array_equal(ya, yb)
        assert not np.array_equal(ya, yc), type(a).__name__
        assert not np.array_equal(ya, a(x, training=True))  # a new draw on every call


def test_seed_comes_from_the_model_generator_when_not_given():
    x = images()
    a, b = RandomRotation(0.2), RandomRotation(0.2)
    a.build(x.shape[1:], np.random.default_rng(3))
    b.build(x.shape[1:], np.random.default_rng(3))
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))


def test_integer_images_become_float32():
    x = (images() * 255).astype(np.uint8)
    assert RandomRotation(0.1, seed=0)(x, training=True).dtype == np.float32
    np.testing.assert_allclose(Rescaling(1 / 255)(x), x / 255, rtol=1e-6)


@pytest.mark.parametrize("layer", [*all_layers(), Rescaling(0.5, 0.1), Rescaling([1, 2, 3], [0, 0.5, 1])])
def test_get_config_round_trip(layer):
    config = json.loads(json.dumps(layer.get_config()))
    config["name"] += "_copy"
    clone = type(layer).from_config(config)
    assert {**clone.get_config(), "name": layer.name} == layer.get_config()
    x = images()
    if hasattr(layer, "rng"):
        layer.rng, clone.rng = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(layer(x, training=True), clone(x, training=True))


def test_rescaling():
    x = images()
    layer = Rescaling([1.0, 2.0, 3.0], offset=-1.0)
    expected = x * np.array([1, 2, 3], np.float32) - 1
    np.testing.assert_allclose(layer(x, training=False), expected, rtol=1e-6)
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-6)
    errors = check_layer_gradients(Rescaling(1 / 255, offset=0.5), images((2, 3, 4, 2), np.float64))
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomFlip("diagonal"), "RandomFlip .*mode"),
        (lambda: RandomRotation(1.5), "RandomRotation .*factor.*\\[-1.0, 1.0\\]"),
        (lambda: RandomRotation((0.1, 0.2, 0.3)), "RandomRotation .*pair"),
        (lambda: RandomRotation("big"), "RandomRotation .*number"),
        (lambda: RandomRotation(0.1, fill_mode="mirror"), "RandomRotation .*fill_mode"),
        (lambda: RandomRotation(0.1, interpolation="bicubic"), "RandomRotation .*interpolation"),
        (lambda: RandomTranslation(0.1, (0.3, 0.1)), "RandomTranslation .*width_factor.*above"),
        (lambda: RandomTranslation(0.1, 2.0), "RandomTranslation .*width_factor"),
        (lambda: RandomZoom(-1.5), "RandomZoom .*height_factor"),
        (lambda: RandomContrast(-0.1), "RandomContrast .*factor"),
        (lambda: RandomContrast(1.5), "RandomContrast .*factor"),
        (lambda: RandomContrast(0.1, value_range=(1, 0)), "RandomContrast .*value_range"),
        (lambda: RandomFlip(seed=1.5), "RandomFlip .*seed"),
        (lambda: Rescaling("x"), "Rescaling .*scale"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_shapes_raise():
    with pytest.raises(ValueError, match="RandomZoom .*\\(H, W, C\\)"):
        RandomZoom(0.1).build((28, 28))
    with pytest.raises(ValueError, match="Rescaling .*2 values.*3 channels"):
        Rescaling([1.0, 2.0]).build((4, 4, 3))


def test_reference_and_device_backends_give_the_cpu_result():
    # The 'reference' backend resamples with the loop twin; a device backend makes a round trip to the host.
    from types import SimpleNamespace

    from minicnn.backend import get_backend

    device = SimpleNamespace(name="fake_device", to_numpy=lambda a: a.copy(), asarray=lambda a, dtype: a.copy())
    x = images()
    for backend in (get_backend("reference"), device):
        for a, b in zip(all_layers(seed=5), all_layers(seed=5), strict=True):
            b.backend = backend
            np.testing.assert_allclose(b(x, training=True), a(x, training=True), rtol=1e-6, atol=1e-7)
    layer = Rescaling(2.0)
    layer.backend = device
    np.testing.assert_array_equal(layer(x), 2 * x)
    np.testing.assert_array_equal(layer.backward(x), 2 * x)
