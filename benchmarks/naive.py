"""THE BASELINE: a naive NumPy CNN engine, written the way a deep-learning course writes its first one.

This is not minicnn. It is what minicnn is measured against: a correct, straightforward engine with the habits of
a first implementation (CS231n-style), so that the tables show what the care in ``minicnn.kernels`` buys:

* channels-first (N, C, H, W) activations and (F, C, kh, kw) kernels, as most courses and PyTorch do;
* ``np.pad`` makes a padded copy of the input at every call;
* im2col is a Python loop over the ``kh * kw`` kernel positions, each copying a strided slice, followed by a
  transpose + reshape (another copy) into the (C kh kw, N Ho Wo) matrix; col2im is the same loop with ``+=``;
* the GEMM result is reshaped and transposed back to NCHW, and every step allocates fresh arrays;
* max pooling stacks the ``ph * pw`` window slices and takes an argmax; ReLU keeps a boolean mask;
* Adam is written with NumPy expressions (each a temporary), Keras's epsilon placement, as minicnn.

``tests/test_benchmarks.py`` checks that its forward pass, gradients and one Adam step agree with minicnn's, so
the baseline is a correct engine, only a slow one. ``from_spec`` builds one of the reference models;
``from_minicnn`` copies a minicnn model's weights (transposing kernels and reordering the first Dense's rows from
minicnn's (H, W, C) flatten order to this engine's (C, H, W) order).
"""

from __future__ import annotations

import math

import numpy as np

from .specs import Conv, Dense, Flatten, ModelSpec, Pool, same_pad


