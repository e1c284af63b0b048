"""Which kernels run, and where the arrays live: ``'cpu'`` (Numba + BLAS), ``'numpy'``, ``'reference'`` or ``'cuda'``.

A backend is a plain namespace of functions with the signatures of ``minicnn.kernels.reference``:

==========================================================  ============================================================
``conv2d_forward(x, w, b, stride, pad) -> out, cache``      ``conv2d_backward(dout, cache) -> dx, dw, db``
``maxpool2d_forward(x, pool, stride, pad) -> out, cache``   ``maxpool2d_backward(dout, cache) -> dx``
``avgpool2d_forward(...)`` / ``avgpool2d_backward(...)``    same as max pooling
``dense_forward(x, w, b) -> out, cache``                    ``dense_backward(dout, cache) -> dx, dw, db``
``activation_forward(name, x[, overwrite_x]) -> y, cache``  ``activation_backward(name, dout, cache[, overwrite_dout])``
``dropout_forward(x, rate, rng) -> y, mask``                ``dropout_backward(dout, mask) -> dx``
``asarray(x, dtype)``, ``to_numpy(a)``, ``zeros``           moving arrays to and from the device
==========================================================  ============================================================

plus the losses and optimizer updates of ``kernels.losses`` and ``kernels.updates``. Layers, losses and optimizers
call only these, so the same layer code runs on every backend; only the ``cuda`` backend needs ``numba-cuda``.

An engine may also bring ``conv2d_relu_maxpool2x2_forward(x, w, b, stride, pad) -> pooled, cache`` and
``conv2d_relu_maxpool2x2_backward(dout, cache, overwrite_dout, need_dx) -> dx, dw, db``: a Conv2D with ReLU and
the 2x2 max pooling after it as one kernel (the CPU engine does; ``minicnn.layers.fused`` uses them).

``fused_activations`` lists the activations that a backend's ``conv2d_forward`` and ``dense_forward`` apply
themselves when passed ``activation=name``, right after the bias, with ``y`` as the activation's cache (the CPU
and CUDA engines fuse ReLU; the others list none).
"""

from __future__ import annotations

import types

import numpy as np

from minicnn.kernels import activations as _act
from minicnn.kernels import losses as _losses
from minicnn.kernels import updates as _updates

NAMES = ("cpu", "numpy", "reference", "cuda")
_default = "cpu"
_cache: dict[str, types.SimpleNamespace] = {}


def _host_common() -> dict:
    def dropout_forward(x, rate, rng):
        keep = 1.0 - rate
        mask = (rng.random(x.shape, dtype=np.float32) < keep).astype(x.dtype) / x.dtype.type(keep)
        return x * mask, mask

    return dict(
        fused_activations=(),  # activations conv2d_forward / dense_forward(..., activation=name) apply themselves
        asarray=lambda x, dtype=np.float32: np.ascontiguousarray(x, dtype=dtype),
        to_numpy=np.asarray,
        zeros=np.zeros,
        activation_forward=_act.activation_forward,
        activation_backward=_act.activation_backward,
        dropout_forward=dropout_forward,
        dropout_backward=lambda dout, mask: dout * mask,
        **{k: getattr(_losses, k) for k in _losses.__all__},
        **{k: getattr(_updates, k) for k in _updates.__all__},
    )


_KERNEL_NAMES = (
    "conv2d_forward",
    "conv2d_backward",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "dense_forward",
    "dense_backward",
)


# kernels that run two layers as one, which an engine may leave out (the layers then run one by one)
FUSED_LAYER_KERNELS = ("conv2d_relu_maxpool2x2_forward", "conv2d_relu_maxpool2x2_backward")
_OPTIONAL_NAMES = ("activation_forward", "activation_backward", *FUSED_LAYER_KERNELS)


def _build(name: str) -> types.SimpleNamespace:
    if name == "cuda":
        from minicnn.kernels import cuda  # raises a clear error when numba-cuda or a GPU is missing

        return cuda.make_backend()
    if name == "reference":
        from minicnn.kernels import reference as module
    elif name == "numpy":
        from minicnn.kernels import im2col as module
    else:
        from minicnn.kernels import cpu as module
    ns = _host_common()
    ns.update({k: getattr(module, k) for k in _KERNEL_NAMES})
    # an engine may bring its own compiled activations (cpu.py does, for ReLU), and kernels that fuse layers
    ns.update({k: getattr(module, k) for k in _OPTIONAL_NAMES if hasattr(module, k)})
    ns["fused_activations"] = getattr(module, "FUSED_ACTIVATIONS", ())
    return types.SimpleNamespace(name=name, **ns)


def get_backend(name: str | None = None) -> types.SimpleNamespace:
    """The backend called ``name`` (default: the one chosen by ``set_device``), built once and reused."""
    name = _default if name is None else str(name).lower()
    if name == "gpu":
        name = "cuda"
    if name not in NAMES:
        raise ValueError(f"unknown device/backend {name!r}; choose one of {NAMES}")
    if name not in _cache:
        _cache[name] = _build(name)
    return _cache[name]


def set_device(name: str) -> None:
    """Choose the backend that new models use: ``'cpu'`` (default), ``'cuda'``, ``'numpy'`` or ``'reference'``."""
    global _default
    get_backend(name)  # fail now, with the clear error, rather than at the first fit
    _default = "cuda" if name == "gpu" else str(name).lower()


def get_device() -> str:
    return _default
