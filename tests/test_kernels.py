"""Every fast kernel equals its loop twin in ``minicnn.kernels.reference`` on random inputs."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minicnn.kernels import cpu, im2col, reference, sparse, winograd
from minicnn.kernels.shapes import output_size, padding_amounts
from minicnn.testing import numerical_gradient, relative_error

FAST = {"numpy": im2col, "numba": cpu}
TOL = 1e-5


def test_engine_asks_numba_for_wide_vectors_on_avx512():
    # kernels/__init__.py: on an AVX-512 processor Numba compiles with the host's features minus LLVM's preference
    # for 256-bit vectors; MINICNN_WIDE_VECTORS=0 or the user's own NUMBA_CPU_FEATURES leave Numba as it is
    from numba.core.codegen import get_host_cpu_features

    def features(**env):
        clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "MINICNN_WIDE_VECTORS")}
        code = "import minicnn.kernels, numba; print(numba.config.CPU_FEATURES)"
        out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    host = get_host_cpu_features()
    assert features() == (host + ",-prefer-256-bit" if "+avx512f" in host.split(",") else "None")
    assert features(MINICNN_WIDE_VECTORS="0") == "None"
    assert features(NUMBA_CPU_FEATURES="+sse2,+avx2") == "+sse2,+avx2"


@st.composite
def conv_case(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["valid", "same"]))
    H, W = draw(st.integers(kh, kh + 6)), draw(st.integers(kw, kw + 6))
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 10)), draw(st.integers(1, 4))  # C >= 8: another dx path
    seed = draw(st.integers(0, 2**31 - 1))
    return N, H, W, C, F, kh, kw, (sh, sw), padding_amounts(H, W, kh, kw, (sh, sw), padding), seed


def test_same_padding_follows_keras():
    # 'same' keeps ceil(n / s) outputs; the odd extra padding row goes to the bottom/right.
    assert padding_amounts(5, 5, 3, 3, (1, 1), "same") == (1, 1, 1, 1)
    assert padding_amounts(6, 6, 3, 3, (2, 2), "same") == (0, 1, 0, 1)
    assert padding_amounts(4, 4, 2, 2, (1, 1), "same") == (0, 1, 0, 1)
    assert output_size(6, 6, 3, 3, (2, 2), (0, 1, 0, 1)) == (3, 3)


@pytest.mark.parametrize("engine", FAST)
@settings(max_examples=25, deadline=None)
@given(case=conv_case())
def test_conv_matches_reference(engine, case):
    N, H, W, C, F, kh, kw, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    w = rng.standard_normal((kh, kw, C, F)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    ref_out, ref_cache = reference.conv2d_forward(x, w, b, stride, pad)
    out, cache = FAST[engine].conv2d_forward(x, w, b, stride, pad)
    assert out.shape == ref_out.shape and out.dtype == np.float32
    assert relative_error(out, ref_out) < TOL
    dout = rng.standard_normal(out.shape).astype(np.float32)
    grads = FAST[engine].conv2d_backward(dout, cache)
    wants = reference.conv2d_backward(dout, ref_cache)
    sizes = reference.conv2d_backward(np.abs(dout), (np.abs(x), np.abs(w), stride, pad))
    for got, want, size in zip(grads, wants, sizes, strict=True):
        assert got.shape == want.shape
        assert error_for_size(got, want, size) < TOL


def error_for_size(got, want, size) -> float:
    """||got - want|| against the size of the terms summed: ``size`` is the same sums of their absolute values. A
    sum that cancels (db is dout summed over every pixel; with one filter, one number) has a relative error far
    above float32's rounding of its terms, in any order of summation."""
    size = np.linalg.norm(np.asarray(size, np.float64))
    return 0.0 if size == 0 else float(np.linalg.norm(np.asarray(got, np.float64) - want) / size)


@pytest.mark.parametrize("path", ["kept_taps", "im2col_taps", "im2col"])
@settings(max_examples=25, deadline=None)
@given(
    case=conv_case(),
    chunk_bytes=st.integers(1, 4000),
    need_dx=st.booleans(),
    dtype=st.sampled_from(["f4", "f8"]),
    epilogue=st.sampled_from([None, "relu", "no bias"]),
)
def test_numba_conv_paths_match_reference(path, case, chunk_bytes, need_dx, dtype, epilogue):
    # The Numba engine builds cols three ways: one row per output pixel (im2col), or for short patches one row per
    # kernel tap (im2col_taps), block by block or, when the whole batch's taps are small, once, kept with a row
    # of ones for the backward pass (dw and db in one product; with need_dx the backward takes the blocks' way).
    # Force each in turn, with blocks, and pieces of narrow products (``product_by_rows``, ``small_product``), small
    # enough that most batches need several; and its epilogue adds the bias and, fused, the ReLU, or neither.
    N, H, W, C, F, kh, kw, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((N, H, W, C), (kh, kw, C, F), (F,)))
    b = None if epilogue == "no bias" else b
    activation = "relu" if epilogue == "relu" else None
    saved = cpu.SHORT_PATCH, cpu.CHUNK_BYTES, cpu.KEEP_TAPS_BYTES, cpu.SMALL_GEMM_MACS
    cpu.SHORT_PATCH = 0 if path == "im2col" else 10**6
    cpu.CHUNK_BYTES, cpu.SMALL_GEMM_MACS = chunk_bytes, chunk_bytes  # narrow products go in pieces of this size
    cpu.KEEP_TAPS_BYTES = 10**9 if path == "kept_taps" else 0
    try:
        out, cache = cpu.conv2d_forward(x, w, b, stride, pad, activation=activation)
        assert len(cache) == (5 if path == "kept_taps" else 4)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx, dw, db = cpu.conv2d_backward(dout, cache, need_dx)
    finally:
        cpu.SHORT_PATCH, cpu.CHUNK_BYTES, cpu.KEEP_TAPS_BYTES, cpu.SMALL_GEMM_MACS = saved
    ref_out, ref_cache = reference.conv2d_forward(x, w, b, stride, pad)
    if activation == "relu":
        ref_out = np.maximum(ref_out, 0)
    ref_dx, ref_dw, ref_db = reference.conv2d_backward(dout, ref_cache)
    tol = TOL if dtype == "f4" else 1e-12
    assert out.dtype == np.dtype(dtype) and dw.dtype == np.dtype(dtype)
    assert relative_error(out, ref_out) < tol
    assert relative_error(dw, ref_dw) < tol and relative_error(db, ref_db) < tol
    if need_dx:
        assert dx.dtype == np.dtype(dtype) and relative_error(dx, ref_dx) < tol
    else:
        assert dx is None


