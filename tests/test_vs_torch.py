"""Conv2D, pooling and Dense equal PyTorch's on the same weights and inputs (forward and every gradient).

PyTorch is channels-first: x (N, C, H, W) and a conv weight (F, C, kh, kw), so the arrays are transposed on the
way in and out. Keras's asymmetric 'same' padding (extra row at the bottom) is an explicit F.pad in torch.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import layers
from minicnn.testing import relative_error

pytestmark = pytest.mark.torch
TOL = 1e-10  # float64 on both sides


def to_nchw(torch, a):
    return torch.tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)), requires_grad=True)


@settings(max_examples=15, deadline=None)
@given(
    k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.sampled_from(["valid", "same"]),
    channels=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 1000),
)
def test_conv2d_equals_torch(torch, k, s, padding, channels, seed):
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, k[0] + 4, k[1] + 3, channels[0]))
    layer = layers.Conv2D(channels[1], k, strides=s, padding=padding)
    layer.build(x.shape[1:], rng)
    w = layer.params["kernel"] = rng.standard_normal(layer.params["kernel"].shape)
    b = layer.params["bias"] = rng.standard_normal(channels[1])
    y = layer.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(dout)

    tx = to_nchw(torch, x)
    tw = torch.tensor(w.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    pt, pb, pl, pr = layer.pad
    ty = F.conv2d(F.pad(tx, (pl, pr, pt, pb)), tw, tb, stride=s)
    ty.backward(torch.tensor(dout.transpose(0, 3, 1, 2).copy()))
    assert relative_error(y, ty.detach().numpy().transpose(0, 2, 3, 1)) < TOL
    assert relative_error(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < TOL
    assert relative_error(layer.grads["kernel"], tw.grad.numpy().transpose(2, 3, 1, 0)) < TOL
    assert relative_error(layer.grads["bias"], tb.grad.numpy()) < TOL


@pytest.mark.parametrize("pool, strides", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((3, 2), (1, 2))])
def test_maxpool_equals_torch(torch, pool, strides):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, 3))
    layer = layers.MaxPooling2D(pool, strides)
    layer.build(x.shape[1:])
    y = layer.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(dout)
    tx = to_nchw(torch, x)
    ty = torch.nn.functional.max_pool2d(tx, pool, strides)
    ty.backward(torch.tensor(dout.transpose(0, 3, 1, 2).copy()))
    assert relative_error(y, ty.detach().numpy().transpose(0, 2, 3, 1)) < TOL
    assert relative_error(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < TOL


def test_avgpool_equals_torch(torch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 6, 3))
    layer = layers.AveragePooling2D(2)
    layer.build(x.shape[1:])
    y = layer.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(dout)
    tx = to_nchw(torch, x)
    ty = torch.nn.functional.avg_pool2d(tx, 2)
    ty.backward(torch.tensor(dout.transpose(0, 3, 1, 2).copy()))
    assert relative_error(y, ty.detach().numpy().transpose(0, 2, 3, 1)) < TOL
    assert relative_error(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < TOL


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh", "softmax"])
def test_dense_equals_torch(torch, activation):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 7))
    layer = layers.Dense(5, activation=activation)
    layer.build((7,), rng)
    w = layer.params["kernel"] = rng.standard_normal((7, 5))
    b = layer.params["bias"] = rng.standard_normal(5)
    y = layer.forward(x)
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w.T.copy(), requires_grad=True)  # torch.nn.Linear stores (out, in)
    tb = torch.tensor(b, requires_grad=True)
    tz = torch.nn.functional.linear(tx, tw, tb)
    act = {
        None: lambda z: z,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda z: torch.softmax(z, -1),
    }
    ty = act[activation](tz)
    ty.backward(torch.tensor(dout))
    assert relative_error(y, ty.detach().numpy()) < TOL
    assert relative_error(dx, tx.grad.numpy()) < TOL
    assert relative_error(layer.grads["kernel"], tw.grad.numpy().T) < TOL
    assert relative_error(layer.grads["bias"], tb.grad.numpy()) < TOL
