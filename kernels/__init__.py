"""minicnn.kernels: the engine room. Pure functions on arrays; nothing here knows about layers or models.

* ``reference``: explicit loops, the readable twin and the oracle of every kernel.
* ``im2col``: NumPy vectorised im2col / col2im and convolution as im2col + GEMM.
* ``cpu``: Numba ``@njit`` kernels with the same signatures (the default CPU engine).
* ``activations``, ``losses``, ``updates``: element-wise maths, fused losses and optimizer steps.
* ``cuda``: ``numba.cuda`` kernels with the same signatures (imported only when asked for).
"""