@pytest.mark.parametrize("C, k", [(8, 3), (12, 5), (9, 2)])
def test_numba_dx_as_a_convolution_matches_reference(C, k):
    # At stride 1 with 'same' padding and C >= 8 the engine computes dx as a convolution of dout with the rotated
    # kernel (no col2im); k = 2 pads unevenly, (0, 1, 0, 1).
    rng = np.random.default_rng(C)
    x = rng.standard_normal((2, 7, 6, C))
    w = rng.standard_normal((k, k, C, 5))
    pad = padding_amounts(7, 6, k, k, (1, 1), "same")
    out, cache = cpu.conv2d_forward(x, w, None, (1, 1), pad)
    dout = rng.standard_normal(out.shape)
    ref_out, ref_cache = reference.conv2d_forward(x, w, None, (1, 1), pad)
    assert relative_error(out, ref_out) < 1e-12
    assert cpu._dx_is_a_convolution(x.shape, w.shape, dout.shape, (1, 1), pad)
    # dx and dw both come from the one im2col of dout (_conv_dx_dw)
    for got, want in zip(cpu.conv2d_backward(dout, cache), reference.conv2d_backward(dout, ref_cache), strict=True):
        assert relative_error(got, want) < 1e-12


@st.composite
def winograd_case(draw):
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))  # (top, bottom, left, right), uneven too
    H, W = draw(st.integers(max(1, 3 - pad[0] - pad[1]), 9)), draw(st.integers(max(1, 3 - pad[2] - pad[3]), 9))
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    return N, H, W, C, F, pad, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None)
@given(
    case=winograd_case(),
    block_bytes=st.integers(1, 3000),
    epilogue=st.sampled_from([None, "relu", "no bias"]),
    dtype=st.sampled_from(["f4", "f8"]),
    m=st.sampled_from([2, 4]),
)
def test_winograd_matches_reference(case, block_bytes, epilogue, dtype, m):
    # Winograd's F(2x2, 3x3) and F(4x4, 3x3), compiled and blocked (small blocks: most batches need several) and
    # in NumPy, against the direct convolution: odd sizes (tiles over the edge), uneven padding, with and without
    # bias and ReLU.
    N, H, W, C, F, pad, seed = case
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((N, H, W, C), (3, 3, C, F), (F,)))
    b = None if epilogue == "no bias" else b
    want, _ = reference.conv2d_forward(x, w, b, (1, 1), pad)
    saved, winograd.BLOCK_BYTES = winograd.BLOCK_BYTES, block_bytes
    try:
        got = winograd.conv3x3(x, w, b, pad, relu=epilogue == "relu", m=m)
    finally:
        winograd.BLOCK_BYTES = saved
    tol = TOL if dtype == "f4" else 1e-12
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    assert relative_error(got, np.maximum(want, 0) if epilogue == "relu" else want) < tol
    assert relative_error(winograd.conv3x3_reference(x, w, b, pad, m=m), want) < tol


@settings(max_examples=40, deadline=None)
@given(
    case=winograd_case(),
    block_bytes=st.integers(1, 3000),
    dtype=st.sampled_from(["f4", "f8"]),
    m=st.sampled_from([2, 4]),
)
def test_winograd_with_pooling_is_the_convolution_then_the_pooling(case, block_bytes, dtype, m):
    # The output transform that pools each 2x2 window as it goes: the same maxima, bit for bit, and the same
    # winners as conv3x3 then the 2x2 max pooling; odd sizes leave a last row or column (or a tile) out.
    N, H, W, C, F, pad, seed = case
    Ho, Wo = H + pad[0] + pad[1] - 2, W + pad[2] + pad[3] - 2
    assume(Ho >= 2 and Wo >= 2)
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, H, W, C)).astype(dtype), rng.standard_normal((3, 3, C, F)).astype(dtype)
    x[0] = x[0, :1, :1]  # a flat image: a window's values equal, or nearly, away from the padding
    saved, winograd.BLOCK_BYTES = winograd.BLOCK_BYTES, block_bytes
    try:
        pooled, argmax = winograd.conv3x3_maxpool2x2(x, w, pad, m=m)
        z = winograd.conv3x3(x, w, None, pad, m=m)
    finally:
        winograd.BLOCK_BYTES = saved
    want, (_, want_argmax, _) = cpu.maxpool2d_forward(z)
    assert pooled.dtype == np.dtype(dtype) and argmax.dtype == np.int32
    assert np.array_equal(pooled, want) and np.array_equal(argmax, want_argmax)


