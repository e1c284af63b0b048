"""Output sizes and padding amounts, shared by every kernel and layer.

Keras's rule for a window of size ``k`` and stride ``s`` over an input of size ``n``:

* ``'valid'``: no padding, ``out = (n - k) // s + 1``.
* ``'same'``: ``out = ceil(n / s)``; the padding needed, ``max((out - 1) * s + k - n, 0)``, is split with the
  smaller half first, so the extra row (column) goes to the bottom (right). PyTorch's ``padding='same'`` and
  TensorFlow agree on this split.
"""

from __future__ import annotations


def pair(value, name: str = "value") -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``. Rejects anything that is not one or two positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (a, b)):
        raise ValueError(f"{name} must hold positive ints; got {value!r}")
    return int(a), int(b)


def same_padding_1d(n: int, k: int, s: int) -> tuple[int, int]:
    """Padding (before, after) that makes the output ``ceil(n / s)`` long; the extra one goes after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def padding_amounts(
    H: int, W: int, kh: int, kw: int, stride: tuple[int, int], padding: str
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` for ``padding`` in ``{'valid', 'same'}``."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return same_padding_1d(H, kh, stride[0]) + same_padding_1d(W, kw, stride[1])
    raise ValueError(f"padding must be 'valid' or 'same'; got {padding!r}")


def output_size(
    H: int, W: int, kh: int, kw: int, stride: tuple[int, int], pad: tuple[int, int, int, int]
) -> tuple[int, int]:
    """Output (Ho, Wo) of a ``kh x kw`` window at ``stride`` over an input padded by ``pad``.

    ``Ho = (H + top + bottom - kh) // sh + 1``; likewise ``Wo``. Zero or negative when the window does not fit.
    """
    pt, pb, pl, pr = pad
    return (H + pt + pb - kh) // stride[0] + 1, (W + pl + pr - kw) // stride[1] + 1
