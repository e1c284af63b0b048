"""The hand-written safetensors reader and writer: round trips, every kind of bad file, atomic writes."""

import json
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicnn import saving
from minicnn.saving import ModelFileError, load_safetensors, save_safetensors


def sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "conv2d/kernel": rng.standard_normal((3, 3, 1, 4)).astype(np.float32),
        "conv2d/bias": np.zeros(4, np.float32),
        "dense/kernel": rng.standard_normal((5, 2)),
        "step": np.array(7, dtype=np.int64),
        "labels": np.array([1, 2, 3], dtype=np.int32),
        "image": rng.integers(0, 256, (2, 2, 3), dtype=np.uint8),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
        "half": np.array([0.5, -2.0], np.float16),
    }


@pytest.fixture
def saved(tmp_path):
    """A valid file, its raw bytes and its parsed header."""
    path = tmp_path / "model.safetensors"
    save_safetensors(path, sample_tensors(), {"format": "minicnn"})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return path, data, json.loads(data[8 : 8 + n])


def write_with_header(path, header: dict, payload: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)


# ------------------------------------------------------------------------------------------------ round trips
def test_round_trip_keeps_values_dtypes_shapes_and_order(tmp_path):
    tensors = sample_tensors()
    save_safetensors(tmp_path / "m.safetensors", tensors, {"format": "minicnn", "config": '{"layers": []}'})
    loaded, metadata = load_safetensors(tmp_path / "m.safetensors")
    assert list(loaded) == list(tensors)
    for name, a in tensors.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape
        np.testing.assert_array_equal(loaded[name], a)
    assert metadata == {"format": "minicnn", "config": '{"layers": []}'}


def test_file_layout_follows_the_spec(saved):
    _, data, header = saved
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and data[8 : 8 + n].endswith((b"}", b" "))
    assert header["__metadata__"] == {"format": "minicnn"}
    assert header["conv2d/kernel"] == {"dtype": "F32", "shape": [3, 3, 1, 4], "data_offsets": [0, 144]}
    assert header["step"]["shape"] == [] and header["step"]["dtype"] == "I64"
    assert len(data) == 8 + n + max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")


def test_no_metadata_loads_as_empty_dict(tmp_path):
    save_safetensors(tmp_path / "m.safetensors", {"x": np.ones(2)})
    assert load_safetensors(tmp_path / "m.safetensors")[1] == {}


def test_big_endian_and_non_contiguous_arrays_are_stored_as_little_endian_c_order(tmp_path):
    a = np.arange(12, dtype=">f4").reshape(3, 4).T
    save_safetensors(tmp_path / "m.safetensors", {"a": a})
    loaded = load_safetensors(tmp_path / "m.safetensors")[0]["a"]
    assert loaded.dtype == np.float32 and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, a)


def test_loaded_arrays_are_writable_copies(saved):
    tensors, _ = load_safetensors(saved[0])
    tensors["conv2d/bias"][0] = 1.0  # would raise on a read-only view of the file's bytes


def test_header_length_that_looks_like_a_pickle_still_loads(tmp_path):
    # a header of 640 bytes starts the file with b"\x80\x02", as a pickle starts: the valid header must win
    text = json.dumps({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}).encode().ljust(640)
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", 640) + text + b"\x07")
    assert (tmp_path / "m.safetensors").read_bytes()[:2] == b"\x80\x02"
    assert load_safetensors(tmp_path / "m.safetensors")[0]["x"].tolist() == [7]