@settings(max_examples=40, deadline=None)
@given(
    case=winograd_case(),
    block_bytes=st.integers(1, 3000),
    dtype=st.sampled_from(["f4", "f8"]),
    m=st.sampled_from([2, 4]),
)
def test_winograd_weight_gradient_matches_reference(case, block_bytes, dtype, m):
    # dw by the transposed formula, dw = G^T [sum over tiles of (B^T d B) * (A dY A^T)] G, against the loops.
    N, H, W, C, F, pad, seed = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, H, W, C)).astype(dtype), rng.standard_normal((3, 3, C, F)).astype(dtype)
    out, cache = reference.conv2d_forward(x, w, None, (1, 1), pad)
    dout = rng.standard_normal(out.shape).astype(dtype)
    want = reference.conv2d_backward(dout, cache)[1]
    saved, winograd.BLOCK_BYTES = winograd.BLOCK_BYTES, block_bytes
    try:
        got = winograd.conv3x3_dw(x, dout, pad, m=m)
    finally:
        winograd.BLOCK_BYTES = saved
    tol = TOL if dtype == "f4" else 1e-12
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    assert relative_error(got, want) < tol
    assert relative_error(winograd.conv3x3_dw_reference(x, dout, pad, m=m), want) < tol


@pytest.mark.parametrize(("m", "bound", "times_im2col"), [(2, 1e-6, 4), (4, 2e-6, 10)])
def test_winograd_float32_error_stays_small_over_many_channels(m, bound, times_im2col):
    # Sums of differences round differently from the direct sum; over 64 channels, as in the CIFAR model, float32
    # results still agree with the float64 convolution: F(2x2, 3x3) about as closely as im2col's do, F(4x4, 3x3),
    # whose transforms carry factors up to 8 and sixths, within a few times that (measured: 8e-7, 5.6x im2col's).
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 16, 16, 64)), rng.standard_normal((3, 3, 64, 64)) / 24
    exact, _ = reference.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1))
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    err_winograd = relative_error(winograd.conv3x3(x32, w32, m=m), exact)
    err_im2col = relative_error(im2col.conv2d_forward(x32, w32, None, (1, 1), (1, 1, 1, 1))[0], exact)
    assert err_winograd < bound and err_winograd < times_im2col * err_im2col


def test_winograd_tile_follows_the_products_per_output():
    assert cpu.winograd_tile(32, 32, 3, 3, (1, 1), 32, 32) == 4  # the CIFAR model's convolutions: 2.25 against 4
    assert cpu.winograd_tile(32, 64, 3, 3, (1, 1), 11, 11) == 4  # the MNIST model's second: 2.7 against 4.8
    assert cpu.winograd_tile(64, 64, 3, 3, (1, 1), 6, 6) == 2  # 4 each: the smaller tile on a tie
    assert cpu.winograd_tile(64, 64, 3, 3, (1, 1), 5, 5) == 0  # 5.8 each: too many tiles over the edge
    assert cpu.winograd_products(2, 11, 11) == 36 * 16 / 121 and cpu.winograd_products(4, 16, 16) == 36 / 16
    assert cpu.winograd_tile(3, 32, 3, 3, (1, 1), 32, 32) == 0  # a first layer: too few channels
    assert cpu.winograd_tile(32, 32, 3, 3, (2, 2), 16, 16) == 0 and cpu.winograd_tile(32, 32, 5, 5, (1, 1), 32, 32) == 0


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
@pytest.mark.parametrize("m", [2, 4])
def test_numba_conv_by_winograd_matches_reference(padding, dtype, m, monkeypatch):
    # Through the engine's entry points: the forward pass, and for 'same' layers dw and dx (a Winograd convolution
    # of dout with the rotated kernel); a 'valid' layer's dx goes by col2im, and its dw joins that pass. Counted,
    # so the test fails if the engine stops choosing them.
    monkeypatch.setattr(cpu, "WINOGRAD_MIN_CHANNELS", 4)
    monkeypatch.setattr(cpu, "winograd_products", lambda tile, Ho, Wo: 1.0 if tile == m else 2.0)  # m, always
    calls = []
    for name in ("conv3x3", "conv3x3_dw"):
        f = getattr(winograd, name)
        monkeypatch.setattr(winograd, name, lambda *a, f=f, name=name, **k: calls.append((name, k["m"])) or f(*a, **k))
    rng = np.random.default_rng(7)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((3, 7, 6, 9), (3, 3, 9, 5), (5,)))
    pad = padding_amounts(7, 6, 3, 3, (1, 1), padding)
    out, cache = cpu.conv2d_forward(x, w, b, (1, 1), pad, activation="relu")
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = cpu.conv2d_backward(dout, cache)
    names = ["conv3x3", "conv3x3", "conv3x3_dw"] if padding == "same" else ["conv3x3"]
    assert sorted(calls) == [(name, m) for name in names]
    ref_out, ref_cache = reference.conv2d_forward(x, w, b, (1, 1), pad)
    tol = TOL if dtype == "f4" else 1e-12
    assert relative_error(out, np.maximum(ref_out, 0)) < tol
    for got, want in zip(grads, reference.conv2d_backward(dout, ref_cache), strict=True):
        assert got.dtype == np.dtype(dtype) and relative_error(got, want) < tol


