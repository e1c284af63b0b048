"""Losses: gradients against finite differences, stability at huge logits, the target checks, and PyTorch as gold."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import losses
from minicnn.kernels import activations
from minicnn.kernels import losses as kernels
from minicnn.testing import check_function_gradient, relative_error

TOL = 1e-6


def import_torch():
    """``torch``, or a skip for users without it; in CI (``CI`` set) a missing torch is a failure, not a skip."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        import torch

        return torch
    return pytest.importorskip("torch", reason="the PyTorch comparisons need torch: pip install 'minicnn[bench]'")


@st.composite
def batch(draw):
    """(N, K, rng): a batch size, a class count and a seeded generator."""
    N, K = draw(st.integers(1, 6)), draw(st.integers(2, 6))
    return N, K, np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def targets(kind, N, K, rng):
    """Sparse int labels (N,), one-hot rows (N, K) or probability rows (N, K)."""
    labels = rng.integers(0, K, N)
    if kind == "sparse":
        return labels
    if kind == "onehot":
        return np.eye(K)[labels]
    return activations.softmax(rng.standard_normal((N, K)))


# ---------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["sparse", "onehot", "soft"])
@settings(max_examples=20, deadline=None)
@given(case=batch())
def test_softmax_cross_entropy_gradient(kind, case):
    N, K, rng = case
    z, y = 3 * rng.standard_normal((N, K)), targets(kind, N, K, rng)
    _, dz = kernels.softmax_cross_entropy(z, y)
    assert dz.shape == z.shape
    assert check_function_gradient(lambda z: kernels.softmax_cross_entropy(z, y)[0], dz, z) < TOL


@pytest.mark.parametrize("soft", [False, True])
@settings(max_examples=20, deadline=None)
@given(case=batch())
def test_sigmoid_binary_cross_entropy_gradient(soft, case):
    N, K, rng = case
    z = 3 * rng.standard_normal((N, K))
    y = rng.random((N, K)) if soft else rng.integers(0, 2, (N, K)).astype(np.float64)
    _, dz = kernels.sigmoid_binary_cross_entropy(z, y)
    assert check_function_gradient(lambda z: kernels.sigmoid_binary_cross_entropy(z, y)[0], dz, z) < TOL


@pytest.mark.parametrize("kind", ["sparse", "onehot", "soft"])
@settings(max_examples=20, deadline=None)
@given(case=batch())
def test_cross_entropy_gradient(kind, case):
    N, K, rng = case
    # rows that do not sum to 1: the gradient must also go through Keras's normalisation p / sum(p)
    p = activations.softmax(rng.standard_normal((N, K))) * rng.uniform(0.5, 2.0, (N, 1))
    y = targets(kind, N, K, rng)
    _, dp = kernels.cross_entropy(p, y)
    assert check_function_gradient(lambda p: kernels.cross_entropy(p, y)[0], dp, p) < TOL


@settings(max_examples=20, deadline=None)
@given(case=batch())
def test_binary_cross_entropy_gradient(case):
    N, K, rng = case
    p, y = rng.uniform(0.05, 0.95, (N, K)), rng.integers(0, 2, (N, K)).astype(np.float64)
    _, dp = kernels.binary_cross_entropy(p, y)
    assert check_function_gradient(lambda p: kernels.binary_cross_entropy(p, y)[0], dp, p) < TOL


@settings(max_examples=20, deadline=None)
@given(case=batch())
def test_fused_equals_activation_then_loss(case):
    # The fused path and "softmax, then cross-entropy of probabilities, then softmax backward" are one function.
    N, K, rng = case
    z, y = rng.standard_normal((N, K)), rng.integers(0, K, N)
    loss, dz = kernels.softmax_cross_entropy(z, y)
    p, cache = activations.activation_forward("softmax", z)
    loss_p, dp = kernels.cross_entropy(p, y)
    assert loss == pytest.approx(loss_p, rel=1e-10)
    assert relative_error(dz, activations.activation_backward("softmax", dp, cache)) < 1e-10

    s, cache = activations.activation_forward("sigmoid", z)
    yb = rng.integers(0, 2, (N, K)).astype(np.float64)
    loss, dz = kernels.sigmoid_binary_cross_entropy(z, yb)
    loss_p, dp = kernels.binary_cross_entropy(s, yb)
    assert loss == pytest.approx(loss_p, rel=1e-10)
    assert relative_error(dz, activations.activation_backward("sigmoid", dp, cache)) < 1e-10


