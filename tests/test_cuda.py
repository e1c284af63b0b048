"""Every CUDA kernel against its CPU twin, on random inputs, float32, relative error < 1e-5.

Without a GPU the kernels run in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set by ``conftest.py``
before numba is imported, and again here for a run of this file alone). The simulator runs every CUDA thread as a
Python thread, so shapes are tiny, but chosen to reach every edge: GEMM sizes that are not multiples of the tile,
split-K, strides 1 and 2, 'valid' and 'same' (asymmetric) padding, overlapping pooling windows.

On a machine without numba-cuda the file is skipped, with the reason; in CI (``CI`` set), which installs
``.[cuda]``, a missing numba-cuda is a failure instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minicnn.kernels import activations, losses, reference, updates
from minicnn.kernels import im2col as numpy_kernels
from minicnn.kernels.shapes import padding_amounts
from minicnn.testing import relative_error

pytestmark = pytest.mark.cuda

TOL = 1e-5
HAVE_GPU = Path("/dev/nvidia0").exists()


@pytest.fixture(scope="module")
def cu():
    """The CUDA modules and the backend, or a skip (a failure in CI) saying what is missing."""
    if not HAVE_GPU:
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    from minicnn.kernels import cuda

    problem = cuda.cuda_status()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs minicnn[cuda] and runs the simulator, yet: {problem}")
        pytest.skip(problem)
    from minicnn.kernels import cuda_conv, cuda_gemm, cuda_launch, cuda_pool, cuda_reduce

    class Modules:
        backend = cuda.make_backend()
        gemm, conv, launch, pool, reduce = cuda_gemm, cuda_conv, cuda_launch, cuda_pool, cuda_reduce

    return Modules


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def check(cu, got, want, what=""):
    got = cu.backend.to_numpy(got)
    assert got.shape == np.shape(want), f"{what}: shape {got.shape} != {np.shape(want)}"
    err = relative_error(got, want)
    assert err < TOL, f"{what}: relative error {err:.2e}"


# ---------------------------------------------------------------------------------------------------- backend
def test_backend_has_every_cpu_function(cu):
    from minicnn.backend import FUSED_LAYER_KERNELS, get_backend

    cpu_names = {k for k, v in vars(get_backend("cpu")).items() if callable(v)} - set(FUSED_LAYER_KERNELS)
    assert cu.backend.name == "cuda"
    assert cpu_names <= set(vars(cu.backend)), f"missing: {sorted(cpu_names - set(vars(cu.backend)))}"


def test_arrays_round_trip(cu):
    bk = cu.backend
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    d = bk.asarray(x)
    assert d.dtype == np.float32 and bk.asarray(d) is d
    np.testing.assert_array_equal(bk.to_numpy(d), x.astype(np.float32))
    z = bk.zeros((3, 5), np.float32)
    np.testing.assert_array_equal(bk.to_numpy(z), np.zeros((3, 5), np.float32))


def test_import_needs_nothing_and_errors_say_what_is_missing(cu, tmp_path):
    """In a fresh process: importing the module loads no numba.cuda; without numba-cuda, or without a GPU and
    the simulator, make_backend raises one RuntimeError saying what to do."""
    script = textwrap.dedent(
        """
        import importlib.util, sys
        import minicnn.kernels.cuda as c
        assert "numba.cuda" not in sys.modules
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "numba_cuda" else real(name, *a)
        try:
            c.make_backend()
        except RuntimeError as e:
            assert "pip install 'minicnn[cuda]'" in str(e), e
        else:
            raise AssertionError("no error without numba-cuda")
        importlib.util.find_spec = real
        if not {have_gpu}:
            try:
                c.make_backend()
            except RuntimeError as e:
                assert "no CUDA GPU found (set NUMBA_ENABLE_CUDASIM=1" in str(e), e
            else:
                raise AssertionError("no error without a GPU")
        """
    ).format(have_gpu=HAVE_GPU)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------- GEMM
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_matches_numpy(cu, trans_a, trans_b, with_bias):
    rng = np.random.default_rng(1)
    M, N, K = 37, 21, 29  # no side a multiple of the tile: edge tiles in every direction
    a = rand(rng, *((K, M) if trans_a else (M, K)))
    b = rand(rng, *((N, K) if trans_b else (K, N)))
    bias = rand(rng, N) if with_bias else None
    want = (a.T if trans_a else a) @ (b.T if trans_b else b) + (bias if with_bias else 0)
    bk = cu.backend
    got = cu.gemm.gemm(bk.asarray(a), bk.asarray(b), trans_a, trans_b, None if bias is None else bk.asarray(bias))
    check(cu, got, want, "gemm")


@pytest.mark.parametrize("trans_a, with_bias", [(True, False), (False, True)])
def test_gemm_split_k(cu, trans_a, with_bias):
    """A long K cut into chunks (the weight-gradient shape), the parts summed by a second kernel."""
    rng = np.random.default_rng(2)
    M, N, K = 12, 7, 70
    a = rand(rng, *((K, M) if trans_a else (M, K)))
    b, bias = rand(rng, K, N), rand(rng, N)
    want = (a.T if trans_a else a) @ b + (bias if with_bias else 0)
    bk = cu.backend
    got = cu.gemm.gemm(bk.asarray(a), bk.asarray(b), trans_a, bias=bk.asarray(bias) if with_bias else None, split_k=3)
    check(cu, got, want, "split-K gemm")


@pytest.mark.parametrize("tile", ["SMALL", "LARGE", "NARROW", "TALL"])
def test_gemm_gpu_tiles(cu, tile):
    """The tiles a real GPU uses (the simulator's own is smaller), once each, with edges."""
    rng = np.random.default_rng(3)
    M, N, K = {"SMALL": (60, 9, 13), "LARGE": (100, 5, 9), "NARROW": (130, 33, 10), "TALL": (260, 20, 9)}[tile]
    a, b, bias = rand(rng, M, K), rand(rng, N, K), rand(rng, N)
    bk = cu.backend
    got = cu.gemm.gemm(bk.asarray(a), bk.asarray(b), False, True, bk.asarray(bias), tile=getattr(cu.gemm, tile))
    check(cu, got, a @ b.T + bias, f"gemm {tile}")
    if tile in ("NARROW", "TALL"):  # as a weight gradient uses them: A transposed, K split in two
        at, bt = rand(rng, 3 * K, M), rand(rng, 3 * K, N)
        got = cu.gemm.gemm(bk.asarray(at), bk.asarray(bt), True, tile=getattr(cu.gemm, tile), split_k=2)
        check(cu, got, at.T @ bt, f"gemm {tile} A^T, split-K")


def test_gemm_and_column_sums_refuse_an_out_of_the_wrong_shape(cu):
    bk = cu.backend
    a, b = bk.asarray(np.ones((4, 3), np.float32)), bk.asarray(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"out has shape \(5, 4\); the product is \(4, 5\)"):
        cu.gemm.gemm(a, b, out=bk.asarray(np.zeros((5, 4), np.float32)))
    with pytest.raises(ValueError, match="column_sums: out has shape"):
        cu.reduce.column_sums(b, out=bk.asarray(np.zeros(4, np.float32)))


@pytest.mark.parametrize("split_k", [None, 3])
def test_gemm_relu_epilogue(cu, split_k):
    """ReLU after the bias, in the GEMM's epilogue (or in the kernel that sums the split-K parts)."""
    rng = np.random.default_rng(8)
    M, N, K = 23, 9, 70
    a, b, bias = rand(rng, M, K), rand(rng, K, N), rand(rng, N)
    bk = cu.backend
    got = cu.gemm.gemm(bk.asarray(a), bk.asarray(b), bias=bk.asarray(bias), split_k=split_k, relu=True)
    want = np.maximum(a @ b + bias, 0)
    assert (want == 0).any() and (want > 0).any()
    check(cu, got, want, "gemm + relu")


def test_fused_relu_conv_and_dense_match_reference(cu):
    rng = np.random.default_rng(9)
    bk = cu.backend
    assert "relu" in bk.fused_activations
    x, w, b = rand(rng, 2, 5, 6, 3), rand(rng, 3, 3, 3, 4), rand(rng, 4)
    pad = padding_amounts(5, 6, 3, 3, (1, 1), "same")
    out, _ = bk.conv2d_forward(bk.asarray(x), bk.asarray(w), bk.asarray(b), (1, 1), pad, activation="relu")
    check(cu, out, np.maximum(reference.conv2d_forward(x, w, b, (1, 1), pad)[0], 0), "conv2d + relu")
    x, w = rand(rng, 7, 5), rand(rng, 5, 6)
    out, _ = bk.dense_forward(bk.asarray(x), bk.asarray(w), None, activation="relu")
    check(cu, out, np.maximum(x @ w, 0), "dense + relu")


@pytest.mark.parametrize("F", [11, 5])
def test_column_sums_two_passes(cu, F):
    """Columns past one block (11), and rows enough for blocks down the rows (5: under the simulator's two-block
    grid, only a single block across leaves room for two down), whose partial sums take a second pass."""
    rng = np.random.default_rng(4)
    x = rand(rng, 40, F)
    check(cu, cu.reduce.column_sums(cu.backend.asarray(x)), x.sum(axis=0), "column sums")


# ---------------------------------------------------------------------------------------------------- layers
CONV_CASES = [  # (H, W, kh, kw, stride, padding)
    (5, 6, 3, 3, (1, 1), "valid"),
    (6, 5, 3, 3, (2, 2), "same"),  # asymmetric 'same' padding: the extra row/column at the bottom/right
    (5, 5, 2, 3, (2, 1), "same"),
    (4, 4, 1, 1, (1, 1), "valid"),  # 1x1: no im2col at all
]


@pytest.mark.parametrize("H, W, kh, kw, stride, padding", CONV_CASES)
def test_conv2d_matches_reference(cu, H, W, kh, kw, stride, padding):
    rng = np.random.default_rng(5)
    N, C, F = 2, 2, 3
    pad = padding_amounts(H, W, kh, kw, stride, padding)
    x, w, b = rand(rng, N, H, W, C), rand(rng, kh, kw, C, F), rand(rng, F)
    want, cache = reference.conv2d_forward(x, w, b, stride, pad)
    bk = cu.backend
    out, dcache = bk.conv2d_forward(bk.asarray(x), bk.asarray(w), bk.asarray(b), stride, pad)
    check(cu, out, want, "conv2d forward")
    dout = rand(rng, *want.shape)
    got, want = bk.conv2d_backward(bk.asarray(dout), dcache), reference.conv2d_backward(dout, cache)
    for name, g, r in zip(("dx", "dw", "db"), got, want, strict=True):
        check(cu, g, r, f"conv2d {name}")


def test_conv2d_without_bias_and_im2col(cu):
    rng = np.random.default_rng(6)
    x, w = rand(rng, 1, 4, 5, 2), rand(rng, 3, 3, 2, 2)
    pad, stride = (1, 1, 1, 1), (2, 2)
    bk = cu.backend
    out, _ = bk.conv2d_forward(bk.asarray(x), bk.asarray(w), None, stride, pad)
    check(cu, out, reference.conv2d_forward(x, w, None, stride, pad)[0], "conv2d, no bias")
    check(cu, cu.conv.im2col(bk.asarray(x), 3, 3, stride, pad), numpy_kernels.im2col(x, 3, 3, stride, pad), "im2col")


@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_matches_reference(cu, with_bias):
    rng = np.random.default_rng(7)
    x, w, b = rand(rng, 9, 13), rand(rng, 13, 6), rand(rng, 6) if with_bias else None
    want, cache = reference.dense_forward(x, w, b)
    bk = cu.backend
    out, dcache = bk.dense_forward(bk.asarray(x), bk.asarray(w), None if b is None else bk.asarray(b))
    check(cu, out, want, "dense forward")
    dout = rand(rng, *want.shape)
    got, want = bk.dense_backward(bk.asarray(dout), dcache), reference.dense_backward(dout, cache)
    for name, g, r in zip(("dx", "dw", "db"), got, want, strict=True):
        check(cu, g, r, f"dense {name}")


POOL_CASES = [  # (H, W, pool, stride, padding)
    (4, 6, (2, 2), (2, 2), "valid"),
    (5, 5, (3, 3), (2, 2), "same"),  # overlapping windows and padding
    (4, 5, (3, 2), (1, 1), "same"),  # heavy overlap, asymmetric padding
    (7, 8, (2, 2), (3, 3), "valid"),  # stride > pool: some pixels lie in no window
    (5, 7, (2, 2), (2, 2), "valid"),  # windows that tile the input, with a row and a column past the last window
    (7, 6, (3, 2), (3, 2), "valid"),
    (1, 4, (2, 2), (2, 2), "valid"),  # no whole window down: an empty output, and a gradient of zeros
]


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("H, W, pool, stride, padding", POOL_CASES)
def test_pooling_matches_reference(cu, kind, H, W, pool, stride, padding, monkeypatch):
    """Every new array starts full of garbage (NaN, -7), as a reused GPU block would: each kernel must write every
    element of what it returns."""
    from numba import cuda

    def dirty(shape, dtype=np.float32):
        return cuda.to_device(np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -7, dtype))

    monkeypatch.setattr(cu.pool.cuda, "device_array", dirty)
    rng = np.random.default_rng(8)
    pad = padding_amounts(H, W, *pool, stride, padding)
    x = rand(rng, 2, H, W, 3)
    want, cache = getattr(reference, kind + "_forward")(x, pool, stride, pad)
    bk = cu.backend
    out, dcache = getattr(bk, kind + "_forward")(bk.asarray(x), pool, stride, pad)
    check(cu, out, want, f"{kind} forward")
    dout = rand(rng, *want.shape)
    dx = getattr(bk, kind + "_backward")(bk.asarray(dout), dcache)
    check(cu, dx, getattr(reference, kind + "_backward")(dout, cache), f"{kind} backward")