@settings(max_examples=40, deadline=None)
@given(
    case=conv_case(),
    density=st.sampled_from([0.0, 0.05, 0.25, 1.0]),
    need_dx=st.booleans(),
    dtype=st.sampled_from(["f4", "f8"]),
)
def test_sparse_backward_matches_reference(case, density, need_dx, dtype):
    # The backward pass that skips dout's zeros, against the loops that visit every element, at every stride and
    # padding: nothing nonzero, a few, a pooling's share, everything.
    N, H, W, C, F, kh, kw, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, H, W, C)).astype(dtype), rng.standard_normal((kh, kw, C, F)).astype(dtype)
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    dout = (rng.standard_normal((N, Ho, Wo, F)) * (rng.random((N, Ho, Wo, F)) < density)).astype(dtype)
    dw, dx = sparse.conv2d_dw_dx(x, dout, w, stride, pad, need_dx)
    ref_dx, ref_dw, _ = reference.conv2d_backward(dout, (x, w, stride, pad))
    tol = TOL if dtype == "f4" else 1e-12
    assert dw.dtype == np.dtype(dtype) and dw.shape == w.shape
    if density == 0:
        assert not dw.any() and (not need_dx or not dx.any())
    else:
        assert relative_error(dw, ref_dw) < tol
        if need_dx:
            assert dx.dtype == np.dtype(dtype) and relative_error(dx, ref_dx) < tol
    if not need_dx:
        assert dx is None


def test_sparse_backward_lets_a_nan_through():
    # a NaN in dout is not a zero: it reaches dw and dx, as it does through the GEMMs
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 5, 5, 4)), rng.standard_normal((3, 3, 4, 2))
    dout = np.zeros((1, 3, 3, 2))
    dout[0, 1, 2, 1] = np.nan
    dw, dx = sparse.conv2d_dw_dx(x, dout, w)
    assert np.isnan(dw[..., 1]).all() and not np.isnan(dw[..., 0]).any()
    assert np.isnan(dx[0, 1:4, 2:5]).all() and not np.isnan(dx[0, 0]).any()


def test_nonzero_fraction_counts_like_numpy():
    rng = np.random.default_rng(0)
    for dtype in ("f4", "f8"):
        a = (rng.standard_normal((3, 7, 5, 9)) * (rng.random((3, 7, 5, 9)) < 0.3)).astype(dtype)
        assert sparse.nonzero_fraction(a) == np.count_nonzero(a) / a.size
    assert sparse.nonzero_fraction(np.array([0.0, -0.0, 1.0, np.nan])) == 0.5  # -0.0 is a zero, NaN is not
    assert sparse.nonzero_fraction(np.zeros((0, 3), np.float32)) == 0.0


@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_numba_conv_backward_behind_max_pooling_skips_the_zeros(dtype, monkeypatch):
    # A 'valid' layer behind a 2x2 max pooling and ReLU: the engine takes the sparse backward (counted) and
    # matches the loops; with a dense dout it does not.
    calls = []
    f = sparse.conv2d_dw_dx
    monkeypatch.setattr(sparse, "conv2d_dw_dx", lambda *a, **k: calls.append(1) or f(*a, **k))
    rng = np.random.default_rng(11)
    C = cpu.SPARSE_MIN_CHANNELS
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((3, 10, 9, C), (3, 3, C, 6), (6,)))
    y, cache = cpu.conv2d_forward(x, w, b, activation="relu")
    pooled, pool_cache = reference.maxpool2d_forward(y)
    dout = reference.maxpool2d_backward(rng.standard_normal(pooled.shape).astype(dtype), pool_cache) * (y > 0)
    assert 0 < sparse.nonzero_fraction(dout) <= min(0.25, cpu.SPARSE_MAX_DENSITY)
    grads = cpu.conv2d_backward(dout, cache)
    assert len(calls) == 1
    ref_out, ref_cache = reference.conv2d_forward(x, w, b)
    tol = TOL if dtype == "f4" else 1e-12
    for got, want in zip(grads, reference.conv2d_backward(dout, ref_cache), strict=True):
        assert got.dtype == np.dtype(dtype) and relative_error(got, want) < tol
    cpu.conv2d_backward(rng.standard_normal(y.shape).astype(dtype), cache)
    assert len(calls) == 1  # dense: im2col + GEMM + col2im


@pytest.mark.parametrize("engine", FAST)
@settings(max_examples=25, deadline=None)
@given(case=conv_case())
def test_im2col_col2im_match_between_engines(engine, case):
    N, H, W, C, F, kh, kw, stride, pad, seed = case
    x = np.random.default_rng(seed).standard_normal((N, H, W, C))
    cols = FAST[engine].im2col(x, kh, kw, stride, pad)
    assert np.array_equal(cols, im2col.im2col(x, kh, kw, stride, pad))
    assert np.array_equal(FAST[engine].im2col_taps(x, kh, kw, stride, pad), cols.T)
    out = np.full(cols.size, np.nan)  # written through, padding included
    assert np.array_equal(FAST[engine].im2col_taps(x, kh, kw, stride, pad, out=out), cols.T)
    # col2im is the adjoint of im2col: <im2col(x), y> == <x, col2im(y)> for any y
    y = np.random.default_rng(seed + 1).standard_normal(cols.shape)
    lhs = np.sum(cols * y)
    rhs = np.sum(x * FAST[engine].col2im(y, x.shape, kh, kw, stride, pad))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


