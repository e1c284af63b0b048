"""Image files as arrays: one file, a list of files, or a folder of class subfolders.

``image_folder`` follows Keras's ``image_dataset_from_directory``::

    directory/
        cats/  cat.1.jpg  cat.2.jpg ...     label 0  (class folders in sorted order)
        dogs/  dog.1.jpg ...                label 1

and returns an ``ImageFolder``: the file list and labels up front, the pixels on demand, either all at once
(``load()``, uint8 ``(N, h, w, C)``) or a batch at a time (``batches()``) for folders too large for memory.
Only ``.jpg``, ``.jpeg`` and ``.png`` files count (any case); other files are ignored. A file that Pillow cannot
decode (truncated, not an image) is skipped and reported once, in a single warning, instead of stopping a long
load half-way.

Decoding is Pillow: ``convert('RGB' | 'L' | 'RGBA')`` then a bilinear resize to ``image_size = (height, width)``,
Keras's order, which is the reverse of Pillow's ``(width, height)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_PIL_MODES = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}
_SUBSETS = ("training", "validation", "both")


def is_image_file(path) -> bool:
    """True for a name ending in .jpg, .jpeg or .png, in any case."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(path) -> list[str]:
    """Every image file under ``path``, recursively, in sorted order; a file path gives ``[path]``."""
    p = Path(path)
    if p.is_file():
        return [str(p)]
    if not p.is_dir():
        raise FileNotFoundError(f"no such file or directory: {p}")
    return sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image_file(f))


def _check_mode(color_mode: str) -> str:
    if color_mode not in _PIL_MODES:
        raise ValueError(f"color_mode must be one of {list(_PIL_MODES)}; got {color_mode!r}")
    return _PIL_MODES[color_mode]


def _check_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(s) for s in image_size)
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be (height, width) with positive sizes; got {image_size!r}")
    return h, w