@settings(max_examples=25, deadline=None)
@given(
    arrays=st.lists(
        hnp.arrays(
            dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float16]),
            shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
        ),
        max_size=4,
    )
)
def test_random_arrays_round_trip(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("h") / "m.safetensors"
    tensors = {f"t{i}": a for i, a in enumerate(arrays)}
    save_safetensors(path, tensors)
    loaded, _ = load_safetensors(path)
    assert list(loaded) == list(tensors)
    for name, a in tensors.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape
        np.testing.assert_array_equal(loaded[name], a)  # NaNs compare equal here


# ------------------------------------------------------------------------------------------------ the official library
def test_official_safetensors_reads_ours_and_we_read_theirs(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = sample_tensors()
    save_safetensors(tmp_path / "ours.safetensors", tensors, {"format": "minicnn"})
    theirs = st_numpy.load_file(tmp_path / "ours.safetensors")
    for name, a in tensors.items():
        np.testing.assert_array_equal(theirs[name], a)
        assert theirs[name].dtype == a.dtype
    safe_open = pytest.importorskip("safetensors").safe_open
    with safe_open(tmp_path / "ours.safetensors", framework="numpy") as f:
        assert f.metadata() == {"format": "minicnn"}

    st_numpy.save_file(tensors, tmp_path / "theirs.safetensors", metadata={"k": "v"})
    loaded, metadata = load_safetensors(tmp_path / "theirs.safetensors")
    assert metadata == {"k": "v"}
    for name, a in tensors.items():
        np.testing.assert_array_equal(loaded[name], a)


# ------------------------------------------------------------------------------------------------ bad files
def test_empty_file(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"m\.safetensors.*empty"):
        load_safetensors(tmp_path / "m.safetensors")


def test_too_short_file(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"\x10\0\0")
    with pytest.raises(ModelFileError, match="3 bytes long, too short"):
        load_safetensors(tmp_path / "m.safetensors")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file(saved, fraction):
    path, data, _ = saved
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match="truncated"):
        load_safetensors(path)


def test_truncated_by_one_byte(saved):
    path, data, _ = saved
    path.write_bytes(data[:-1])
    with pytest.raises(ModelFileError, match=r"truncated.*needs data bytes"):
        load_safetensors(path)


def test_byte_flips_in_the_header_are_caught(saved):
    path, data, _ = saved
    (n,) = struct.unpack("<Q", data[:8])
    for i in [*range(8), *range(8, 8 + n, 5)]:
        corrupt = bytearray(data)
        corrupt[i] ^= 0xFF
        path.write_bytes(bytes(corrupt))
        with pytest.raises(ModelFileError, match="cannot load"):
            load_safetensors(path)


def test_header_not_json(saved):
    path, data, _ = saved
    (n,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[:8] + b"[" + data[9:])
    with pytest.raises(ModelFileError, match="header is not valid JSON"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 8) + b"[1, 2]  ")
    with pytest.raises(ModelFileError, match="not an object"):
        load_safetensors(path)


def test_png_file(tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(20))
    with pytest.raises(ModelFileError, match=r"not a safetensors file \(starts with b'\\x89PNG"):
        load_safetensors(path)


def test_pickle_file_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"kernel": np.ones(3)}, protocol=4))
    with pytest.raises(ModelFileError, match="pickle.*never loads pickle"):
        load_safetensors(path)


@pytest.mark.parametrize(
    "start, kind",
    [(b"PK\x03\x04\x14\0\0\x08", r"zip archive.*\.keras"), (b"\x89HDF\r\n\x1a\n", r"HDF5.*Keras \.h5")],
)
def test_keras_files(tmp_path, start, kind):
    path = tmp_path / "model.keras"
    path.write_bytes(start + bytes(100))
    with pytest.raises(ModelFileError, match=kind):
        load_safetensors(path)