@st.composite
def pool_case(draw):
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))  # stride < pool: overlapping windows
    padding = draw(st.sampled_from(["valid", "same"]))
    H, W = draw(st.integers(ph, ph + 6)), draw(st.integers(pw, pw + 6))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    ties = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return N, H, W, C, (ph, pw), (sh, sw), padding_amounts(H, W, ph, pw, (sh, sw), padding), ties, seed


def _pool_input(N, H, W, C, ties, seed):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many windows hold several equal maxima
        return rng.integers(0, 3, (N, H, W, C)).astype(np.float32)
    return rng.standard_normal((N, H, W, C)).astype(np.float32)


@pytest.mark.parametrize("engine", FAST)
@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@settings(max_examples=25, deadline=None)
@given(case=pool_case())
def test_pooling_matches_reference(engine, kind, case):
    N, H, W, C, pool, stride, pad, ties, seed = case
    x = _pool_input(N, H, W, C, ties, seed)
    fwd, bwd = getattr(FAST[engine], kind + "_forward"), getattr(FAST[engine], kind + "_backward")
    ref_fwd, ref_bwd = getattr(reference, kind + "_forward"), getattr(reference, kind + "_backward")
    ref_out, ref_cache = ref_fwd(x, pool, stride, pad)
    out, cache = fwd(x, pool, stride, pad)
    assert out.shape == ref_out.shape
    assert relative_error(out, ref_out) < TOL
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(np.float32)
    dx, ref_dx = bwd(dout, cache), ref_bwd(dout, ref_cache)
    assert dx.shape == x.shape
    assert relative_error(dx, ref_dx) < TOL


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 3),
    H=st.integers(2, 9),
    W=st.integers(2, 9),
    C=st.integers(1, 9),
    ties=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_maxpool_2x2_fast_path_matches_reference(N, H, W, C, ties, seed):
    # MaxPooling2D(2) has its own unrolled kernel; odd sizes drop the last row or column, as in Keras.
    x = _pool_input(N, H, W, C, ties, seed)
    no_pad = (0, 0, 0, 0)
    out, cache = cpu.maxpool2d_forward(x, (2, 2), (2, 2), no_pad)
    ref_out, ref_cache = reference.maxpool2d_forward(x, (2, 2), (2, 2), no_pad)
    assert np.array_equal(out, ref_out)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(np.float32)
    assert np.array_equal(cpu.maxpool2d_backward(dout, cache), reference.maxpool2d_backward(dout, ref_cache))


def test_maxpool_tie_goes_to_one_element():
    # All four values equal: the whole gradient goes to the first (top-left) one, not 1/4 to each.
    x = np.ones((1, 2, 2, 1), np.float32)
    for engine in (reference, im2col, cpu):
        out, cache = engine.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0))
        dx = engine.maxpool2d_backward(np.full_like(out, 5.0), cache)
        assert dx[0, :, :, 0].tolist() == [[5.0, 0.0], [0.0, 0.0]]


def test_maxpool_overlapping_windows_add_up():
    # 3x3 windows at stride 1 over a 4x4 image whose maximum is in the middle: all four windows pick it.
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 1, 1, 0] = 9.0
    for engine in (reference, im2col, cpu):
        out, cache = engine.maxpool2d_forward(x, (3, 3), (1, 1), (0, 0, 0, 0))
        dx = engine.maxpool2d_backward(np.ones_like(out), cache)
        assert dx[0, 1, 1, 0] == 4.0 and dx.sum() == 4.0


@pytest.mark.parametrize("engine", FAST)
@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 4), D=st.integers(1, 9), M=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_dense_matches_reference(engine, N, D, M, seed):
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((N, D), (D, M), (M,)))
    out, cache = FAST[engine].dense_forward(x, w, b)
    ref_out, ref_cache = reference.dense_forward(x, w, b)
    assert relative_error(out, ref_out) < TOL
    dout = rng.standard_normal(out.shape).astype(np.float32)
    for got, want in zip(
        FAST[engine].dense_backward(dout, cache), reference.dense_backward(dout, ref_cache), strict=True
    ):
        assert relative_error(got, want) < TOL


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 4), D=st.integers(1, 9), M=st.integers(1, 9), bias=st.booleans(), seed=st.integers(0, 999))
def test_numba_dense_fused_relu_matches_reference(N, D, M, bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((N, D), (D, M), (M,)))
    b = b if bias else None
    out, _ = cpu.dense_forward(x, w, b, activation="relu")
    assert relative_error(out, np.maximum(reference.dense_forward(x, w, b)[0], 0)) < TOL
    assert "relu" in cpu.FUSED_ACTIVATIONS
    with pytest.raises(ValueError, match="fused activation"):
        cpu.dense_forward(x, w, b, activation="tanh")