# ---------------------------------------------------------------------------------------------------- element-wise
@pytest.mark.parametrize("name", ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu"])
def test_activations_match_cpu(cu, name):
    rng = np.random.default_rng(9)
    x = rand(rng, 3, 2, 5) * 3
    dout = rand(rng, *x.shape)
    y, cache = activations.activation_forward(name, x)
    bk = cu.backend
    dy, dcache = bk.activation_forward(name, bk.asarray(x))
    check(cu, dy, y, f"{name} forward")
    dx = bk.activation_backward(name, bk.asarray(dout), dcache)
    check(cu, dx, activations.activation_backward(name, dout, cache), f"{name} backward")


def test_dropout_same_mask_as_cpu(cu):
    from minicnn.backend import get_backend

    rng = np.random.default_rng(10)
    x, dout = rand(rng, 4, 7), rand(rng, 4, 7)
    cpu = get_backend("numpy")
    y, mask = cpu.dropout_forward(x, 0.3, np.random.default_rng(11))
    bk = cu.backend
    dy, dmask = bk.dropout_forward(bk.asarray(x), 0.3, np.random.default_rng(11))
    np.testing.assert_array_equal(bk.to_numpy(dmask), mask)
    np.testing.assert_array_equal(bk.to_numpy(dy), y)
    np.testing.assert_array_equal(bk.to_numpy(bk.dropout_backward(bk.asarray(dout), dmask)), dout * mask)


# ---------------------------------------------------------------------------------------------------- losses
def _loss_inputs(name, sparse, rng):
    N, K = 6, 4
    z = rand(rng, N, K) * 2
    if name in ("cross_entropy", "binary_cross_entropy"):
        z = activations.softmax(z) if name == "cross_entropy" else 1 / (1 + np.exp(-z))
        z[0, 1] = 0.0  # one clipped entry: its gradient is 0
    if sparse:
        return z, rng.integers(0, K, N)
    if name.startswith(("sigmoid", "binary")):
        return z, rng.random((N, K)).astype(np.float32)
    return z, activations.softmax(rand(rng, N, K))  # soft targets


@pytest.mark.parametrize(
    "name, sparse",
    [
        ("softmax_cross_entropy", True),
        ("softmax_cross_entropy", False),
        ("cross_entropy", True),
        ("cross_entropy", False),
        ("sigmoid_binary_cross_entropy", False),
        ("binary_cross_entropy", False),
    ],
)
def test_losses_match_cpu(cu, name, sparse):
    z, y = _loss_inputs(name, sparse, np.random.default_rng(12))
    loss, grad = getattr(losses, name)(z, y)
    bk = cu.backend
    dloss, dgrad = getattr(bk, name)(bk.asarray(z), y)  # labels straight from the host
    assert isinstance(dloss, float)
    assert abs(dloss - loss) <= TOL * abs(loss), (dloss, loss)
    check(cu, dgrad, grad, f"{name} gradient")


# ---------------------------------------------------------------------------------------------------- updates
UPDATE_CASES = [
    ("sgd_update", dict(lr=0.1, momentum=0.0, nesterov=False), 0),
    ("sgd_update", dict(lr=0.1, momentum=0.9, nesterov=False), 1),
    ("sgd_update", dict(lr=0.1, momentum=0.9, nesterov=True), 1),
    ("adam_update", dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0), 2),
    ("adam_update", dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.004), 2),
    ("rmsprop_update", dict(lr=0.01, rho=0.9, epsilon=1e-7), 1),
]


