"""Launches: how many blocks of how many threads each CUDA kernel gets, small device helpers, and ``Kernel``, which
launches a compiled kernel without numba's per-call typing of its arguments (the last section).

Most kernels of the CUDA backend are *grid-stride loops*: thread ``t`` of the ``T`` launched handles elements
``t, t + T, t + 2T, ...`` of a flat index. One launch shape then serves every array size, the grid can be capped
at what the GPU keeps resident anyway, and neighbouring threads still touch neighbouring addresses (coalesced).

The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs one Python thread per CUDA thread, and a thread costs far
more to start than a loop iteration costs to run; so under the simulator the same kernels get a few small blocks
whose threads loop longer. Two blocks rather than one, so that a kernel that forgets ``blockIdx`` still fails.

Import this module only after ``minicnn.kernels.cuda`` has checked that ``numba.cuda`` can be used.
"""

from __future__ import annotations

import functools
import operator
import os
import warnings

from numba import cuda
from numba.core import config

SIMULATOR = bool(config.ENABLE_CUDASIM)

THREADS_PER_BLOCK = 16 if SIMULATOR else 256
MAX_BLOCKS = 2 if SIMULATOR else 8192  # 8192 x 256 threads: several times what an H100 holds resident
BLOCK_2D = (8, 2) if SIMULATOR else (32, 8)  # (columns, rows) per block of the kernels that walk rows
REDUCE_BLOCK = BLOCK_2D  # of a column reduction

# ``i & NONNEG == i`` for any block or thread index; written into a kernel, it tells the compiler that an index
# built from them is never negative, so that numba's wrap-around for negative indices compiles away.
NONNEG = 0x7FFFFFFF