@pytest.mark.parametrize("engine", [reference, im2col, cpu])
def test_float64_stays_float64(engine):
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 2))
    w = np.random.default_rng(1).standard_normal((3, 3, 2, 3))
    out, cache = engine.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1))
    dx, dw, db = engine.conv2d_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == np.float64


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax", "leaky_relu", "linear"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_activations_match_numpy(name, dtype):
    from minicnn.kernels import activations

    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 5, 5, 3)).astype(dtype)
    dout = rng.standard_normal(z.shape).astype(dtype)
    y, cache = cpu.activation_forward(name, z)
    y_ref, cache_ref = activations.activation_forward(name, z)
    np.testing.assert_array_equal(y, y_ref)
    want = activations.activation_backward(name, dout, cache_ref)
    np.testing.assert_array_equal(cpu.activation_backward(name, dout, cache), want)
    # in place (what a model does with the gradients it owns): the same numbers, written over dout
    got = cpu.activation_backward(name, dout.copy(), cache, overwrite_dout=True)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=50, deadline=None)
@given(N=st.integers(1, 300), rows=st.integers(1, 2000), row_bytes=st.integers(1, 4096))
def test_conv_blocks_cover_the_batch_evenly(N, rows, row_bytes):
    # The blocked convolutions cut a batch into ranges of images: together exactly [0, N), in order, none bigger
    # than CHUNK_BYTES allows (one image at least), as even as can be (sizes differ by one at most), and the bigger
    # ones first, so that the pooled buffers of the first block fit every later one.
    blocks = list(cpu._blocks(N, rows, row_bytes))
    per_block = max(1, cpu.CHUNK_BYTES // (rows * row_bytes))
    assert blocks[0][0] == 0 and blocks[-1][1] == N
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    sizes = [e - s for s, e in blocks]
    assert min(sizes) >= 1 and max(sizes) <= per_block and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)
    assert len(blocks) == -(-N // per_block)


def test_maxpool_2x2_backward_writes_every_element_of_a_reused_buffer():
    # The 2x2 backward fills dx without zeroing it first, and a big dx comes from the buffer pool, holding whatever
    # an earlier step left there: here NaN. Odd sizes leave a last row and column that no window covers.
    from minicnn.kernels import buffers

    x = _pool_input(2, 65, 63, 16, ties=False, seed=3)
    assert x.nbytes >= buffers.MIN_BYTES
    buffers.clear()
    out, cache = cpu.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0))
    junk = buffers.empty(x.shape, np.float32)
    junk.fill(np.nan)
    del junk  # free again, NaN inside: the next request of this size gets it
    dout = np.random.default_rng(4).standard_normal(out.shape).astype(np.float32)
    _, ref_cache = reference.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0, 0, 0))
    assert np.array_equal(cpu.maxpool2d_backward(dout, cache), reference.maxpool2d_backward(dout, ref_cache))


@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_small_product_is_matmul(dtype):
    # np.dot in place of @ (it lets other threads run during the product): same numbers, for the shapes the engine
    # gives it (a ones vector for db; a transposed view of cols for a first layer's dw)
    rng = np.random.default_rng(0)
    d = rng.standard_normal((500, 7)).astype(dtype)
    cols = rng.standard_normal((500, 9)).astype(dtype)
    taps = np.ascontiguousarray(cols.T)
    for a in (np.ones(500, dtype), cols.T, taps):
        got = cpu.small_product(a, d)
        assert got.dtype == np.dtype(dtype) and np.allclose(got, a @ d, rtol=1e-5 if dtype == "f4" else 1e-12)


