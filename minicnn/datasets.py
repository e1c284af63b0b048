"""Datasets as NumPy arrays, the way ``keras.datasets`` hands them out.

Every ``load_*`` returns ``(x_train, y_train), (x_test, y_test)`` with uint8 pixels and uint8 labels:

==========================  ===============================  ====================  ======================
loader                      x                                y                     needs
==========================  ===============================  ====================  ======================
``load_shapes()``           ``(2000, 32, 32, 3)`` RGB        ``(2000,)`` 0..5      nothing: drawn by code
``load_mnist()``            ``(60000, 28, 28)`` grayscale    ``(60000,)`` 0..9     4 IDX files, 11 MB
``load_fashion_mnist()``    ``(60000, 28, 28)`` grayscale    ``(60000,)`` 0..9     4 IDX files, 30 MB
``load_cifar10()``          ``(50000, 32, 32, 3)`` RGB       ``(50000,)`` 0..9     binary version, 163 MB
==========================  ===============================  ====================  ======================

MNIST-style x has no channel axis (as in Keras): add one with ``x[..., None]`` before a ``Conv2D``.

Where the files are looked for, in order:

1. the ``path=`` folder, when given;
2. ``$MINICNN_DATA_DIR/<name>/`` (``mnist``, ``fashion-mnist``, ``cifar10``);
3. the cache, ``$MINICNN_CACHE_DIR/<name>/``, by default ``~/.cache/minicnn/<name>/``;
4. otherwise the files are downloaded from the dataset's public mirrors into the cache, with a progress bar.

A download goes to a temporary file in the cache folder and is renamed only once it is complete and its SHA-256
matches the official file's, so an interrupted download never leaves a half file behind. Files already on disk
are checked by their headers and counts instead (copies made elsewhere may be byte-different, e.g. re-gzipped).
With no file on disk and no network, one ``DatasetNotFoundError`` says which files to put in which folder.

Image folders (``image_folder``, ``load_image``, ...) live in ``minicnn.images`` and are re-exported here.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np

from minicnn.images import (  # noqa: F401  (re-exported: one import for all the data)
    IMAGE_EXTENSIONS,
    ImageFolder,
    image_folder,
    list_images,
    load_image,
    load_images,
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SHAPES_CLASSES = ["circle", "square", "triangle", "plus", "ring", "star"]

# Public mirrors, tried in order. Tests point these at file:// URLs.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # plain http: the SHA-256 guards it
    ],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}

# SHA-256 of the official files, checked on download. The t10k MNIST and all Fashion-MNIST values equal those of
# the byte-identical copies in shared/data; the train MNIST and CIFAR-10 values are the ones published by
# several independent loaders (torchvision's Ruby port, TensorFlow-based downloaders, Go's gomlx).
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "cifar10": {
        "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    },
}

# Samples per split: what a local copy must hold.
SPLIT_SIZES = {
    "mnist": {"train": 60000, "test": 10000},
    "fashion-mnist": {"train": 60000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
}

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10 (binary version)"}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither on disk nor downloadable. The message lists the files and where to put them."""


# ----------------------------------------------------------------------------------------------------------------
# Where files live


def cache_dir(name: str) -> Path:
    """``$MINICNN_CACHE_DIR/<name>``, by default ``~/.cache/minicnn/<name>``: where downloads go."""
    root = os.environ.get("MINICNN_CACHE_DIR") or "~/.cache/minicnn"
    return Path(root).expanduser() / name


def _search_folders(name: str, path) -> list[Path]:
    folders = [Path(path).expanduser()] if path is not None else []
    if os.environ.get("MINICNN_DATA_DIR"):
        folders.append(Path(os.environ["MINICNN_DATA_DIR"]).expanduser() / name)
    folders.append(cache_dir(name))
    return folders


def _first_existing(folder: Path, names) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _not_found(name: str, files: list[str], searched: list[Path], reasons: list[str], extra: str = ""):
    env = os.environ.get("MINICNN_DATA_DIR")
    env_hint = (
        f"$MINICNN_DATA_DIR/{name} (= {Path(env) / name})"
        if env
        else f"<folder>/{name} and set MINICNN_DATA_DIR=<folder>"
    )
    tried = "".join(f"\n  {r}" for r in reasons) or " (nothing)"
    return DatasetNotFoundError(
        f"{_TITLES[name]} is not on disk and could not be downloaded. Tried:{tried}\n"
        f"Put these files in {cache_dir(name)} (the cache), or in {env_hint}, or in any folder passed as path=:\n"
        + "".join(f"  {f}\n" for f in files)
        + extra
        + "Folders searched: "
        + ", ".join(str(f) for f in searched)
    )