def _decode(path, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    with Image.open(path) as img:
        if size is not None:
            # JPEG only: let the decoder scale by 1/2, 1/4 or 1/8 while staying >= the target size. A 500 px
            # photo shrunk to 64 px then decodes several times faster; the bilinear resize below does the rest.
            img.draft(mode, (size[1], size[0]))
        img = img.convert(mode)
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        x = np.asarray(img, dtype=np.uint8)
    return x[..., None] if x.ndim == 2 else x


def load_image(path, image_size=None, color_mode: str = "rgb") -> np.ndarray:
    """Decode one image file to uint8 ``(h, w, C)``: C = 3 for ``'rgb'``, 1 for ``'grayscale'``, 4 for ``'rgba'``.

    ``image_size = (height, width)`` resizes bilinearly; ``None`` keeps the file's own size. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it cannot be decoded.
    """
    mode, size = _check_mode(color_mode), _check_size(image_size)
    try:
        return _decode(path, size, mode)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot decode image {path}: {e}") from e


def _load_many(paths, size, mode):
    """Decode ``paths`` into one array; returns ``(x, ok_index, bad)`` with ``bad = [(path, reason), ...]``."""
    c = len(mode)  # 'RGB' -> 3, 'L' -> 1, 'RGBA' -> 4
    x = np.empty((len(paths), size[0], size[1], c), dtype=np.uint8)
    ok, bad = [], []
    for i, p in enumerate(paths):
        try:
            x[len(ok)] = _decode(p, size, mode)
            ok.append(i)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            bad.append((str(p), f"{type(e).__name__}: {e}"))
    return x[: len(ok)], np.array(ok, dtype=np.int64), bad


def load_images(paths, image_size=(64, 64), color_mode: str = "rgb"):
    """Decode many files into one uint8 array ``(N_ok, h, w, C)``, skipping those that fail.

    Returns ``(x, ok_paths, bad_paths)``: ``x[i]`` is the image of ``ok_paths[i]``; ``bad_paths`` lists the files
    that could not be read, in the order given. Nothing is warned: the caller decides how to report them.
    """
    mode, size = _check_mode(color_mode), _check_size(image_size)
    if size is None:
        raise ValueError("load_images needs image_size=(height, width) to stack images of different sizes")
    paths = [str(p) for p in paths]
    x, ok, bad = _load_many(paths, size, mode)
    return x, [paths[i] for i in ok], [p for p, _ in bad]


def _warn_bad(bad, total, where, stacklevel=3):
    lines = "\n".join(f"  {p}: {reason}" for p, reason in bad)
    warnings.warn(
        f"skipped {len(bad)} of {total} image files in {where} that could not be decoded:\n{lines}",
        stacklevel=stacklevel,
    )


class ImageFolder:
    """The image files of a class-per-folder dataset, with their labels; pixels are decoded on demand.

    Attributes: ``directory``, ``class_names`` (label ``i`` is ``class_names[i]``), ``file_paths`` (list of str),
    ``labels`` (int32 array, one per file), ``image_size`` ``(height, width)``, ``color_mode``, ``subset``.
    """

    def __init__(self, directory, file_paths, labels, class_names, image_size, color_mode, subset=None):
        self.directory = str(directory)
        self.file_paths = list(file_paths)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.class_names = list(class_names)
        self.image_size = image_size
        self.color_mode = color_mode
        self.subset = subset

    def __len__(self) -> int:
        return len(self.file_paths)

    def __repr__(self) -> str:
        subset = f", subset={self.subset!r}" if self.subset else ""
        return (
            f"ImageFolder({self.directory!r}, {len(self)} files, classes={self.class_names}, "
            f"image_size={self.image_size}, color_mode={self.color_mode!r}{subset})"
        )

    def _order(self, shuffle, seed):
        if shuffle:
            return np.random.default_rng(seed).permutation(len(self))
        return np.arange(len(self))

    def load(self, shuffle: bool = False, seed=None):
        """All images as uint8 ``(N, h, w, C)`` and their int32 labels ``(N,)``.

        Files come in ``file_paths`` order (grouped by class unless this is a validation-split subset), or
        shuffled with ``seed`` (``fit(..., validation_split=...)`` draws a stratified random split either way).
        Undecodable files are dropped and listed in one warning.
        """
        order = self._order(shuffle, seed)
        paths = [self.file_paths[i] for i in order]
        x, ok, bad = _load_many(paths, self.image_size, _PIL_MODES[self.color_mode])
        if bad:
            _warn_bad(bad, len(paths), self.directory)
        return x, self.labels[order][ok]

    def batches(self, batch_size: int = 32, shuffle: bool = False, seed=None):
        """Yield ``(x, y)`` batches, uint8 ``(B, h, w, C)`` and int32 ``(B,)``, one pass over the files.

        Only one batch is in memory at a time. Every batch has ``batch_size`` images except the last; files that
        fail to decode are skipped (the next good file takes their place) and listed in one warning at the end
        of the pass.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        mode = _PIL_MODES[self.color_mode]
        h, w = self.image_size
        order = self._order(shuffle, seed)
        bad = []
        x = np.empty((batch_size, h, w, len(mode)), dtype=np.uint8)
        y = np.empty(batch_size, dtype=np.int32)
        n = 0
        for i in order:
            try:
                x[n] = _decode(self.file_paths[i], self.image_size, mode)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                bad.append((self.file_paths[i], f"{type(e).__name__}: {e}"))
                continue
            y[n] = self.labels[i]
            n += 1
            if n == batch_size:
                yield x, y
                # fresh buffers: the caller may keep the batch it was given
                x, y, n = np.empty_like(x), np.empty_like(y), 0
        if n:
            yield x[:n], y[:n]
        if bad:
            _warn_bad(bad, len(order), self.directory)


def _class_folders(directory: Path, class_names):
    found = sorted(d.name for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_names is None:
        if not found:
            raise ValueError(f"{directory} has no class subfolders: expected {directory}/<class name>/<images>")
        return found
    missing = [c for c in class_names if c not in found]
    if missing:
        raise ValueError(f"class_names {missing} are not subfolders of {directory}; its subfolders are {found}")
    return list(class_names)


def _split(n, validation_split, subset, seed):
    """Indices of the training and validation parts: one seeded shuffle, the last part is validation."""
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split must be between 0 and 1; got {validation_split}")
    if subset not in _SUBSETS:
        raise ValueError(f"with validation_split, subset must be one of {list(_SUBSETS)}; got {subset!r}")
    if seed is None:
        raise ValueError(
            "validation_split needs a seed: the training and validation calls must shuffle the files the same "
            "way, or the two subsets overlap. Pass e.g. seed=1337 to both calls."
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(validation_split * n)
    if n_val == 0 or n_val == n:
        raise ValueError(f"validation_split={validation_split} of {n} files leaves one subset empty")
    return perm[: n - n_val], perm[n - n_val :]


def image_folder(
    directory,
    image_size=(64, 64),
    color_mode: str = "rgb",
    validation_split: float | None = None,
    subset: str | None = None,
    seed: int | None = None,
    class_names=None,
):
    """Index a class-per-folder image dataset (Keras's ``image_dataset_from_directory``).

    Args:
        directory: folder with one subfolder per class; images may sit in nested folders inside a class folder.
            Subfolders whose name starts with ``.`` (``.ipynb_checkpoints``) are not classes.
        image_size: ``(height, width)`` every image is resized to (bilinear); an int means a square.
        color_mode: ``'rgb'`` (C = 3), ``'grayscale'`` (C = 1) or ``'rgba'`` (C = 4).
        validation_split: fraction of the files held out, e.g. 0.2; needs ``subset`` and ``seed``.
        subset: ``'training'``, ``'validation'`` or ``'both'`` (returns the pair ``(train, val)``).
        seed: seed of the shuffle that decides the split; use the same one for both calls.
        class_names: list of subfolder names fixing the label order; it may name a subset of the folders.

    Returns:
        an ``ImageFolder`` (or ``(train, val)`` for ``subset='both'``). Nothing is decoded yet: call ``.load()``
        or ``.batches()``.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    _check_mode(color_mode)
    size = _check_size(image_size)
    if size is None:
        raise ValueError("image_folder needs image_size=(height, width): batches need images of one size")
    if subset is not None and validation_split is None:
        raise ValueError(f"subset={subset!r} needs validation_split, e.g. validation_split=0.2")
    classes = _class_folders(root, class_names)
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = list_images(root / name)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ValueError(f"found no {'/'.join(IMAGE_EXTENSIONS)} files in the class folders of {root}")
    labels = np.array(labels, dtype=np.int32)

    def make(index, name):
        return ImageFolder(root, [paths[i] for i in index], labels[index], classes, size, color_mode, name)

    if validation_split is None:
        return make(np.arange(len(paths)), None)
    train, val = _split(len(paths), validation_split, subset, seed)
    if subset == "training":
        return make(train, "training")
    if subset == "validation":
        return make(val, "validation")
    return make(train, "training"), make(val, "validation")
