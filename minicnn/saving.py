"""The safetensors file format, read and written by hand: a model file that cannot run code when it is loaded.

A safetensors file has three parts:

    8 bytes    N, the length of the header: an unsigned 64-bit little-endian integer
    N bytes    the header, JSON in UTF-8, padded with spaces to a multiple of 8:
               {"__metadata__": {"format": "minicnn", ...},
                "dense/kernel": {"dtype": "F32", "shape": [784, 10], "data_offsets": [0, 31360]}, ...}
    the rest   the tensors' raw bytes, little-endian and C order; ``data_offsets`` are [begin, end) in this part

Loading is ``json.loads`` plus ``np.frombuffer``, so nothing in the file is ever executed, unlike pickle (PyTorch
``.pt`` files, ``np.load(allow_pickle=True)``). The official ``safetensors`` package reads and writes the same files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import struct
import tempfile

import numpy as np

# safetensors dtype name -> the little-endian NumPy dtype of its bytes (BF16 and the F8 types have no NumPy dtype).
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}

# The official reader refuses headers over 100 MB; a longer one means a foreign or corrupted file.
MAX_HEADER_BYTES = 100_000_000

# First bytes of the files people most often hand to a model loader by mistake, and what to tell them.
_NO_PICKLE = "minicnn never loads pickle, because loading a pickle can run any code inside it"
_PICKLE = f"a Python pickle (e.g. a PyTorch .pt/.pth or a .pkl file); {_NO_PICKLE}"
_SIGNATURES = [
    (b"\x80\x02", _PICKLE),  # pickle protocols 2 to 5 begin with the PROTO opcode and the protocol number
    (b"\x80\x03", _PICKLE),
    (b"\x80\x04", _PICKLE),
    (b"\x80\x05", _PICKLE),
    (b"PK\x03\x04", f"a zip archive (e.g. a Keras .keras file, a PyTorch checkpoint or a .npz); {_NO_PICKLE}"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. a Keras .h5 model); minicnn reads only safetensors files"),
    (b"\x93NUMPY", "a NumPy .npy file; minicnn reads only safetensors files"),
]


class ModelFileError(ValueError):
    """A file that is not a valid safetensors file; the message names the file and what is wrong with it."""


# ------------------------------------------------------------------------------------------------ writing
def save_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` ({name: array of any shape}) and ``metadata`` ({str: str}) to ``path``.

    Atomic: the bytes go to a temporary file in the same folder, which replaces ``path`` only once it is complete
    and on disk, so a crash, a full disk or Ctrl-C leaves any previous file at ``path`` as it was.
    """
    header, arrays = _build_header(tensors, metadata)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # so the data starts 8-byte aligned

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp", delete=False)
    try:
        with tmp:
            tmp.write(struct.pack("<Q", len(header_bytes)))
            tmp.write(header_bytes)
            for a in arrays:
                tmp.write(a.tobytes())
            tmp.flush()
            os.fsync(tmp.fileno())
        # NamedTemporaryFile creates 0600 files; a saved model is meant to be shared like any other file.
        os.chmod(tmp.name, _mode_for(path))
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise


def _build_header(tensors, metadata) -> tuple[dict, list[np.ndarray]]:
    """The header dict and the little-endian C-order arrays, in the order their bytes are written."""
    header: dict = {}
    if metadata is not None:
        for key, value in metadata.items():
            if not (isinstance(key, str) and isinstance(value, str)):
                raise TypeError(
                    f"safetensors metadata maps str to str; got {key!r}: {value!r} "
                    "(store other values as text, e.g. json.dumps(value))"
                )
        header["__metadata__"] = dict(metadata)
    arrays, offset = [], 0
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"tensor names must be non-empty strings other than '__metadata__'; got {name!r}")
        a = np.asarray(value)
        dtype = a.dtype.newbyteorder("<")
        if dtype not in _NAMES:
            raise TypeError(
                f"tensor {name!r} has dtype {a.dtype}, which safetensors cannot store "
                f"(it stores {', '.join(str(d) for d in _NAMES)})"
            )
        a = np.asarray(a, dtype=dtype, order="C")
        header[name] = {"dtype": _NAMES[dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    return header, arrays


def _mode_for(path: str) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)  # keep the permissions of the file being replaced
    except FileNotFoundError:
        return 0o644


# ------------------------------------------------------------------------------------------------ reading
def load_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: ``({name: array}, metadata)``; arrays are fresh native-endian copies.

    Every field is checked before any tensor is read; anything wrong raises ``ModelFileError``.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()

    def fail(what: str) -> ModelFileError:
        return ModelFileError(f"cannot load {path!r}: {what}")

    header, data_start = _read_header(data, fail)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise fail(f"'__metadata__' must map strings to strings; got {metadata!r}")

    spans = {name: _check_entry(name, info, fail) for name, info in header.items()}
    _check_layout(spans, len(data) - data_start, fail)

    tensors = {}
    for name, info in header.items():
        begin, end = spans[name]
        dtype = DTYPES[info["dtype"]]
        a = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=data_start + begin)
        tensors[name] = a.reshape(info["shape"]).astype(dtype.newbyteorder("="))  # a copy, in native byte order
    return tensors, metadata


