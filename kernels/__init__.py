"""minicnn.kernels: the engine room. Pure functions on arrays; nothing here knows about layers or models.

* ``reference``: explicit loops, the readable twin and the oracle of every kernel.
* ``im2col``: NumPy vectorised im2col / col2im and convolution as im2col + GEMM.
* ``cpu``: Numba ``@njit`` kernels with the same signatures (the default CPU engine).
* ``winograd``: 3x3 convolution by Winograd's F(2x2, 3x3) and F(4x4, 3x3), in NumPy and compiled (``cpu`` uses it
  for wide layers).
* ``sparse``: a convolution's backward pass that skips dout's zeros (``cpu`` uses it behind max pooling).
* ``activations``, ``losses``, ``updates``: element-wise maths, fused losses and optimizer steps.
* ``augment``: bilinear affine sampling, flips and contrast for the augmentation layers.
* ``cuda`` and ``cuda_*``: ``numba.cuda`` kernels with the same signatures (GEMM, conv, pooling, reductions,
  element-wise, losses, updates), imported only when the ``cuda`` backend is asked for.
"""
