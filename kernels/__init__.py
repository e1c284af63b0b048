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

import os

import numba
from numba.core.codegen import get_host_cpu_features

# Numba compiles for this machine's processor. On one with AVX-512, LLVM still prefers 256-bit vectors (its tuning
# for the first AVX-512 Xeons, whose clock dropped under 512-bit code), and the engine's loops then do 8 float32 at
# a time where the processor can do 16. So unless MINICNN_WIDE_VECTORS=0, or Numba's features are set already
# (NUMBA_CPU_FEATURES), the engine asks for the host's features without that preference, before anything is
# compiled. Code compiled earlier in the process keeps what it had; the Numba cache is keyed by the features. On
# the 2-core Xeon VM (AVX-512), two processes' steps in turn, ratios of the rounds' first quartiles, 512-bit against
# 256-bit: R's training step 0.92 on one thread and 0.925 on two, S's 0.98, C's 0.99; inference S 0.88, R 0.91, C
# level. R's first layer's kernels alone: 0.69x the time.
if numba.config.CPU_FEATURES is None and os.environ.get("MINICNN_WIDE_VECTORS", "1") != "0":
    _host = get_host_cpu_features()
    if "+avx512f" in _host.split(","):
        numba.config.CPU_FEATURES = _host + ",-prefer-256-bit"