def _read_header(data: bytes, fail) -> tuple[dict, int]:
    """The parsed JSON header and where the data section starts."""
    if not data:
        raise fail("the file is empty (0 bytes)")
    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else 0
    header, error = None, None
    if len(data) >= 8 and n <= MAX_HEADER_BYTES and 8 + n <= len(data):
        try:
            header = json.loads(data[8 : 8 + n].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            error = e
    if isinstance(header, dict):
        return header, 8 + n

    # Only now guess from the first bytes: a real header length can look like one (640 is b"\x80\x02\0...").
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            raise fail(f"not a safetensors file: this is {kind}")
    if len(data) < 8:
        raise fail(f"the file is {len(data)} bytes long, too short to be a safetensors file (starts with {data!r})")
    if n > MAX_HEADER_BYTES:
        raise fail(f"not a safetensors file (starts with {data[:8]!r}, which gives an absurd header length {n})")
    if 8 + n > len(data):
        raise fail(f"the file is truncated: its header should be {n} bytes but only {len(data) - 8} follow")
    if error is not None:
        raise fail(
            f"the header is not valid JSON ({error}): the file is corrupted or not a safetensors file "
            f"(starts with {data[:16]!r})"
        )
    raise fail(f"the header is JSON but not an object ({type(header).__name__}): not a safetensors file")


def _check_entry(name: str, info, fail) -> tuple[int, int]:
    """Check one tensor's header entry; return its ``(begin, end)`` in the data section."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise fail(f"tensor {name!r}: header entry {info!r} needs 'dtype', 'shape' and 'data_offsets'")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise fail(f"tensor {name!r} has unknown dtype {dtype!r} (minicnn reads {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise fail(f"tensor {name!r} has shape {shape!r}; a shape is a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise fail(f"tensor {name!r} has data_offsets {offsets!r}; they are [begin, end], non-negative integers")
    begin, end = offsets
    if end < begin:
        raise fail(f"tensor {name!r} has data_offsets [{begin}, {end}], which end before they begin")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise fail(
            f"tensor {name!r}: shape {shape} of {dtype} needs {nbytes} bytes but data_offsets "
            f"[{begin}, {end}] hold {end - begin}"
        )
    return begin, end


def _check_layout(spans: dict[str, tuple[int, int]], data_len: int, fail) -> None:
    """The tensors must tile the data section exactly: in bounds, no overlaps, no gaps, nothing after."""
    expected, previous = 0, None
    for name, (begin, end) in sorted(spans.items(), key=lambda item: item[1]):
        if end > data_len:
            raise fail(
                f"the file is truncated or corrupted: tensor {name!r} needs data bytes [{begin}, {end}) "
                f"but the data section has only {data_len} bytes"
            )
        if begin < expected:
            raise fail(f"tensors {previous!r} and {name!r} overlap in the data section (at byte {begin})")
        if begin > expected:
            raise fail(f"data bytes [{expected}, {begin}) belong to no tensor: the header is corrupted")
        expected, previous = end, name
    if expected != data_len:
        raise fail(f"{data_len - expected} bytes after the last tensor belong to no tensor: the file is corrupted")


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# ---------------------------------------------------------------------------------------------------- models
FORMAT = "minicnn"
FORMAT_VERSION = "1"


def save_model(model, path) -> None:
    """One ``.safetensors`` file: weights (``weights/<layer>/<key>``), optimizer state (``optimizer/...``), and
    in the metadata the architecture, the compile settings and the class names, as JSON. Written atomically."""
    from minicnn import __version__

    tensors = {
        f"weights/{layer.name}/{key}": w
        for layer in model.layers
        for key, w in zip(layer.params, layer.get_weights(), strict=True)
    }
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "minicnn_version": __version__,
        "model_config": json.dumps(model.get_config()),
    }
    if model.optimizer is not None and model.loss is not None:
        metadata["compile_config"] = json.dumps(
            {
                "optimizer": {"class_name": type(model.optimizer).__name__, "config": model.optimizer.get_config()},
                "loss": {"class_name": type(model.loss).__name__, "config": model.loss.get_config()},
                "metrics": list(model.metrics),
            }
        )
        tensors.update({f"optimizer/{k}": np.asarray(v) for k, v in model.optimizer.get_state().items()})
    if model.class_names is not None:
        metadata["class_names"] = json.dumps(list(model.class_names))
    save_safetensors(path, tensors, metadata)


def load_model(path, device: str | None = None):
    """Rebuild a model saved by ``save_model``: same predictions, and ``fit`` continues where it stopped.

    Raises ``ModelFileError`` naming the file for anything that is not a complete minicnn model file.
    """
    from minicnn.model import Sequential

    tensors, metadata = load_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: a safetensors file, but not a minicnn model (its metadata has no format='{FORMAT}' tag); "
            "it may hold another framework's weights"
        )
    try:
        config = json.loads(metadata["model_config"])
        compile_config = json.loads(metadata["compile_config"]) if "compile_config" in metadata else None
        class_names = json.loads(metadata["class_names"]) if "class_names" in metadata else None
    except (KeyError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: the model's metadata is damaged ({err})") from None
    try:
        model = Sequential.from_config(config, device=device)
    except (ValueError, TypeError, KeyError) as err:
        raise ModelFileError(f"{path}: cannot rebuild the architecture: {err}") from None
    weights = []
    for layer in model.layers:
        for key in layer.params:
            name = f"weights/{layer.name}/{key}"
            if name not in tensors:
                raise ModelFileError(f"{path}: weight '{name}' is missing")
            weights.append(tensors[name])
    try:
        model.set_weights(weights)
    except ValueError as err:
        raise ModelFileError(f"{path}: {err}") from None
    if compile_config is not None:
        model.compile(compile_config["optimizer"], compile_config["loss"], compile_config["metrics"])
        state = {k[len("optimizer/") :]: v for k, v in tensors.items() if k.startswith("optimizer/")}
        if state:
            try:
                model.optimizer.set_state(state)
            except ValueError as err:
                raise ModelFileError(f"{path}: optimizer state does not fit the model: {err}") from None
    model.class_names = class_names
    return model
