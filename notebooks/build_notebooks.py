"""Write the lesson notebooks, ``notebooks/NN_*.ipynb``, from the cells in this file, without outputs.

    python notebooks/build_notebooks.py            # rewrite every notebook
    python notebooks/build_notebooks.py 03 05      # only those whose file name contains "03" or "05"

This file is the source of the lessons: edit a cell here, run the script, commit both. ``tests/test_notebooks.py``
checks that the committed notebooks are what this script writes, and runs each of them top to bottom.

A lesson is a list of cells: ``md(...)`` for prose, ``code(...)`` for code, and ``solution(...)`` for the answer to
an exercise, a code cell that Jupyter shows collapsed (click the bar to open it) and that still runs, so its
``check_...`` call proves the answer right whenever the notebook runs.

Every notebook reads ``FAST = os.environ.get("MINICNN_FAST") == "1"`` in its first code cell: the test suite sets
it, and the notebook then uses fewer samples and epochs (same cells, same lesson, smaller numbers).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def md(text: str) -> dict:
    return {"cell_type": "markdown", "source": textwrap.dedent(text).strip()}


def code(text: str) -> dict:
    return {"cell_type": "code", "source": textwrap.dedent(text).strip()}


def solution(text: str) -> dict:
    """A code cell shown collapsed in Jupyter (``source_hidden``), tagged ``solution``."""
    return {**code(text), "metadata": {"jupyter": {"source_hidden": True}, "tags": ["solution"]}}


# Shared by every lesson: the FAST switch, inline figures, and the data folder.
SETUP = """
import os
from pathlib import Path