@pytest.mark.parametrize("name, hyper, n_state", UPDATE_CASES)
def test_updates_match_cpu(cu, name, hyper, n_state):
    rng = np.random.default_rng(13)
    p = rand(rng, 5, 3)
    state = [np.abs(rand(rng, 5, 3)) * 0.1 for _ in range(n_state)]  # v of Adam/RMSprop must be >= 0
    bk = cu.backend
    dp, dstate = bk.asarray(p), [bk.asarray(s) for s in state]
    for t in (1, 2):
        g = rand(rng, 5, 3)
        kwargs = dict(hyper, t=t) if name == "adam_update" else hyper
        if name == "sgd_update":
            getattr(updates, name)(p, g, state[0] if state else None, **kwargs)
            getattr(bk, name)(dp, bk.asarray(g), dstate[0] if dstate else None, **kwargs)
        else:
            getattr(updates, name)(p, g, *state, **kwargs)
            getattr(bk, name)(dp, bk.asarray(g), *dstate, **kwargs)
    check(cu, dp, p, f"{name} parameter")
    for d, s in zip(dstate, state, strict=True):
        check(cu, d, s, f"{name} state")


def test_updates_refuse_host_parameters(cu):
    p = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="in place on the GPU"):
        cu.backend.sgd_update(p, np.ones(3, np.float32), None, 0.1)