# ---------------------------------------------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_stay_finite(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    loss, dz = kernels.softmax_cross_entropy(z, y)
    # row 0: -log p_1 = 2e4; row 1: uniform, log 3; row 2: two tied winners, log 2
    assert loss == pytest.approx((2e4 + np.log(3) + np.log(2)) / 3, rel=1e-6)
    assert dz.dtype == dtype and np.isfinite(dz).all()
    np.testing.assert_allclose(dz[0], np.array([1, -1, 0]) / 3, atol=1e-7)

    loss, dz = kernels.softmax_cross_entropy(z, np.eye(3, dtype=dtype)[y])
    assert np.isfinite(loss) and np.isfinite(dz).all()

    yb = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=dtype)
    loss, dz = kernels.sigmoid_binary_cross_entropy(z, yb)
    # four confidently wrong elements cost 1e4 each, the z = 0 one log 2, the confidently right ones 0
    assert loss == pytest.approx((4e4 + np.log(2)) / 9, rel=1e-6)
    assert dz.dtype == dtype and np.isfinite(dz).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_probabilities_are_clipped(dtype):
    p = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    loss, dp = kernels.cross_entropy(p, np.array([1, 1]))
    assert loss == pytest.approx(-np.log(1e-7) / 2, rel=1e-3)  # the wrong row costs -log(eps)
    assert dp.dtype == dtype and np.isfinite(dp).all()
    loss, dp = kernels.binary_cross_entropy(p, np.array([[0.0, 0.0], [0.0, 1.0]], dtype=dtype))
    assert np.isfinite(loss) and np.isfinite(dp).all()


# ---------------------------------------------------------------------------------------------------- classes
def test_classes_call_forward_and_fused_path():
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((5, 3)).astype(np.float32), rng.integers(0, 3, 5)
    p = activations.softmax(z)
    sparse = losses.SparseCategoricalCrossentropy()
    assert sparse.fuses_with == "softmax" and losses.BinaryCrossentropy.fuses_with == "sigmoid"
    assert sparse(y, p) == pytest.approx(kernels.cross_entropy(p, y)[0], rel=1e-6)  # Keras order: (y_true, y_pred)
    loss, dz = sparse.forward_from_logits(z, y)
    fused_loss, fused_dz = kernels.softmax_cross_entropy(z, y)
    assert loss == fused_loss and np.array_equal(dz, fused_dz)
    logits_loss = losses.CategoricalCrossentropy(from_logits=True)
    assert logits_loss.forward(z, np.eye(3)[y])[0] == pytest.approx(loss, rel=1e-6)
    assert logits_loss(np.eye(3)[y], z) == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize(
    "identifier, cls",
    [
        ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy),
        ("categorical_crossentropy", losses.CategoricalCrossentropy),
        ("binary_crossentropy", losses.BinaryCrossentropy),
        ("BinaryCrossentropy", losses.BinaryCrossentropy),
        ({"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}}, losses.CategoricalCrossentropy),
    ],
)
def test_get(identifier, cls):
    loss = losses.get(identifier)
    assert type(loss) is cls
    again = losses.get({"class_name": type(loss).__name__, "config": loss.get_config()})
    assert again.get_config() == loss.get_config() and again.name == cls.name
    assert losses.get(loss) is loss


def test_get_unknown_names_the_choices():
    with pytest.raises(ValueError, match="unknown loss 'mse'.*'sparse_categorical_crossentropy'"):
        losses.get("mse")


def test_check_targets_converts():
    sparse = losses.SparseCategoricalCrossentropy().check_targets(np.array([[1.0], [0.0], [2.0]]), 3)
    assert sparse.dtype == np.int64 and sparse.tolist() == [1, 0, 2]
    binary = losses.BinaryCrossentropy().check_targets(np.array([0, 1, 1], dtype=np.uint8), 1)
    assert binary.shape == (3, 1) and binary.dtype.kind == "f"
    onehot = losses.CategoricalCrossentropy().check_targets(np.eye(4, dtype=np.uint8), 4)
    assert onehot.dtype.kind == "f" and onehot.shape == (4, 4)


@pytest.mark.parametrize(
    "loss, y, K, match",
    [
        ("sparse_categorical_crossentropy", np.eye(3), 3, r"one-hot.*'categorical_crossentropy' or y.argmax\(axis=1\)"),
        ("sparse_categorical_crossentropy", np.array([0, 3, 1]), 3, r"\[0, 3\).*min 0, max 3"),
        ("sparse_categorical_crossentropy", np.array([-1, 2]), 3, r"\[0, 3\).*min -1, max 2"),
        ("sparse_categorical_crossentropy", np.array([0.5, 1.0]), 3, "non-integer floats"),
        ("sparse_categorical_crossentropy", np.array([0.0, np.nan]), 3, "NaN or inf"),
        ("sparse_categorical_crossentropy", np.array(["cat", "dog"]), 3, "numeric targets"),
        ("categorical_crossentropy", np.array([0, 2, 1]), 3, "'sparse_categorical_crossentropy'"),
        ("categorical_crossentropy", np.eye(4), 3, r"shape \(N, 3\).*\(4, 4\)"),
        ("categorical_crossentropy", np.array([[np.inf, 0, 0]]), 3, "NaN or inf"),
        ("binary_crossentropy", np.array([0, 1, 2]), 1, r"\[0, 1\].*max 2.*sparse_categorical"),
        ("binary_crossentropy", np.array([-1.0, 1.0]), 1, r"\[0, 1\].*min -1"),
        ("binary_crossentropy", np.array([0.0, 1.0]), 2, r"shape \(N, 2\)"),
        ("binary_crossentropy", np.array([[0.0, np.nan]]), 2, "NaN or inf"),
    ],
)
def test_check_targets_errors(loss, y, K, match):
    loss = losses.get(loss)
    with pytest.raises(ValueError, match=match) as info:
        loss.check_targets(y, K)
    assert type(loss).__name__ in str(info.value)


# ---------------------------------------------------------------------------------------------------- PyTorch
def _torch_case(torch, seed=0, N=7, K=5):
    rng = np.random.default_rng(seed)
    z = 3 * rng.standard_normal((N, K))
    return rng, z, torch.tensor(z, requires_grad=True)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["sparse", "soft"])