def test_random_bytes(tmp_path):
    rng = np.random.default_rng(1)
    for _ in range(20):
        (tmp_path / "m.safetensors").write_bytes(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        with pytest.raises(ModelFileError, match="not a safetensors file|not valid JSON"):
            load_safetensors(tmp_path / "m.safetensors")


def test_text_file(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,loss\n0,0.5\n")
    with pytest.raises(ModelFileError, match="absurd header length"):
        load_safetensors(tmp_path / "log.csv")


def test_unknown_dtype(tmp_path):
    write_with_header(tmp_path / "m.st", {"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4))
    with pytest.raises(ModelFileError, match="'x' has unknown dtype 'BF16'"):
        load_safetensors(tmp_path / "m.st")


def test_shape_and_offsets_disagree(tmp_path):
    write_with_header(tmp_path / "m.st", {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(ModelFileError, match=r"shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] hold 8"):
        load_safetensors(tmp_path / "m.st")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "non-negative integers"),
        ({"dtype": "F32", "shape": "4", "data_offsets": [0, 4]}, "shape '4'"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, "end before they begin"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, "data_offsets"),
        ({"dtype": "F32", "shape": [1]}, "needs 'dtype', 'shape' and 'data_offsets'"),
        ("F32", "needs 'dtype'"),
    ],
)
def test_malformed_entries(tmp_path, entry, message):
    write_with_header(tmp_path / "m.st", {"x": entry}, bytes(4))
    with pytest.raises(ModelFileError, match=message):
        load_safetensors(tmp_path / "m.st")


def test_overlapping_offsets(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    write_with_header(tmp_path / "m.st", header, bytes(12))
    with pytest.raises(ModelFileError, match="'a' and 'b' overlap"):
        load_safetensors(tmp_path / "m.st")


def test_offsets_outside_the_data(tmp_path):
    write_with_header(tmp_path / "m.st", {"x": {"dtype": "U8", "shape": [4], "data_offsets": [96, 100]}}, bytes(4))
    with pytest.raises(ModelFileError, match=r"needs data bytes \[96, 100\) but the data section has only 4"):
        load_safetensors(tmp_path / "m.st")


def test_gap_and_trailing_bytes(tmp_path):
    write_with_header(tmp_path / "m.st", {"x": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4))
    with pytest.raises(ModelFileError, match=r"bytes \[0, 2\) belong to no tensor"):
        load_safetensors(tmp_path / "m.st")
    write_with_header(tmp_path / "m.st", {"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, bytes(4))
    with pytest.raises(ModelFileError, match="2 bytes after the last tensor"):
        load_safetensors(tmp_path / "m.st")


def test_bad_metadata(tmp_path):
    write_with_header(tmp_path / "m.st", {"__metadata__": {"epochs": 3}}, b"")
    with pytest.raises(ModelFileError, match="'__metadata__' must map strings to strings"):
        load_safetensors(tmp_path / "m.st")


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


# ------------------------------------------------------------------------------------------------ writing errors
def test_refuses_what_safetensors_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="'x' has dtype object"):
        save_safetensors(tmp_path / "m.st", {"x": np.array([None])})
    with pytest.raises(TypeError, match="metadata maps str to str"):
        save_safetensors(tmp_path / "m.st", {"x": np.ones(1)}, {"epochs": 3})
    with pytest.raises(ValueError, match="__metadata__"):
        save_safetensors(tmp_path / "m.st", {"__metadata__": np.ones(1)})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ atomic writes
class FullDisk:
    """Wraps the temporary file so that its third write fails, as a full disk would."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, b):
        self.writes += 1
        if self.writes == 3:
            self.f.write(b[: len(b) // 2])
            raise OSError(28, "No space left on device")
        return self.f.write(b)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def assert_old_file_intact(path, before: bytes):
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    load_safetensors(path)


def test_crash_mid_write_leaves_the_old_file(saved, monkeypatch):
    path, before, _ = saved
    real = saving.tempfile.NamedTemporaryFile
    monkeypatch.setattr(saving.tempfile, "NamedTemporaryFile", lambda **kw: FullDisk(real(**kw)))
    with pytest.raises(OSError, match="No space left"):
        save_safetensors(path, {"new": np.ones(1000)})
    assert_old_file_intact(path, before)


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_crash_before_the_rename_leaves_the_old_file(saved, monkeypatch, step):
    path, before, _ = saved

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(saving.os, step, crash)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors(path, {"new": np.ones(10)})
    monkeypatch.undo()
    assert_old_file_intact(path, before)


def test_overwrite_replaces_and_keeps_permissions(saved):
    path, _, _ = saved
    os.chmod(path, 0o640)
    save_safetensors(path, {"new": np.ones(2)})
    assert list(load_safetensors(path)[0]) == ["new"]
    if os.name == "posix":
        assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
