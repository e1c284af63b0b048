"""Every layer's gradients agree with finite differences (float64), and shapes/params match Keras's."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import layers
from minicnn.kernels import cpu, sparse, winograd
from minicnn.testing import check_layer_gradients

GRAD_TOL = 1e-6


def assert_gradients_ok(layer, x, training=True):
    errors = check_layer_gradients(layer, x, training=training)
    assert set(errors) == {"x", *layer.params}
    assert max(errors.values()) < GRAD_TOL, errors


@st.composite
def conv_layer_case(draw):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    H, W = draw(st.integers(k[0], k[0] + 4)), draw(st.integers(k[1], k[1] + 4))
    return dict(
        shape=(draw(st.integers(2, 3)), H, W, draw(st.integers(1, 3))),
        filters=draw(st.integers(1, 3)),
        kernel_size=k,
        strides=s,
        padding=draw(st.sampled_from(["valid", "same"])),
        activation=draw(st.sampled_from([None, "tanh", "sigmoid", "relu"])),
        use_bias=draw(st.booleans()),
        seed=draw(st.integers(0, 1000)),
    )


@settings(max_examples=30, deadline=None)
@given(case=conv_layer_case())
def test_conv2d_gradients(case):
    shape, seed = case.pop("shape"), case.pop("seed")
    x = np.random.default_rng(seed).standard_normal(shape)
    assert_gradients_ok(layers.Conv2D(**case), x)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("m", [2, 4])
def test_conv2d_gradients_through_winograd(padding, activation, m, monkeypatch):
    # The CPU engine runs wide 3x3 layers by Winograd's algorithm (forward; dw and dx too for 'same' layers, whose dx
    # is a convolution of dout from 8 channels up); lower its thresholds so that this small layer goes that way too,
    # with tile size m, and check it against finite differences.
    monkeypatch.setattr(cpu, "WINOGRAD_MIN_CHANNELS", 2)
    monkeypatch.setattr(cpu, "winograd_products", lambda tile, Ho, Wo: 1.0 if tile == m else 2.0)
    calls = []
    for name in ("conv3x3", "conv3x3_dw"):
        f = getattr(winograd, name)
        monkeypatch.setattr(winograd, name, lambda *a, f=f, name=name, **k: calls.append((name, k["m"])) or f(*a, **k))
    x = np.random.default_rng(5).standard_normal((2, 6, 5, 8))
    assert_gradients_ok(layers.Conv2D(4, 3, padding=padding, activation=activation), x)
    names = {"conv3x3", "conv3x3_dw"} if padding == "same" else {"conv3x3"}  # 'valid': dx and dw by col2im's pass
    assert {name for name, _ in calls} == names and {tile for _, tile in calls} == {m}


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv2d_gradients_through_the_sparse_backward(padding, strides, monkeypatch):
    # Behind a max pooling the CPU engine skips dout's zeros (sparse.py) where dx would go by col2im; finite
    # differences draw a dense dout, so let it take that path at any density, and count that it did.
    monkeypatch.setattr(cpu, "SPARSE_MAX_DENSITY", 1.0)
    monkeypatch.setattr(cpu, "SPARSE_MIN_CHANNELS", 2)
    calls = []
    f = sparse.conv2d_dw_dx
    monkeypatch.setattr(sparse, "conv2d_dw_dx", lambda *a, **k: calls.append(1) or f(*a, **k))
    x = np.random.default_rng(6).standard_normal((2, 7, 6, 3))
    assert_gradients_ok(layers.Conv2D(4, 3, strides=strides, padding=padding, activation="relu"), x)
    assert calls  # 'same' at stride 1 with 3 channels: dx by col2im too (a convolution of dout from 8 up)


@settings(max_examples=20, deadline=None)
@given(
    pool=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.sampled_from(["valid", "same"]),
    kind=st.sampled_from(["max", "avg"]),
    seed=st.integers(0, 1000),
)
def test_pooling_gradients(pool, strides, padding, kind, seed):
    x = np.random.default_rng(seed).standard_normal((2, pool[0] + 3, pool[1] + 2, 3))
    cls = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
    assert_gradients_ok(cls(pool, strides, padding), x)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(2, 4),
    d=st.integers(1, 8),
    units=st.integers(1, 6),
    activation=st.sampled_from([None, "relu", "sigmoid", "tanh", "softmax", "leaky_relu"]),
    seed=st.integers(0, 1000),
)
def test_dense_gradients(n, d, units, activation, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    assert_gradients_ok(layers.Dense(units, activation=activation), x)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (layers.GlobalAveragePooling2D(), (2, 3, 4, 3)),
        (layers.Flatten(), (2, 3, 2, 2)),
        (layers.Dropout(0.4, seed=3), (3, 5, 4)),
        (layers.Activation("softmax"), (3, 5)),
        (layers.Activation("leaky_relu"), (3, 5)),
        (layers.ReLU(), (2, 3, 3, 2)),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_parameter_free_layer_gradients(layer, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    assert_gradients_ok(layer, x)


def test_dropout_is_identity_at_inference_and_scales_in_training():
    x = np.ones((200, 50), np.float32)
    d = layers.Dropout(0.25, seed=0)
    assert np.array_equal(d(x, training=False), x)
    y = d(x, training=True)
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02


# Output shapes and parameter counts, as Keras prints them for the same layers.
@pytest.mark.parametrize(
    "layer, input_shape, output_shape, n_params",
    [
        (layers.Conv2D(32, 3), (28, 28, 1), (26, 26, 32), 320),
        (layers.Conv2D(64, (3, 3)), (13, 13, 32), (11, 11, 64), 18496),
        (layers.Conv2D(32, 3, padding="same"), (32, 32, 3), (32, 32, 32), 896),
        (layers.Conv2D(8, (5, 3), strides=(2, 1), padding="same", use_bias=False), (9, 7, 2), (5, 7, 8), 240),
        (layers.Conv2D(4, 3, strides=2), (8, 8, 1), (3, 3, 4), 40),
        (layers.MaxPooling2D(), (26, 26, 32), (13, 13, 32), 0),
        (layers.MaxPooling2D(3, strides=2, padding="same"), (7, 7, 4), (4, 4, 4), 0),
        (layers.AveragePooling2D(2), (5, 5, 3), (2, 2, 3), 0),
        (layers.GlobalAveragePooling2D(), (5, 5, 3), (3,), 0),
        (layers.Flatten(), (5, 5, 64), (1600,), 0),
        (layers.Dense(128), (1600,), (128,), 204928),
        (layers.Dense(10, use_bias=False), (128,), (10,), 1280),
    ],
    ids=lambda v: getattr(v, "name", None) if isinstance(v, layers.Layer) else None,
)
def test_output_shapes_and_param_counts_match_keras(layer, input_shape, output_shape, n_params):
    layer.build(input_shape, np.random.default_rng(0))
    assert layer.output_shape == output_shape
    assert layer.count_params() == n_params


def test_glorot_uniform_limits():
    layer = layers.Conv2D(16, 3)
    layer.build((10, 10, 4), np.random.default_rng(0))
    limit = np.sqrt(6 / (9 * 4 + 9 * 16))
    k = layer.params["kernel"]
    assert k.dtype == np.float32 and np.abs(k).max() <= limit and np.abs(k).max() > 0.9 * limit
    assert not layer.params["bias"].any()


@pytest.mark.parametrize(
    "make, shape, message",
    [
        (lambda: layers.Conv2D(8, 3), (28, 28), r"rank 4 \(N, H, W, C\).*add a channel axis"),
        (lambda: layers.Conv2D(8, 7), (5, 5, 1), r"kernel 7x7 is larger than its input 5x5"),
        (lambda: layers.Dense(3), (4, 4, 2), r"Dense .* expects input of rank 2.*Flatten"),
        (lambda: layers.MaxPooling2D(4), (3, 3, 1), r"larger than its input"),
    ],
)
def test_bad_input_shapes_name_the_layer(make, shape, message):
    layer = make()
    with pytest.raises(ValueError, match=message) as info:
        layer.build(shape)
    assert layer.name in str(info.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: layers.Conv2D(0, 3), "filters must be a positive int"),
        (lambda: layers.Conv2D(4, 3, padding="full"), "padding must be 'valid' or 'same'"),
        (lambda: layers.Conv2D(4, (3, 0)), "kernel_size must hold positive ints"),
        (lambda: layers.Dense(4, activation="swishy"), "unknown activation"),
        (lambda: layers.Dropout(1.0), r"rate must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_standalone_call_checks_batch_shape():
    layer = layers.Conv2D(2, 3, input_shape=(8, 8, 1))
    layer.build((8, 8, 1))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 8, 8, 1\); got \(2, 9, 9, 1\)"):
        layer(np.zeros((2, 9, 9, 1), np.float32))
    assert layer(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 6, 6, 2)


def test_config_round_trip_rebuilds_the_same_layer():
    for layer in (
        layers.Conv2D(4, (3, 2), strides=2, padding="same", activation="relu", name="c"),
        layers.Dense(3, activation="softmax", use_bias=False),
        layers.MaxPooling2D(3, 2, "same"),
        layers.Dropout(0.3, seed=1),
    ):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_a_layer_in_a_models_step_lets_go_of_its_output_once_its_backward_is_done():
    # In the model's step each backward runs once, so a ReLU layer drops its output (ReLU's cache) when it has used
    # it, and the output's pooled buffer can take the layer's dx: the CIFAR model's step at batch 128 peaked
    # 113-121 MiB above its starting memory against 134-137. A layer on its own keeps it: backward may run again.
    import minicnn
    from minicnn.kernels import buffers

    rng = np.random.default_rng(0)
    model = minicnn.Sequential(
        [
            layers.Conv2D(8, 3, padding="same", activation="relu", input_shape=(16, 16, 3)),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(4, activation="softmax"),
        ],
        seed=0,
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = rng.standard_normal((4, 16, 16, 3)).astype(np.float32), rng.integers(0, 4, 4)
    model._forward_backward(model.layers, x, y)  # the step's passes through the model's own layers (not copies)
    conv1, conv2, dense = model.layers[0], model.layers[1], model.layers[-1]
    assert conv1.cache[1] is None and conv2.cache[1] is None  # the outputs, let go of
    assert conv2.cache[0][0] is not None and dense.cache[2] is not None  # the inputs and the logits, kept

    # a layer as the model runs it: dx lands on the buffer that held the output (both 512 KiB, in an empty pool;
    # the pool is off on a Python whose reference counts it cannot read)
    if buffers.ENABLED:
        buffers.clear()
        conv = layers.Conv2D(16, 3, padding="same", activation="relu", input_shape=(32, 32, 16))
        conv.build((32, 32, 16), np.random.default_rng(1))
        conv.may_overwrite_dout = True
        out = conv.forward(rng.standard_normal((8, 32, 32, 16)).astype(np.float32))
        where = out.__array_interface__["data"][0]
        dout = rng.standard_normal(out.shape).astype(np.float32)
        del out
        dx = conv.backward(dout)
        assert dx.__array_interface__["data"][0] == where

    alone = layers.Conv2D(4, 3, activation="relu", input_shape=(6, 6, 2))
    alone.build((6, 6, 2), np.random.default_rng(1))
    out = alone.forward(rng.standard_normal((2, 6, 6, 2)).astype(np.float32))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    first = alone.backward(dout.copy())
    np.testing.assert_array_equal(alone.backward(dout.copy()), first)  # its cache is whole: a second backward


@pytest.mark.parametrize("backend", ["cpu", "numpy", "reference"])
def test_relu_layer_keeps_one_copy_of_its_output(backend):
    # The pre-activation z is the layer's own array, so ReLU overwrites it: the layer holds y only, and y still
    # equals relu(x @ W + b). Only softmax/sigmoid layers keep z, as logits for the fused losses.
    from minicnn.backend import get_backend

    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    dense = layers.Dense(3, activation="relu", input_shape=(4,))
    dense.build((4,), np.random.default_rng(1))
    dense.backend = get_backend(backend)
    y = dense.forward(x)
    W, b = dense.params["kernel"], dense.params["bias"]
    np.testing.assert_allclose(y, np.maximum(x @ W + b, 0), rtol=1e-6)
    assert dense.cache[2] is None
    with pytest.raises(AttributeError, match="Dense 'dense.*': logits are kept for softmax and sigmoid"):
        _ = dense.logits
    soft = layers.Dense(3, activation="softmax", input_shape=(4,))
    soft.build((4,), np.random.default_rng(1))
    soft.backend = get_backend(backend)
    soft.forward(x)
    np.testing.assert_allclose(soft.logits, x @ soft.params["kernel"] + soft.params["bias"], rtol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_activation_forward_overwrites_only_when_allowed(backend):
    from minicnn.backend import get_backend

    act = get_backend(backend).activation_forward
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)
    y, _ = act("relu", x)
    assert x.tolist() == [[-1.0, 2.0, -3.0]] and y.tolist() == [[0.0, 2.0, 0.0]]
    y, _ = act("relu", x, overwrite_x=True)
    assert y is x and x.tolist() == [[0.0, 2.0, 0.0]]


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_relu_backward_writes_over_dout_only_inside_a_model(backend):
    from minicnn.backend import get_backend

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    conv = layers.Conv2D(3, 3, activation="relu", input_shape=(6, 6, 2))
    conv.build((6, 6, 2), np.random.default_rng(1))
    conv.backend = get_backend(backend)
    y = conv.forward(x)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    keep = dout.copy()
    dx_by_hand = conv.backward(dout)
    assert np.array_equal(dout, keep)  # a layer called by hand leaves its caller's dout alone
    grads_by_hand = {k: g.copy() for k, g in conv.grads.items()}
    conv.may_overwrite_dout = True  # what a model sets: it owns the gradients it passes down
    conv.forward(x)
    dx_in_model = conv.backward(dout)
    assert np.array_equal(dx_in_model, dx_by_hand)
    assert all(np.array_equal(conv.grads[k], grads_by_hand[k]) for k in grads_by_hand)
    assert np.array_equal(dout, keep * (y > 0))  # dL/dz, written in place


def test_a_model_lets_its_layers_overwrite_gradients():
    import minicnn

    model = minicnn.Sequential([layers.Input((6, 6, 1)), layers.Conv2D(2, 3, activation="relu"), layers.Flatten()])
    assert all(layer.may_overwrite_dout for layer in model.layers)
    assert not layers.Dense(3).may_overwrite_dout
