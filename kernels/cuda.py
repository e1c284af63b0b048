"""The CUDA backend: ``numba.cuda`` kernels with the signatures of ``reference.py``, every array on the GPU.

``make_backend()`` checks that CUDA can be used, then assembles the backend namespace from one module per
concept, each a short read:

* ``cuda_launch``      how many blocks of how many threads (grid-stride loops), the simulator's settings, and
                       ``Kernel``: launches whose arguments are typed once, not at every call;
* ``cuda_memory``      a caching allocator: device memory released by one step is reused by the next;
* ``cuda_gemm``        a tiled, register-blocked SGEMM, for ``A @ B``, ``A @ B^T`` and ``A^T @ B``, with split-K;
* ``cuda_conv``        im2col / col2im, and convolution and dense layers as GEMMs;
* ``cuda_pool``        max and average pooling, forward and backward (gather, no atomics);
* ``cuda_reduce``      column sums (bias gradients) and totals (losses), deterministic two-pass reductions;
* ``cuda_elementwise`` activations, dropout, zeros;
* ``cuda_losses``      the fused cross-entropies; ``cuda_updates`` the fused optimizer steps.

Arrays on this backend are numba device arrays, float32. ``asarray`` copies host -> device, ``to_numpy`` device
-> host; losses return a Python float (the one small copy of a training step); everything else stays on the GPU.
Kernels given a host NumPy array copy it to the device first (correct, but a copy per call: keep data on the
device). Optimizer updates refuse host arrays, since an in-place update of a copy would be lost.

Importing this module needs nothing; ``make_backend()`` raises one ``RuntimeError`` that says what is missing:
numba-cuda (``pip install 'minicnn[cuda]'``), or a GPU (or the simulator: ``NUMBA_ENABLE_CUDASIM=1``, which must
be set before ``numba.cuda`` is first imported; it runs every CUDA thread as a Python thread, slowly).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types

import numpy as np

__all__ = ["make_backend", "cuda_status"]


def cuda_status() -> str | None:
    """``None`` when CUDA kernels can run here (a GPU, or the simulator); otherwise what is missing."""
    if importlib.util.find_spec("numba_cuda") is None:
        return "the 'cuda' backend needs numba-cuda, which is not installed: pip install 'minicnn[cuda]'"
    from numba.core import config

    wanted = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if "numba.cuda" not in sys.modules and wanted != bool(config.ENABLE_CUDASIM):
        config.reload_config()  # NUMBA_ENABLE_CUDASIM was set after numba was imported, but before numba.cuda
    try:
        from numba import cuda
    except Exception as e:  # e.g. numba-cuda built for another NumPy, or CUDA bindings missing
        return f"numba-cuda is installed but does not import ({type(e).__name__}: {e})"
    if config.ENABLE_CUDASIM:
        return None
    if not cuda.is_available():
        if wanted:
            return "NUMBA_ENABLE_CUDASIM=1 came too late: numba.cuda was already imported; set it before importing"
        return "no CUDA GPU found (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)"
    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():
        return "a GPU is there but not the CUDA compiler (NVVM) numba needs: pip install 'numba-cuda[cu12]'"
    return None


def make_backend() -> types.SimpleNamespace:
    """The ``'cuda'`` backend: every function the CPU backends have, running on the GPU."""
    problem = cuda_status()
    if problem is not None:
        raise RuntimeError(problem)
    from numba.core import config

    # A tiny batch launches a tiny grid on purpose; numba would warn about occupancy at every such launch.
    config.CUDA_LOW_OCCUPANCY_WARNINGS = 0

    from . import cuda_conv, cuda_elementwise, cuda_losses, cuda_memory, cuda_pool, cuda_updates

    cuda_memory.install()  # reuse device memory (before the first CUDA context exists; see cuda_memory.py)

    kernels = {
        "conv2d_forward": cuda_conv.conv2d_forward,
        "conv2d_backward": cuda_conv.conv2d_backward,
        "dense_forward": cuda_conv.dense_forward,
        "dense_backward": cuda_conv.dense_backward,
        "maxpool2d_forward": cuda_pool.maxpool2d_forward,
        "maxpool2d_backward": cuda_pool.maxpool2d_backward,
        "avgpool2d_forward": cuda_pool.avgpool2d_forward,
        "avgpool2d_backward": cuda_pool.avgpool2d_backward,
        "activation_forward": cuda_elementwise.activation_forward,
        "activation_backward": cuda_elementwise.activation_backward,
        "dropout_forward": cuda_elementwise.dropout_forward,
        "dropout_backward": cuda_elementwise.dropout_backward,
        "softmax_cross_entropy": cuda_losses.softmax_cross_entropy,
        "sigmoid_binary_cross_entropy": cuda_losses.sigmoid_binary_cross_entropy,
        "cross_entropy": cuda_losses.cross_entropy,
        "binary_cross_entropy": cuda_losses.binary_cross_entropy,
    }
    ns = {name: _host_arrays_to_device(f) for name, f in kernels.items()}
    ns.update(
        fused_activations=cuda_conv.FUSED_ACTIVATIONS,
        asarray=asarray,
        to_numpy=to_numpy,
        zeros=cuda_elementwise.zeros,
        sgd_update=cuda_updates.sgd_update,
        adam_update=cuda_updates.adam_update,
        rmsprop_update=cuda_updates.rmsprop_update,
    )
    return types.SimpleNamespace(name="cuda", **ns)


# ---------------------------------------------------------------------------------------------------- moving arrays
def is_device_array(a) -> bool:
    return hasattr(a, "copy_to_host") and not isinstance(a, np.ndarray)


def asarray(x, dtype=np.float32):
    """``x`` on the GPU as a C-contiguous array of ``dtype``: a device array of that dtype is returned as is."""
    from numba import cuda

    dtype = np.dtype(dtype)
    if is_device_array(x):
        if x.dtype == dtype:
            return x
        x = x.copy_to_host()
    return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))


def to_numpy(a) -> np.ndarray:
    """A host NumPy copy of a device array (a host array is returned as is)."""
    return a.copy_to_host() if is_device_array(a) else np.asarray(a)


def _host_arrays_to_device(f):
    """Let ``f`` take host NumPy arrays as positional arguments, copying them to the device (float32) first."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        args = tuple(asarray(a) if isinstance(a, np.ndarray) and a.dtype.kind in "fub" else a for a in args)
        return f(*args, **kwargs)

    return wrapper
