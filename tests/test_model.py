"""The Sequential model: the Keras surface, its checks at the edge, and determinism."""

import numpy as np
import pytest

import minicnn
from minicnn import callbacks, layers, models, optimizers


def small_model(seed=0, **kwargs):
    return minicnn.Sequential(
        [
            layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ],
        seed=seed,
        **kwargs,
    )


def toy_data(n=96, seed=0):
    """Three classes that a conv net separates easily: a bright row, a bright column, or a bright dot."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n, 8, 8, 1)).astype(np.float32)
    y = np.arange(n) % 3
    for i, c in enumerate(y):
        if c == 0:
            x[i, rng.integers(8), :, 0] += 1
        elif c == 1:
            x[i, :, rng.integers(8), 0] += 1
        else:
            x[i, rng.integers(2, 6), rng.integers(2, 6), 0] += 3
    return x, y


def test_keras_program_runs_with_only_the_import_changed():
    x = np.random.default_rng(0).random((40, 28, 28, 1)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 40)
    model = models.Sequential(
        [
            layers.Conv2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_split=0.25)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 2 and history.epoch == [0, 1]
    assert history.params["epochs"] == 2
    probs = model.predict(x[:5])
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    loss, acc = model.evaluate(x, y, verbose=0)
    assert np.isfinite(loss) and 0 <= acc <= 1


def test_learns_a_separable_problem():
    x, y = toy_data(192)
    model = small_model()
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] > 0.9


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_one_hot_and_sparse_losses_train_the_same(loss):
    x, y = toy_data(48)
    targets = minicnn.utils.to_categorical(y, 3) if loss.startswith("categorical") else y
    model = small_model(seed=3)
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    h = model.fit(x, targets, epochs=1, batch_size=16, verbose=0, shuffle=False)
    ref = small_model(seed=3)
    ref.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h_ref = ref.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    np.testing.assert_allclose(h.history["loss"], h_ref.history["loss"], rtol=1e-5)


def test_binary_crossentropy_with_sigmoid_output():
    x, y = toy_data(60)
    yb = (y == 0).astype(np.float32)
    model = minicnn.Sequential([layers.Flatten(input_shape=(8, 8, 1)), layers.Dense(1, activation="sigmoid")], seed=0)
    model.compile(optimizer=optimizers.Adam(0.05), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, yb, epochs=20, verbose=0)
    assert model.evaluate(x, yb, verbose=0)[1] > 0.9


def test_fused_softmax_cross_entropy_is_finite_for_confident_predictions():
    model = minicnn.Sequential([layers.Dense(3, activation="softmax", input_shape=(2,))], seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.set_weights([np.array([[1e4, -1e4, 0], [0, 0, 0]], np.float32), np.zeros(3, np.float32)])
    x = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    y = np.array([1, 0])  # both confidently wrong: the loss is huge but finite
    loss = model.evaluate(x, y, verbose=0)
    assert np.isfinite(loss) and loss > 1000
    model.fit(x, y, epochs=1, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_seeded_runs_are_identical():
    x, y = toy_data(64)

    def run():
        minicnn.set_random_seed(42)
        model = minicnn.Sequential(
            [
                layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
                layers.Flatten(),
                layers.Dropout(0.3),
                layers.Dense(3, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_split=0.25)
        return model.get_weights(), h.history

    (w1, h1), (w2, h2) = run(), run()
    assert h1 == h2
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2, strict=True))


def test_validation_split_is_stratified_on_class_sorted_data():
    y = np.repeat(np.arange(4), 25)  # sorted by class: Keras's last-20% split would be all class 3
    train_idx, val_idx = minicnn.model.stratified_split(y, 0.2, np.random.default_rng(0))
    assert np.bincount(y[val_idx]).tolist() == [5, 5, 5, 5]
    assert not set(train_idx) & set(val_idx) and len(train_idx) + len(val_idx) == 100


def test_lazy_build_on_first_data_and_clear_error_before():
    model = minicnn.Sequential(
        [layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(2, activation="softmax")]
    )
    with pytest.raises(ValueError, match=r"has not been built yet.*input_shape"):
        model.summary()
    with pytest.raises(ValueError, match="has not been built yet"):
        model.count_params()
    model.compile(loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, 6, 6, 1), np.float32), np.array([0, 1, 0, 1]), verbose=0)
    assert model.built and model.count_params() == 40 + 4 * 4 * 4 * 2 + 2


def test_input_layer_builds_eagerly():
    model = minicnn.Sequential([minicnn.Input(shape=(8, 8, 1)), layers.Conv2D(2, 3), layers.Flatten()])
    assert model.built and model.output_shape == (72,)
    assert [layer.name for layer in model.layers][0].startswith("conv2d")


def test_add_builds_incrementally():
    model = minicnn.Sequential()
    model.add(layers.Dense(5, input_shape=(3,)))
    model.add(layers.Dense(2))
    assert model.count_params() == 3 * 5 + 5 + 5 * 2 + 2


def test_summary_table_and_counts_match_keras():
    model = minicnn.Sequential(
        [
            layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ],
        name="mnist_cnn",
    )
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert model.count_params() == 225_034  # Keras prints "Total params: 225,034" for this model
    for expected in (
        'Model: "mnist_cnn"',
        "(None, 26, 26, 32)",
        "(None, 5, 5, 64)",
        "(None, 1600)",
        "204,928",
        "Total params: 225,034",
        "Trainable params: 225,034",
        "Non-trainable params: 0",
    ):
        assert expected in text


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def compiled():
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize(
    "x, y, error, message",
    [
        (np.zeros((4, 8, 8)), np.zeros(4), ValueError, r"conv2d.*expects input of shape \(N, 8, 8, 1\).*add a channel"),
        (np.zeros((4, 9, 9, 1)), np.zeros(4), ValueError, r"expects input of shape \(N, 8, 8, 1\).*got \(4, 9, 9, 1\)"),
        (np.zeros((4, 8, 8, 1)), np.zeros(5), ValueError, "different lengths: 4 samples and 5 labels"),
        (np.zeros((4, 8, 8, 1)), np.array([0, 1, 2, 3]), ValueError, r"\[0, 3\)|range"),
        (np.zeros((4, 8, 8, 1)), np.eye(3)[[0, 1, 2, 0]], ValueError, "categorical_crossentropy|one-hot"),
        (np.full((4, 8, 8, 1), np.nan), np.zeros(4), ValueError, "NaN or inf"),
        (np.zeros((0, 8, 8, 1)), np.zeros(0), ValueError, "empty"),
        (np.full((4, 8, 8, 1), "a"), np.zeros(4), TypeError, "must hold numbers"),
    ],
    ids=["rank", "shape", "lengths", "label-range", "one-hot-to-sparse", "nan", "empty", "dtype"],
)
def test_bad_inputs_get_clear_errors(compiled, x, y, error, message):
    with pytest.raises(error, match=message):
        compiled.fit(x, y, verbose=0)


def test_fit_before_compile():
    with pytest.raises(RuntimeError, match=r"compile the model first"):
        small_model().fit(np.zeros((2, 8, 8, 1)), np.zeros(2), verbose=0)


def test_kernel_larger_than_input_is_caught_when_building():
    with pytest.raises(ValueError, match=r"Conv2D 'big'.*kernel 9x9 is larger than its input 8x8"):
        minicnn.Sequential([layers.Conv2D(2, 9, input_shape=(8, 8, 1), name="big")])


def test_sparse_labels_given_to_categorical_loss():
    model = small_model()
    model.compile(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="sparse"):
        model.fit(np.zeros((3, 8, 8, 1)), np.array([0, 1, 2]), verbose=0)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_loss_stops_training_with_a_message():
    x, y = toy_data(32)
    model = small_model()
    model.compile(optimizer=optimizers.SGD(1e30), loss="sparse_categorical_crossentropy")
    with pytest.warns(RuntimeWarning, match=r"the loss became (nan|inf); training stopped"):
        history = model.fit(x * 1e20, y, epochs=5, batch_size=8, verbose=0)
    assert len(history.history["loss"]) < 5


def test_predict_is_batched_and_handles_any_count(compiled):
    x, _ = toy_data(70)
    full = compiled.predict(x, batch_size=70)
    np.testing.assert_allclose(compiled.predict(x, batch_size=16), full, rtol=1e-5, atol=1e-6)
    assert compiled.predict(x[:1]).shape == (1, 3)


def test_early_stopping_restores_best_weights_through_fit():
    x, y = toy_data(60)
    model = small_model()
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Snapshots(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append([w.copy() for w in self.model.get_weights()])

    snapshots = Snapshots()
    # mode="max" on the loss makes "best" an early epoch, so restoring must visibly change the final weights
    stop = callbacks.EarlyStopping(monitor="loss", mode="max", patience=100, restore_best_weights=True)
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[snapshots, stop])
    best = int(np.argmax(history.history["loss"]))
    assert best < 3  # the loss fell, so the "best" (largest) epoch is not the last
    restored = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(restored, snapshots.weights[best], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(restored, snapshots.weights[-1], strict=True))


def test_set_weights_checks_shapes(compiled):
    weights = compiled.get_weights()
    weights[0] = np.zeros((2, 2, 1, 4))
    with pytest.raises(ValueError, match=r"weight 'kernel' has shape \(3, 3, 1, 4\); got \(2, 2, 1, 4\)"):
        compiled.set_weights(weights)


def test_verbose_progress_bar_shows_steps_and_metrics(compiled, capsys):
    x, y = toy_data(40)
    compiled.fit(x, y, epochs=2, batch_size=10, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "4/4" in out and "loss:" in out and "accuracy:" in out


def test_backward_stops_at_the_first_layer_with_weights():
    model = minicnn.Sequential(
        [layers.Input(shape=(8, 8, 1)), layers.Rescaling(0.5), layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(2)]
    )
    assert [layer.need_input_gradient for layer in model.layers] == [False, False, True, True]
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.train_on_batch(np.ones((2, 8, 8, 1), np.float32), np.array([0, 1]))
    conv = model.layers[1]
    assert conv.grads["kernel"].shape == (3, 3, 1, 2)


def test_fit_evaluate_predict_stream_from_an_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["dark", "light"]):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 80, (12, 12, 3), dtype=np.uint8) + 170 * k).save(
                tmp_path / name / f"{i}.png"
            )
    ds = minicnn.datasets.image_folder(tmp_path, image_size=(8, 8))
    model = minicnn.Sequential(
        [
            layers.Input(shape=(8, 8, 3)),
            layers.Rescaling(1 / 255),
            layers.Flatten(),
            layers.Dense(2, activation="softmax"),
        ],
        seed=0,
    )
    model.compile(optimizer=optimizers.Adam(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(ds, batch_size=4, epochs=20, verbose=0)
    assert len(history.history["loss"]) == 20 and model.class_names == ["dark", "light"]
    assert model.evaluate(ds, verbose=0, return_dict=True)["accuracy"] == 1.0
    assert model.predict(ds, batch_size=3).shape == (20, 2)


def test_zoo_gives_each_random_layer_its_own_seed():
    from minicnn import zoo

    model = zoo.build("photos", (32, 32, 3), 2, augment=True, seed=0)
    seeds = [layer.seed for layer in model.layers if hasattr(layer, "seed")]
    assert len(seeds) == 4 and len(set(seeds)) == 4