FAST = os.environ.get("MINICNN_FAST") == "1"  # the test suite sets it: fewer samples and epochs, same lesson
DATA_DIR = os.environ.get("MINICNN_DATA_DIR")  # the real datasets (mnist/, cats-vs-dogs/, ...), if you have them
%matplotlib inline
"""


def setup(imports: str) -> dict:
    return code(textwrap.dedent(SETUP).strip() + "\n\n" + textwrap.dedent(imports).strip())


# MNIST-style data, or the built-in shapes when it cannot be had. FAST mode never downloads.
LOAD_IDX_OR_SHAPES = """
def load_idx_or_shapes(name, loader, class_names, n_train, n_test):
    \"\"\"`loader()` (MNIST or Fashion-MNIST: from MINICNN_DATA_DIR, the cache, or a download), else the built-in
    shapes. Returns x_train, y_train, x_test, y_test (images (N, H, W, C) uint8), the class names and a title.\"\"\"
    try:
        if FAST and not (DATA_DIR and Path(DATA_DIR, name).is_dir()):
            raise FileNotFoundError(f"FAST mode downloads nothing and MINICNN_DATA_DIR has no {name}/")
        (x_train, y_train), (x_test, y_test) = loader()
        x_train, x_test = x_train[..., None], x_test[..., None]  # add the channel axis: (N, 28, 28, 1)
        title = name
    except FileNotFoundError as e:  # datasets.DatasetNotFoundError is a FileNotFoundError
        print(f"{name} is not available ({str(e).splitlines()[0]})\\n-> using the built-in shapes instead")
        (x_train, y_train), (x_test, y_test) = datasets.load_shapes(n_train=n_train, n_test=n_test)
        class_names, title = datasets.SHAPES_CLASSES, "shapes"
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test], list(class_names), title
"""


# ---------------------------------------------------------------------------------------------------------------
# 1. Convolution from scratch


def lesson_01() -> list[dict]:
    return [
        md(r"""
        # 1. Convolution from scratch

        A convolutional layer slides small learned templates over an image and writes down, at every position, how
        strongly the image matches each template. This notebook builds that operation three times, each version
        faster than the one before, and proves that all three compute the same numbers:

        1. **loops**: the definition, written as seven nested `for` loops (`minicnn.kernels.reference`);
        2. **im2col + GEMM**: copy every patch of the image into one row of a matrix, then do one matrix product
           (`minicnn.kernels.im2col`);
        3. **Numba**: the same im2col compiled to machine code and spread over the CPU cores
           (`minicnn.kernels.cpu`), minicnn's default engine.

        Shapes are channels-last, as in Keras: a batch of images `x` is `(N, H, W, C)`, a kernel `w` is
        `(kh, kw, C, F)` for `F` filters, the bias `b` is `(F,)`.
        """),
        setup("""
        import inspect
        import time

        import numpy as np

        from minicnn import plot
        from minicnn.kernels import cpu, im2col, reference, winograd
        from minicnn.kernels.shapes import output_size, padding_amounts
        from minicnn.testing import relative_error

        rng = np.random.default_rng(0)
        """),
        md(r"""
        ## The definition

        Each output number is a dot product between one filter and one `kh x kw x C` patch of the input:

        $$\text{out}[n, i, j, f] = b[f] + \sum_{p < k_h} \sum_{q < k_w} \sum_{c < C}
          x[n,\ i s_h + p,\ j s_w + q,\ c]\ w[p, q, c, f]$$

        where $(s_h, s_w)$ is the stride. (Strictly this is a cross-correlation, since the kernel is not flipped;
        every deep-learning framework calls it convolution.) Without padding a window of height $k_h$ fits
        $\lfloor (H - k_h) / s_h \rfloor + 1$ times down an image of height $H$. Here is `reference.conv2d_forward`,
        the formula as loops:
        """),
        code("print(inspect.getsource(reference.conv2d_forward))"),
        md("""
        Try it on an example small enough to check by hand: a 5 x 5 image, dark (0) on the left and bright (1) from
        column 2 on, and a 3 x 3 kernel that subtracts its left column from its right column, a vertical-edge
        detector.
        """),
        code("""
        x = np.zeros((1, 5, 5, 1))
        x[0, :, 2:, 0] = 1.0  # columns 2, 3, 4 are bright
        w = np.zeros((3, 3, 1, 1))
        w[:, 0, 0, 0] = -1.0  # the kernel's left column
        w[:, 2, 0, 0] = +1.0  # its right column
        b = np.zeros(1)

        out, _ = reference.conv2d_forward(x, w, b)
        print("image:\\n", x[0, :, :, 0])
        print("output, shape", out.shape, ":\\n", out[0, :, :, 0])
        """),
        md("""
        The output is 3 x 3, since a 3-wide window fits 5 - 3 + 1 = 3 times each way. In output columns 0 and 1 the
        window straddles the edge: its right column sees 1s, its left column 0s, and three rows of (+1) x 1 give 3.
        In column 2 the window lies wholly in the bright part and the two columns cancel: 0. The filter answers
        "is there a dark-to-bright edge here?", at every position at once. A trained network learns such filters
        by itself (notebook 5 shows them).

        ## Why the loops are slow

        The loops do one multiply-add per innermost iteration, `N * Ho * Wo * F * kh * kw * C` of them, and Python
        spends far longer on the bookkeeping of each iteration than on the arithmetic. Time them on a tiny batch of
        28 x 28 images with 8 channels and 16 filters (the shape of a layer early in a real network):
        """),
        code("""
        N = 1 if FAST else 4  # a tiny batch: the loops are slow
        H, W, C, F, k = 28, 28, 8, 16, 3
        x = rng.standard_normal((N, H, W, C)).astype(np.float32)
        w = rng.standard_normal((k, k, C, F)).astype(np.float32)
        b = rng.standard_normal(F).astype(np.float32)
        Ho, Wo = output_size(H, W, k, k, (1, 1), (0, 0, 0, 0))
        macs = N * Ho * Wo * F * k * k * C

        t0 = time.perf_counter()
        out_loop, _ = reference.conv2d_forward(x, w, b)
        t_loop = time.perf_counter() - t0
        print(f"output {out_loop.shape}: {macs:,} multiply-adds in {t_loop:.2f} s,"
              f" {macs / t_loop / 1e6:.2f} million per second")
        """),
        md("""
        About a million multiply-adds per second, or less: a CPU core can do billions. The next two versions close
        that gap.

        ## im2col: one matrix product instead of loops

        The triple sum over `p, q, c` is a dot product of two vectors of length `kh * kw * C`: the flattened patch
        and the flattened filter. Copy every patch into one row of a matrix `cols`, with `N * Ho * Wo` rows, and
        view the kernel as the matrix `w.reshape(kh * kw * C, F)`, one filter per column: then every output is an
        entry of the single matrix product `cols @ w`. Matrix products (GEMMs) are the most optimised routine in
        computing; NumPy hands them to a BLAS library that runs them close to the machine's peak speed.

        The drawing numbers the cells of a 4 x 4, one-channel input and shows where each one lands in `cols`:
        """),
        code("plot.im2col_layout(H=4, W=4, C=1, kernel_size=3)"),
        code("""
        cells, cols_of_numbers = plot.im2col_indices(H=4, W=4, C=1, kernel_size=3)
        print(cols_of_numbers)
        """),
        md("""
        Row 0 is the patch of output position (0, 0): cells 1 2 3, 5 6 7, 9 10 11, read row by row. Row 1 is the
        patch one step to the right, so every number is one larger. Rows 2 and 3 move one step down (+4). Every cell
        appears in up to 9 rows: `cols` holds the input up to `kh * kw` times over, which is im2col's price in
        memory. Channels-last makes the two reshapes free: a patch row is `kh` runs of `kw * C` numbers that are
        already contiguous in `x`, and a `(kh, kw, C, F)` kernel already is the `(kh * kw * C, F)` matrix.

        Now the same on the real input, by hand, and compared with the loops. `relative_error(a, b)` is
        `||a - b|| / (||a|| + ||b||)` over the whole array, from `minicnn.testing`:
        """),
        code("""
        cols = im2col.im2col(x, k, k)
        out_gemm = (cols @ w.reshape(-1, F) + b).reshape(N, Ho, Wo, F)
        print(f"cols: {cols.shape}, {cols.nbytes / x.nbytes:.1f} times the memory of x")
        print(f"relative error, im2col + GEMM vs loops: {relative_error(out_gemm, out_loop):.1e}")
        """),
        md("""
        `cols` has 26 x 26 = 676 rows per image (one per output position) and 3 x 3 x 8 = 72 columns: 7.8 times the
        memory of `x` (not quite 9, because pixels near the border belong to fewer patches). The error is around
        1e-7: float32 keeps about 7 significant digits, and the two versions add the same products in a different
        order, so they agree to the last digit or so of float32. That is the same answer.

        ## Numba: compile the loop NumPy cannot vectorise

        Building `cols` is a copy. NumPy's version pads a copy of `x` first, then copies again through the strided
        view; a compiled loop that copied one number at a time would be slower still (measured 2-4 times). But
        channels-last gives the compiled loop something better: one kernel row of a patch, `kw` pixels of `C`
        channels, is `kw * C` numbers that sit side by side in `x`. `minicnn.kernels.cpu` copies each as one run,
        and writes the zeros of the padding itself instead of padding a copy of `x` (2.5 times faster than NumPy on
        32-channel blocks). The engine also changes *how much* it builds at once: `cols` for a whole training batch
        can be bigger than the CPU's
        caches (144 MiB for a 32-channel layer on 128 CIFAR images), so the copy goes out to memory and the GEMM
        reads it back. The engine instead runs im2col + GEMM on blocks of a few images (about `cpu.CHUNK_BYTES` of
        `cols` each), each block's `cols` still in the cache when the GEMM reads it, and never keeps `cols` for the
        backward pass (it rebuilds each block from `x`). For a first layer with 1 or 3 channels, whose patches are
        only 9 or 27 numbers long, it builds the transpose of `cols` instead, one row per kernel tap
        (`im2col.im2col_taps`): 9 or 27 big strided copies rather than one tiny copy per output pixel.

        The way back, col2im, must *add* each row onto its overlapping patch, and NumPy can only do that one kernel
        position at a time. Both directions are loop nests written in plain Python that Numba's `@njit` compiles to
        machine code, with the same runs; in col2im, `prange` marks the loop over images, which may run on several
        cores since no two images share an element:
        """),
        code("""
        print(inspect.getsource(cpu._im2col.py_func))
        print(inspect.getsource(cpu._col2im.py_func))
        """),
        code("""
        out_numba, _ = cpu.conv2d_forward(x, w, b)
        print(f"relative error, Numba vs loops:        {relative_error(out_numba, out_loop):.1e}")
        print(f"relative error, Numba vs NumPy im2col: {relative_error(out_numba, out_gemm):.1e}")
        """),
        md("""
        Against NumPy's im2col the error is exactly 0 here: both build the same `cols`, bit for bit, and these four
        images fit in one block, so both hand it to the same BLAS call. (On bigger batches BLAS may round the blocks
        a little differently: the last bit of float32, as above.) Strides and padding change only the index
        arithmetic; check all three versions on them too (on a smaller image, for the loops' sake).
        `padding_amounts` gives Keras's `'same'` padding as `(top, bottom, left, right)`:
        """),
        code("""
        xs = x[:1, :12, :12]
        for stride, padding in [((1, 1), "same"), ((2, 2), "valid"), ((2, 2), "same")]:
            pad = padding_amounts(12, 12, k, k, stride, padding)
            want, _ = reference.conv2d_forward(xs, w, b, stride, pad)
            got_numpy, _ = im2col.conv2d_forward(xs, w, b, stride, pad)
            got_numba, _ = cpu.conv2d_forward(xs, w, b, stride, pad)
            errors = relative_error(got_numpy, want), relative_error(got_numba, want)
            print(f"stride {stride}, {padding!r:7}, pad {pad}: output {want.shape},"
                  f" errors {errors[0]:.0e} (NumPy) {errors[1]:.0e} (Numba)")
        """),
        md("""
        With stride 2 and `'same'` on an even size the padding is lopsided, `(0, 1, 0, 1)`: an output of
        ceil(12 / 2) = 6 needs 1 extra row and column in all, and Keras puts the extra one at the bottom and right.
        All three versions agree everywhere.

        ## How much faster?

        The same inputs through all three: the loops ran once above; the fast versions take the best of a few
        runs, after one warm-up call (the first call of a Numba function loads its compiled code from the disk
        cache, or compiles it).
        """),
        code("""
        def best_time(f, repeats=5):
            \"\"\"Seconds of the fastest of `repeats` calls of f(), after one warm-up call.\"\"\"
            f()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            return min(times)


        timings = {
            "loops (reference.py)": t_loop,
            "im2col + GEMM (im2col.py)": best_time(lambda: im2col.conv2d_forward(x, w, b)),
            "minicnn CPU engine (cpu.py)": best_time(lambda: cpu.conv2d_forward(x, w, b)),
        }
        print(f"conv forward, x {x.shape}, w {w.shape}: {macs:,} multiply-adds\\n")
        print(f"{'engine':<30}{'ms':>10}{'speed-up':>10}{'GFLOP/s':>10}")
        for name, t in timings.items():
            print(f"{name:<30}{t * 1e3:>10.2f}{t_loop / t:>9.0f}x{2 * macs / t / 1e9:>10.2f}")
        """),
        md("""
        On a quiet machine the GEMM versions are hundreds to thousands of times faster than the loops, and more so on
        bigger batches, where the fixed cost of each call matters less. (GFLOP/s counts a multiply-add as two
        floating-point operations.) The speed comes from four places: no interpreter between the operations, SIMD
        instructions that do 8 or 16 multiply-adds at once, BLAS's blocking of the matrices to fit the CPU caches,
        and all the cores working at once.

        The two GEMM versions do the same matrix product through the same BLAS; they differ only in how they build
        `cols`, and, in the backward pass, in **col2im**, which adds each row of a `cols`-shaped gradient back onto
        its patch (the backward pass, notebook 2). Time both on a training-sized batch:
        """),
        code("""
        xb = rng.standard_normal((16 if FAST else 128, H, W, C)).astype(np.float32)
        cols_b = cpu.im2col(xb, k, k)
        print(f"x {xb.shape} -> cols {cols_b.shape}")
        for name, numpy_f, numba_f in [
            ("im2col", lambda: im2col.im2col(xb, k, k), lambda: cpu.im2col(xb, k, k)),
            ("col2im", lambda: im2col.col2im(cols_b, xb.shape, k, k), lambda: cpu.col2im(cols_b, xb.shape, k, k)),
        ]:
            t_numpy, t_numba = best_time(numpy_f), best_time(numba_f)
            print(f"{name}: NumPy {t_numpy * 1e3:7.2f} ms, Numba {t_numba * 1e3:7.2f} ms")
        """),
        md("""
        im2col is a plain copy: NumPy pads a copy of `x` and copies again, the compiled loop copies each kernel row
        of a patch as one run. How much that wins depends on `C`: with 8 channels a run is 24 numbers; with 1 it
        would be 3, which is why a first layer takes the tap-by-tap path instead. col2im is where the compiled loop
        earns most: NumPy has to make `kh * kw` separate passes over the whole gradient, adding one strided slice at
        a time, while Numba adds every patch of an image in one pass; it is usually several times faster.
        (Timings on a busy machine jump around: run the cell twice before reading much into them.)
        """),
        md("""
        ## Fewer multiplications: Winograd's trick

        im2col does every multiplication the definition asks for. Winograd's *minimal filtering* algorithm (used
        for CNNs by Lavin and Gray, 2016) does fewer. In one dimension: two outputs of a 3-tap filter `g` over four
        inputs `d` take 6 multiplications directly, `y0 = d0 g0 + d1 g1 + d2 g2` and `y1 = d1 g0 + d2 g1 + d3 g2`.
        Four products are enough:
        """),
        code("""
        d, g = rng.standard_normal(4), rng.standard_normal(3)
        direct = np.array([d[0] * g[0] + d[1] * g[1] + d[2] * g[2], d[1] * g[0] + d[2] * g[1] + d[3] * g[2]])
        m1 = (d[0] - d[2]) * g[0]
        m2 = (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2  # the filter's sums depend on g alone:
        m3 = (d[2] - d[1]) * (g[0] - g[1] + g[2]) / 2  # computed once per filter, not once per tile
        m4 = (d[1] - d[3]) * g[2]
        print("direct:  ", direct)
        print("Winograd:", np.array([m1 + m2 + m3, m2 - m3 - m4]))
        """),
        md("""
        In matrix form that is `y = A^T [(G g) * (B^T d)]`, with `*` elementwise. Nested in two dimensions, a 2x2
        block of outputs comes from a 4x4 input tile in 16 multiplications instead of 36: `Y = A^T [(G g G^T) *
        (B^T d B)] A`. Summed over the input channels, the 16 elementwise products of all the tiles become 16
        matrix products, so BLAS still does the arithmetic, 2.25x less of it. Here it is in NumPy, `einsum` for
        each transform:
        """),
        code("""
        print(inspect.getsource(winograd._transformed_tiles_reference))
        print(inspect.getsource(winograd.conv3x3_reference))
        """),
        code("""
        pad = padding_amounts(H, W, 3, 3, (1, 1), "same")
        want, _ = reference.conv2d_forward(x[:1], w, b, (1, 1), pad)
        for name, f in [("NumPy", winograd.conv3x3_reference), ("compiled", winograd.conv3x3)]:
            print(f"relative error, Winograd ({name}) vs loops: {relative_error(f(x[:1], w, b, pad), want):.1e}")

        # A layer of the CIFAR model: 32 channels in and out, 32x32 images
        xw = rng.standard_normal((8 if FAST else 64, 32, 32, 32)).astype(np.float32)
        ww = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
        args = (xw, ww, None, (1, 1), (1, 1, 1, 1))  # 'same' padding, as in the model
        print(f"x {xw.shape}, w {ww.shape}, forward:")
        print(f"  NumPy im2col + GEMM:     {best_time(lambda: im2col.conv2d_forward(*args)) * 1e3:6.1f} ms")
        default = cpu.WINOGRAD_MIN_CHANNELS
        cpu.WINOGRAD_MIN_CHANNELS = 10**9  # switch Winograd off: the engine's compiled im2col path
        print(f"  compiled im2col + GEMM:  {best_time(lambda: cpu.conv2d_forward(*args)) * 1e3:6.1f} ms")
        cpu.WINOGRAD_MIN_CHANNELS = default
        print(f"  Winograd (cpu engine):   {best_time(lambda: cpu.conv2d_forward(*args)) * 1e3:6.1f} ms")
        """),
        md("""
        The price is in the small print. The 16 GEMMs are only `C` deep, which BLAS runs at a lower rate than
        im2col's one `9 C`-deep GEMM, so the CPU engine takes Winograd only for 3x3, stride-1 layers with at least
        32 channels in and out (`cpu.WINOGRAD_MIN_CHANNELS`; its backward pass uses it for `dx` and `dw` too). And the
        transforms add and subtract before multiplying, so float32 results differ from the direct sum in the last
        bits, about as much as two BLAS libraries do.

        Bigger tiles save more. F(4x4, 3x3) makes a 4x4 block of outputs from a 6x6 tile with 36 products instead
        of 144, 4x fewer (`m=4` in `winograd.conv3x3`). Its transforms carry factors up to 8, and sixths in `G`, so
        it rounds more in float32: under one part in a million overall, a few in the worst element. And tiles that
        hang over the edge of the
        map are wasted work, more of it with big tiles on small maps, so the engine counts the products per output
        of each tile size and takes the smaller (`cpu.winograd_tile`): the MNIST model's 11x11 layer runs by
        F(4x4, 3x3) at 2.7 products per output, where F(2x2, 3x3) would need 4.8 and im2col 9.
        """),
        code("""
        for m in (2, 4):
            error = relative_error(winograd.conv3x3(xw, ww, m=m), im2col.conv2d_forward(*args)[0])
            print(f"F({m}x{m}, 3x3): {best_time(lambda m=m: winograd.conv3x3(xw, ww, m=m)) * 1e3:6.1f} ms, "
                  f"relative error against im2col {error:.1e}")
        print("tile size the engine picks for the MNIST model's 11x11 layer:", cpu.winograd_tile(32, 64, 3, 3, (1, 1), 11, 11))
        """),
        md("""
        ## Exercise: a 1 x 1 convolution is a matrix product

        A `1 x 1` kernel sees one pixel at a time: each output pixel is its own `C` input channels times a `(C, F)`
        matrix, plus the bias. So no im2col is needed at all. Write `conv1x1(x, w, b)` with one matrix product and
        no loops (hint: `reshape`), then run the check below it.
        """),
        code("""
        def conv1x1(x, w, b):
            \"\"\"x: (N, H, W, C), w: (1, 1, C, F), b: (F,) -> (N, H, W, F), with one matrix product.\"\"\"
            return None  # your code here
        """),
        code("""
        def check_conv1x1(fn):
            x = rng.standard_normal((2, 5, 6, 3))
            w = rng.standard_normal((1, 1, 3, 4))
            b = rng.standard_normal(4)
            got = fn(x, w, b)
            if got is None:
                print("conv1x1 returns None so far: write it in the cell above, run that cell, then this one")
                return
            want, _ = reference.conv2d_forward(x, w, b)
            assert np.shape(got) == want.shape, f"output shape {np.shape(got)}, expected {want.shape}"
            error = relative_error(got, want)
            assert error < 1e-12, f"relative error {error:.1e}: not the numbers the loops give"
            print(f"correct: relative error {error:.0e} against the loops")


        check_conv1x1(conv1x1)
        """),
        md("One solution (the cell is collapsed: click it to open):"),
        solution("""
        def conv1x1_solution(x, w, b):
            N, H, W, C = x.shape
            return (x.reshape(-1, C) @ w.reshape(C, -1) + b).reshape(N, H, W, -1)


        check_conv1x1(conv1x1_solution)
        """),
        md("""
        ## What you have seen

        - Convolution is a dot product of every filter with every patch; the loop version is its definition.
        - im2col turns all those dot products into one matrix product, for the price of copying each pixel up to
          `kh * kw` times; it is hundreds to thousands of times faster than the loops.
        - Numba compiles the im2col loop and runs it on every core: minicnn's default CPU engine.
        - Winograd's algorithm computes a 3x3 convolution with 2.25x (or, with bigger tiles, 4x) fewer
          multiplications, still as GEMMs.
        - All three agree to float32 precision, on strides and paddings too: `tests/test_kernels.py` checks this on
          random shapes.

        Next, notebook 2 runs the layers backwards: the gradients that training needs.
        """),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 2. Backpropagation


def lesson_02() -> list[dict]:
    return [
        md(r"""
        # 2. Backpropagation, layer by layer

        Training needs the gradient of the loss $L$ with respect to every weight. Backpropagation gets it with the
        chain rule, one layer at a time, from the last layer to the first. Every minicnn layer has the same two
        methods:

        - `forward(x)` computes $y = f(x)$ and keeps in `layer.cache` what the backward pass will need;
        - `backward(dout)` receives $\partial L / \partial y$ (called `dout`), fills `layer.grads[key]` with
          $\partial L / \partial \text{params}[key]$ and returns $\partial L / \partial x$ (`dx`), which becomes the
          `dout` of the layer before.

        No layer ever builds a Jacobian matrix: each computes the product of its Jacobian with `dout` directly,
        from a formula. This notebook derives those formulas for Dense, Conv2D, pooling and softmax-cross-entropy,
        and checks each one against finite differences.
        """),
        setup("""
        import numpy as np

        from minicnn import layers
        from minicnn.backend import get_backend
        from minicnn.kernels import losses, reference
        from minicnn.testing import check_function_gradient, check_layer_gradients, numerical_gradient, relative_error

        rng = np.random.default_rng(0)
        np.set_printoptions(precision=4, suppress=True)
        """),
        md(r"""
        ## The gradient checker

        How do we know a backward pass is right? Pick a random `dout` and look at the scalar
        $L(x) = \sum f(x) \cdot \text{dout}$: its gradient is exactly what `backward(dout)` must return. Estimate that
        gradient one entry at a time with centred differences,

        $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + h e_i) - L(x - h e_i)}{2h},$$

        whose error shrinks like $h^2$, and compare with `relative_error` $= \|a - b\| / (\|a\| + \|b\|)$. In float64
        with $h = 10^{-6}$, a correct gradient agrees to about $10^{-8}$ or better; a wrong one is off by $10^{-2}$
        or more. This is `minicnn.testing`, the checker that the test suite also uses. First on a function whose
        gradient we know, $f(v) = \sum_i v_i \sin v_i$, with $\partial f / \partial v_i = \sin v_i + v_i \cos v_i$:
        """),
        code("""
        v = rng.standard_normal(5)
        f = lambda v: np.sum(v * np.sin(v))
        print(f"right gradient:   relative error {check_function_gradient(f, np.sin(v) + v * np.cos(v), v):.1e}")
        print(f"forgot one term:  relative error {check_function_gradient(f, v * np.cos(v), v):.1e}")
        """),
        md(r"""
        The right gradient agrees to about ten digits; forgetting one term of the product rule gives an error of
        order 1. The gap between the two is what makes the checker useful.

        ## Dense

        $z = x W + b$ with $x$: `(N, D)`, $W$: `(D, M)`, $b$: `(M,)`. Write one entry,
        $z_{nm} = \sum_d x_{nd} W_{dm} + b_m$, and differentiate, with $dz = \partial L / \partial z$:

        $$\frac{\partial L}{\partial W_{dm}} = \sum_n x_{nd}\, dz_{nm} \Rightarrow dW = x^\top dz, \qquad
          \frac{\partial L}{\partial x_{nd}} = \sum_m dz_{nm} W_{dm} \Rightarrow dx = dz\, W^\top, \qquad
          db = \sum_n dz_{n\cdot}$$

        A handy check: `dW` must have the shape of `W`, `(D, M)`, and the only product of `x` `(N, D)` and `dz`
        `(N, M)` with that shape is `x.T @ dz`. With a ReLU after it, `dz = dout * (z > 0)`: the gradient passes
        where the unit was active and stops where it was clipped.
        """),
        code("""
        dense = layers.Dense(3, activation="relu")
        x = rng.standard_normal((4, 5))
        print("check_layer_gradients:", {k: f"{e:.1e}" for k, e in check_layer_gradients(dense, x).items()})

        # The same gradients from the formulas above (the checker has built the layer, in float64)
        y = dense.forward(x, training=True)
        dout = rng.standard_normal(y.shape)
        dx = dense.backward(dout)
        dz = dout * (y > 0)  # ReLU's backward, from its output
        W = dense.params["kernel"]
        print(f"dW == x.T @ dz:  {relative_error(dense.grads['kernel'], x.T @ dz):.1e}")
        print(f"db == sum of dz: {relative_error(dense.grads['bias'], dz.sum(axis=0)):.1e}")
        print(f"dx == dz @ W.T:  {relative_error(dx, dz @ W.T):.1e}")
        """),
        md(r"""
        `check_layer_gradients` returns one relative error per gradient: the input `x` and each parameter. All are
        near $10^{-10}$, and the layer's gradients are exactly the formulas (errors of 0).

        ## Conv2D

        Convolution is im2col followed by a Dense-like product (notebook 1): `out = cols @ w2` with
        `w2 = w.reshape(kh*kw*C, F)`. So the Dense formulas carry over:

        - `dw = cols.T @ dout2` (with `dout2 = dout.reshape(-1, F)`), `db = dout2.sum(axis=0)`;
        - `dcols = dout2 @ w2.T`, and then **col2im** adds each row of `dcols` back onto the patch it was copied
          from. Patches overlap, so it must *add*: a pixel that sat in 9 patches gets 9 contributions.

        The loop twin in `reference.conv2d_backward` says the same in one line per gradient: every output pixel
        sends `dout * w` back to each input it touched, and `dout * x` to each weight. The same checker passes for
        all three engines, here with stride 2 and `'same'` padding:
        """),
        code("""
        x = rng.standard_normal((2, 6, 6, 3))
        for name in ("reference", "numpy", "cpu"):
            conv = layers.Conv2D(4, 3, strides=2, padding="same")
            conv.backend = get_backend(name)  # loops, NumPy im2col, the minicnn CPU engine
            errors = check_layer_gradients(conv, x)
            print(f"{name:<10}", {k: f"{e:.1e}" for k, e in errors.items()})
        """),
        md(r"""
        At stride 1 there is a second way to read `dx`, and the CPU engine uses it for `'same'` layers with 8 or more
        input channels: every input pixel received `w[p, q]` times the outputs around it, so `dx` is itself a
        convolution, of `dout` (padded by `k - 1 - pad` on each side) with the kernel rotated by 180 degrees and its
        input and output channels swapped. It runs through the same im2col + GEMM as the forward pass, with no
        overlapping adds. Check it against the loop twin:
        """),
        code("""
        x = rng.standard_normal((2, 6, 6, 3))
        w = rng.standard_normal((3, 3, 3, 4))
        pad = (1, 1, 1, 1)  # 'same' for a 3 x 3 kernel
        out, cache = reference.conv2d_forward(x, w, None, (1, 1), pad)
        dout = rng.standard_normal(out.shape)
        dx_loops, _, _ = reference.conv2d_backward(dout, cache)

        w_rotated = w[::-1, ::-1].transpose(0, 1, 3, 2)  # (kh, kw, F, C): flipped in space, channels swapped
        full = tuple(3 - 1 - p for p in pad)
        dx_conv, _ = reference.conv2d_forward(dout, w_rotated, None, (1, 1), full)
        print(f"dx as a convolution of dout: relative error {relative_error(dx_conv, dx_loops):.1e}")
        """),
        md(r"""
        ## Pooling

        Max pooling passes each window's largest value; in the backward pass, each output's gradient goes to the
        one input that won its window, and every other input gets 0. Average pooling spreads each gradient evenly:
        every input of a 2 x 2 window gets a quarter. A small example where the winners are easy to see:
        """),
        code("""
        pool = layers.MaxPooling2D(2)
        x = np.array([[1, 5, 2, 0],
                      [3, 4, 8, 1],
                      [0, 2, 1, 1],
                      [7, 1, 3, 9]], dtype=np.float64).reshape(1, 4, 4, 1)
        y = pool(x)  # a layer called on an array builds itself and runs forward
        dx = pool.backward(np.ones_like(y))
        print("max of each 2x2 window:\\n", y[0, :, :, 0])
        print("dx for dout = 1 everywhere:\\n", dx[0, :, :, 0])
        """),
        md(r"""
        The outputs are 5, 8, 7 and 9, and `dx` has a 1 exactly where each of them sat. Max is not differentiable
        where two inputs tie for the maximum; random inputs make ties (closer than $h$) improbable, so the checker
        works, with overlapping windows too:
        """),
        code("""
        x = rng.standard_normal((2, 6, 6, 3))
        pools = [layers.MaxPooling2D(2), layers.AveragePooling2D(2), layers.MaxPooling2D(3, strides=2, padding="same")]
        for layer in pools:
            errors = check_layer_gradients(layer, x)
            print(f"{layer.name:<26}", {k: f"{e:.1e}" for k, e in errors.items()})
        """),
        md(r"""
        ## Behind a max pooling, most of the gradient is zero

        Every input that lost its window gets 0. So the `dout` that reaches a convolution sitting before a max
        pooling is mostly zeros: with 2 x 2 windows at most one number in four is nonzero, and the ReLU in between
        zeroes more. Conv2D's backward (the loops in `reference.conv2d_backward`) sends each element of `dout` back
        along the edges it came by, and a zero sends nothing. im2col + GEMM multiplies by the zeros all the same;
        minicnn's CPU engine counts them first, and where at most a quarter of `dout` is nonzero it runs a backward
        pass that skips them (`minicnn.kernels.sparse`): the same sums, fewer of them. Here on the MNIST model's
        second convolution (32 channels of 13 x 13 in, 64 filters):
        """),
        code("""
        import time

        from minicnn.kernels import cpu, sparse

        x = np.maximum(rng.standard_normal((8 if FAST else 64, 13, 13, 32)), 0).astype(np.float32)
        w = (rng.standard_normal((3, 3, 32, 64)) * 0.08).astype(np.float32)
        y, conv_cache = cpu.conv2d_forward(x, w, None, activation="relu")
        pooled, pool_cache = reference.maxpool2d_forward(y)
        dout = reference.maxpool2d_backward(rng.standard_normal(pooled.shape).astype(np.float32), pool_cache)
        dout *= y > 0  # the ReLU's backward
        print(f"nonzero in dout: {sparse.nonzero_fraction(dout):.1%}")

        # the loops are slow in Python: check on one image and 8 of the filters
        x1, w1, d1 = x[:1], w[..., :8], np.ascontiguousarray(dout[:1, ..., :8])
        dx_ref, dw_ref, _ = reference.conv2d_backward(d1, (x1, w1, (1, 1), (0, 0, 0, 0)))
        dw, dx = sparse.conv2d_dw_dx(x1, d1, w1)
        print(f"against the loops: dw {relative_error(dw, dw_ref):.1e}, dx {relative_error(dx, dx_ref):.1e}")


        def best_time(f, repeats=5):
            f()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                f()
                times.append(time.perf_counter() - start)
            return min(times)


        dense = best_time(lambda: cpu._conv_dw_dx(x, dout, w, (1, 1), (0, 0, 0, 0)))
        skipping = best_time(lambda: sparse.conv2d_dw_dx(x, dout, w))
        print(f"dw and dx, batch {len(x)}: im2col + GEMM + col2im {dense * 1e3:.1f} ms, "
              f"skipping the zeros {skipping * 1e3:.1f} ms")
        """),
        md(r"""
        Fewer multiply-adds do not always mean less time: BLAS runs its dense products at a rate the scattered
        updates cannot match, so skipping pays only when most of `dout` is zero, and the engine keeps the dense
        path (or Winograd's, notebook 1) otherwise (`cpu.SPARSE_MAX_DENSITY`).
        """),
        md(r"""
        ## Softmax and cross-entropy

        The last layer outputs logits $z$; softmax turns them into probabilities $p_k = e^{z_k} / \sum_j e^{z_j}$,
        and the loss of a sample with true class $y$ is $-\log p_y$, averaged over the batch. With
        $\log p_y = z_y - \log \sum_j e^{z_j}$:

        $$\frac{\partial (-\log p_y)}{\partial z_k} = -[k = y] + \frac{e^{z_k}}{\sum_j e^{z_j}} = p_k - [k = y],
          \qquad\text{so}\qquad dz = \frac{p - \text{onehot}(y)}{N}.$$

        minicnn computes the two together from the logits (`kernels.losses.softmax_cross_entropy`): the gradient
        never divides by a probability that may be 0, and the log never sees one.
        """),
        code("""
        z = rng.standard_normal((4, 3))
        y = np.array([0, 2, 1, 2])
        loss, dz = losses.softmax_cross_entropy(z, y)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        print(f"loss {loss:.4f} = mean of -log p[true class] = {-np.log(p[np.arange(4), y]).mean():.4f}")
        print("N * dz = p - onehot(y):\\n", 4 * dz)
        error = check_function_gradient(lambda z: losses.softmax_cross_entropy(z, y)[0], dz, z)
        print(f"relative error against finite differences: {error:.1e}")
        """),
        md("""
        Each row of `N * dz` sums to zero (the probabilities sum to 1, and so does the one-hot row). The entry of the
        true class is negative, `p - 1`: gradient descent raises that logit. The others are positive, `p`: their
        logits go down, each in proportion to how much probability it wrongly took.

        Why fuse? A logit of 1000 overflows `exp` in a softmax computed on its own, while the fused version
        subtracts the row's maximum first and stays exact:
        """),
        code("""
        big = np.array([[1000.0, 0.0, -1000.0]])
        with np.errstate(over="ignore", invalid="ignore"):
            print("softmax on its own:", np.exp(big) / np.exp(big).sum())
        loss, dz = losses.softmax_cross_entropy(big, np.array([1]))
        print(f"fused: loss {loss}, dz {dz}")
        """),
        md("""
        `inf / inf` gives NaN; the fused loss is 1000 (the true class's logit is 1000 below the winner's), and the
        gradient is finite: +1 on the wrong winner, -1 on the true class.

        ## What a bug looks like

        A Dense layer whose backward pass *averages* the bias gradient over the batch instead of summing it: an
        easy slip, and one that trains, only worse. The checker points at the faulty gradient:
        """),
        code("""
        class BuggyDense(layers.Dense):
            def backward(self, dout, skip_activation=False):
                dx = super().backward(dout, skip_activation)
                self.grads["bias"] = self.grads["bias"] / len(dout)  # the bug: mean over the batch, not the sum
                return dx


        errors = check_layer_gradients(BuggyDense(3), rng.standard_normal((4, 5)))
        print({k: f"{e:.1e}" for k, e in errors.items()})
        """),
        md(r"""
        `x` and `kernel` are still right, and `bias` is off by exactly 0.6: for $N = 4$ the buggy gradient is the
        true one divided by 4, and $(1 - 1/4) / (1 + 1/4) = 3/5$. Every layer in minicnn passes this check in
        `tests/test_layers.py`.

        ## Exercise: Dense backward by hand

        Write the three gradients of $z = xW + b$ given $dz$, with the formulas above, and check them against finite
        differences.
        """),
        code("""
        def dense_backward(dz, x, w):
            \"\"\"dz: (N, M), x: (N, D), w: (D, M) -> dx: (N, D), dw: (D, M), db: (M,)\"\"\"
            return None  # your code here: return dx, dw, db
        """),
        code("""
        def check_dense_backward(fn):
            x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
            dz = rng.standard_normal((3, 2))
            got = fn(dz, x, w)
            if got is None:
                print("dense_backward returns None so far: write it above, run that cell, then this one")
                return
            forward = lambda: x @ w + b  # reads x, w and b, which numerical_gradient nudges in place
            for name, mine, wrt in zip(("dx", "dw", "db"), got, (x, w, b)):
                assert np.shape(mine) == wrt.shape, f"{name} has shape {np.shape(mine)}, expected {wrt.shape}"
                error = relative_error(mine, numerical_gradient(forward, wrt, dz))
                assert error < 1e-7, f"{name}: relative error {error:.1e} against finite differences"
            print("correct: dx, dw and db all match finite differences")


        check_dense_backward(dense_backward)
        """),
        md("One solution (collapsed: click to open):"),
        solution("""
        def dense_backward_solution(dz, x, w):
            return dz @ w.T, x.T @ dz, dz.sum(axis=0)


        check_dense_backward(dense_backward_solution)
        """),
        md("""
        ## What you have seen

        - Each layer's backward pass is its forward formula differentiated once, applied to `dout`: Dense and Conv2D
          are matrix products (the convolution's with col2im to add overlapping patches back), pooling routes or
          spreads the gradient, and softmax-cross-entropy gives `(p - onehot(y)) / N`.
        - Centred finite differences in float64 check any of them to about 10 digits, and a bug shows up as an error
          of order 1 in exactly the gradient that is wrong.
        - Behind a max pooling most of `dout` is zero, and a backward pass that skips the zeros does the same sums
          in less time.

        Next, notebook 3 puts the layers together and trains a classifier.
        """),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 3. A first image classifier


def lesson_03() -> list[dict]:
    return [
        md("""
        # 3. A first image classifier

        The layers of notebooks 1 and 2, stacked with the Keras API: `Sequential([...])`, `compile`, `fit`,
        `evaluate`. The data is MNIST, 28 x 28 handwritten digits (from `MINICNN_DATA_DIR`, the cache, or a
        download), or the built-in shapes dataset when MNIST cannot be had. Then two checks every practitioner
        should know: a model trained on random labels must score at chance on new data, and a model without an
        input shape has no weights until it sees data.
        """),
        setup("""
        import numpy as np

        import minicnn
        from minicnn import datasets, layers, plot

        minicnn.set_random_seed(0)  # same weights, same shuffles, same numbers on every run
        """),
        code(LOAD_IDX_OR_SHAPES),
        code("""
        x_train, y_train, x_test, y_test, class_names, title = load_idx_or_shapes(
            "mnist", datasets.load_mnist, [str(d) for d in range(10)],
            n_train=500 if FAST else 20000, n_test=300 if FAST else 10000,
        )
        n_classes = len(class_names)
        print(f"{title}: train {x_train.shape} {x_train.dtype}, test {x_test.shape}, {n_classes} classes")
        print("pixel range", x_train.min(), "..", x_train.max(), "| first labels", y_train[:10])
        plot.image_grid(x_train[:16], y_train[:16], class_names=class_names)
        """),
        md("""
        Images are uint8 `(N, H, W, C)`, pixels 0 to 255; labels are class numbers. (Fewer training images than the
        full set keep this notebook to a few minutes on a laptop; use them all when you have the time.)

        ## The model

        Two convolution + max-pooling blocks, then a Dense layer with one output per class and a softmax. The
        first layer, `Rescaling(1 / 255)`, maps the pixels to 0..1 inside the model, so raw uint8 images can go in.
        It carries `input_shape`, so the model builds its weights at once and `summary()` can count them:
        """),
        code("""
        model = minicnn.Sequential([
            layers.Rescaling(1 / 255, input_shape=x_train.shape[1:]),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(n_classes, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.summary()
        """),
        md("""
        Read the parameter counts: a `Conv2D(16, 3)` on a `C`-channel input has 3 x 3 x C weights per filter plus one
        bias, so `16 * (9 * C + 1)`: 160 for MNIST's single channel. Its output loses a pixel at each border
        (`valid` padding), and each max pooling halves the size. The Dense layer has one weight per flattened input
        per class, plus a bias per class: most of the parameters live there.

        ## Training

        `fit` shuffles the training set every epoch, runs mini-batches of 64 forward and backward, and lets Adam
        update the weights after each batch. `validation_split=0.1` holds out a tenth of the training images
        (stratified by class) to watch for over-fitting:
        """),
        code("""
        history = model.fit(x_train, y_train, batch_size=64, epochs=2 if FAST else 4, validation_split=0.1, verbose=2)
        plot.training_curves(history)
        """),
        md("""
        Each epoch line gives the running mean of the training loss and accuracy over that epoch, then the loss and
        accuracy on the held-out tenth. The training numbers average over an epoch during which the model kept
        improving, so the validation numbers can even be the better ones early on. The star marks the best
        validation epoch.

        ## Test accuracy, and the mistakes

        The test set was never used for training or for choosing anything, so its accuracy is the honest estimate
        of how the model does on new images:
        """),
        code("""
        test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f} on {len(x_test)} images")

        predicted = model.predict(x_test).argmax(axis=1)
        wrong = np.flatnonzero(predicted != y_test)
        print(f"{len(wrong)} mistakes")
        if len(wrong):
            display(plot.image_grid(x_test[wrong], y_test[wrong], predicted[wrong], class_names, max_images=24))
        """),
        md("""
        On MNIST this small model reaches about 97% with 20,000 training images and four epochs, and 98 to 99% with
        all 60,000 and a few more epochs (in FAST mode, with a few hundred images, far less). Many of the remaining
        mistakes are digits a person would hesitate over too: a 4 drawn like a 9, a 7 with a bar.

        ## Check 1: random labels

        A network with enough parameters can memorise any labelling of its training set, even a meaningless one.
        So a high training accuracy proves little; what counts is accuracy on data the model has not seen. Shuffle
        the labels, so that they no longer have anything to do with the images, and train the same architecture:
        """),
        code("""
        rng = np.random.default_rng(1)
        n = 200 if FAST else 2000
        y_random = rng.permutation(y_train[:n])  # the same labels, each on a random image

        random_model = minicnn.Sequential([
            layers.Rescaling(1 / 255, input_shape=x_train.shape[1:]),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(n_classes, activation="softmax"),
        ])
        random_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        h = random_model.fit(x_train[:n], y_random, batch_size=32, epochs=2 if FAST else 12, verbose=0)
        _, held_out = random_model.evaluate(x_test, y_test, verbose=0)
        print(f"training accuracy on the random labels, last epoch: {h.history['accuracy'][-1]:.3f}")
        print(f"accuracy on the test set: {held_out:.3f}   (chance: 1/{n_classes} = {1 / n_classes:.3f})")
        """),
        md("""
        The test accuracy is at chance, about 1 / (number of classes): there was nothing to learn, and the model
        learned nothing that carries over. The training accuracy climbs above chance as the epochs go on, because
        the network starts memorising individual images (give it more epochs and it keeps climbing). A model whose
        held-out score is far above chance on random labels would point at a leak between training and test data.

        ## Check 2: a model without `input_shape`

        Leave out `input_shape` and the model cannot know how many weights its first Conv2D or its Dense layer
        need. Asking for them raises an error that says what to do:
        """),
        code("""
        lazy = minicnn.Sequential([
            layers.Rescaling(1 / 255),
            layers.Conv2D(8, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(n_classes, activation="softmax"),
        ])
        print("built:", lazy.built)
        try:
            lazy.summary()
        except ValueError as e:
            print(f"{type(e).__name__}: {e}")
        """),
        md("The first batch of data settles it: `fit` (or `predict`, or `build(input_shape)`) builds the model."),
        code("""
        lazy.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        lazy.fit(x_train[:256], y_train[:256], epochs=1, verbose=0)
        print("built:", lazy.built, "| input shape:", lazy.input_shape)
        lazy.summary()
        """),
        md("""
        ## Exercise: count the parameters

        Write the parameter count of a `Conv2D(filters, (kh, kw))` layer on a `c_in`-channel input and of a
        `Dense(units)` layer on `d_in` inputs (both with a bias), then use them to reproduce `model.count_params()`.
        """),
        code("""
        def conv_params(kh, kw, c_in, filters):
            return None  # your code here


        def dense_params(d_in, units):
            return None  # your code here
        """),
        code("""
        def check_param_counts(conv_params, dense_params):
            if conv_params(3, 3, 1, 16) is None or dense_params(10, 2) is None:
                print("conv_params / dense_params return None so far: write them above, then run this cell again")
                return
            for kh, kw, c_in, filters in [(3, 3, 1, 16), (5, 3, 8, 4), (1, 1, 32, 64)]:
                layer = layers.Conv2D(filters, (kh, kw))
                layer.build((10, 10, c_in))
                mine = conv_params(kh, kw, c_in, filters)
                assert mine == layer.count_params(), f"Conv2D({filters}, {(kh, kw)}) on {c_in} channels: not {mine}"
            for d_in, units in [(800, 10), (3, 5)]:
                layer = layers.Dense(units)
                layer.build((d_in,))
                mine = dense_params(d_in, units)
                assert mine == layer.count_params(), f"Dense({units}) on {d_in} inputs: not {mine}"
            C = model.input_shape[-1]
            d_in = model.layers[6].input_shape[0]  # what Flatten hands the Dense layer
            total = conv_params(3, 3, C, 16) + conv_params(3, 3, 16, 32) + dense_params(d_in, n_classes)
            assert total == model.count_params(), f"{total} for the model, summary() says {model.count_params()}"
            print(f"correct: {total:,} parameters, as summary() says")


        check_param_counts(conv_params, dense_params)
        """),
        md("One solution (collapsed: click to open):"),
        solution("""
        check_param_counts(
            lambda kh, kw, c_in, filters: (kh * kw * c_in + 1) * filters,
            lambda d_in, units: (d_in + 1) * units,
        )
        """),
        md("""
        ## What you have seen

        - `Sequential`, `compile`, `fit`, `evaluate`, `predict` and `summary` work as in Keras, on minicnn's layers.
        - Held-out accuracy is the number that counts: random labels bring it down to chance whatever the training
          accuracy does.
        - A model builds its weights once it knows its input shape: from `input_shape`, `Input`, `build`, or the
          first data.

        Next, notebook 4: real photos, very few of them, and what over-fitting looks like.
        """),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 4. Small data: cats vs dogs


def lesson_04() -> list[dict]:
    return [
        md("""
        # 4. Small data: cats vs dogs

        Real photos, and only 400 of them to train on: 200 cats and 200 dogs, in a folder per class
        (`MINICNN_DATA_DIR/cats-vs-dogs/train/{cats,dogs}`), and 200 more for validation. With so few images a CNN
        learns its training set by heart long before it learns what a cat is: **over-fitting**, which the training
        and validation curves show plainly. Data augmentation (random flips and rotations of the training images)
        is the classic remedy.

        Without the photos the notebook uses the built-in shapes dataset, equally small, and tells the same story.
        """),
        setup("""
        import numpy as np

        import minicnn
        from minicnn import datasets, layers, plot, zoo

        minicnn.set_random_seed(0)
        """),
        code("""
        size = (32, 32) if FAST else (64, 64)  # every photo is resized to this (height, width)
        folder = Path(DATA_DIR, "cats-vs-dogs") if DATA_DIR else None
        if folder is not None and folder.is_dir():
            train = datasets.image_folder(folder / "train", image_size=size)
            val = datasets.image_folder(folder / "validation", image_size=size)
            print(train)
            print(val)
            x_train, y_train = train.load(shuffle=True, seed=0)
            x_val, y_val = val.load(shuffle=True, seed=0)  # shuffled: the folders list all cats first
            class_names = train.class_names
        else:
            print("no MINICNN_DATA_DIR/cats-vs-dogs: using 400 built-in shape images instead")
            (x_train, y_train), (x_val, y_val) = datasets.load_shapes(n_train=400, n_test=200, image_size=size[0])
            class_names = datasets.SHAPES_CLASSES
        if FAST:
            x_train, y_train, x_val, y_val = x_train[:120], y_train[:120], x_val[:60], y_val[:60]
        n_classes = len(class_names)
        print(f"train {x_train.shape}, validation {x_val.shape}, classes {class_names}")
        plot.image_grid(x_train[:16], y_train[:16], class_names=class_names)
        """),
        md("""
        `image_folder` follows Keras's `image_dataset_from_directory`: one subfolder per class, labels in sorted
        folder order (cats = 0, dogs = 1), every image decoded and resized to `image_size`. The photos vary a lot:
        poses, backgrounds, people, several animals in one picture.

        ## Without augmentation

        `zoo.build("photos", ...)` is a small CNN for photos: rescaling, three Conv2D + max-pooling blocks (16, 32,
        64 filters), dropout and two Dense layers. Train it for many epochs and keep the validation set aside to
        watch:
        """),
        code("""
        epochs = 3 if FAST else 30
        plain = zoo.build("photos", x_train.shape[1:], n_classes, augment=False, seed=0)
        plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        plain.summary()
        h_plain = plain.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_data=(x_val, y_val), verbose=0)
        plot.training_curves(h_plain)
        """),
        code("""
        def report(name, history):
            h = history.history
            train, val = h["accuracy"][-1], h["val_accuracy"][-1]
            best = int(np.argmax(h["val_accuracy"]))
            print(f"{name}: last epoch train accuracy {train:.3f}, validation {val:.3f} (gap {train - val:+.3f});"
                  f" best validation {h['val_accuracy'][best]:.3f} at epoch {best + 1}")


        report("no augmentation", h_plain)
        """),
        md("""
        Over-fitting, in the curves: the training loss keeps falling towards 0 and the training accuracy climbs
        towards 1, while the validation loss stops falling after some epochs and then *rises*, and the validation
        accuracy stalls well below the training accuracy. From then on the network is learning these 400 particular
        photos (this cat's cushion, that dog's collar), not cats and dogs. The "gap" printed above is the
        difference between the two accuracies in the last epoch. (In FAST mode there are too few epochs and images
        for this to show.)

        ## What augmentation does

        An augmentation layer changes each training image at random every time the network sees it, in ways that
        do not change its label. A mirrored cat is still a cat, and so is one tilted by a few degrees. Apply
        `RandomFlip("horizontal")` and `RandomRotation(0.1)` (up to 0.1 of a full turn, 36 degrees, either way) to
        the same photo eight times:
        """),
        code("""
        flip = layers.RandomFlip("horizontal", seed=1)
        rotate = layers.RandomRotation(0.1, seed=1)
        same_photo = np.repeat(x_train[:1], 8, axis=0)
        variants = rotate(flip(same_photo, training=True), training=True)  # training=True: augment
        unchanged = rotate(flip(same_photo))  # training=False (evaluate, predict): the identity
        print("outside training, the layers change nothing:", np.array_equal(unchanged, same_photo))
        plot.image_grid(np.clip(variants, 0, 255).astype(np.uint8), ncols=8)
        """),
        md("""
        Every copy is different: mirrored or not, turned by a different angle, with the corners that the rotation
        uncovers filled by reflecting the image (`fill_mode="reflect"`, Keras's default). The label stays what it
        was. What augmentation cannot do is invent new cats: it only makes the network's job harder in a way that
        forbids memorising exact pixels. And outside training (`evaluate`, `predict`) the layers are the identity,
        so the model is judged on the photos as they are.

        ## With augmentation

        The same architecture with `augment=True`: random horizontal flips, rotations and zooms right after the
        rescaling, active only in `fit`:
        """),
        code("""
        augmented = zoo.build("photos", x_train.shape[1:], n_classes, augment=True, seed=0)
        augmented.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        print([layer.name for layer in augmented.layers[:5]])
        h_aug = augmented.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_data=(x_val, y_val), verbose=0)
        plot.training_curves(h_aug)
        """),
        code("""
        report("no augmentation", h_plain)
        report("augmentation   ", h_aug)
        """),
        md("""
        With augmentation the training accuracy rises more slowly (the training images keep changing, so the
        network cannot simply remember them) and the gap between training and validation accuracy is much smaller.
        The validation loss rises later, or not at all. Whether the best validation accuracy also improves, and by
        how much, depends on the run; 400 photos at 64 x 64 stay a hard problem (expect roughly 60 to 75%), and
        the big gains come from more data or from starting with a network pre-trained on millions of photos.

        ## Exercise

        Try `RandomFlip("vertical")` on the photo above. Would upside-down cats help this classifier, or hurt it?
        And for the shapes dataset, which of flips, rotations and zooms keep a shape's label? (A star upside down
        is still a star; is a triangle?)

        ## What you have seen

        - `datasets.image_folder` loads a folder-per-class photo collection at a fixed size.
        - Over-fitting: training accuracy near 1, validation accuracy far below, validation loss rising.
        - Random flips and rotations give the network a new version of each image every epoch; they narrow the gap
          between training and validation, and do nothing at evaluation time.

        Next, notebook 5 opens a trained network and looks at what it has learned.
        """),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 5. What the network sees


def lesson_05() -> list[dict]:
    return [
        md("""
        # 5. What the network sees

        A trained CNN is not a black box: its first-layer filters are small pictures, its intermediate outputs are
        images, and its mistakes have a pattern. This notebook trains a small model on Fashion-MNIST (28 x 28
        photos of clothes, ten classes; the built-in shapes without it) and looks at all three with `minicnn.plot`.
        """),
        setup("""
        import numpy as np

        import minicnn
        from minicnn import datasets, layers, plot

        minicnn.set_random_seed(0)
        """),
        code(LOAD_IDX_OR_SHAPES),
        code("""
        x_train, y_train, x_test, y_test, class_names, title = load_idx_or_shapes(
            "fashion-mnist", datasets.load_fashion_mnist, datasets.FASHION_MNIST_CLASSES,
            n_train=500 if FAST else 20000, n_test=300 if FAST else 10000,
        )
        n_classes = len(class_names)
        print(f"{title}: train {x_train.shape}, test {x_test.shape}, classes {class_names}")

        model = minicnn.Sequential([
            layers.Rescaling(1 / 255, input_shape=x_train.shape[1:]),
            layers.Conv2D(16, 5, activation="relu", padding="same"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(n_classes, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        first_conv = model.layers[1]
        filters_before = first_conv.get_weights()[0]  # the random initial filters, kept to compare
        model.fit(x_train, y_train, batch_size=64, epochs=1 if FAST else 4, verbose=2)
        print(f"test accuracy: {model.evaluate(x_test, y_test, verbose=0)[1]:.3f}")
        """),
        md("""
        ## The filters

        The first Conv2D has 16 filters of 5 x 5 weights per input channel. `plot.conv_filters` draws each one as a
        tile, on one colour scale for all: red for positive weights, blue for negative, white for zero (RGB inputs
        are drawn in colour instead). Before training they are random noise:
        """),
        code("plot.conv_filters(filters_before)"),
        code("plot.conv_filters(first_conv)"),
        md("""
        After training, many filters have structure: a band of red beside a band of blue is an edge detector like
        the one built by hand in notebook 1 (it responds where dark meets bright, at the angle of the bands);
        a blob of one colour responds to bright or dark regions. They are the network's first vocabulary. (After
        a single FAST-mode epoch on a few hundred images the change is faint.)

        ## Feature maps

        What each layer outputs for one test image: `plot.feature_maps` runs the image through the layers one at
        a time and draws every channel of every output (up to 16 per layer), one row per layer:
        """),
        code("""
        i = 0
        guess = model.predict(x_test[i : i + 1]).argmax()
        print(f"true class: {class_names[y_test[i]]} | predicted: {class_names[guess]}")
        plot.feature_maps(model, x_test[i])
        """),
        md("""
        The first convolution's maps are still recognisably the image, each highlighting the parts its filter
        responds to (outlines at one angle, bright areas, dark areas); ReLU has set everything negative to zero,
        so many maps are mostly dark. Pooling halves the size and keeps the strongest responses. The second
        convolution's maps are coarser and more abstract: combinations of first-layer features. The last row is
        the softmax output, one bar per class: the model's probabilities.

        ## Where the mistakes are

        The confusion matrix counts, for every true class (row), how often each class was predicted (column): the
        diagonal holds the correct answers, and every off-diagonal cell is a specific confusion.
        """),
        code("""
        predicted = model.predict(x_test).argmax(axis=1)
        plot.confusion_matrix(y_test, predicted, class_names=class_names)
        """),
        code("""
        counts = plot.confusion_counts(y_test, predicted, n_classes)
        off_diagonal = counts - np.diag(np.diag(counts))
        print("the most frequent confusions (true -> predicted):")
        for flat in np.argsort(off_diagonal, axis=None)[::-1][:5]:
            t, p = divmod(int(flat), n_classes)
            print(f"  {class_names[t]:>12} -> {class_names[p]:<12} {counts[t, p]:4d} of {counts[t].sum():4d}")
        """),
        md("""
        On Fashion-MNIST the largest confusions are among the upper-body garments: shirts taken for T-shirts, coats
        or pullovers and the other way round; at 28 x 28 in grey a shirt and a pullover differ in a few pixels of
        collar and buttons. Trousers, bags and footwear are rarely confused with anything else. Normalising each
        row by its class size turns the diagonal into each class's recall (the fraction of that class found):
        """),
        code("plot.confusion_matrix(y_test, predicted, class_names=class_names, normalize=True)"),
        code("""
        # The mistakes the model was most sure of
        probabilities = model.predict(x_test)
        wrong = np.flatnonzero(predicted != y_test)
        surest = wrong[np.argsort(probabilities[wrong].max(axis=1))[::-1][:16]]
        plot.image_grid(x_test[surest], y_test[surest], predicted[surest], class_names=class_names)
        """),
        md("""
        Confident mistakes are worth a look: some are label noise (the dataset's label is arguable), others show
        what the model relies on, such as a silhouette or a texture, when it should not.

        ## Exercise

        Pick the filter in the trained `conv_filters` figure that looks most like an edge detector and find its
        index (the tile titles give it). Then run `plot.feature_maps(model, x_test[i], max_channels=16)` for a few
        test images: where is that channel's map brightest, and at what angle do those edges run?

        ## What you have seen

        - First-layer filters are small images of what the layer detects: edges, bars, blobs.
        - Feature maps show each layer's output: the image re-described, more coarsely and abstractly at each
          stage.
        - The confusion matrix names the classes the model mixes up, which is where more data or a better model
          should go.
        """),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 6. To the GPU


def lesson_06() -> list[dict]:
    return [
        md("""
        # 6. To the GPU: threads, blocks, shared memory

        A GPU runs thousands of threads at once. `numba.cuda` writes its kernels in Python: a function that *one*
        thread runs, launched on a grid of many threads. This notebook writes three kernels (an addition, a naive
        matrix product, and a tiled one that uses shared memory), then runs minicnn's own CUDA kernels and checks
        every result against the CPU.

        **No GPU?** The first cell turns on numba's CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`), which runs every GPU
        thread as a Python thread on the CPU: the same code and the same results, very slowly, so the sizes stay
        small. It must be set before `numba.cuda` is first imported. The CUDA kernels need `numba-cuda`
        (`pip install 'minicnn[cuda]'`).
        """),
        setup("""
        if not Path("/dev/nvidia0").exists():  # no NVIDIA GPU here: simulate one
            os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

        import time

        import numpy as np

        from minicnn.kernels import cuda as minicnn_cuda

        problem = minicnn_cuda.cuda_status()
        if problem is not None:
            raise RuntimeError(f"this notebook needs numba.cuda: {problem}")

        from numba import cuda, float32
        from numba.core import config

        from minicnn.kernels import cpu
        from minicnn.testing import relative_error

        SIMULATOR = bool(config.ENABLE_CUDASIM)
        print("CUDA simulator (slow, small sizes)" if SIMULATOR else f"GPU: {cuda.get_current_device().name}")
        rng = np.random.default_rng(0)
        """),
        md("""
        ## Threads and blocks

        A launch `kernel[blocks, threads_per_block](...)` starts `blocks * threads_per_block` threads. Threads are
        grouped in blocks: the threads of one block run on the same streaming multiprocessor and can share fast
        on-chip memory and wait for each other; different blocks cannot. Each thread finds out who it is from
        `cuda.blockIdx`, `cuda.threadIdx` and `cuda.blockDim`, and from that which element to work on. This kernel
        only records, for every element, which block and thread handled it:
        """),
        code("""
        @cuda.jit
        def who_am_i(block_of, thread_of, index_of):
            i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x  # = cuda.grid(1)
            if i < index_of.size:  # the last block may have threads past the end
                block_of[i] = cuda.blockIdx.x
                thread_of[i] = cuda.threadIdx.x
                index_of[i] = i


        n, threads = 10, 4
        blocks = (n + threads - 1) // threads  # ceil(10 / 4) = 3 blocks
        block_of, thread_of, index_of = (cuda.device_array(n, dtype=np.int32) for _ in range(3))
        who_am_i[blocks, threads](block_of, thread_of, index_of)
        print("element:", index_of.copy_to_host())
        print("block:  ", block_of.copy_to_host())
        print("thread: ", thread_of.copy_to_host())
        """),
        md("""
        Ten elements, four threads per block: three blocks, twelve threads. Element `i` is handled by thread
        `i % 4` of block `i // 4`, and the last two threads of block 2 (indices 10 and 11) find nothing to do: that
        is what the `if i < n` guard is for, and every kernel needs it. `cuda.device_array` allocates on the GPU;
        `copy_to_host` brings the result back.

        ## One thread per element: adding two vectors
        """),
        code("""
        @cuda.jit
        def add(a, b, out):
            i = cuda.grid(1)
            if i < out.size:
                out[i] = a[i] + b[i]


        n = 1000 if SIMULATOR else 10_000_000
        a = rng.standard_normal(n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        a_dev, b_dev = cuda.to_device(a), cuda.to_device(b)  # host -> GPU copies
        out_dev = cuda.device_array_like(a_dev)
        threads = 128
        add[(n + threads - 1) // threads, threads](a_dev, b_dev, out_dev)
        print(f"{n:,} elements, {(n + threads - 1) // threads} blocks of {threads} threads:"
              f" equal to NumPy: {np.array_equal(out_dev.copy_to_host(), a + b)}")
        """),
        md(r"""
        ## A matrix product, naively

        $C = AB$ with $A$: `(M, K)`, $B$: `(K, N)`. The obvious kernel gives each thread one entry of $C$, on a 2-D
        grid of 2-D blocks: thread `(row, col)` walks along row `row` of $A$ and column `col` of $B$. Each thread
        reads $2K$ numbers from global memory (the GPU's large, slow memory) to do $K$ multiply-adds, and the
        threads of a block read the same rows and columns over and over: memory, not arithmetic, sets the pace.
        """),
        code("""
        @cuda.jit
        def matmul_naive(a, b, c):
            col, row = cuda.grid(2)  # this thread's (x, y) in the whole grid; x runs along the columns
            if row < c.shape[0] and col < c.shape[1]:
                total = float32(0)
                for k in range(a.shape[1]):
                    total += a[row, k] * b[k, col]
                c[row, col] = total


        M, K, N = (40, 36, 24) if SIMULATOR else (2048, 2048, 2048)  # not multiples of the block size, on purpose
        A = rng.standard_normal((M, K)).astype(np.float32)
        B = rng.standard_normal((K, N)).astype(np.float32)
        A_dev, B_dev = cuda.to_device(A), cuda.to_device(B)
        C_dev = cuda.device_array((M, N), dtype=np.float32)
        TILE = 8 if SIMULATOR else 16
        grid = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE)  # (blocks along x = columns, along y = rows)
        matmul_naive[grid, (TILE, TILE)](A_dev, B_dev, C_dev)
        print(f"naive: relative error against NumPy {relative_error(C_dev.copy_to_host(), A @ B):.1e}")
        """),
        md(r"""
        ## Tiles in shared memory

        The fix is to have the threads of a block cooperate. A block of `TILE x TILE` threads owns a `TILE x TILE`
        tile of $C$. It walks along $K$ in steps of `TILE`; at each step every thread copies *one* number of $A$ and
        one of $B$ into **shared memory** (fast, on-chip, visible to the whole block), the block waits at
        `cuda.syncthreads()` until the two tiles are complete, and then each thread does `TILE` multiply-adds from
        shared memory. Every number fetched from global memory is now used `TILE` times instead of once. The
        second `syncthreads()` stops a fast thread from overwriting the tiles while a slower one still reads them.
        Entries past the edge of $A$ or $B$ are loaded as zeros, which add nothing, so any size works.
        """),
        code("""
        @cuda.jit
        def matmul_tiled(a, b, c):
            As = cuda.shared.array((TILE, TILE), float32)  # TILE must be a constant when the kernel compiles
            Bs = cuda.shared.array((TILE, TILE), float32)
            ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
            row = cuda.blockIdx.y * TILE + ty
            col = cuda.blockIdx.x * TILE + tx
            M, K = a.shape
            N = b.shape[1]
            total = float32(0)
            for k0 in range(0, K, TILE):
                As[ty, tx] = a[row, k0 + tx] if row < M and k0 + tx < K else float32(0)
                Bs[ty, tx] = b[k0 + ty, col] if k0 + ty < K and col < N else float32(0)
                cuda.syncthreads()  # both tiles complete
                for k in range(TILE):
                    total += As[ty, k] * Bs[k, tx]
                cuda.syncthreads()  # everyone done with the tiles before they are overwritten
            if row < M and col < N:
                c[row, col] = total


        matmul_tiled[grid, (TILE, TILE)](A_dev, B_dev, C_dev)
        print(f"tiled: relative error against NumPy {relative_error(C_dev.copy_to_host(), A @ B):.1e}")
        """),
        md("""
        Both agree with NumPy to float32 precision (around 1e-7: the sums run in a different order).

        ## minicnn's GEMM

        `minicnn.kernels.cuda_gemm` goes two steps further, as every fast GEMM does. Each thread computes an
        8 x 8 (or 4 x 4) block of outputs held in registers, so that it reads 16 numbers from shared memory per 64
        multiply-adds; and when $C$ is too small to keep every multiprocessor busy (the weight gradient of a
        convolution is a few hundred by a few dozen, with a $K$ of a hundred thousand) it splits $K$ into chunks
        computed by different blocks and adds them up afterwards (split-K). It also multiplies by a transposed
        matrix without copying it, which the backward pass needs: `dcols = dout @ w.T` and `dw = cols.T @ dout`.

        Two more details made it several times faster on an H100. *Prefetching*: each thread issues the global
        loads of the next slabs into registers before it multiplies the current ones, so memory latency hides
        behind arithmetic. *Index hints*: numba lets `a[-1]` mean the last element, so every index it cannot prove
        non-negative costs a compare and a select; `cuda.threadIdx.x & NONNEG` (a mask that changes nothing) proves
        it, and the inner loop then reads shared memory at constant offsets.
        """),
        code("""
        from minicnn.kernels import cuda_gemm

        C_dev = cuda_gemm.gemm(A_dev, B_dev)
        print(f"A @ B:     relative error {relative_error(C_dev.copy_to_host(), A @ B):.1e}")
        At_dev = cuda.to_device(np.ascontiguousarray(A.T))
        C_dev = cuda_gemm.gemm(At_dev, B_dev, trans_a=True)  # (A.T).T @ B, without transposing in memory
        print(f"A.T.T @ B: relative error {relative_error(C_dev.copy_to_host(), A @ B):.1e}")
        """),
        md("""
        ## A convolution on the GPU, against the CPU

        The CUDA backend has every kernel the CPU backends have, with the same signatures: im2col, the GEMM with the
        bias added as it stores its results, col2im, pooling, activations, losses and optimizer steps. Here is a
        convolution forward and backward on both, same inputs:
        """),
        code("""
        gpu = minicnn_cuda.make_backend()
        x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
        w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
        b = rng.standard_normal(4).astype(np.float32)
        pad = (1, 1, 1, 1)  # 'same' for a 3x3 kernel at stride 1

        out_cpu, cache_cpu = cpu.conv2d_forward(x, w, b, (1, 1), pad)
        out_gpu, cache_gpu = gpu.conv2d_forward(gpu.asarray(x), gpu.asarray(w), gpu.asarray(b), (1, 1), pad)
        print(f"forward:  relative error {relative_error(gpu.to_numpy(out_gpu), out_cpu):.1e}")

        dout = rng.standard_normal(out_cpu.shape).astype(np.float32)
        grads_cpu = cpu.conv2d_backward(dout, cache_cpu)
        grads_gpu = gpu.conv2d_backward(gpu.asarray(dout), cache_gpu)
        for name, g_cpu, g_gpu in zip(("dx", "dw", "db"), grads_cpu, grads_gpu):
            print(f"backward {name}: relative error {relative_error(gpu.to_numpy(g_gpu), g_cpu):.1e}")
        """),
        md("""
        And a whole model: `Sequential(..., device="cuda")` (or `model.to("cuda")`) runs the same layers on these
        kernels. Copy a CPU model's weights to a GPU model and compare their predictions:
        """),
        code("""
        import minicnn
        from minicnn import layers


        def small_model(device):
            return minicnn.Sequential([
                layers.Input((8, 8, 1)),
                layers.Conv2D(4, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dense(3, activation="softmax"),
            ], seed=0, device=device)


        on_cpu, on_gpu = small_model("cpu"), small_model("cuda")
        on_gpu.set_weights(on_cpu.get_weights())
        images = rng.standard_normal((4, 8, 8, 1)).astype(np.float32)
        p_cpu, p_gpu = on_cpu.predict(images), on_gpu.predict(images)
        print(f"predictions: relative error {relative_error(p_gpu, p_cpu):.1e}")
        print(p_gpu)
        """),
        md("""
        ## Timing, on a real GPU

        GPU launches return at once; the work runs in the background. To time a kernel, wait for it with
        `cuda.synchronize()`. Under the simulator timings mean nothing, so this cell only runs on a GPU.
        """),
        code("""
        def gpu_seconds(f, repeats=5):
            f()
            cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeats):
                f()
            cuda.synchronize()
            return (time.perf_counter() - t0) / repeats


        if SIMULATOR:
            print("simulator: no timings (every thread is a Python thread). Run this notebook on a GPU to see them.")
        else:
            flop = 2 * M * N * K
            results = {
                "naive": gpu_seconds(lambda: matmul_naive[grid, (TILE, TILE)](A_dev, B_dev, C_dev)),
                "tiled, shared memory": gpu_seconds(lambda: matmul_tiled[grid, (TILE, TILE)](A_dev, B_dev, C_dev)),
                "minicnn cuda_gemm": gpu_seconds(lambda: cuda_gemm.gemm(A_dev, B_dev, out=C_dev)),
            }
            t0 = time.perf_counter()
            A @ B
            results["NumPy on the CPU"] = time.perf_counter() - t0
            for name, t in results.items():
                print(f"{name:<22} {t * 1e3:8.2f} ms  {flop / t / 1e12:6.2f} TFLOP/s")
        """),
        md("""
        On a GPU the tiled kernel beats the naive one several times over, and the register-blocked GEMM beats the
        tiled one again: the same arithmetic, fetched from memory less often.

        A whole training step tells another story: `benchmarks/GPU_RESULTS.md` records them. For a small model like
        the MNIST one, the GPU sits idle most of the step: each of its few dozen kernel launches costs Python time,
        and through numba's dispatcher (which types and packs every argument on every call) that was 46-70 us,
        more than most kernels take. minicnn launches through `minicnn.kernels.cuda_launch.Kernel`, which does the
        typing once per combination of argument types and then only lists the numbers the kernel takes: about 10 us,
        and the MNIST model's step at batch 256 went from 6 ms to 2 ms. Small models on a GPU are won by launching
        cheaply and launching fewer, bigger kernels, which is why PyTorch fuses and launches from C++.

        ## Exercise: a grid-stride ReLU

        Launching one thread per element needs as many threads as elements. A *grid-stride loop* lets any number of
        threads cover any size: thread `t` of `T` handles elements `t, t + T, t + 2T, ...`
        (`cuda.grid(1)` gives `t`, `cuda.gridsize(1)` gives `T`). Most of minicnn's element-wise kernels are written
        this way. Write `relu_inplace(x)`, which sets every negative element of `x` to 0, with such a loop.
        """),
        code("""
        @cuda.jit
        def relu_inplace(x):
            pass  # your code here
        """),
        code("""
        def check_relu(kernel):
            x = rng.standard_normal(1000).astype(np.float32)
            x_dev = cuda.to_device(x)
            kernel[2, 32](x_dev)  # only 64 threads for 1000 elements: each thread must loop
            got = x_dev.copy_to_host()
            if np.array_equal(got, x):
                print("relu_inplace changed nothing so far: write it above, run that cell, then this one")
                return
            assert np.array_equal(got, np.maximum(x, 0)), f"{np.sum(got != np.maximum(x, 0))} elements are wrong"
            print("correct: 64 threads covered all 1000 elements")


        check_relu(relu_inplace)
        """),
        md("One solution (collapsed: click to open):"),
        solution("""
        @cuda.jit
        def relu_inplace_solution(x):
            for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
                if x[i] < 0:
                    x[i] = 0


        check_relu(relu_inplace_solution)
        """),
        md("""
        ## What you have seen

        - A CUDA kernel is the code of one thread; `blockIdx`, `threadIdx` and `blockDim` tell it which data is its
          own, and a bounds check protects the edges.
        - Global memory is slow: tiling through shared memory, with `syncthreads()` between loading and using,
          makes each loaded number count many times.
        - minicnn's CUDA backend runs every layer with the same signatures as the CPU kernels and agrees with them
          to float32 precision; `tests/test_cuda.py` checks every kernel this way, under the simulator on machines
          without a GPU.
        """),
    ]


# ---------------------------------------------------------------------------------------------------------------
# 7. Benchmarks


def lesson_07() -> list[dict]:
    return [
        md("""
        # 7. Benchmarks: how fast, against what

        How does minicnn compare with a straightforward NumPy CNN, the kind a course writes first, and with
        PyTorch? This notebook times both one convolution layer and whole training steps, on the same inputs for
        every engine, and draws the results with `plot.benchmark_bars`.

        The full benchmark suite lives in the repository's `benchmarks/` package: `python -m benchmarks` (minutes)
        or `python -m benchmarks --quick` (seconds) writes a report with every model, layer and thread count. This
        notebook uses its pieces when it can import them: the naive NumPy engine (`benchmarks/naive.py`), the
        reference models (`benchmarks/specs.py`) and the timing loop (`benchmarks/timing.py`). PyTorch is optional:
        without it its column is left out.
        """),
        setup("""
        import importlib.util
        import sys
        import time

        import numpy as np

        import minicnn
        from minicnn import plot
        from minicnn.kernels import cpu, im2col, reference
        from minicnn.testing import relative_error

        # `benchmarks/` sits beside `minicnn/` in the repository; it is not installed with the package.
        for root in (Path(minicnn.__file__).resolve().parent.parent, Path.cwd().parent, Path.cwd()):
            if (root / "benchmarks" / "naive.py").is_file():
                sys.path.insert(0, str(root))
                break
        try:
            from benchmarks import frameworks, models, naive, specs, timing
        except ImportError as e:
            frameworks = models = naive = specs = timing = None
            print(f"benchmarks/ is not importable ({e}): the naive NumPy engine and the model timings are left out")

        HAVE_TORCH = importlib.util.find_spec("torch") is not None
        if HAVE_TORCH:
            import torch
            import torch.nn.functional as F
        else:
            print("PyTorch is not installed: its column is left out (pip install 'minicnn[bench]')")

        rng = np.random.default_rng(0)
        """),
        md("""
        ## How to time

        Five rules; `benchmarks/timing.py` follows the first four:

        1. **Warm up first.** The first call of a Numba function loads or compiles its machine code, and the first
           call of anything fills caches and allocates memory: it is not what the next thousand calls cost.
        2. **Repeat, and take the median.** One timing is at the mercy of whatever else the machine does.
        3. **Interleave.** Time contender A, then B, then C, then A again, rather than all of A then all of B, so
           that a slow minute (another program, a CPU slowing down as it heats) hurts every contender alike.
        4. **Let the last contender's threads go to sleep.** A thread pool keeps its workers spinning for a while
           after each parallel call, in case more work comes: OpenBLAS's (NumPy's BLAS) for about a tenth of a
           second, PyTorch's for about 10 ms. Taking turns on several threads, each contender would share its cores
           with the previous one's spinning threads (PyTorch trained half as fast right after minicnn's turns in one
           run on 2 cores). `timing.settle()` sends the pools to sleep, and untimed calls for 30 ms
           (`timing.wake()`) wake the contender's own: on one machine a woken worker shared its caller's core for a
           scheduler tick or two, and a single untimed call left the timed one 20x slower.
           And time each contender as its own loop runs it: minicnn's training steps run inside
           `minicnn.parallel.hold_blas()`, as `fit` runs its batches (a lone `train_on_batch` sets BLAS to one
           thread and back at every call).
        5. **Keep the machine quiet.** Programs competing for the cores, or two thread pools of one program
           competing with each other (Numba's and the BLAS library's, say), can scramble a ranking entirely. If the
           numbers below look odd, close other programs and run the cells again.
        """),
        code("""
        def median_seconds(contenders, repeats):
            \"\"\"{name: callable} -> {name: median seconds}, interleaved, after one warm-up call each; on
            several cores each timed call starts on settled thread pools, and minicnn's turns run as fit runs
            them (rule 4).\"\"\"
            if timing is not None:
                runs = timing.interleaved(contenders, repeats, 1, settled=timing.cores() > 1, turns=models.TURNS)
                return {name: timing.median(t) for name, t in runs.items()}
            times = {name: [] for name in contenders}
            for f in contenders.values():
                f()
            for _ in range(repeats):
                for name, f in contenders.items():
                    t0 = time.perf_counter()
                    f()
                    times[name].append(time.perf_counter() - t0)
            return {name: float(np.median(t)) for name, t in times.items()}


        REPEATS = 3 if FAST else 15
        print(f"{os.cpu_count()} CPU cores; median of {REPEATS} interleaved runs")
        """),
        md("""
        ## One convolution layer

        The second convolution of the classic Keras MNIST network: 13 x 13 x 32 inputs, 64 filters of 3 x 3,
        forward and backward, on a batch of 64 (8 in FAST mode). The contenders:

        - **minicnn**: `kernels.cpu`, im2col + BLAS with Numba col2im and pooling, channels-last (the default engine);
        - **NumPy im2col**: `kernels.im2col`, minicnn's NumPy version;
        - **naive NumPy**: `benchmarks.naive.Conv2D`, the way a first course writes it: channels-first, a padded
          copy and a Python loop over kernel positions to build the columns, transposes and fresh arrays everywhere;
        - **PyTorch**: `torch.nn.functional.conv2d` and its backward (oneDNN kernels), no autograd bookkeeping;
        - **loops**: `kernels.reference`, timed on one image and multiplied by the batch size (the loops' time
          grows linearly with the batch).
        """),
        code("""
        N = 8 if FAST else 64
        H, W, C, F_out, k = 13, 13, 32, 64, 3
        x = rng.standard_normal((N, H, W, C)).astype(np.float32)
        w = (rng.standard_normal((k, k, C, F_out)) / np.sqrt(k * k * C)).astype(np.float32)
        b = rng.standard_normal(F_out).astype(np.float32)
        dout = rng.standard_normal((N, H - k + 1, W - k + 1, F_out)).astype(np.float32)


        def forward_backward(module):
            out, cache = module.conv2d_forward(x, w, b)
            return module.conv2d_backward(dout, cache)


        contenders = {
            "minicnn (Numba)": lambda: forward_backward(cpu),
            "NumPy im2col": lambda: forward_backward(im2col),
        }
        if naive is not None:
            naive_conv = naive.Conv2D(np.ascontiguousarray(w.transpose(3, 2, 0, 1)), b.copy())  # (F, C, kh, kw)
            x_nchw, dout_nchw = naive.to_nchw(x), naive.to_nchw(dout)

            def naive_step():
                naive_conv.forward(x_nchw)
                return naive_conv.backward(dout_nchw)

            contenders["naive NumPy"] = naive_step
            error = relative_error(naive_step().transpose(0, 2, 3, 1), forward_backward(cpu)[0])
            print(f"naive engine agrees with minicnn: dx relative error {error:.1e}")
        if HAVE_TORCH:
            xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
            wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous().requires_grad_()
            bt = torch.from_numpy(b).requires_grad_()
            doutt = torch.from_numpy(dout).permute(0, 3, 1, 2).contiguous()

            def torch_step():
                out = F.conv2d(xt, wt, bt)
                return torch.autograd.grad(out, (xt, wt, bt), doutt)

            contenders["PyTorch"] = torch_step
            error = relative_error(torch_step()[0].permute(0, 2, 3, 1).numpy(), forward_backward(cpu)[0])
            print(f"PyTorch agrees with minicnn:      dx relative error {error:.1e}")

        seconds = median_seconds(contenders, REPEATS)
        if FAST:
            print("FAST mode: the loops are left out (they take seconds even on one image)")
        else:
            t0 = time.perf_counter()
            out, cache = reference.conv2d_forward(x[:1], w, b)
            reference.conv2d_backward(dout[:1], cache)
            seconds["loops (x batch)"] = (time.perf_counter() - t0) * N

        print(f"\\nconv 3x3, {C} -> {F_out} filters on {H}x{W}, batch {N}: forward + backward")
        for name, t in sorted(seconds.items(), key=lambda item: item[1]):
            print(f"  {name:<18} {t * 1e3:10.2f} ms   {seconds['minicnn (Numba)'] / t:8.3f} x minicnn's speed")
        """),
        code("""
        plot.benchmark_bars({"conv forward + backward": {name: t * 1e3 for name, t in seconds.items()}},
                            title=f"One conv layer, batch {N} (lower is better)", ylabel="milliseconds", log=True)
        """),
        md("""
        The value axis is logarithmic: each grid line is ten times the one below. The loops (left out in FAST mode)
        are thousands of times slower than everything else; notebook 1 showed why. The three NumPy-based engines do
        the same matrix products through the same BLAS, so what separates them is everything around the products:
        the naive engine's padded copies, transposes and Python-loop im2col and col2im, against minicnn's
        channels-last layout (free reshapes) and compiled col2im. PyTorch runs its convolutions through oneDNN,
        whose kernels never build the im2col matrix at all; on a quiet machine with several cores it is usually
        the fastest. The last column of the table is each engine's speed relative to minicnn's (above 1: faster).

        ## Whole training steps

        A training step is forward, loss, backward and the Adam update of every weight, over a batch. Here are the
        two smallest reference models of `benchmarks/specs.py`, the same network in every framework, on the same
        random batch:

        - **S**: 28 x 28 x 1 -> Conv2D(16, 3) -> Flatten -> Dense(10), batch 32;
        - **R**: the classic Keras MNIST CNN: Conv2D(32) -> pool -> Conv2D(64) -> pool -> Dense(128) -> Dense(10),
          batch 64.
        """),
        code("""
        table = {}
        if frameworks is None:
            print("benchmarks/ is not importable: no model timings")
        else:
            available = frameworks.available()
            wanted = [fw for fw in ("minicnn", "naive", "torch") if available.get(fw) is None]
            for fw in ("naive", "torch"):
                if available.get(fw) is not None:
                    print(f"{fw} left out: {available[fw]}")
            for name in ("S", "R"):
                spec = specs.MODELS[name]
                batch = 8 if FAST else spec.batch
                runners = {fw: frameworks.make_runner(fw, spec, batch, infer_batch=batch) for fw in wanted}
                steps = median_seconds({fw: r.train_step for fw, r in runners.items()}, REPEATS)
                table[f"model {name}, batch {batch}"] = {frameworks.LABELS[fw]: batch / t for fw, t in steps.items()}
            for group, row in table.items():
                print(group)
                for fw, sps in row.items():
                    print(f"  {fw:<24} {sps:10,.0f} samples/s")
        """),
        code("""
        if table:
            display(plot.benchmark_bars(table, title="Training throughput (higher is better)", ylabel="samples / s",
                                        fmt="{:,.0f}"))
        """),
        md("""
        Throughput is samples per second: the batch size divided by the median time of one step. On model S the
        step is short and fixed costs per call (Python, allocating arrays, launching kernels) weigh a lot; on model
        R the convolutions dominate and the kernels themselves decide. What to look for: minicnn against the naive
        engine measures what the care in `minicnn.kernels` buys (same maths, fewer copies, compiled loops, fused
        loss and optimizer kernels); against PyTorch, how far a teaching engine is from a production one. Both
        depend on the machine (cores, caches, BLAS library, what else is running), and FAST mode's batch of 8 is
        too small to say much. The full report of `python -m benchmarks` breaks the results down per layer and
        per thread count, and says how close each engine gets to the machine's peak GEMM speed.

        ## Two ways to use two cores

        A step can share the cores in two ways (`minicnn.parallel`). With `'blas'`, one thread runs the step and
        BLAS splits each matrix product; everything around the products (im2col, Winograd's transforms, pooling)
        runs on one core. With `'batch'` (data parallelism), the batch is cut into one slice per core, each thread
        runs the whole forward and backward pass on its slice with its own copy of the layers, and the slices'
        gradients, weighted by slice size, add up to the batch's: the same step. Model C, whose wide layers run by
        Winograd's algorithm, is where the difference shows:
        """),
        code("""
        import numba

        cores = numba.get_num_threads()
        if frameworks is None or cores < 2:
            print(f"{cores} core(s) for Numba, or no benchmarks/: nothing to split")
        else:
            spec = specs.MODELS["C"]
            batch = 8 if FAST else spec.batch
            runners = {m: frameworks.make_runner("minicnn", spec, batch, infer_batch=batch) for m in ("blas", "batch")}

            def in_mode(mode):
                def step():
                    minicnn.set_parallel(mode)
                    try:
                        return runners[mode].train_step()
                    finally:
                        minicnn.set_parallel("auto")
                return step

            steps = median_seconds({mode: in_mode(mode) for mode in runners}, REPEATS)
            print(f"model C, batch {batch}, {cores} threads")
            for mode, t in steps.items():
                print(f"  {mode:<6} {batch / t:8,.0f} samples/s")
        """),
        md("""
        On the 2-core machine where minicnn was measured, `'batch'` ran C's step 1.3-2.3x faster than `'blas'`:
        Winograd's small products per block (16 or 36, each only `C` deep) split badly, and with `'blas'` half of each block's data goes back
        and forth between the two cores' caches. The MNIST model R gained less (1.1-1.3x at batch 64: its large
        products split well), and the small model S lost (its slices of 16 images are too little work for the
        threads' fixed costs), but S lost more with `'blas'`, whose split of its small products cost more than
        it saved (8.0 ms a step against 2.7 on one core). `minicnn.set_parallel("auto")`, the default, picks
        `'batch'` when each slice gets at least `minicnn.parallel.MIN_SLICE_MACS` multiply-adds of forward work,
        else runs the step on one core.

        One trap showed only once measured: after a multi-threaded product, OpenBLAS's idle worker spins for
        about 0.1 s before it sleeps, and on two cores it takes a core's share from one of the slices' threads
        (R's step: 25-29 ms instead of 17-18). `minicnn.parallel.run` stops those workers before the slices start.

        ## Exercise

        Time the convolution above with a batch of 1, then 256. Which engine gains the most from a larger batch,
        and why? (Hint: what does each engine do once per call, whatever the batch size?)

        ## What you have seen

        - Honest timings: warm up, repeat, interleave, report medians, use identical inputs.
        - The loops, the naive NumPy engine, minicnn and PyTorch all compute the same numbers; the differences in
          speed come from how much they copy, how they use the cores, and whether they build the im2col matrix at
          all.
        """),
    ]


# ---------------------------------------------------------------------------------------------------------------

LESSONS = {
    "01_convolution_from_scratch": lesson_01,
    "02_backpropagation": lesson_02,
    "03_first_image_classifier": lesson_03,
    "04_small_data_cats_vs_dogs": lesson_04,
    "05_what_the_network_sees": lesson_05,
    "06_to_the_gpu": lesson_06,
    "07_benchmarks": lesson_07,
}


def notebook(cells: list[dict]) -> dict:
    """An nbformat 4 notebook, as Jupyter writes it, with no outputs and no execution counts."""
    out = []
    for i, cell in enumerate(cells):
        c = {"cell_type": cell["cell_type"], "id": f"cell-{i:02d}", "metadata": cell.get("metadata", {})}
        c["source"] = cell["source"].splitlines(keepends=True)  # one string per line, as Jupyter saves it
        if cell["cell_type"] == "code":
            c["execution_count"] = None
            c["outputs"] = []
        out.append(c)
    return {
        "cells": out,
        "metadata": {"kernelspec": KERNEL, "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(name: str) -> str:
    """The .ipynb text of lesson ``name``, exactly as it is committed."""
    import json

    return json.dumps(notebook(LESSONS[name]()), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    names = [n for n in LESSONS if not argv or any(a in n for a in argv)]
    for name in names:
        path = HERE / f"{name}.ipynb"
        path.write_text(render(name), encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