# ---------------------------------------------------------------------------------------------------- real-GPU code
PTX_CHECK = """
import types
from numba import cuda, types as t
import numba.cuda.dispatcher
def trivial(a):
    a[0] = 1
try:  # are the CUDA compiler libraries (NVVM, NVRTC) there at all?
    cuda.compile_ptx(trivial, t.void(t.float32[::1]), cc=(9, 0))
except Exception as e:
    print(f"SKIP: no usable CUDA compiler ({type(e).__name__}); pip install 'numba-cuda[cu12]'")
    raise SystemExit(0)
# Device functions ask the GPU for its compute capability; without one, answer for an H100.
numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from minicnn.kernels import cuda_conv, cuda_elementwise as ew, cuda_gemm, cuda_losses, cuda_pool, cuda_reduce
from minicnn.kernels import cuda_updates as up
f1, f2, f4, I, F, B = t.float32[::1], t.float32[:, ::1], t.float32[:, :, :, ::1], t.int64, t.float32, t.boolean
i4, lab = t.int32[:, :, :, ::1], t.int64[:, :]
jobs = [(cuda_gemm.sgemm_kernel(tile, *map(bool, flags)), (f2, f2, f1, f2, I, I, I))
        for tile in (cuda_gemm.LARGE, cuda_gemm.SMALL, cuda_gemm.NARROW, cuda_gemm.TALL)
        for flags in [(0, 0, 1, 1), (0, 1, 0, 0), (1, 0, 0, 0)]]  # trans_a, trans_b, bias, relu
jobs += [
    (cuda_gemm.sum_splits, (f2, f1, f2, B, B)), (cuda_reduce.column_sums_kernel, (f2, f1)),
    (cuda_conv.im2col_kernel, (f4, I, I, I, I, I, I, I, I, f2)),
    (cuda_conv.col2im_kernel, (f2, I, I, I, I, I, I, I, I, f4)),
    (cuda_pool.maxpool_forward_kernel, (f4, I, I, I, I, I, I, f4, i4)),
    (cuda_pool.maxpool_backward_kernel, (f4, i4, I, I, I, I, I, I, f4)),
    (cuda_pool.maxpool_tiled_backward_kernel, (f4, i4, I, I, f4)),
    (cuda_pool.avgpool_forward_kernel, (f4, I, I, I, I, I, I, f4)),
    (cuda_pool.avgpool_backward_kernel, (f4, I, I, I, I, I, I, f4)),
    (ew.softmax_rows_kernel, (f2, f2)), (ew.softmax_backward_rows_kernel, (f2, f2, f2)),
    (ew.dropout_kernel, (f1, f1, F, F, f1, f1)), (ew.fill_kernel, (f1, I)),
    (cuda_losses.softmax_cross_entropy_kernel, (f2, lab, B, f2, f1)),
    (cuda_losses.sigmoid_binary_cross_entropy_kernel, (f1, f1, f1, f1)),
    (cuda_losses.cross_entropy_kernel, (f2, f2, B, F, F, f2, f1)),
    (cuda_losses.binary_cross_entropy_kernel, (f1, f1, F, F, f1, f1)),
    (up.sgd_kernel, (f1, f1, F)), (up.sgd_momentum_kernel, (f1, f1, f1, F, F, B)),
    (up.adam_kernel, (f1, f1, f1, f1, F, F, F, F, F)), (up.rmsprop_kernel, (f1, f1, f1, F, F, F, F)),
]
jobs += [(ew.map_kernel(f), (f1, f1)) for f in ew.FORWARD.values()]
jobs += [(ew.zip_kernel(f), (f1, f1, f1)) for f in [*ew.BACKWARD.values(), ew.times]]
for kernel, sig in jobs:
    ptx, _ = cuda.compile_ptx(kernel.py_func, t.void(*sig), cc=(9, 0))
    assert "ld.local" not in ptx, f"{kernel.py_func.__name__}: registers spilled to local memory"
print("OK", len(jobs))
"""