@functools.cache
def sm_count() -> int:
    """Streaming multiprocessors of the current GPU (2 under the simulator, so that split-K gets exercised)."""
    if SIMULATOR:
        return 2
    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive ints: how many tiles of ``b`` cover ``a``."""
    return -(-a // b)


def grid_2d(columns: int, rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(grid, block)`` for the kernels that walk rows: thread ``x`` owns one column (blocks enough to cover
    ``columns``), thread ``y`` walks the rows, grid-stride, with as many blocks down as keep the grid under
    ``MAX_BLOCKS``."""
    tx, ty = BLOCK_2D
    gx = cdiv(columns, tx)
    gy = max(1, min(cdiv(rows, ty), MAX_BLOCKS // gx))
    return (gx, gy), (tx, ty)


def grid_1d(n: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a grid-stride loop over ``n`` elements: enough threads for one element each, but
    at most ``MAX_BLOCKS`` blocks; the loop covers the rest."""
    return max(1, min(cdiv(n, THREADS_PER_BLOCK), MAX_BLOCKS)), THREADS_PER_BLOCK


# ---------------------------------------------------------------------------------------------------- cheap launches
# What a launch costs. ``k[grid, block](*args)`` is, in numba, mostly Python: it works out the numba type of every
# argument (building a type object for each array it has not seen before), picks the compiled version for those
# types, turns each argument into the flat list of numbers the GPU code takes, and builds a launch configuration:
# tens of microseconds, for arrays that are already on the GPU. A training step launches dozens of kernels, and
# model R at batch 256 spent 8 ms a step on the host for 1 ms of GPU work (benchmarks/GPU_RESULTS.md).
#
# ``Kernel`` does that work once per combination of argument types and keeps the result: the compiled kernel,
# and the launch configuration of each grid. A launch then only lists the numbers, which is what the driver takes
# anyway, and hands them to ``cuda.core.launch``, the call numba itself ends with. An array is, to the compiled
# code, ``meminfo, parent, size, itemsize, data pointer, *shape, *strides`` (numba's array model; the first two
# are unused on a GPU and passed as 0); a Python int is an int64, a float a float64, as numba packs them.


def _layout(a) -> str:
    """numba's layout letter for a device array: 'C' or 'F' if contiguous that way (C first), else 'A'."""
    if 0 in a.strides and a.size:  # broadcast: zero strides cannot be compiled into the kernel as constants
        return "A"
    return "C" if a.is_c_contiguous() else "F" if a.is_f_contiguous() else "A"


def _dim3(d) -> tuple[int, int, int]:
    """A grid or block size as (x, y, z) (ints, NumPy's too; a float is an error, as in numba)."""
    d = tuple(d) if isinstance(d, tuple | list) else (d,)
    return (*map(operator.index, d), *(1,) * (3 - len(d)))


def pack(args) -> tuple[tuple, list] | None:
    """``(key, params)``: what tells the arguments' numba types apart, and the numbers the compiled kernel takes,
    as numba's ``_Kernel._prepare_args`` lists them; None if an argument is neither a device array nor a scalar
    of ``SCALARS``."""
    key, params = [], []
    for a in args:
        kind = type(a)
        if kind is DeviceNDArray:
            key.append((a.dtype, a.ndim, _layout(a)))
            params += (0, 0, a.size, a.dtype.itemsize, a.device_ctypes_pointer.value or 0, *a.shape, *a.strides)
        elif kind in SCALARS and (kind is not int or INT64_MIN <= a <= INT64_MAX):  # numba types a larger int uint64
            key.append(kind)
            params.append(SCALARS[kind](a))
        else:
            return None
    return tuple(key), params


class Kernel:
    """A ``cuda.jit`` kernel whose launches skip numba's per-call typing; launched as ``k[grid, block](*args)``.

    Device arrays are told apart by dtype, ndims and layout, scalars by their Python type (``SCALARS``). The first
    launch with a new combination goes through numba, which compiles if needed, and the compiled kernel is kept
    under that combination. Any other argument (a host array, which numba copies to the device and back), a
    launch that names a stream or shared memory, and a kernel compiled with options this path does not handle
    (debug checks, cooperative launch, argument extensions) always go through numba.

    What numba does on every launch and this path does once: make the context current. minicnn launches from one
    thread, on one GPU; another thread would need its own ``cuda.current_context()`` first."""

    launches = 0  # launches that skipped numba, all kernels together (to count a step's launches)
    through_numba = os.environ.get("MINICNN_CUDA_FAST_LAUNCH", "1") == "0"  # every launch through numba: to compare

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.compiled: dict = {}  # argument key -> cuda.core Kernel, or None: always launch through numba

    def __getattr__(self, name):  # py_func, overloads, ...: the dispatcher's
        if name == "dispatcher":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.dispatcher, name)

    def __getitem__(self, launch_config):
        if len(launch_config) != 2:  # (grid, block, stream[, shared memory]): numba's to handle
            return self.dispatcher[launch_config]
        grid, block = launch_config
        return functools.partial(self.launch, grid, block)

    def launch(self, grid, block, *args) -> None:
        packed = None if Kernel.through_numba else pack(args)
        compiled = None if packed is None else self.compiled.get(packed[0], self)
        if compiled is self:  # the first launch with these types: through numba, then keep what it compiled
            self.dispatcher[grid, block](*args)
            try:
                self.compiled[packed[0]] = self._compiled_for(args)
            except Exception as e:  # another numba-cuda's internals: launch through numba, and say so once
                self.compiled[packed[0]] = None
                reason = f"{type(e).__name__}: {e}"
                warnings.warn(f"{self.py_func.__name__}: launched through numba ({reason})", stacklevel=3)
        elif compiled is None:
            self.dispatcher[grid, block](*args)
        else:
            config = _CONFIGS.get((grid, block))
            if config is None:
                config = _CONFIGS[grid, block] = LaunchConfig(grid=_dim3(grid), block=_dim3(block))
            Kernel.launches += 1
            launch(_default_stream(), config, compiled, *packed[1])

    def _compiled_for(self, args):
        """The cuda.core kernel numba compiled for the types of ``args``; None if it holds none under exactly
        those types, or if it types a scalar other than ``SCALARS`` packs it (then numba launches these)."""
        argtypes = tuple(self.dispatcher.typeof_pyval(a) for a in args)
        overload = self.dispatcher.overloads.get(argtypes)
        if overload is None or self.dispatcher.targetoptions.get("extensions"):
            return None
        if any(getattr(overload, flag, False) for flag in ("debug", "cooperative", "launch_config_sensitive")):
            return None
        for a, t in zip(args, argtypes, strict=True):
            if type(a) in SCALARS and SCALARS[type(a)] is not NUMBA_SCALARS.get(str(t)):
                return None
        return overload.library.get_cufunc().kernel


def kernel(py_func):
    """``cuda.jit`` for a kernel, launched through ``Kernel``; plain ``cuda.jit`` under the simulator, whose
    kernels are Python. (``MINICNN_CUDA_FAST_LAUNCH=0``, or ``Kernel.through_numba = True``, launches every
    kernel through numba.)"""
    compiled = cuda.jit(py_func)
    return compiled if SIMULATOR else Kernel(compiled)


if not SIMULATOR:  # the simulator has no driver to launch on
    import ctypes

    import numpy as np
    from cuda.core import LaunchConfig, launch
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.cudadrv.driver import _to_core_stream

    # How numba passes each scalar (``_Kernel._prepare_args`` in numba-cuda): by its numba type...
    NUMBA_SCALARS = {"int64": ctypes.c_int64, "int32": ctypes.c_int32, "float64": ctypes.c_double}
    NUMBA_SCALARS.update(float32=ctypes.c_float, bool=bool)
    # ... and the numba type of each Python type, so a launch can pack a scalar without typing it.
    SCALARS = {int: ctypes.c_int64, float: ctypes.c_double, bool: bool, np.int64: ctypes.c_int64}
    SCALARS.update({np.int32: ctypes.c_int32, np.float64: ctypes.c_double, np.float32: ctypes.c_float})
    _CONFIGS: dict = {}  # (grid, block) -> LaunchConfig: a few dozen in a training run
    INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

    @functools.cache
    def _default_stream():
        return _to_core_stream(0)
