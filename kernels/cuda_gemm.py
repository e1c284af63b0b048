"""SGEMM on the GPU: ``C = op(A) @ op(B) (+ bias)`` in float32, tiled through shared memory, register-blocked.

Training a CNN needs three products, and none of them should copy a matrix just to transpose it:

    'nn'  C = A @ B     forward:          out = cols @ w,        out = x @ w
    'nt'  C = A @ B^T   backward, input:  dcols = dout @ w^T,    dx = dout @ w^T
    'tn'  C = A^T @ B   backward, weight: dw = cols^T @ dout,    dw = x^T @ dout

One kernel does all three: only the index arithmetic of the loads changes.

How the work is cut (Volkov & Demmel, 2008, and every tutorial SGEMM since):

* A **block** owns a ``BM x BN`` tile of C. It walks K in steps of ``BK``: its threads copy a ``BM x BK`` slab of
  A and a ``BK x BN`` slab of B into shared memory, synchronise, and multiply from there. Each number loaded from
  global memory is then used ``BN`` (or ``BM``) times from fast on-chip memory.
* A **thread** owns ``TM x TN`` outputs, held in registers. For each ``k`` it reads ``TM`` numbers of A and ``TN``
  of B from shared memory and does ``TM * TN`` fused multiply-adds: 16 loads for 64 FMAs with an 8 x 8 tile,
  so the arithmetic units, not shared memory, set the pace. (A 1 x 1 tile, the textbook kernel, does 2 loads
  per FMA and runs at a fraction of the speed.)
* A thread's outputs are *strided*, rows ``tr, tr + BM/TM, ...`` and columns ``tc, tc + BN/TN, ...``, so that the
  threads of a warp read neighbouring shared-memory words (no bank conflicts) and write neighbouring words of C
  (coalesced stores).
* Shared tiles are stored k-major (``As[k, m]``) with ``SKEW`` spare columns: the copy of an untransposed A then
  scatters a warp over 32 different banks instead of four.
* **Prefetching**: the global loads of the next slabs are issued into registers before the block multiplies the
  current ones, so their latency hides behind arithmetic.
* **Index hints**: numba wraps negative indices around (``a[-1]``), which costs a compare and a select per
  access unless the compiler can prove the index non-negative. ``threadIdx.x & NONNEG`` proves it for the
  thread and block indices, and everything built from them; the inner loop then addresses shared memory with
  constant offsets.
* Slabs that hang over the edge of A or B are filled with zeros, which add nothing; outputs past the edge of C
  are not written. Any M, N, K works.
* **Split-K**: when C has too few tiles to fill the GPU (``dw = cols^T @ dout`` is 288 x 64, with K = 200 000),
  the K range is cut into ``S`` chunks, block ``z`` of the grid multiplies chunk ``z`` into rows ``z*M...`` of
  ``parts``, and a second kernel sums the ``S`` parts (and adds the bias). No atomics, so the result does not
  depend on timing.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import cuda, float32

from .cuda_launch import NONNEG, SIMULATOR, cdiv, grid_1d, kernel, sm_count

SKEW = 4


class Tile(NamedTuple):
    """Block tile ``bm x bn``, K step ``bk``, and the ``tm x tn`` outputs of each thread."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)


LARGE = Tile(128, 128, 8, 8, 8)  # 256 threads x 64 outputs: large products
SMALL = Tile(64, 64, 8, 4, 4)  # 256 threads x 16 outputs: a side under 128 (conv layers with 64 filters)
NARROW = Tile(128, 32, 8, 4, 4)  # 256 threads x 16 outputs: C at most 32 wide, few rows (a weight gradient, 10 classes)
TALL = Tile(256, 32, 8, 8, 4)  # 256 threads x 32 outputs: C at most 32 wide, many rows (a 32-filter layer's forward)
SIMULATED = Tile(32, 32, 16, 8, 8)  # 16 threads: what the simulator can run quickly
MIN_SPLIT_CHUNK = 16 if SIMULATOR else 256  # fewest k per split-K chunk: below this, summing parts costs more


def choose_tile(M: int, N: int) -> Tile:
    """The big tile when C is big enough to give every SM one. When C is at most 32 wide (half of a 64-wide tile
    would compute columns that do not exist), a 32-wide one: tall when its tiles still fill the GPU. Otherwise
    the small one. (``benchmarks/GPU_RESULTS.md`` has the sweep behind these: on an H200 the tall tile ran C's
    (262144 x 32 x 288) forward 14 % faster than the 64 x 64 one, the narrow one its weight gradient 19 %.)"""
    if SIMULATOR:
        return SIMULATED
    if min(M, N) >= LARGE.bm and cdiv(M, LARGE.bm) * cdiv(N, LARGE.bn) >= sm_count():
        return LARGE
    if N <= NARROW.bn:
        return TALL if cdiv(M, TALL.bm) >= sm_count() else NARROW
    return SMALL