@pytest.mark.slow
def test_kernels_compile_for_a_real_gpu(cu, tmp_path):
    """The simulator runs kernels as Python, so it cannot catch what only the CUDA compiler rejects (a type that
    does not unify, a shared-array shape that is not a constant). Compile every kernel to PTX for an H100, in a
    process without the simulator; no GPU needed, only NVVM (``numba-cuda[cu12]`` or ``[cu13]``). About 20 s."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", PTX_CHECK], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stdout.startswith("SKIP"):
        pytest.skip(done.stdout.strip())


PACK_CHECK = """
import ctypes
import numpy as np
from numba.cuda import dispatcher
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.typing.typeof import Purpose, typeof
from minicnn.kernels import cuda_launch

class Memory:  # what a device array needs of its memory here: a pointer (no GPU is touched)
    def __init__(self, address):
        self.device_ctypes_pointer = ctypes.c_void_p(address)

def device(shape, strides=None, dtype=np.float32, address=1 << 20):
    dtype = np.dtype(dtype)
    strides = np.empty(shape, dtype).strides if strides is None else strides
    return DeviceNDArray(shape, strides, dtype, gpu_data=Memory(address))

class Numba:  # numba's own packing, _Kernel._prepare_args, needs only these of its kernel
    extensions = []

def numba_params(args):
    out = []
    for a in args:
        dispatcher._Kernel._prepare_args(Numba, typeof(a, Purpose.argument), a, 0, [], out)
    return [(type(v).__name__, v.value) if isinstance(v, ctypes._SimpleCData) else ("int", v) for v in out]