def test_softmax_cross_entropy_matches_torch(kind):
    torch = import_torch()
    rng, z, zt = _torch_case(torch)
    y = targets(kind, *z.shape, rng)
    loss, dz = kernels.softmax_cross_entropy(z, y)
    expected = torch.nn.functional.cross_entropy(zt, torch.tensor(y))  # mean over the batch, as Keras
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert relative_error(dz, zt.grad.numpy()) < 1e-12


@pytest.mark.torch
def test_sigmoid_binary_cross_entropy_matches_torch():
    torch = import_torch()
    rng, z, zt = _torch_case(torch)
    y = rng.random(z.shape)
    loss, dz = kernels.sigmoid_binary_cross_entropy(z, y)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(y))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert relative_error(dz, zt.grad.numpy()) < 1e-12


@pytest.mark.torch
def test_cross_entropy_of_probabilities_matches_torch():
    # torch has no cross-entropy of probabilities: nll_loss(log p) is one. Keras's normalisation p / sum(p) adds a
    # constant per row to dL/dp (zero for softmax outputs in exact arithmetic), so the gradients are compared where
    # the model uses them: through the softmax, at the logits.
    torch = import_torch()
    rng, z, zt = _torch_case(torch)
    y = rng.integers(0, z.shape[1], z.shape[0])
    p, cache = activations.activation_forward("softmax", z)
    loss, dp = kernels.cross_entropy(p, y)
    expected = torch.nn.functional.nll_loss(torch.log(torch.softmax(zt, dim=1)), torch.tensor(y))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert relative_error(activations.activation_backward("softmax", dp, cache), zt.grad.numpy()) < 1e-12


@pytest.mark.torch
def test_binary_cross_entropy_of_probabilities_matches_torch():
    # Inside [eps, 1 - eps] Keras's clip does nothing and torch's log clamp (-100) neither: same function.
    torch = import_torch()
    rng = np.random.default_rng(1)
    p, y = rng.uniform(0.01, 0.99, (6, 3)), rng.integers(0, 2, (6, 3)).astype(np.float64)
    pt = torch.tensor(p, requires_grad=True)
    loss, dp = kernels.binary_cross_entropy(p, y)
    expected = torch.nn.functional.binary_cross_entropy(pt, torch.tensor(y))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert relative_error(dp, pt.grad.numpy()) < 1e-12
