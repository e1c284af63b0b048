"""Device memory that is reused instead of freed: a caching allocator for numba.cuda, as PyTorch's.

Every kernel of a training step writes a fresh array (im2col's cols, a GEMM's output, a gradient...), dozens
per step. With numba's default memory manager each is a ``cuMemAlloc``, and every tenth release is a
batch of ``cuMemFree`` calls, and ``cuMemFree`` waits for the whole GPU to go idle. The GPU then drains its queue
several times a step, and the time Python spends launching the next kernels is no longer hidden behind the
kernels still running.

This module keeps released blocks in free lists, one per (rounded) size, and hands them out again. A training
step asks for the same sizes every step, so after the first step nothing reaches the driver at all.

Why reuse is safe: minicnn runs every kernel and copy on one stream (the default stream), in order. A block is
released when the last Python reference to it goes; any kernel that used it was launched before that, so a
kernel that is given the block next runs after it. (PyTorch's allocator makes the same argument per stream.)
Work on other streams that uses arrays from this allocator must synchronise before it drops them.

``install()`` registers the allocator through numba's External Memory Management interface; it applies to CUDA
contexts created afterwards, so ``cuda.make_backend()`` calls it before the first one exists. Importing this
module imports no numba.cuda (``FreeLists`` is plain Python).
``MINICNN_CUDA_POOL=0`` keeps numba's own allocator. ``empty_cache()`` gives the cached blocks back to the driver.
"""

from __future__ import annotations

import os
import weakref
from collections import defaultdict

GRANULE = 512  # bytes: sizes are rounded up to this, so that near sizes share a free list


def round_up(size: int) -> int:
    """The block size served for a request of ``size`` bytes (at least one granule)."""
    return max(GRANULE, -(-int(size) // GRANULE) * GRANULE)


class FreeLists:
    """Released blocks, one list per block size: the policy of the allocator, without any CUDA in it.

    ``take(size)`` gives back a block of exactly ``size`` bytes released earlier, or None; ``give(size, ptr)``
    releases one; ``drain()`` empties every list, yielding the blocks (to be freed for real)."""

    def __init__(self):
        self.blocks: dict[int, list] = defaultdict(list)
        self.bytes = 0  # bytes held in the lists
        self.hits = self.misses = 0

    def take(self, size: int):
        blocks = self.blocks.get(size)
        if blocks:
            self.bytes -= size
            self.hits += 1
            return blocks.pop()
        self.misses += 1
        return None

    def give(self, size: int, ptr) -> None:
        self.blocks[size].append(ptr)
        self.bytes += size

    def drain(self):
        for blocks in self.blocks.values():
            while blocks:
                yield blocks.pop()
        self.bytes = 0


def _manager_class():
    """The caching manager, built on numba-cuda's own (whose internals it reuses: allocation, pointers)."""
    from numba.cuda.cudadrv import driver as drv

    class CachingMemoryManager(drv.NumbaCUDAMemoryManager):
        """numba's device memory manager, but a released block goes to a free list, not back to the driver."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.pool = FreeLists()

        def memalloc(self, size):
            size = round_up(size)
            ptr = self.pool.take(size)
            if ptr is None:
                ptr = self._allocate(size)
            key, allocations, pool = int(ptr), self.allocations, self.pool

            def back_to_pool():  # numba calls this when the last array or view on the block is gone
                allocations.pop(key, None)
                pool.give(size, ptr)

            mem = drv.AutoFreePointer(weakref.proxy(self.context), ptr, size, finalizer=back_to_pool)
            allocations[key] = mem  # the strong reference; the handed-out pointer refers to it weakly
            return mem.own()

        def _allocate(self, size):
            try:
                return self._attempt_allocation(lambda: drv.driver.cuMemAlloc(size))
            except drv.CudaAPIError:
                if not self.pool.bytes:
                    raise
                self.empty_cache()  # out of memory, but the cache holds some: give it back and try once more
                return drv.driver.cuMemAlloc(size)

        def empty_cache(self) -> None:
            for ptr in self.pool.drain():
                drv.driver.cuMemFree(ptr)

        def reset(self):  # the context is being reset: its pointers die with it
            self.empty_cache()
            self.pool = FreeLists()  # arrays released later return their dead pointers to the old lists, not here
            super().reset()

    return CachingMemoryManager


_installed = None


def install() -> bool:
    """Make numba allocate through the caching manager (unless ``MINICNN_CUDA_POOL=0`` or in the simulator).
    Returns whether it is installed; call it before the first CUDA context is created."""
    global _installed
    if _installed is not None:
        return _installed
    from numba.core import config

    if config.ENABLE_CUDASIM or os.environ.get("MINICNN_CUDA_POOL", "1") == "0":
        _installed = False
        return False
    from numba import cuda

    cuda.set_memory_manager(_manager_class())
    _installed = True
    return True


def manager():
    """The current context's memory manager (creates the context if there is none yet); None in the simulator."""
    from numba import cuda

    return getattr(cuda.current_context(), "memory_manager", None)


def is_active() -> bool:
    """Whether the current context allocates through the caching manager."""
    return isinstance(getattr(manager(), "pool", None), FreeLists)


def empty_cache() -> None:
    """Return every cached block to the driver (what ``torch.cuda.empty_cache()`` does)."""
    if _installed and is_active():
        manager().empty_cache()