x = device((4, 5, 6, 3), address=3 << 20)
args = [x, x.reshape(20, 18), device((7,), dtype=np.int64), device((5, 6), (4, 20)), device((5, 3), (48, 4)),
        device((3, 4), (0, 4)), device((2, 3, 4), dtype=np.int32), 3, -2, 2.5, True, False,
        np.float32(0.25), np.float64(1.5), np.int64(9), np.int32(-4)]
key, params = cuda_launch.pack(args)
mine = [(type(v).__name__, v.value) if isinstance(v, ctypes._SimpleCData) else ("int", v) for v in params]
assert mine == numba_params(args), (mine, numba_params(args))
for a, k in zip(args, key):
    t = typeof(a, Purpose.argument)
    if isinstance(a, DeviceNDArray):
        assert k == (a.dtype, a.ndim, t.layout), (k, t)
    else:  # the numba type of a scalar is the one its Python type is packed as
        assert cuda_launch.SCALARS[type(a)] is cuda_launch.NUMBA_SCALARS[str(t)], (a, t)
assert len({cuda_launch.pack([a])[0] for a in args[:7]}) == 6  # x and its reshape share a key; the rest differ
assert cuda_launch.pack([np.zeros(3, np.float32)]) is None  # a host array: launched through numba
assert cuda_launch.pack([2**63]) is None and cuda_launch.pack([-(2**63) - 1]) is None  # numba: uint64, or no type
assert cuda_launch.pack([2**63 - 1])[1][0].value == 2**63 - 1
assert cuda_launch._dim3(7) == (7, 1, 1) and cuda_launch._dim3((2, np.int64(3))) == (2, 3, 1)
print("OK", len(params))
"""


def test_fast_launch_packs_arguments_as_numba_does(cu, tmp_path):
    """``cuda_launch.Kernel`` skips numba's dispatcher and lists each launch's arguments itself: the list must be
    exactly the one numba builds (``_Kernel._prepare_args``), for arrays of every layout and for every scalar it
    packs, and its key must tell apart what numba types apart. Checked in a process without the simulator, on
    device arrays that point at no real memory (nothing is launched, no GPU needed)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", PACK_CHECK], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("OK"), done.stdout