@settings(max_examples=30, deadline=None)
@given(
    M=st.integers(1, 40),
    K=st.integers(1, 40),
    N=st.integers(1, 40),
    macs=st.integers(1, 2000),
    dtype=st.sampled_from(["f4", "f8"]),
    seed=st.integers(0, 999),
)
def test_products_in_pieces_are_matmul(M, K, N, macs, dtype, seed):
    # Narrow products run in pieces of at most SMALL_GEMM_MACS multiply-adds (OpenBLAS's small-matrix kernels):
    # by rows of the output, with an epilogue on each slice, or, for a small output, by pieces of the sum
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    tol = 1e-5 if dtype == "f4" else 1e-12
    saved = cpu.SMALL_GEMM_MACS, cpu.SMALL_OUTPUT
    cpu.SMALL_GEMM_MACS, cpu.SMALL_OUTPUT = macs, 10**6
    try:
        seen = []
        out = cpu.product_by_rows(a, b, np.empty((M, N), dtype), lambda rows: seen.append(rows.copy()))
        sums = [cpu.small_product(lhs, b) for lhs in (a, np.ascontiguousarray(a.T).T)]  # and a transposed view
    finally:
        cpu.SMALL_GEMM_MACS, cpu.SMALL_OUTPUT = saved
    assert np.allclose(out, a @ b, rtol=tol, atol=tol * K)
    assert np.array_equal(np.concatenate(seen), out)  # the epilogue saw every row once, as written
    assert len(seen) == (len(cpu._pieces(M, macs // (K * N))) if N <= cpu.NARROW_COLUMNS else 1)
    for got in sums:
        assert got.dtype == np.dtype(dtype) and np.allclose(got, a @ b, rtol=tol, atol=tol * K)


def test_pieces_cover_the_range_evenly():
    assert cpu._pieces(10, 4) == [(0, 3), (3, 6), (6, 10)]
    assert cpu._pieces(10, 100) == [(0, 10)]
    assert cpu._pieces(3, 0) == [(0, 1), (1, 2), (2, 3)]  # at least one row or term a piece


@pytest.mark.parametrize("units", [3, 40])
def test_dense_in_pieces_matches_reference(monkeypatch, units):
    # A narrow Dense layer (few units) runs its forward product by pieces of the sum and dw by slices of rows
    monkeypatch.setattr(cpu, "SMALL_GEMM_MACS", 50)
    rng = np.random.default_rng(units)
    x, w, b = rng.standard_normal((5, 60)), rng.standard_normal((60, units)), rng.standard_normal(units)
    out, cache = cpu.dense_forward(x, w, b)
    ref_out, ref_cache = reference.dense_forward(x, w, b)
    assert relative_error(out, ref_out) < 1e-12
    dout = rng.standard_normal(out.shape)
    for got, want in zip(cpu.dense_backward(dout, cache), reference.dense_backward(dout, ref_cache), strict=True):
        assert got.shape == want.shape and relative_error(got, want) < 1e-12


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_sparse_backward_over_several_passes(padding):
    # dw takes PIXELS_PER_PASS output pixels a pass, counted through the batch: here 6 images of 11x11 (or 13x13)
    # pixels, so passes that end mid-image and a short last one, at R's 32 input channels, f64
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((6, 13, 13, 32)), rng.standard_normal((3, 3, 32, 16))
    pad = padding_amounts(13, 13, 3, 3, (1, 1), padding)
    Ho, Wo = output_size(13, 13, 3, 3, (1, 1), pad)
    assert (6 * Ho * Wo) % sparse.PIXELS_PER_PASS and 6 * Ho * Wo > 4 * sparse.PIXELS_PER_PASS
    dout = rng.standard_normal((6, Ho, Wo, 16)) * (rng.random((6, Ho, Wo, 16)) < 0.2)
    dw, dx = sparse.conv2d_dw_dx(x, dout, w, (1, 1), pad)
    ref_dx, ref_dw, _ = reference.conv2d_backward(dout, (x, w, (1, 1), pad))
    assert relative_error(dw, ref_dw) < 1e-12 and relative_error(dx, ref_dx) < 1e-12


@settings(max_examples=40, deadline=None)
@given(
    case=conv_case(),
    macs=st.integers(1, 3000),
    dtype=st.sampled_from(["f4", "f8"]),
    bias=st.booleans(),
    overwrite_dout=st.booleans(),
    keep_taps=st.booleans(),
    need_dx=st.booleans(),
)
def test_conv_relu_maxpool_fused_matches_reference(case, macs, dtype, bias, overwrite_dout, keep_taps, need_dx):
    # The twin is the three reference layers in turn: convolution, ReLU, 2x2 max pooling, and back. Pieces as
    # small as one image (SMALL_GEMM_MACS decides how many images a piece takes); the taps kept from the forward
    # pass, or built again piece by piece; odd output sizes leave a last row or column outside every window; dx
    # asked for or not.
    N, H, W, C, F, kh, kw, stride, pad, seed = case
    Ho, Wo = output_size(H, W, kh, kw, stride, pad)
    assume(Ho >= 2 and Wo >= 2)  # else no 2x2 window fits
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((N, H, W, C), (kh, kw, C, F), (F,)))
    b = b if bias else None
    saved = cpu.SMALL_GEMM_MACS, cpu.KEEP_TAPS_BYTES
    cpu.SMALL_GEMM_MACS, cpu.KEEP_TAPS_BYTES = macs, (10**9 if keep_taps else 0)
    try:
        out, cache = cpu.conv2d_relu_maxpool2x2_forward(x, w, b, stride, pad)
        if not cpu._one_channel_3x3(x.shape, w.shape, stride):  # those keep their image (the next test)
            assert (cache[6] is not None) == (keep_taps and kh * kw * C <= cpu.SHORT_PATCH)
        out = out.copy()
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx, dw, db = cpu.conv2d_relu_maxpool2x2_backward(dout.copy(), cache, overwrite_dout, need_dx)
    finally:
        cpu.SMALL_GEMM_MACS, cpu.KEEP_TAPS_BYTES = saved
    assert_fused_pair_matches_reference((out, dx, dw, db), (x, w, b, stride, pad, dout), need_dx)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 3),
    H=st.integers(4, 12),
    W=st.integers(4, 12),
    F=st.integers(1, 40),
    padding=st.sampled_from(["valid", "same"]),
    dtype=st.sampled_from(["f4", "f8"]),
    bias=st.booleans(),
    need_dx=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv_relu_maxpool_one_channel_3x3_matches_reference(N, H, W, F, padding, dtype, bias, need_dx, seed):
    # A one-channel 3x3 layer at stride 1 (R's first) runs by its own kernels, which keep the (padded) image
    # rather than taps: any number of filters (whole vectors and a remainder), odd sizes (a window-less last row
    # or column), padding; dx, when asked for, by the general backward from the same cache.
    pad = padding_amounts(H, W, 3, 3, (1, 1), padding)
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((N, H, W, 1), (3, 3, 1, F), (F,)))
    b = b if bias else None
    assert cpu._one_channel_3x3(x.shape, w.shape, (1, 1))
    out, cache = cpu.conv2d_relu_maxpool2x2_forward(x, w, b, (1, 1), pad)
    assert cache[6].shape == (N, H + pad[0] + pad[1], W + pad[2] + pad[3])  # the image, kept for the backward
    out = out.copy()
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = cpu.conv2d_relu_maxpool2x2_backward(dout, cache, need_dx=need_dx)
    assert_fused_pair_matches_reference((out, dx, dw, db), (x, w, b, (1, 1), pad, dout), need_dx)


