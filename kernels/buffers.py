"""Reusing big arrays instead of asking the operating system for fresh memory at every step.

A training step allocates the same arrays every time: each layer's output, the gradients flowing back, the im2col
blocks. NumPy asks ``malloc`` for each; for big arrays ``malloc`` maps fresh pages from the operating system and
gives them back on ``free``, and the first write to every fresh 4 KiB page is a page fault. On the development
machine that cost about 2.5 microseconds a page: the MNIST model faulted 2,300 times a step, some 5 ms of a 25 ms
step, spent on memory it had just given back.

So the CPU engine takes its big arrays from a pool. ``empty(shape, dtype)`` hands out an array from a buffer that
nobody else holds, or a new buffer that joins the pool. "Nobody else holds it" is read from the buffer's reference
count: every array handed out, and every view of it, keeps a reference to its buffer, so a buffer whose only
references are the pool's own is free, whatever the caller did with what it was given. Results are never shared
with a live array, and nothing needs to be given back by hand.

The pool keeps what it has allocated (like PyTorch's CUDA caching allocator), so the process's memory stays at its
high-water mark: ``clear()`` lets it go.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

MIN_BYTES = 256 << 10  # smaller arrays come from malloc's own free lists without page faults
MAX_POOL_BYTES = 1 << 30
_pool: list[np.ndarray] = []  # buffers (flat uint8 arrays), smallest first
_lock = threading.Lock()  # two threads must not both find the same buffer free


def _refcount(buf: np.ndarray) -> int:
    return sys.getrefcount(buf)


def empty(shape, dtype) -> np.ndarray:
    """Like ``np.empty``: an uninitialised array, on the smallest free pooled buffer that fits it (and is no more
    than twice its size, so that a small array does not hold a big buffer), else on a new pooled buffer."""
    dtype = np.dtype(dtype)
    nbytes = int(math.prod(shape)) * dtype.itemsize  # math.prod: NumPy's np.prod costs ~15 us on a tuple
    if nbytes < MIN_BYTES or not ENABLED:
        return np.empty(shape, dtype)
    with _lock:
        for buf in _pool:
            # The pool's list, this loop's variable and the call's arguments hold ``buf``; anything more is an
            # array or a view that somebody still holds.
            if nbytes <= buf.size <= 2 * nbytes and _refcount(buf) <= _FREE_REFCOUNT:
                return buf[:nbytes].view(dtype).reshape(shape)
        if pooled_bytes() + nbytes > MAX_POOL_BYTES:  # e.g. many batch sizes: forget the free buffers
            busy = []
            for buf in _pool:
                if _refcount(buf) > _FREE_REFCOUNT:
                    busy.append(buf)
            _pool[:] = busy
        buf = np.empty(nbytes, np.uint8)
        _pool.append(buf)
        _pool.sort(key=len)
        return buf.view(dtype).reshape(shape)


def zeros(shape, dtype) -> np.ndarray:
    """Like ``np.zeros``, from the pool."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def clear() -> None:
    """Forget every pooled buffer (their memory goes back once nobody holds them)."""
    with _lock:
        _pool.clear()


def pooled_bytes() -> int:
    return sum(buf.size for buf in _pool)


def _calibrate() -> int:
    """The reference count that ``empty`` sees for a free buffer, measured the same way (so the test stays right on
    a Python that counts differently); ``ENABLED`` is off if a held buffer would not look busy."""
    bufs = [np.empty(8, np.uint8)]
    for buf in bufs:
        free = _refcount(buf)
    held = bufs[0].view(np.float32).reshape(2)
    for buf in bufs:
        busy = _refcount(buf)
    del held
    return free if busy > free else -1


_FREE_REFCOUNT = _calibrate()
ENABLED = _FREE_REFCOUNT > 0