class Conv2D:
    """x: (N, C, H, W), w: (F, C, kh, kw), b: (F,) -> out: (N, F, Ho, Wo); stride 1, pad = (top, bottom, left,
    right)."""

    def __init__(self, w, b, pad=(0, 0, 0, 0)):
        self.params = {"w": w, "b": b}
        self.grads = {}
        self.pad = pad

    def forward(self, x):
        w, b = self.params["w"], self.params["b"]
        N, C, H, W = x.shape
        F, _, kh, kw = w.shape
        pt, pb, pl, pr = self.pad
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        Ho, Wo = H + pt + pb - kh + 1, W + pl + pr - kw + 1
        cols = np.zeros((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
        for p in range(kh):
            for q in range(kw):
                cols[:, :, p, q] = xp[:, :, p : p + Ho, q : q + Wo]
        cols = cols.transpose(1, 2, 3, 0, 4, 5).reshape(C * kh * kw, N * Ho * Wo)
        out = w.reshape(F, -1) @ cols + b[:, None]
        self.cache = (x.shape, xp.shape, cols)
        return out.reshape(F, N, Ho, Wo).transpose(1, 0, 2, 3)

    def backward(self, dout):
        w = self.params["w"]
        x_shape, xp_shape, cols = self.cache
        N, C, H, W = x_shape
        F, _, kh, kw = w.shape
        _, _, Ho, Wo = dout.shape
        pt, _, pl, _ = self.pad
        d2 = dout.transpose(1, 0, 2, 3).reshape(F, -1)
        self.grads["w"] = (d2 @ cols.T).reshape(w.shape)
        self.grads["b"] = dout.sum(axis=(0, 2, 3))
        dcols = (w.reshape(F, -1).T @ d2).reshape(C, kh, kw, N, Ho, Wo).transpose(3, 0, 1, 2, 4, 5)
        dxp = np.zeros(xp_shape, dtype=dout.dtype)
        for p in range(kh):
            for q in range(kw):
                dxp[:, :, p : p + Ho, q : q + Wo] += dcols[:, :, p, q]
        return dxp[:, :, pt : pt + H, pl : pl + W]


class MaxPool2D:
    """x: (N, C, H, W) -> out: (N, C, H // size, W // size); windows of ``size x size`` at stride ``size``."""

    params: dict = {}

    def __init__(self, size=2):
        self.size = size
        self.grads = {}

    def forward(self, x):
        s = self.size
        N, C, H, W = x.shape
        Ho, Wo = H // s, W // s
        windows = np.stack(
            [x[:, :, p : p + s * Ho : s, q : q + s * Wo : s] for p in range(s) for q in range(s)], axis=2
        )  # (N, C, s*s, Ho, Wo)
        k = windows.argmax(axis=2)  # the first maximum wins a tie, as in minicnn
        self.cache = (x.shape, k)
        return np.take_along_axis(windows, k[:, :, None], axis=2)[:, :, 0]

    def backward(self, dout):
        s = self.size
        x_shape, k = self.cache
        N, C, Ho, Wo = dout.shape
        dx = np.zeros(x_shape, dtype=dout.dtype)
        for p in range(s):
            for q in range(s):
                dx[:, :, p : p + s * Ho : s, q : q + s * Wo : s] += dout * (k == p * s + q)
        return dx


class ReLU:
    params: dict = {}

    def __init__(self):
        self.grads = {}

    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class FlattenLayer:
    params: dict = {}

    def __init__(self):
        self.grads = {}

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.shape)


class DenseLayer:
    """x: (N, D), w: (D, M), b: (M,) -> out: (N, M)"""

    def __init__(self, w, b):
        self.params = {"w": w, "b": b}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["w"] + self.params["b"]

    def backward(self, dout):
        self.grads["w"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["w"].T


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against int labels y, and its gradient ``(p - onehot) / N``."""
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(N), y]).mean()
    dlogits = p.copy()
    dlogits[np.arange(N), y] -= 1
    return float(loss), dlogits / N


class Adam:
    """``m = b1 m + (1 - b1) g``;  ``v = b2 v + (1 - b2) g^2``;
    ``p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``"""

    def __init__(self, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.lr, self.beta_1, self.beta_2, self.epsilon = lr, beta_1, beta_2, epsilon
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, layers):
        self.t += 1
        lr_t = self.lr * math.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)
        for i, layer in enumerate(layers):
            for key, p in layer.params.items():
                g = layer.grads[key]
                m = self.m.get((i, key), np.zeros_like(p))
                v = self.v.get((i, key), np.zeros_like(p))
                m = self.beta_1 * m + (1 - self.beta_1) * g
                v = self.beta_2 * v + (1 - self.beta_2) * g * g
                self.m[(i, key)], self.v[(i, key)] = m, v
                layer.params[key] = p - lr_t * m / (np.sqrt(v) + self.epsilon)


class Model:
    """A list of layers; the last one outputs logits, softmax lives in the loss."""

    def __init__(self, layers):
        self.layers = layers
        self.optimizer = Adam()

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def train_step(self, x, y) -> float:
        """One Adam step on a batch x: (N, C, H, W), y: (N,) int labels; returns the loss."""
        loss, dlogits = softmax_cross_entropy(self.forward(x), y)
        self.backward(dlogits)
        self.optimizer.step(self.layers)
        return loss

    def predict(self, x):
        """Class probabilities for x: (N, C, H, W)."""
        logits = self.forward(x)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def from_spec(spec: ModelSpec, rng: np.random.Generator) -> Model:
    """One of the reference models, Glorot-uniform kernels and zero biases (as Keras and minicnn)."""

    def glorot(fan_in, fan_out, shape):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(np.float32)

    layers = []
    H, W, C = spec.input_shape
    shape = (C, H, W)
    for layer in spec.layers:
        if isinstance(layer, Conv):
            C, H, W = shape
            k = layer.kernel
            pad = same_pad(H, k) + same_pad(W, k) if layer.padding == "same" else (0, 0, 0, 0)
            w = glorot(k * k * C, k * k * layer.filters, (layer.filters, C, k, k))
            layers += [Conv2D(w, np.zeros(layer.filters, np.float32), pad), ReLU()]
            shape = (layer.filters, H + pad[0] + pad[1] - k + 1, W + pad[2] + pad[3] - k + 1)
        elif isinstance(layer, Pool):
            layers.append(MaxPool2D(layer.size))
            shape = (shape[0], shape[1] // layer.size, shape[2] // layer.size)
        elif isinstance(layer, Flatten):
            layers.append(FlattenLayer())
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, Dense):
            w = glorot(shape[0], layer.units, (shape[0], layer.units))
            layers.append(DenseLayer(w, np.zeros(layer.units, np.float32)))
            if layer.activation == "relu":
                layers.append(ReLU())
            shape = (layer.units,)
    return Model(layers)


def from_minicnn(model) -> Model:
    """The same network as a minicnn ``Sequential`` of Conv2D (relu or linear), MaxPooling2D, Flatten and Dense
    (relu, or softmax last), with its current weights. Other layers are refused."""
    layers = []
    chw = None  # (C, H, W) of the activations before Flatten, to reorder the next Dense's rows
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            if layer.strides != (1, 1):
                raise ValueError("the naive engine supports stride 1 only")
            w = np.ascontiguousarray(layer.params["kernel"].transpose(3, 2, 0, 1))
            layers.append(Conv2D(w, layer.params["bias"].copy(), layer.pad))
        elif kind == "MaxPooling2D":
            if layer.pool_size != layer.strides or layer.pool_size[0] != layer.pool_size[1] or any(layer.pad):
                raise ValueError("the naive engine supports square, non-overlapping, 'valid' pooling only")
            layers.append(MaxPool2D(layer.pool_size[0]))
        elif kind == "Flatten":
            H, W, C = layer.input_shape
            chw = (C, H, W)
            layers.append(FlattenLayer())
        elif kind == "Dense":
            w = layer.params["kernel"]
            if chw is not None:  # rows in (H, W, C) order -> (C, H, W) order
                C, H, W = chw
                w = w.reshape(H, W, C, -1).transpose(2, 0, 1, 3).reshape(C * H * W, -1)
                chw = None
            layers.append(DenseLayer(np.ascontiguousarray(w), layer.params["bias"].copy()))
        else:
            raise ValueError(f"the naive engine has no {kind} layer")
        activation = getattr(layer, "activation", "linear")
        if activation == "relu":
            layers.append(ReLU())
        elif activation not in ("linear", "softmax") or (activation == "softmax" and layer is not model.layers[-1]):
            raise ValueError(f"the naive engine supports relu (and softmax last); got {activation!r}")
    return Model(layers)
