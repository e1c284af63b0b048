"""Launch configurations: how many blocks of how many threads each CUDA kernel gets, and small device helpers.

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
