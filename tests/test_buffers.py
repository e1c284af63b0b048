"""The CPU engine's buffer pool: a buffer is handed out again only when nobody holds it or any view of it."""

import numpy as np
import pytest

from minicnn.kernels import buffers, cpu

SHAPE = (256, 1024)  # 1 MiB of float32: above buffers.MIN_BYTES


@pytest.fixture(autouse=True)
def empty_pool():
    buffers.clear()  # earlier tests leave free buffers of every size: start each test from none
    yield


def _address(a):
    return a.__array_interface__["data"][0]


def test_a_held_array_is_never_handed_out_again():
    a = buffers.empty(SHAPE, np.float32)
    b = buffers.empty(SHAPE, np.float32)
    assert not np.shares_memory(a, b)


def test_a_released_buffer_is_reused_for_any_shape_that_fits():
    a = buffers.empty(SHAPE, np.float32)
    where = _address(a)
    del a
    b = buffers.empty((1024, 256), np.float32)
    assert _address(b) == where and b.shape == (1024, 256) and b.dtype == np.float32
    del b
    c = buffers.empty((200, 1024), np.float32)  # smaller, within a factor of 2: the same buffer
    assert _address(c) == where and c.shape == (200, 1024)


def test_a_view_keeps_its_buffer_busy():
    a = buffers.zeros(SHAPE, np.float32)
    view = a[10:20]
    view[:] = 7.0
    del a
    b = buffers.empty(SHAPE, np.float32)
    assert not np.shares_memory(b, view)
    b[:] = 1.0
    assert (view == 7.0).all()


def test_small_arrays_skip_the_pool():
    before = buffers.pooled_bytes()
    buffers.empty((3, 4), np.float32)
    assert buffers.pooled_bytes() == before


def test_zeros_are_zero_even_on_a_reused_buffer():
    a = buffers.empty(SHAPE, np.float32)
    a[:] = 5.0
    del a
    assert not buffers.zeros(SHAPE, np.float32).any()


def test_kernel_outputs_held_by_the_caller_stay_intact():
    # Two forward passes through the same layer shapes: the first result must survive the second.
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 16, 28, 28, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 32)).astype(np.float32)
    out1, _ = cpu.conv2d_forward(x1, w, None)
    keep = out1.copy()
    out2, _ = cpu.conv2d_forward(x2, w, None)
    assert not np.shares_memory(out1, out2)
    assert np.array_equal(out1, keep)
    pooled1, _ = cpu.maxpool2d_forward(out1)
    keep = pooled1.copy()
    cpu.maxpool2d_forward(out2)
    assert np.array_equal(pooled1, keep)


def test_the_pool_drops_free_buffers_of_other_sizes_when_full(monkeypatch):
    monkeypatch.setattr(buffers, "MAX_POOL_BYTES", 8 << 20)
    buffers.clear()
    held = buffers.empty((1 << 20,), np.float32)  # 4 MiB, kept
    for n in range(1, 6):  # 1..5 MiB arrays of new sizes, each released at once
        buffers.empty((n << 18,), np.float32)
    assert buffers.pooled_bytes() <= (8 << 20) + (5 << 20)
    assert any(b is held.base for b in buffers._pool)
