"""Dataset loaders: IDX and CIFAR-binary parsers, lookup and download, image folders, the shapes dataset.

Everything but the ``data``-marked tests runs on small files written to ``tmp_path``; downloads go to ``file://``
URLs, so no test needs the network. The ``data`` tests read the real files under ``$MINICNN_DATA_DIR``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicnn import datasets
from minicnn.datasets import (
    CIFAR10_CLASSES,
    SHAPES_CLASSES,
    DatasetNotFoundError,
    image_folder,
    list_images,
    load_cifar10,
    load_image,
    load_images,
    load_mnist,
    load_shapes,
    read_cifar_batch,
    read_idx,
)

REAL_DATA = os.environ.get("MINICNN_DATA_DIR")
IDX_GZ = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
          "t10k-labels-idx1-ubyte.gz"]  # fmt: skip


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test sees the user's cache, the real data folder or the network unless it asks."""
    monkeypatch.setenv("MINICNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MINICNN_DATA_DIR", raising=False)
    for name in datasets.MIRRORS:
        monkeypatch.setitem(datasets.MIRRORS, name, [(tmp_path / "offline").as_uri() + "/"])


# ---------------------------------------------------------------------------------------------------------------
# helpers that write small dataset files


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.uint8)
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx(path: Path, a, compress=True) -> Path:
    data = idx_bytes(a)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist(folder: Path, n_train=12, n_test=5, seed=0, compress=True) -> dict:
    """Small MNIST-like IDX files under the official names; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", x, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y, compress)
        arrays[prefix] = (x, y)
    return arrays


@pytest.fixture
def small_sizes(monkeypatch):
    """Let the loaders accept the 12 + 5 sample files these tests write."""
    for name in ("mnist", "fashion-mnist"):
        monkeypatch.setitem(datasets.SPLIT_SIZES, name, {"train": 12, "test": 5})
    monkeypatch.setitem(datasets.SPLIT_SIZES, "cifar10", {"train": 10, "test": 2})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_jpeg(path: Path, seed=0, size=(40, 30), fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, fmt)
    return path


# ---------------------------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    y = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "x", x, compress)), x)
    got = read_idx(write_idx(tmp_path / "y", y, compress))
    assert got.dtype == np.uint8 and got.shape == (5,) and got.flags.writeable
    np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize(
    "content, message",
    [
        (idx_bytes(np.zeros((3, 4, 4)))[:-5], "truncated: header says shape (3, 4, 4) = 48 bytes, only 43"),
        (idx_bytes(np.zeros((3, 4, 4)))[:9], "truncated: the header ends"),
        (idx_bytes(np.zeros(4)) + b"xx", "extra bytes after the 4 data bytes"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a uint8 IDX file: its magic number is 0x89504e47"),
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4), "not a uint8 IDX file"),  # float IDX
        (b"", "not a uint8 IDX file"),
    ],
)
def test_read_idx_rejects_bad_files_naming_them(tmp_path, content, message):
    path = tmp_path / "weird-file-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="weird-file-idx3-ubyte") as err:
        read_idx(path)
    assert message in str(err.value)


def test_read_idx_rejects_damaged_gzip(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.ones((50, 28, 28)))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match=r"x\.gz is a damaged gzip file"):
        read_idx(path)


def test_load_mnist_from_path_all_spellings(tmp_path, small_sizes):
    arrays = write_mnist(tmp_path / "gz")
    (x, y), (xt, yt) = load_mnist(tmp_path / "gz")
    assert x.shape == (12, 28, 28) and y.shape == (12,) and xt.shape == (5, 28, 28)
    assert x.dtype == y.dtype == np.uint8
    np.testing.assert_array_equal(x, arrays["train"][0])
    np.testing.assert_array_equal(yt, arrays["t10k"][1])
    write_mnist(tmp_path / "raw", compress=False)
    assert load_mnist(str(tmp_path / "raw"))[0][0].shape == (12, 28, 28)
    dotted = tmp_path / "dotted"  # as Windows tools extract them: train-images.idx3-ubyte
    write_mnist(dotted, compress=False)
    for f in dotted.iterdir():
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    assert load_mnist(dotted)[1][0].shape == (5, 28, 28)


def test_load_mnist_checks_counts_shapes_and_labels(tmp_path, small_sizes, monkeypatch):
    write_mnist(tmp_path)
    monkeypatch.setitem(datasets.SPLIT_SIZES, "mnist", {"train": 60000, "test": 10000})
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: expected MNIST train images of shape"):
        load_mnist(tmp_path)
    monkeypatch.setitem(datasets.SPLIT_SIZES, "mnist", {"train": 12, "test": 5})
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(5, 10))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: labels must be in 0\.\.9, found 10"):
        load_mnist(tmp_path)


def test_lookup_order_path_then_data_dir_then_cache(tmp_path, small_sizes, monkeypatch):
    a = write_mnist(tmp_path / "explicit", seed=1)
    b = write_mnist(tmp_path / "data" / "mnist", seed=2)
    c = write_mnist(tmp_path / "cache" / "mnist", seed=3)
    monkeypatch.setenv("MINICNN_DATA_DIR", str(tmp_path / "data"))
    np.testing.assert_array_equal(load_mnist(tmp_path / "explicit")[0][0], a["train"][0])
    np.testing.assert_array_equal(load_mnist(tmp_path / "nowhere")[0][0], b["train"][0])
    np.testing.assert_array_equal(load_mnist()[0][0], b["train"][0])
    monkeypatch.delenv("MINICNN_DATA_DIR")
    np.testing.assert_array_equal(load_mnist()[0][0], c["train"][0])


# ---------------------------------------------------------------------------------------------------------------
# downloads (file:// mirrors)


def test_download_into_cache_with_checksum(tmp_path, small_sizes, monkeypatch):
    mirror = tmp_path / "mirror"
    arrays = write_mnist(mirror, seed=4)
    monkeypatch.setitem(datasets.SHA256, "mnist", {f: sha256(mirror / f) for f in IDX_GZ})
    # the first mirror is down; the second one answers
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [(tmp_path / "down").as_uri() + "/", mirror.as_uri() + "/"])
    (x, y), _ = load_mnist()
    np.testing.assert_array_equal(x, arrays["train"][0])
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(IDX_GZ)  # no .part left behind
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [])  # second call: from the cache, no download
    np.testing.assert_array_equal(load_mnist()[0][1], arrays["train"][1])


def test_checksum_mismatch_is_rejected_and_leaves_nothing(tmp_path, small_sizes, monkeypatch):
    mirror = tmp_path / "mirror"
    write_mnist(mirror)  # not the official bytes: the official SHA-256 values cannot match
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist()
    assert "SHA-256 mismatch, expected 440fcabf" in str(err.value)
    cache = tmp_path / "cache" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_error_says_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path / "mine")
    msg = str(err.value)
    assert isinstance(err.value, DatasetNotFoundError)
    assert "MNIST is not on disk and could not be downloaded" in msg
    assert all(f in msg for f in IDX_GZ)
    assert str(tmp_path / "cache" / "mnist") in msg and str(tmp_path / "mine") in msg
    assert "MINICNN_DATA_DIR" in msg
    monkeypatch.setenv("MINICNN_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError, match=r"(?s)data/fashion-mnist.*t10k-labels-idx1-ubyte\.gz"):
        datasets.load_fashion_mnist()


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        headers = {"Content-Length": "4000000"}

        def read(self, n=-1):
            if self.tell() >= 1 << 20:
                raise ConnectionResetError("connection reset by peer")
            return super().read(n)

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda *a, **k: Broken(bytes(4_000_000)))
    with pytest.raises(OSError, match="connection reset by peer"):
        datasets.download(["https://example.invalid/f.gz"], tmp_path / "dl" / "f.gz", verbose=0)
    assert list((tmp_path / "dl").iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 binary


def cifar_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """Records of label byte + CHW pixels, as in cifar-10-binary.tar.gz."""
    chw = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return np.concatenate([y[:, None], chw], axis=1).astype(np.uint8).tobytes()


def write_cifar(folder: Path, n_per_batch=2, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        x = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch, dtype=np.uint8)
        (folder / name).write_bytes(cifar_bytes(x, y))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def test_read_cifar_batch_layout(tmp_path):
    x = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    x[0, 1, 2] = (10, 20, 30)  # row 1, column 2: red 10, green 20, blue 30
    path = tmp_path / "b.bin"
    path.write_bytes(cifar_bytes(x, np.array([7, 3], dtype=np.uint8)))
    raw = path.read_bytes()
    assert raw[0] == 7 and raw[1 + 32 + 2] == 10 and raw[1 + 1024 + 32 + 2] == 20  # planes on disk
    gx, gy = read_cifar_batch(path)
    assert gx.shape == (2, 32, 32, 3) and gx.dtype == gy.dtype == np.uint8 and gx.flags.c_contiguous
    assert tuple(gx[0, 1, 2]) == (10, 20, 30) and list(gy) == [7, 3]


def test_read_cifar_batch_rejects_bad_sizes_and_labels(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(bytes(3073 * 2 - 1))
    with pytest.raises(ValueError, match=r"data_batch_1\.bin is not a CIFAR-10 binary batch: its 6145 bytes"):
        read_cifar_batch(path)
    path.write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(ValueError, match="found label 12"):
        read_cifar_batch(path)


def test_load_cifar10_from_path_and_subfolder(tmp_path, small_sizes):
    x, y, xt, yt = write_cifar(tmp_path / "flat")
    (gx, gy), (gxt, gyt) = load_cifar10(tmp_path / "flat")
    assert gx.shape == (10, 32, 32, 3) and gy.shape == (10,) and gxt.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gyt, yt)
    write_cifar(tmp_path / "extracted" / "cifar-10-batches-bin")
    assert load_cifar10(tmp_path / "extracted")[0][0].shape == (10, 32, 32, 3)


def test_load_cifar10_download_extracts_only_the_batches(tmp_path, small_sizes, monkeypatch):
    src = tmp_path / "src"
    x, *_ = write_cifar(src)
    archive = tmp_path / "mirror" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(src.iterdir()):
            tar.add(f, arcname=f"cifar-10-batches-bin/{f.name}")
        evil = tarfile.TarInfo("../../escaped.bin")  # a hostile member must not be written anywhere
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    monkeypatch.setitem(datasets.SHA256, "cifar10", {archive.name: sha256(archive)})
    monkeypatch.setitem(datasets.MIRRORS, "cifar10", [archive.parent.as_uri() + "/"])
    (gx, _), _ = load_cifar10()
    np.testing.assert_array_equal(gx, x)
    cache = tmp_path / "cache" / "cifar10"
    assert [p.name for p in cache.iterdir()] == ["cifar-10-batches-bin"]  # archive removed after extraction
    assert not list(tmp_path.rglob("escaped.bin"))


def test_load_cifar10_offline_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"(?s)CIFAR-10.*cifar-10-batches-bin/data_batch_1\.bin"):
        load_cifar10()


def test_load_cifar10_falls_back_to_jpeg_subset(tmp_path, monkeypatch):
    for split in ("train", "test"):
        for k, name in enumerate(CIFAR10_CLASSES):
            write_jpeg(tmp_path / "data" / "cifar10-jpeg-subset" / split / name / "0000.jpg", k, (32, 32))
    monkeypatch.setenv("MINICNN_DATA_DIR", str(tmp_path / "data"))
    with pytest.warns(UserWarning, match="JPEG subset"):
        (x, y), (xt, yt) = load_cifar10()
    assert x.shape == (10, 32, 32, 3) and y.dtype == np.uint8 and list(yt) == list(range(10))


# ---------------------------------------------------------------------------------------------------------------
# image folders


@pytest.fixture
def folder(tmp_path):
    """3 classes, 4 images each (one PNG, one nested), a corrupt and a truncated JPEG, a stray .txt."""
    root = tmp_path / "pets"
    for k, name in enumerate(["dogs", "cats", "birds"]):
        for i in range(3):
            write_jpeg(root / name / f"{name}.{i}.jpg", seed=10 * k + i)
        write_jpeg(root / name / "more" / f"{name}.9.PNG", seed=99, fmt="PNG")
    (root / "cats" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = write_jpeg(tmp_path / "whole.jpg", seed=5, size=(200, 150)).read_bytes()
    (root / "dogs" / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (root / "birds" / "notes.txt").write_text("ignore me")
    (root / ".ipynb_checkpoints").mkdir()
    return root


def test_image_folder_classes_files_and_one_warning(folder):
    data = image_folder(folder, image_size=(24, 16))
    assert data.class_names == ["birds", "cats", "dogs"]
    assert len(data) == 14 and not any(p.endswith(".txt") for p in data.file_paths)
    assert list(np.bincount(data.labels)) == [4, 5, 5]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y = data.load()
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "skipped 2 of 14" in msg and "corrupt.jpg" in msg and "truncated.JPEG" in msg
    assert x.shape == (12, 24, 16, 3) and x.dtype == np.uint8  # image_size is (height, width)
    assert list(np.bincount(y)) == [4, 4, 4]


def test_image_folder_grayscale_and_class_names(folder):
    data = image_folder(folder, image_size=8, color_mode="grayscale", class_names=["dogs", "birds"])
    assert data.class_names == ["dogs", "birds"] and len(data) == 9
    with pytest.warns(UserWarning, match="truncated"):
        x, y = data.load()
    assert x.shape == (8, 8, 8, 1) and list(np.bincount(y)) == [4, 4]
    with pytest.raises(ValueError, match=r"\['fish'\] are not subfolders"):
        image_folder(folder, class_names=["fish"])


def test_validation_split_is_deterministic_and_disjoint(folder):
    train, val = image_folder(folder, validation_split=0.3, subset="both", seed=7)
    assert len(train) + len(val) == 14 and len(val) == 4
    assert not set(train.file_paths) & set(val.file_paths)
    again = image_folder(folder, validation_split=0.3, subset="validation", seed=7)
    assert again.file_paths == val.file_paths and list(again.labels) == list(val.labels)
    assert image_folder(folder, validation_split=0.3, subset="training", seed=7).file_paths == train.file_paths
    other = image_folder(folder, validation_split=0.3, subset="validation", seed=8)
    assert other.file_paths != val.file_paths
    with pytest.raises(ValueError, match="needs a seed"):
        image_folder(folder, validation_split=0.3, subset="training")
    with pytest.raises(ValueError, match="needs validation_split"):
        image_folder(folder, subset="training")


def test_batches_are_bounded_complete_and_warn_once(folder):
    data = image_folder(folder, image_size=(8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(data.batches(batch_size=5))
    assert [len(b[0]) for b in batches] == [5, 5, 2]  # 12 good files: bad ones are skipped, not padded
    assert len(caught) == 1 and "corrupt.jpg" in str(caught[0].message)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lx, ly = data.load()
    np.testing.assert_array_equal(x, lx)
    np.testing.assert_array_equal(y, ly)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s1 = np.concatenate([b[1] for b in data.batches(4, shuffle=True, seed=3)])
        s2 = np.concatenate([b[1] for b in data.batches(4, shuffle=True, seed=3)])
    np.testing.assert_array_equal(s1, s2)
    assert sorted(s1) == sorted(ly)


def test_load_image_helpers(folder, tmp_path):
    files = list_images(folder)
    assert len(files) == 14 and files == sorted(files)
    assert list_images(files[0]) == [files[0]]
    one = load_image(files[0])
    assert one.shape == (30, 40, 3) and one.dtype == np.uint8  # original size kept: height 30, width 40
    assert load_image(files[0], (5, 7), "grayscale").shape == (5, 7, 1)
    with pytest.raises(ValueError, match="cannot decode image .*corrupt.jpg"):
        load_image(folder / "cats" / "corrupt.jpg", (8, 8))
    x, ok, bad = load_images(files, (8, 8))
    assert x.shape == (12, 8, 8, 3) and len(ok) == 12
    assert sorted(Path(p).name for p in bad) == ["corrupt.jpg", "truncated.JPEG"]
    with pytest.raises(FileNotFoundError):
        image_folder(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------------------------
# shapes


def test_shapes_shapes_dtype_balance_determinism():
    (x, y), (xt, yt) = load_shapes(n_train=600, n_test=120, image_size=24, seed=3)
    assert x.shape == (600, 24, 24, 3) and xt.shape == (120, 24, 24, 3)
    assert x.dtype == y.dtype == np.uint8
    assert list(np.bincount(y)) == [100] * len(SHAPES_CLASSES) and list(np.bincount(yt)) == [20] * 6
    (x2, y2), (xt2, _) = load_shapes(n_train=600, n_test=120, image_size=24, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(load_shapes(600, 120, 24, seed=4)[0][0], x)
    np.testing.assert_array_equal(load_shapes(n_train=50, n_test=120, image_size=24, seed=3)[1][0], xt)
    assert x.std() > 30  # varied pictures, not a blank


def test_shapes_fast():
    """2,500 images in under 2 s of CPU time (process time: other jobs on a busy machine do not count)."""
    load_shapes(100, 10)
    t = time.process_time()
    load_shapes(2000, 500)
    took = time.process_time() - t
    assert took < 2.0, f"2,500 shape images took {took:.2f} s of CPU"


def test_shapes_defeat_a_linear_classifier():
    """Least squares from pixels to one-hot labels: barely above chance (1/6), so a CNN has work to do."""
    (x, y), (xt, yt) = load_shapes(n_train=600, n_test=300, seed=0)
    X = np.c_[x.reshape(len(x), -1) / 255.0, np.ones(len(x))]
    Xt = np.c_[xt.reshape(len(xt), -1) / 255.0, np.ones(len(xt))]
    alpha = np.linalg.solve(X @ X.T + 10.0 * np.eye(len(X)), np.eye(6)[y])  # ridge, in its dual form
    accuracy = np.mean((Xt @ (X.T @ alpha)).argmax(1) == yt)
    assert accuracy < 0.4


# ---------------------------------------------------------------------------------------------------------------
# the real files under $MINICNN_DATA_DIR


def real(sub: str) -> Path:
    if not REAL_DATA:
        pytest.skip("MINICNN_DATA_DIR is not set (point it at shared/data to run the real-data tests)")
    folder = Path(REAL_DATA) / sub
    if not folder.is_dir():
        pytest.skip(f"{folder} does not exist")
    return folder


@pytest.mark.data
def test_real_mnist(monkeypatch):
    monkeypatch.setenv("MINICNN_DATA_DIR", str(real("mnist").parent))
    (x, y), (xt, yt) = load_mnist()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert list(y[:4]) == [5, 0, 4, 1]
    assert list(np.bincount(yt)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(x.mean() - 33.32) < 0.01


@pytest.mark.data
def test_real_fashion_mnist():
    (x, y), (xt, yt) = datasets.load_fashion_mnist(real("fashion-mnist"))
    assert x.shape == (60000, 28, 28) and list(np.bincount(y)) == [6000] * 10
    assert list(yt[:4]) == [9, 2, 1, 1]


@pytest.mark.data
def test_real_cifar10_jpeg_subset(monkeypatch):
    monkeypatch.setenv("MINICNN_DATA_DIR", str(real("cifar10-jpeg-subset").parent))
    with pytest.warns(UserWarning, match="JPEG subset"):
        (x, y), (xt, yt) = load_cifar10()
    assert x.shape == (1000, 32, 32, 3) and xt.shape == (1000, 32, 32, 3) and y.dtype == np.uint8
    assert list(np.bincount(y)) == [100] * 10 and list(np.bincount(yt)) == [100] * 10


@pytest.mark.data
def test_real_cats_vs_dogs():
    root = real("cats-vs-dogs")
    train = image_folder(root / "train", image_size=(64, 64))
    assert train.class_names == ["cats", "dogs"] and len(train) == 400
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every photo decodes
        x, y = train.load()
    assert x.shape == (400, 64, 64, 3) and list(np.bincount(y)) == [200, 200]
    assert 60 < x.mean() < 180