KERNEL_CHECK = """
import ctypes, types
import numpy as np
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.typing.typeof import Purpose, typeof
from minicnn.kernels import cuda_launch

class Memory:
    def __init__(self, address):
        self.device_ctypes_pointer = ctypes.c_void_p(address)

def device(shape, address=1 << 20, strides=None):
    strides = np.empty(shape, np.float32).strides if strides is None else strides
    return DeviceNDArray(shape, strides, np.float32, gpu_data=Memory(address))

log = []
class Dispatcher:  # numba's side, as Kernel sees it: launch (compiling a version per argument types), overloads
    py_func = types.SimpleNamespace(__name__="fake")
    targetoptions = {}
    def __init__(self):
        self.overloads = {}
    def typeof_pyval(self, v):
        return typeof(v, Purpose.argument)
    def __getitem__(self, config):
        def call(*args):
            types_ = tuple(map(self.typeof_pyval, args))
            cufunc = types.SimpleNamespace(kernel=("compiled for", types_))
            self.overloads.setdefault(types_, types.SimpleNamespace(library=types.SimpleNamespace(
                get_cufunc=lambda: cufunc)))
            log.append(("numba", config))
        return call

cuda_launch.launch = lambda stream, config, kernel, *params: log.append(("fast", config, kernel, params))
cuda_launch.LaunchConfig = lambda grid, block: (grid, block)
k = cuda_launch.Kernel(Dispatcher())
x, y = device((4, 3)), device((4, 3), address=2 << 20)
k[(2, 1), (32, 8)](x, 5, 2.0)  # first with these types: numba compiles and launches
k[(2, 1), (32, 8)](y, 7, 3.0)  # then the kept kernel, with the new numbers
assert log[0] == ("numba", ((2, 1), (32, 8))), log
kind, config, kernel, params = log[1]
assert kind == "fast" and config == ((2, 1, 1), (32, 8, 1)), log[1]
assert kernel == ("compiled for", tuple(typeof(a, Purpose.argument) for a in (y, 7, 3.0))), kernel
assert [getattr(p, "value", p) for p in params] == [0, 0, 12, 4, 2 << 20, 4, 3, 12, 4, 7, 3.0], params
k[(2, 1), (32, 8)](device((4, 2), strides=(12, 4)), 5, 2.0)  # another layout (x[:, :2]): numba again, once
k[(2, 1), (32, 8)](device((4, 2), strides=(12, 4)), 5, 2.0)
k[(2, 1), (32, 8)](np.zeros((4, 3), np.float32), 1, 1.0)  # a host array: always numba
k[(2, 1), (32, 8), 0](x, 5, 2.0)  # a stream named: numba
k[(2, 1), (32, 8)](x, 2**63 + 1, 2.0)  # an int numba types uint64: numba
cuda_launch.Kernel.through_numba = True
k[(2, 1), (32, 8)](x, 5, 2.0)
assert [e[0] for e in log[2:]] == ["numba", "fast", "numba", "numba", "numba", "numba"], log[2:]
print("OK")
"""


