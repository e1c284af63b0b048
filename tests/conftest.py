"""Shared test setup: the CUDA simulator on GPU-less machines, PyTorch as gold, and the real-data folder."""

import os
from pathlib import Path

import pytest

# numba.cuda reads this once, at its first import: without a GPU, CUDA kernels run in the (slow) simulator.
if not Path("/dev/nvidia0").exists() and "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

IN_CI = bool(os.environ.get("CI"))


def import_or_skip(name: str, why: str):
    """Import a module for comparison tests: skip with a reason for a user without it; fail in CI."""
    if IN_CI:
        return __import__(name)  # CI installs the extras: a missing one is a failure, not a skip
    return pytest.importorskip(name, reason=f"{why} (pip install 'minicnn[bench]')")


@pytest.fixture(scope="session")
def torch():
    torch = import_or_skip("torch", "PyTorch is the gold standard for these tests")
    return torch


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$MINICNN_DATA_DIR`` (the shared real datasets); tests that need it skip, with the reason, without it."""
    value = os.environ.get("MINICNN_DATA_DIR")
    if not value:
        pytest.skip("MINICNN_DATA_DIR is not set: point it at a folder with mnist/, fashion-mnist/, ...")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"MINICNN_DATA_DIR={value} is not a folder")
    return path