def choose_split_k(M: int, N: int, K: int, tile: Tile) -> int:
    """How many K chunks (1: no split). Only when C has fewer tiles than the GPU has SMs: then enough chunks for
    about two blocks per SM. With a block per SM or more, splitting only adds a second launch and the summing of
    the parts (``benchmarks/GPU_RESULTS.md``: a square 1024 product ran at half the speed split in two)."""
    blocks = cdiv(M, tile.bm) * cdiv(N, tile.bn)
    if blocks >= sm_count():
        return 1
    return max(1, min(cdiv(2 * sm_count(), blocks), K // MIN_SPLIT_CHUNK))


@functools.cache
def sgemm_kernel(tile: Tile, trans_a: bool, trans_b: bool, with_bias: bool, relu: bool = False):
    """Compile-time specialisation: tile sizes, transposes, the bias and the ReLU of the epilogue are constants of
    the kernel, so loops over ``TM``, ``TN`` and the loads unroll and the accumulators live in registers.

    The loads are *prefetched*: while the block multiplies the slabs in shared memory, each thread already has
    the global loads of the next slabs in flight, into registers (``a_next``, ``b_next``), and stores them to
    shared memory only after the next ``syncthreads``. Global memory's latency hides behind the arithmetic."""
    BM, BN, BK, TM, TN = tile
    RS, CS = BM // TM, BN // TN  # threads down a column / along a row of the block
    THREADS = RS * CS
    A_COLS, B_COLS = BM + SKEW, BN + SKEW  # shared-array shapes must be constants of the kernel
    A_SIZE, B_SIZE = BK * A_COLS, BK * B_COLS
    A_LOADS, B_LOADS = cdiv(BM * BK, THREADS), cdiv(BN * BK, THREADS)  # slab elements per thread

    @cuda.jit(device=True, inline=True)
    def load_slabs(a, b, M, N, m0, n0, k0, k_end, tid, a_next, b_next):
        """Thread ``tid``'s elements of the slabs at ``k0`` into registers; consecutive threads read consecutive
        addresses of the stored matrices; what lies past an edge reads as 0."""
        for l in range(A_LOADS):
            e = tid + l * THREADS
            if trans_a:  # a is (K, M)
                kk, mm = e // BM, e % BM
            else:  # a is (M, K)
                mm, kk = e // BK, e % BK
            m, k = m0 + mm, k0 + kk
            v = float32(0)
            if e < BM * BK and m < M and k < k_end:
                v = a[k, m] if trans_a else a[m, k]
            a_next[l] = v
        for l in range(B_LOADS):
            e = tid + l * THREADS
            if trans_b:  # b is (N, K)
                nn, kk = e // BK, e % BK
            else:  # b is (K, N)
                kk, nn = e // BN, e % BN
            n, k = n0 + nn, k0 + kk
            v = float32(0)
            if e < BN * BK and n < N and k < k_end:
                v = b[n, k] if trans_b else b[k, n]
            b_next[l] = v

    @kernel
    def sgemm(a, b, bias, c, M, K, k_chunk):
        """Grid (cdiv(N, BN), cdiv(M, BM), S); block THREADS.   c: (S*M, N): blocks z write rows z*M to
        z*M + M - 1, part z of a split-K product (c is the product itself when S = 1)."""
        N = c.shape[1]
        # "& NONNEG" changes no value, but tells the compiler that these indices are never negative, so numba's
        # wrap-around of negative (from-the-end) indices is compiled away from every load and store below.
        tid = cuda.threadIdx.x & NONNEG
        tr, tc = tid // CS, tid % CS
        m0, n0 = (cuda.blockIdx.y & NONNEG) * BM, (cuda.blockIdx.x & NONNEG) * BN
        k_begin = (cuda.blockIdx.z & NONNEG) * k_chunk
        k_end = min(K, k_begin + k_chunk)

        As = cuda.shared.array(A_SIZE, float32)  # As[kk * A_COLS + m]: k-major
        Bs = cuda.shared.array(B_SIZE, float32)  # Bs[kk * B_COLS + n]
        acc = cuda.local.array((TM, TN), float32)
        a_reg = cuda.local.array(TM, float32)
        b_reg = cuda.local.array(TN, float32)
        a_next = cuda.local.array(A_LOADS, float32)
        b_next = cuda.local.array(B_LOADS, float32)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0

        load_slabs(a, b, M, N, m0, n0, k_begin, k_end, tid, a_next, b_next)
        for k0 in range(k_begin, k_end, BK):
            for l in range(A_LOADS):  # registers -> shared memory, transposing A to k-major
                e = tid + l * THREADS
                if e < BM * BK:
                    if trans_a:
                        As[(e // BM) * A_COLS + e % BM] = a_next[l]
                    else:
                        As[(e % BK) * A_COLS + e // BK] = a_next[l]
            for l in range(B_LOADS):
                e = tid + l * THREADS
                if e < BN * BK:
                    if trans_b:
                        Bs[(e % BK) * B_COLS + e // BK] = b_next[l]
                    else:
                        Bs[(e // BN) * B_COLS + e % BN] = b_next[l]
            cuda.syncthreads()
            if k0 + BK < k_end:  # the next slabs' loads fly while this slab is multiplied
                load_slabs(a, b, M, N, m0, n0, k0 + BK, k_end, tid, a_next, b_next)

            # The outer product of a column of As and a row of Bs, from registers.
            for kk in range(BK):
                a_row, b_row = kk * A_COLS + tr, kk * B_COLS + tc
                for i in range(TM):
                    a_reg[i] = As[a_row + i * RS]
                for j in range(TN):
                    b_reg[j] = Bs[b_row + j * CS]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += a_reg[i] * b_reg[j]
            cuda.syncthreads()  # nobody overwrites the slabs while a slower thread still reads them

        row0 = (cuda.blockIdx.z & NONNEG) * M  # part z's first row
        for i in range(TM):
            m = m0 + tr + i * RS
            for j in range(TN):
                n = n0 + tc + j * CS
                if m < M and n < N:
                    v = acc[i, j]
                    if with_bias:
                        v += bias[n]
                    if relu:  # the layer's activation, applied on the way out: no kernel of its own
                        v = max(v, float32(0))
                    c[row0 + m, n] = v

    return sgemm


@kernel
def sum_splits(parts, bias, out, with_bias, relu):
    """``out[m, n] = sum_z parts[z*M + m, n] (+ bias[n])``, then max(., 0) if ``relu``: grid-stride over the M*N
    outputs, one thread per output, so each thread reads its S parts M rows apart and neighbouring threads read
    neighbouring words.   parts: (S*M, N), out: (M, N)"""
    M, N = out.shape
    S = parts.shape[0] // M
    for e in range(cuda.grid(1), M * N, cuda.gridsize(1)):
        m, n = e // N, e % N
        total = parts[m, n]
        for z in range(1, S):
            total += parts[z * M + m, n]
        if with_bias:
            total += bias[n]
        if relu:
            total = max(total, float32(0))
        out[m, n] = total


@functools.cache
def _no_bias():
    return cuda.device_array(1, dtype=np.float32)


def gemm(a, b, trans_a=False, trans_b=False, bias=None, out=None, tile=None, split_k=None, relu=False):
    """``out = op(a) @ op(b) (+ bias)`` on the device, then ``max(out, 0)`` if ``relu``; ``op`` transposes where
    asked, without copying.

    a: (M, K) or, with ``trans_a``, (K, M); b: (K, N) or, with ``trans_b``, (N, K); bias: (N,) or None
    -> out: (M, N) float32 (allocated unless given). ``tile`` and ``split_k`` default to ``choose_tile`` and
    ``choose_split_k``; tests pass them to reach every path.
    """
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N, Kb = (b.shape[0], b.shape[1]) if trans_b else (b.shape[1], b.shape[0])
    if K != Kb:
        raise ValueError(f"gemm: inner sizes differ, {K} vs {Kb} (shapes {a.shape}, {b.shape})")
    if out is None:
        out = cuda.device_array((M, N), dtype=np.float32)
    elif tuple(out.shape) != (M, N):  # the kernel writes rows 0..M-1 of whatever it is given
        raise ValueError(f"gemm: out has shape {tuple(out.shape)}; the product is {(M, N)}")
    tile = tile or choose_tile(M, N)
    S = split_k or choose_split_k(M, N, K, tile)
    k_chunk = max(1, cdiv(cdiv(K, S), tile.bk)) * tile.bk  # whole K steps per chunk
    S = max(1, cdiv(K, k_chunk))
    grid = (cdiv(N, tile.bn), cdiv(M, tile.bm), S)
    with_bias = bias is not None
    bias = bias if with_bias else _no_bias()
    if S == 1:
        sgemm_kernel(tile, bool(trans_a), bool(trans_b), with_bias, bool(relu))[grid, tile.threads](
            a, b, bias, out, M, K, k_chunk
        )
        return out
    parts = cuda.device_array((S * M, N), dtype=np.float32)
    sgemm_kernel(tile, bool(trans_a), bool(trans_b), False)[grid, tile.threads](a, b, bias, parts, M, K, k_chunk)
    sum_splits[grid_1d(M * N)](parts, bias, out, with_bias, bool(relu))
    return out