def test_fast_launch_keeps_one_compiled_kernel_per_argument_types(cu, tmp_path):
    """``cuda_launch.Kernel`` with numba's dispatcher and the driver's launch replaced by fakes (no GPU needed):
    the first launch with new argument types goes through numba, later ones launch the kernel numba compiled for
    those types with the numbers ``pack`` lists; what this path does not handle goes through numba."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("OK"), done.stdout


# ---------------------------------------------------------------------------------------------------- a model on a GPU
def _small_model(device):
    import minicnn
    from minicnn import layers

    model = minicnn.Sequential(
        [
            layers.Input((8, 8, 2)),
            layers.Conv2D(3, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(2),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Flatten(),
            layers.Dropout(0.25),
            layers.Dense(5, activation="softmax"),
        ],
        seed=1,
        device=device,
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _on_device(a) -> bool:
    from minicnn.kernels.cuda import is_device_array

    return is_device_array(a)


def test_model_trains_the_same_on_cuda_as_on_cpu(cu):
    """Six Adam steps (conv, pool, dropout, dense, softmax) give the same losses, weights and predictions on both
    devices; on 'cuda' the weights and the optimizer state stay on the device, and predict returns NumPy."""
    rng = np.random.default_rng(14)
    x, y = rng.random((12, 8, 8, 2), dtype=np.float32), rng.integers(0, 5, 12)
    cpu, gpu = _small_model("cpu"), _small_model("cuda")
    h_cpu = cpu.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    h_gpu = gpu.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(h_gpu["loss"], h_cpu["loss"], rtol=1e-5)
    for layer in gpu.layers:
        assert all(_on_device(p) for p in layer.params.values()), layer.name
    assert len(gpu.optimizer.state) == 6  # m and v for 3 kernels and 3 biases, all on the device
    assert all(_on_device(a) for state in gpu.optimizer.state.values() for a in state.values())
    for w_gpu, w_cpu in zip(gpu.get_weights(), cpu.get_weights(), strict=True):
        assert relative_error(w_gpu, w_cpu) < 1e-5
    p_gpu = gpu.predict(x, verbose=0)
    assert isinstance(p_gpu, np.ndarray) and p_gpu.dtype == np.float32
    assert relative_error(p_gpu, cpu.predict(x, verbose=0)) < 1e-5


def test_save_on_one_device_load_on_the_other(cu, tmp_path):
    import minicnn

    rng = np.random.default_rng(15)
    x, y = rng.random((8, 8, 8, 2), dtype=np.float32), rng.integers(0, 5, 8)
    gpu = _small_model("cuda")
    gpu.fit(x, y, batch_size=4, epochs=1, verbose=0)
    want = gpu.predict(x, verbose=0)
    gpu.save(tmp_path / "gpu.minicnn")
    on_cpu = minicnn.load_model(tmp_path / "gpu.minicnn", device="cpu")
    assert on_cpu.backend.name == "cpu"
    assert relative_error(on_cpu.predict(x, verbose=0), want) < 1e-5
    on_cpu.save(tmp_path / "cpu.minicnn")
    back = minicnn.load_model(tmp_path / "cpu.minicnn", device="cuda")
    assert back.backend.name == "cuda" and _on_device(back.layers[-1].params["kernel"])
    assert relative_error(back.predict(x, verbose=0), want) < 1e-5
    # the optimizer state travelled too: one more step on each device (same dropout draws) lands on the same weights
    for model in (on_cpu, back):
        dropout = next(layer for layer in model.layers if layer.name.startswith("dropout"))
        dropout.rng = np.random.default_rng(16)
    on_cpu.train_on_batch(x, y)
    back.train_on_batch(x, y)
    for w_back, w_cpu in zip(back.get_weights(), on_cpu.get_weights(), strict=True):
        assert relative_error(w_back, w_cpu) < 1e-5


# ---------------------------------------------------------------------------------------------------- device memory
def test_block_sizes_are_rounded_to_granules():
    from minicnn.kernels.cuda_memory import GRANULE, round_up

    assert [round_up(n) for n in (0, 1, GRANULE, GRANULE + 1)] == [GRANULE, GRANULE, GRANULE, 2 * GRANULE]


def test_released_device_memory_is_reused(cu):
    """The free lists hand a released block out again, for the same rounded size only. On a GPU, the same
    through numba: an array's block comes back once the array is gone, but not while a view of it lives."""
    from minicnn.kernels import cuda_memory

    lists = cuda_memory.FreeLists()
    assert lists.take(1024) is None
    lists.give(1024, "block a")
    lists.give(1024, "block b")
    lists.give(2048, "block c")
    assert lists.bytes == 4096
    assert lists.take(512) is None and lists.take(1024) == "block b" and lists.take(1024) == "block a"
    assert lists.take(1024) is None and (lists.hits, lists.misses) == (2, 3)
    assert list(lists.drain()) == ["block c"] and lists.bytes == 0
    if not HAVE_GPU:
        return
    from numba import cuda

    assert cuda_memory.is_active() == (os.environ.get("MINICNN_CUDA_POOL", "1") != "0")
    if not cuda_memory.is_active():
        return

    def address(a):
        return a.__cuda_array_interface__["data"][0]

    a = cuda.device_array(1000, np.float32)
    first = address(a)
    del a
    b = cuda.to_device(np.arange(1000, dtype=np.float32))  # the same size comes back to the same block
    assert address(b) == first
    view = b.reshape(10, 100)[3:]  # a view keeps its block: the next array must not get it
    del b
    c = cuda.to_device(np.full(1000, -1, np.float32))
    assert address(c) != first
    np.testing.assert_array_equal(view.copy_to_host(), np.arange(300, 1000, dtype=np.float32).reshape(7, 100))
    del view, c
    cuda_memory.empty_cache()
    assert cuda_memory.manager().pool.bytes == 0