# ----------------------------------------------------------------------------------------------------------------
# Downloads


def _progbar(total_bytes, verbose):
    if not verbose:
        return None
    try:
        from minicnn.progress import Progbar
    except ImportError:
        return None
    return Progbar(None if total_bytes is None else -(-total_bytes // 1024), unit_name="KiB")


def download(urls, dest, sha256: str | None = None, verbose: int = 1, timeout: float = 30.0) -> Path:
    """Fetch the first of ``urls`` that works into ``dest``, atomically, checked against ``sha256``.

    The bytes stream into a temporary file next to ``dest``, hashed on the way; the file is renamed to ``dest``
    only when complete and matching. A URL that fails (network error, wrong checksum) leaves nothing behind and
    the next one is tried. Raises ``OSError`` with one line per failed URL when none works.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        try:
            digest = hashlib.sha256()
            request = urllib.request.Request(url, headers={"User-Agent": "minicnn"})
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
                size = response.headers.get("Content-Length")
                if verbose:
                    print(f"Downloading {url}")
                bar = _progbar(int(size) if size else None, verbose)
                got = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(got // 1024)
                if bar is not None:
                    bar.update(-(-got // 1024), finalize=True)
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                reasons.append(f"{url}: SHA-256 mismatch, expected {sha256}, got {digest.hexdigest()}")
                continue
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors; ValueError: malformed URL
            reasons.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise OSError("\n".join(reasons) or "no URL to download from")


# ----------------------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"  # gzip's magic number, whatever the file is called
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _read_into(f, out: np.ndarray) -> int:
    """Fill ``out`` (contiguous) from the stream ``f``; returns how many bytes came."""
    view = memoryview(out.reshape(-1))
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def read_idx(path) -> np.ndarray:
    """Read one IDX file, gzip-compressed or raw, into a uint8 array.

    The IDX layout (big-endian): 2 zero bytes, a type code (0x08 = unsigned byte, the only one MNIST uses),
    the number of dimensions ``d``, then ``d`` uint32 sizes, then the data in C order. So the magic number
    ``0x00000801`` is a vector (labels ``(N,)``) and ``0x00000803`` a 3-D array (images ``(N, 28, 28)``).
    Raises ``ValueError`` naming the file when it is not IDX, truncated, or longer than its header says.
    """
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != 0x08 or magic[3] == 0:
                raise ValueError(
                    f"{path} is not a uint8 IDX file: its magic number is 0x{magic.hex() or 'nothing'}, "
                    "expected 0x00000801 (labels) or 0x00000803 (images)"
                )
            ndim = magic[3]
            header = f.read(4 * ndim)
            if len(header) < 4 * ndim:
                raise ValueError(f"{path} is truncated: the header ends before its {ndim} dimension sizes")
            dims = tuple(int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(ndim))
            n = int(np.prod(dims))
            if n > 1 << 32:  # a foreign file that happens to start with 0 0 8: do not try to allocate it
                raise ValueError(f"{path} is not a plausible IDX file: its header announces shape {dims}")
            out = np.empty(dims, dtype=np.uint8)
            got = _read_into(f, out)
            if got < n:
                raise ValueError(f"{path} is truncated: header says shape {dims} = {n} bytes, only {got} follow")
            if f.read(1):
                raise ValueError(f"{path} has extra bytes after the {n} data bytes of shape {dims}")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is a damaged gzip file: {e}") from e
    return out


def _idx_names(stem: str) -> list[str]:
    """Accepted names of one IDX file: the official ``.gz``, uncompressed, and Windows's dotted spelling."""
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte, as Windows tools extract it
    return [stem + ".gz", stem, dotted, dotted + ".gz"]


_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _check_split(name, split, x, y, x_file, y_file, image_shape, num_classes=10):
    n = SPLIT_SIZES[name][split]
    if x.shape[1:] != image_shape or len(x) != n:
        raise ValueError(
            f"{x_file}: expected {_TITLES[name]} {split} images of shape {(n, *image_shape)}, got {x.shape}"
        )
    if y.shape != (n,):
        raise ValueError(f"{y_file}: expected {_TITLES[name]} {split} labels of shape ({n},), got {y.shape}")
    if y.max(initial=0) >= num_classes:
        raise ValueError(f"{y_file}: labels must be in 0..{num_classes - 1}, found {int(y.max())}")


def _load_idx_dataset(name: str, path):
    wanted = [stem for pair in _IDX_STEMS.values() for stem in pair]
    searched = _search_folders(name, path)
    folder = next((d for d in searched if all(_first_existing(d, _idx_names(s)) for s in wanted)), None)
    if folder is None:
        folder = cache_dir(name)
        for stem in wanted:
            if _first_existing(folder, _idx_names(stem)) is None:
                file = stem + ".gz"
                try:
                    download([m + file for m in MIRRORS[name]], folder / file, SHA256[name][file])
                except OSError as e:
                    files = [s + ".gz" for s in wanted]
                    extra = "(the uncompressed IDX files are accepted too)\n"
                    raise _not_found(name, files, searched, str(e).splitlines(), extra) from None
    result = []
    for split, (x_stem, y_stem) in _IDX_STEMS.items():
        x_file, y_file = _first_existing(folder, _idx_names(x_stem)), _first_existing(folder, _idx_names(y_stem))
        x, y = read_idx(x_file), read_idx(y_file)
        _check_split(name, split, x, y, x_file, y_file, (28, 28))
        result.append((x, y))
    return tuple(result)


def load_mnist(path=None):
    """MNIST handwritten digits: ``(x_train, y_train), (x_test, y_test)``.

    x: uint8 ``(60000, 28, 28)`` / ``(10000, 28, 28)``, 0 = background, 255 = ink; y: uint8 digits 0..9.
    ``path``: a folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (or uncompressed); see the
    module docstring for where else the files are looked for, and the download.
    """
    return _load_idx_dataset("mnist", path)


def load_fashion_mnist(path=None):
    """Fashion-MNIST (Zalando): same shapes and files as ``load_mnist``; class names in ``FASHION_MNIST_CLASSES``."""
    return _load_idx_dataset("fashion-mnist", path)


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10, binary version

_CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32x32 planes
_CIFAR_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
_CIFAR_SUBDIR = "cifar-10-batches-bin"  # the folder inside cifar-10-binary.tar.gz


def read_cifar_batch(path):
    """Read one CIFAR-10 binary batch into ``x`` uint8 ``(N, 32, 32, 3)`` and ``y`` uint8 ``(N,)``.

    The file is ``N`` records of 3073 bytes: the label (0..9), then 1024 red, 1024 green and 1024 blue bytes,
    each plane row by row. Channels-first on disk, so the pixels are transposed to ``(N, H, W, C)``.
    Raises ``ValueError`` naming the file when its size or labels are wrong.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % _CIFAR_RECORD:
        raise ValueError(
            f"{path} is not a CIFAR-10 binary batch: its {data.size} bytes are not a whole number of "
            f"{_CIFAR_RECORD}-byte records (1 label byte + 3072 pixel bytes)"
        )
    records = data.reshape(-1, _CIFAR_RECORD)
    y = records[:, 0].copy()
    if y.max() > 9:
        raise ValueError(f"{path} is not a CIFAR-10 binary batch: found label {int(y.max())}, expected 0..9")
    x = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return x, y


def _cifar_binary_folder(folder: Path) -> Path | None:
    names = _CIFAR_FILES["train"] + _CIFAR_FILES["test"]
    for d in (folder, folder / _CIFAR_SUBDIR):
        if all((d / n).is_file() for n in names):
            return d
    return None


def _load_cifar_binary(folder: Path):
    result = []
    for split, names in _CIFAR_FILES.items():
        parts = [read_cifar_batch(folder / n) for n in names]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        n = SPLIT_SIZES["cifar10"][split]
        if len(x) != n:
            raise ValueError(f"{folder}: expected {n} CIFAR-10 {split} records in {names}, found {len(x)}")
        result.append((x, y))
    return tuple(result)


def _load_cifar_jpeg(folder: Path):
    result = []
    for split in ("train", "test"):
        data = image_folder(folder / split, image_size=(32, 32))
        if data.class_names != CIFAR10_CLASSES:
            raise ValueError(f"{folder / split}: class folders {data.class_names} are not {CIFAR10_CLASSES}")
        x, y = data.load()
        result.append((x, y.astype(np.uint8)))
    return tuple(result)


def _extract_cifar(archive: Path, folder: Path) -> None:
    """Extract only the expected batch files, by exact name, each through a temp file: no path in the archive
    can write outside ``folder`` and an interrupted extraction leaves no partial batch."""
    out = folder / _CIFAR_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"{_CIFAR_SUBDIR}/{n}" for n in _CIFAR_FILES["train"] + _CIFAR_FILES["test"]}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                fd, tmp = tempfile.mkstemp(dir=out, suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as dst, tar.extractfile(member) as src:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    os.replace(tmp, out / Path(member.name).name)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)


def load_cifar10(path=None):
    """CIFAR-10: ``(x_train, y_train), (x_test, y_test)``, x uint8 ``(N, 32, 32, 3)``, y uint8 ``(N,)``.

    Unlike Keras, whose y is ``(N, 1)``, y here is flat ``(N,)`` like the other loaders. Class names are in
    ``CIFAR10_CLASSES``. Reads the *binary* version (``data_batch_1.bin`` .. ``data_batch_5.bin``,
    ``test_batch.bin``; 50000 + 10000 images), no pickle involved, from ``path``, ``$MINICNN_DATA_DIR/cifar10``
    or the cache, directly or in their ``cifar-10-batches-bin/`` subfolder.

    When no binary copy is on disk but the JPEG subset is (``$MINICNN_DATA_DIR/cifar10-jpeg-subset/`` or a
    ``path`` laid out as ``{train,test}/<class>/*.jpg``), that is loaded instead, with a warning: 1000 + 1000
    images, lossy re-encodings. Otherwise ``cifar-10-binary.tar.gz`` (163 MB) is downloaded and extracted.
    """
    searched = _search_folders("cifar10", path)
    for folder in searched:
        found = _cifar_binary_folder(folder)
        if found is not None:
            return _load_cifar_binary(found)
    jpeg = [Path(path).expanduser()] if path is not None else []
    if os.environ.get("MINICNN_DATA_DIR"):
        jpeg.append(Path(os.environ["MINICNN_DATA_DIR"]).expanduser() / "cifar10-jpeg-subset")
    for folder in jpeg:
        if (folder / "train" / "airplane").is_dir() and (folder / "test" / "airplane").is_dir():
            warnings.warn(
                f"CIFAR-10 binary version not found; loading the JPEG subset in {folder} instead (lossy "
                f"re-encodings, not the full 50000 + 10000). For the full set put the binary version in "
                f"{cache_dir('cifar10')}.",
                stacklevel=2,
            )
            return _load_cifar_jpeg(folder)
    folder = cache_dir("cifar10")
    archive = folder / "cifar-10-binary.tar.gz"
    try:
        download([m + archive.name for m in MIRRORS["cifar10"]], archive, SHA256["cifar10"][archive.name])
    except OSError as e:
        files = [f"{_CIFAR_SUBDIR}/{n}" for n in _CIFAR_FILES["train"] + _CIFAR_FILES["test"]]
        extra = f"(or {archive.name} itself, which is extracted on the next call)\n"
        raise _not_found("cifar10", files, searched, str(e).splitlines(), extra) from None
    _extract_cifar(archive, folder)
    archive.unlink()
    return _load_cifar_binary(folder / _CIFAR_SUBDIR)


# ----------------------------------------------------------------------------------------------------------------
# Shapes: the built-in dataset, drawn by code


def _shape_distance(name, u, v, R):
    """Signed distance, in pixels, from the outline of shape ``name`` (< 0 inside); (u, v) are coordinates in the
    shape's own rotated frame and R its outer radius. Exact for circle and ring, close enough elsewhere for a
    one-pixel antialiased edge."""
    r = np.hypot(u, v)
    if name == "circle":
        return r - R
    if name == "ring":  # annulus between 0.55 R and R
        return np.abs(r - 0.775 * R) - 0.225 * R
    if name == "square":  # half side 0.75 R
        return np.maximum(np.abs(u), np.abs(v)) - 0.75 * R
    if name == "triangle":  # equilateral, circumradius R, so inradius R / 2: inside all three edge half-planes
        d = [u * np.cos(a) + v * np.sin(a) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 - 2 * np.pi / 3)]
        return np.maximum(np.maximum(d[0], d[1]), d[2]) - 0.5 * R
    if name == "plus":  # two bars of half length R and half width 0.28 R
        au, av, w = np.abs(u), np.abs(v), 0.28 * R
        return np.minimum(np.maximum(au - R, av - w), np.maximum(av - R, au - w))
    if name == "star":  # five points: the radius swings between 0.35 R and R with the angle
        return r - R * (0.675 + 0.325 * np.cos(5 * np.arctan2(v, u)))
    raise ValueError(f"unknown shape {name!r}")


def _contrasting_colours(n, rng):
    """Foreground and background RGB in [0, 1], resampled until their luminances differ by >= 0.3."""
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    fg, bg = rng.random((n, 3), dtype=np.float32), rng.random((n, 3), dtype=np.float32)
    while (low := np.abs((fg - bg) @ luma) < 0.3).any():
        fg[low] = rng.random((int(low.sum()), 3), dtype=np.float32)
    return fg, bg


def _render(S, y, R, cx, cy, angle, fg, bg, ramp, sigma, rng):
    """Draw ``len(y)`` images of size ``S`` from their parameters (one entry per image): uint8 ``(m, S, S, 3)``."""
    px = np.arange(S, dtype=np.float32) + 0.5  # pixel centres
    dx = px[None, None, :] - cx[:, None, None]  # (m, 1, S): column offset from the shape's centre
    dy = px[None, :, None] - cy[:, None, None]  # (m, S, 1): row offset
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = dx * c + dy * s, dy * c - dx * s  # rotate the grid, not the shape
    d = np.empty((len(y), S, S), dtype=np.float32)
    for k, name in enumerate(SHAPES_CLASSES):
        m = y == k
        d[m] = _shape_distance(name, u[m], v[m], R[m, None, None])
    alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]  # 1 inside, 0 outside, a 1-pixel ramp on the edge

    t = (px - S / 2) / S  # -0.5 .. 0.5 across the image
    shade = ramp[:, 0, None, None] * t[None, None, :] + ramp[:, 1, None, None] * t[None, :, None]
    img = bg[:, None, None, :] + shade[..., None]  # background with a brightness gradient
    img += alpha * (fg[:, None, None, :] - img)  # blend in the shape: (1 - alpha) * background + alpha * fg
    img += sigma[:, None, None, None] * rng.standard_normal(img.shape, dtype=np.float32)
    img *= 255
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _draw_shapes(n, S, rng, chunk=256):
    y = rng.permutation(np.arange(n) % len(SHAPES_CLASSES)).astype(np.uint8)  # balanced: counts differ by <= 1
    R = rng.uniform(0.25, 0.45, n).astype(np.float32) * S  # outer radius
    cx, cy = (rng.uniform(R, S - R).astype(np.float32) for _ in range(2))  # whole shape inside the image
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    fg, bg = _contrasting_colours(n, rng)
    ramp = rng.uniform(-0.25, 0.25, (n, 2)).astype(np.float32)  # background gradient, across and down
    sigma = rng.uniform(0.02, 0.06, n).astype(np.float32)  # pixel noise
    x = np.empty((n, S, S, 3), dtype=np.uint8)
    for lo in range(0, n, chunk):  # a chunk's float temporaries stay small and are reused: several x faster
        i = slice(lo, lo + chunk)
        x[i] = _render(S, y[i], R[i], cx[i], cy[i], angle[i], fg[i], bg[i], ramp[i], sigma[i], rng)
    return x, y


def load_shapes(n_train: int = 2000, n_test: int = 500, image_size: int = 32, seed: int = 0):
    """The built-in dataset, drawn by code, no download: coloured shapes on coloured backgrounds.

    Returns ``(x_train, y_train), (x_test, y_test)``: x uint8 ``(N, image_size, image_size, 3)``, y uint8 in
    ``0..5`` naming ``SHAPES_CLASSES`` (circle, square, triangle, plus, ring, star), balanced. Size, position,
    rotation, both colours, a background gradient and pixel noise vary per image, so a linear model on the
    pixels does poorly and a small CNN does well. The same ``seed`` gives the same images; the test set does
    not depend on ``n_train`` (train and test draw from two independent streams of the seed).
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels; got {image_size}")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return _draw_shapes(n_train, image_size, train_rng), _draw_shapes(n_test, image_size, test_rng)
