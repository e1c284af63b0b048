"""Sums on the GPU: column sums (the bias gradient ``db = sum_rows dout``) and the total of a vector (a loss).

A sum is the one kernel where threads must cooperate: many threads each add up a share, then the shares meet.
Here the shares meet in two stages, both inside one kernel:

* a block is ``TX x TY`` threads; ``threadIdx.x`` picks a column, so the ``TX`` threads of a row read neighbouring
  words (coalesced), and the ``TY`` rows of threads, with ``blockIdx.y``, stride down the rows of ``x``;
* the ``TY`` partial sums of a column meet in shared memory, where one thread adds them.

With ``G`` blocks down the rows this leaves ``G`` rows of ``F`` partial sums; the same kernel, run once more with one
block down the rows, turns them into the ``F`` sums. Two launches, no atomics: the same input always gives the same
bits.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32

from .cuda_launch import MAX_BLOCKS, REDUCE_BLOCK, SIMULATOR, cdiv, kernel

TX, TY = REDUCE_BLOCK
ROWS_PER_THREAD = 4 if SIMULATOR else 64  # enough work per thread to be worth a second pass


@kernel
def column_sums_kernel(x, partial):
    """Grid (cdiv(F, TX), G); block (TX, TY).   x: (R, F) -> partial: (G*F,), block row g's sums at g*F...,
    ``G = gridDim.y`` (flat, so that with G = 1 it is the answer itself)."""
    R, F = x.shape
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    f = cuda.blockIdx.x * TX + tx
    total = float32(0)
    if f < F:
        for r in range(cuda.blockIdx.y * TY + ty, R, cuda.gridDim.y * TY):
            total += x[r, f]
    shares = cuda.shared.array((TY, TX), float32)
    shares[ty, tx] = total
    cuda.syncthreads()
    if ty == 0 and f < F:
        for k in range(1, TY):
            total += shares[k, tx]
        partial[cuda.blockIdx.y * F + f] = total


def column_sums(x, out=None):
    """``out[f] = sum_r x[r, f]``.   x: (R, F) on the device -> out: (F,) float32 on the device."""
    R, F = x.shape
    G = max(1, min(cdiv(R, TY * ROWS_PER_THREAD), MAX_BLOCKS // cdiv(F, TX), 1024))
    out = cuda.device_array(F, dtype=np.float32) if out is None else out
    if tuple(out.shape) != (F,):
        raise ValueError(f"column_sums: out has shape {tuple(out.shape)}; the sums are {(F,)}")
    if G == 1:
        column_sums_kernel[(cdiv(F, TX), 1), (TX, TY)](x, out)
        return out
    partial = cuda.device_array(G * F, dtype=np.float32)
    column_sums_kernel[(cdiv(F, TX), G), (TX, TY)](x, partial)
    column_sums_kernel[(cdiv(F, TX), 1), (TX, TY)](partial.reshape(G, F), out)
    return out


def total(v) -> float:
    """``sum(v)`` of a device vector, as a Python float: the one number a training step copies to the host."""
    return float(column_sums(v.reshape(v.size, 1)).copy_to_host()[0])
