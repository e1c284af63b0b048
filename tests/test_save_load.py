"""model.save / minicnn.load_model: one safetensors file, identical predictions, training resumes exactly."""

import json

import numpy as np
import pytest

import minicnn
from minicnn import layers
from minicnn.saving import ModelFileError, load_safetensors, save_safetensors


def make_model(seed=0):
    model = minicnn.Sequential(
        [
            layers.Input(shape=(8, 8, 3)),
            layers.Rescaling(1 / 255),
            layers.RandomFlip("horizontal", seed=1),
            layers.Conv2D(4, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.2, seed=2),
            layers.Dense(3, activation="softmax"),
        ],
        seed=seed,
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 3)).astype(np.uint8), rng.integers(0, 3, n)


def test_round_trip_predicts_identically(tmp_path):
    x, y = data()
    model = make_model()
    model.class_names = ["cat", "dog", "bird"]
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = minicnn.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.class_names == ["cat", "dog", "bird"]
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    assert loaded.get_config() == model.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations == 6


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    x, y = data()
    # Uninterrupted: 2 epochs without shuffling (so the batch order does not depend on the generator).
    straight = make_model()
    straight.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    # Interrupted: 1 epoch, save, load, 1 more epoch.
    first = make_model()
    first.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    first.save(tmp_path / "half.safetensors")
    resumed = minicnn.load_model(tmp_path / "half.safetensors")
    for a, b in zip(resumed.layers, first.layers, strict=True):  # dropout masks continue from the same state
        if hasattr(b, "rng"):
            a.rng = b.rng
    resumed.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_file_is_plain_safetensors_with_json_config(tmp_path):
    model = make_model()
    model.save(tmp_path / "m.safetensors")
    tensors, meta = load_safetensors(tmp_path / "m.safetensors")
    assert meta["format"] == "minicnn"
    config = json.loads(meta["model_config"])
    assert [spec["class_name"] for spec in config["layers"]][:2] == ["Rescaling", "RandomFlip"]
    conv = next(layer for layer in model.layers if layer.params)
    np.testing.assert_array_equal(tensors[f"weights/{conv.name}/kernel"], conv.get_weights()[0])


def test_uncompiled_model_saves_and_loads(tmp_path):
    model = minicnn.Sequential([layers.Dense(2, input_shape=(3,))], seed=0)
    model.save(tmp_path / "u.safetensors")
    loaded = minicnn.load_model(tmp_path / "u.safetensors")
    assert loaded.optimizer is None
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


def test_truncated_file_is_rejected(tmp_path):
    make_model().save(tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    for cut in (4, 20, len(raw) // 2, len(raw) - 1):
        (tmp_path / "t.safetensors").write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="t.safetensors"):
            minicnn.load_model(tmp_path / "t.safetensors")


def test_foreign_safetensors_file_is_rejected(tmp_path):
    save_safetensors(tmp_path / "other.safetensors", {"fc.weight": np.zeros((2, 2), np.float32)}, {"framework": "pt"})
    with pytest.raises(ModelFileError, match="not a minicnn model"):
        minicnn.load_model(tmp_path / "other.safetensors")


def test_pickle_is_never_loaded(tmp_path):
    import pickle

    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelFileError, match="pickle"):
        minicnn.load_model(tmp_path / "model.pkl")


def test_missing_weight_is_reported(tmp_path):
    model = make_model()
    model.save(tmp_path / "m.safetensors")
    tensors, meta = load_safetensors(tmp_path / "m.safetensors")
    dense = model.layers[-1].name
    del tensors[f"weights/{dense}/bias"]
    save_safetensors(tmp_path / "broken.safetensors", tensors, meta)
    with pytest.raises(ModelFileError, match=f"weights/{dense}/bias' is missing"):
        minicnn.load_model(tmp_path / "broken.safetensors")


def test_damaged_config_is_reported(tmp_path):
    make_model().save(tmp_path / "m.safetensors")
    tensors, meta = load_safetensors(tmp_path / "m.safetensors")
    meta["model_config"] = meta["model_config"][:-5]
    save_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(ModelFileError, match="metadata is damaged"):
        minicnn.load_model(tmp_path / "bad.safetensors")