def test_conv_relu_maxpool_one_channel_3x3_gradient_matches_finite_differences():
    # dw and db by the one-channel kernel's backward (no dx asked for, as for a first layer), in float64
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 9, 8, 1)), rng.standard_normal((3, 3, 1, 20)), rng.standard_normal(20) * 0.1
    pad = (1, 1, 1, 1)
    out, cache = cpu.conv2d_relu_maxpool2x2_forward(x, w, b, (1, 1), pad)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cpu.conv2d_relu_maxpool2x2_backward(dout, cache, need_dx=False)

    def f():
        return cpu.conv2d_relu_maxpool2x2_forward(x, w, b, (1, 1), pad)[0].copy()

    assert dx is None
    assert relative_error(dw, numerical_gradient(f, w, dout)) < 1e-7
    assert relative_error(db, numerical_gradient(f, b, dout)) < 1e-7


def assert_fused_pair_matches_reference(got, args, need_dx):
    """got: the fused pair's (pooled, dx, dw, db); args: (x, w, b, stride, pad, dout) it ran on. Same shapes and
    dtype as the reference layers' results, and the same numbers up to rounding."""
    out, dx, dw, db = got
    ref_out, ref_dx, ref_dw, ref_db = conv_relu_maxpool_reference(*args)
    dtype = args[0].dtype
    tol = TOL if dtype == np.float32 else 1e-12
    assert out.shape == ref_out.shape and out.dtype == dw.dtype == db.dtype == dtype
    assert relative_error(out, ref_out) < tol
    assert relative_error(dw, ref_dw) < tol and relative_error(db, ref_db) < tol
    assert dx is None if not need_dx else dx.dtype == dtype and relative_error(dx, ref_dx) < tol


def conv_relu_maxpool_reference(x, w, b, stride, pad, dout):
    """The fused pair's twin: the reference convolution, ReLU and 2x2 max pooling in turn, forward and back ->
    (pooled, dx, dw, db)."""
    z, z_cache = reference.conv2d_forward(x, w, b, stride, pad)
    y = np.maximum(z, 0)
    out, pool_cache = reference.maxpool2d_forward(y, (2, 2), (2, 2), (0, 0, 0, 0))
    dz = reference.maxpool2d_backward(dout, pool_cache) * (y > 0)
    dx, dw, db = reference.conv2d_backward(dz, z_cache)
    return out, dx, dw, db


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
@pytest.mark.parametrize(
    "shape, padding",
    [
        ((2, 13, 13, 32, 64), "valid"),
        ((2, 12, 12, 32, 32), "same"),
        ((3, 9, 11, 32, 40), "same"),
        ((2, 6, 6, 32, 32), "same"),
    ],
)
def test_conv_relu_maxpool_fused_by_winograd_matches_reference(shape, padding, dtype, need_dx):
    # A wide 3x3 layer at stride 1 pools inside Winograd's output transform (F(4x4, 3x3) on the first three,
    # F(2x2, 3x3) on the 6x6 maps); odd sizes put a window-less row or column in a tile; dx by the sparse kernel
    # ('valid') or by Winograd ('same'), or none (a first layer with 32 channels in).
    N, H, W, C, F = shape
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((N, H, W, C)), rng.standard_normal((3, 3, C, F)) * 0.1, rng.standard_normal(F)
    x, w, b = (a.astype(dtype) for a in (x, w, b * 0.1))
    pad = padding_amounts(H, W, 3, 3, (1, 1), padding)
    assert cpu.winograd_tile(C, F, 3, 3, (1, 1), *output_size(H, W, 3, 3, (1, 1), pad))
    out, cache = cpu.conv2d_relu_maxpool2x2_forward(x, w, b, (1, 1), pad)
    out = out.copy()
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = cpu.conv2d_relu_maxpool2x2_backward(dout, cache, need_dx=need_dx)
    ref_out, ref_dx, ref_dw, ref_db = conv_relu_maxpool_reference(x, w, b, (1, 1), pad, dout)
    tol = TOL if dtype == "f4" else 1e-12
    for got, want in ((out, ref_out), (dw, ref_dw), (db, ref_db), *([(dx, ref_dx)] if need_dx else [])):
        assert got.dtype == np.dtype(dtype) and relative_error(got, want) < tol
    assert need_dx or dx is None


@pytest.mark.parametrize("channels", [(2, 4), (32, 32)])  # taps and a GEMM; Winograd
def test_conv_relu_maxpool_fused_gradient_matches_finite_differences(channels):
    C, F = channels
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 9, 8, C)), rng.standard_normal((3, 3, C, F)), rng.standard_normal(F) * 0.1
    out, cache = cpu.conv2d_relu_maxpool2x2_forward(x, w, b, (1, 1), (1, 1, 1, 1))
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cpu.conv2d_relu_maxpool2x2_backward(dout, cache, need_dx=True)

    def f():
        return cpu.conv2d_relu_maxpool2x2_forward(x, w, b, (1, 1), (1, 1, 1, 1))[0].copy()

    assert relative_error(dw, numerical_gradient(f, w, dout)) < 1e-7
    assert relative_error(db, numerical_gradient(f, b, dout)) < 1e-7
    assert relative_error(dx, numerical_gradient(f, x, dout)) < 1e-7
