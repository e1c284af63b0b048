"""The lesson notebooks: each runs top to bottom without an error, and each is committed as its generator writes it.

Every notebook runs in a fresh ``python3`` kernel, with ``MINICNN_FAST=1`` so that it uses few samples and epochs,
and with a temporary folder as its working directory, so that nothing it writes lands in the repository. A cell
that raises fails the test, and the error names the cell. The ``python3`` kernel is this test's own interpreter: a
kernel spec written for the session and put first on ``JUPYTER_PATH``, so that a ``python3`` kernel installed
elsewhere for another Python (``~/.local/share/jupyter``) cannot run the notebooks without minicnn.

Without nbclient, nbformat or ipykernel these tests skip, saying what to install; in CI (``CI`` set), which installs
``.[notebooks]``, a missing package is a failure instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 600  # seconds: any cell running longer than this is stuck
IN_CI = bool(os.environ.get("CI"))


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    why = f"running the notebooks needs {', '.join(missing)}: pip install -e '.[notebooks]'"
    if IN_CI:
        pytest.fail(f"CI installs the notebook extras, yet: {why}")
    pytest.skip(why)


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def test_notebooks_exist():
    names = [p.stem for p in NOTEBOOKS]
    assert len(names) == 7, f"expected the 7 lessons in {NOTEBOOK_DIR}, found {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    dirty = [
        i for i, c in enumerate(_cells(path)) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs; commit notebooks cleared "
        "(python notebooks/build_notebooks.py rewrites them from their source)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_generator(path):
    """The cells of the .ipynb are those of ``notebooks/build_notebooks.py``: edit there, then regenerate."""
    sys.path.insert(0, str(NOTEBOOK_DIR))
    try:
        build = importlib.import_module("build_notebooks")
    finally:
        sys.path.remove(str(NOTEBOOK_DIR))
    want = [(c["cell_type"], c["source"]) for c in build.LESSONS[path.stem]()]
    got = [(c["cell_type"], _source(c)) for c in _cells(path)]
    assert got == want, f"{path.name} differs from build_notebooks.py: run python notebooks/build_notebooks.py"


@pytest.fixture(scope="session")
def kernel_path(tmp_path_factory) -> Path:
    """A folder for ``JUPYTER_PATH`` holding ``kernels/python3/kernel.json``, which starts ``sys.executable``."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (minicnn tests)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    return root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch, kernel_path):
    _require("nbclient", "nbformat", "ipykernel")
    if path.stem.startswith("06_"):
        _require("numba_cuda")
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this process's environment: set it before the kernel starts.
    monkeypatch.setenv("MINICNN_FAST", "1")
    monkeypatch.setenv(
        "JUPYTER_PATH", os.pathsep.join(filter(None, [str(kernel_path), os.environ.get("JUPYTER_PATH")]))
    )
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # no debugger warning on stderr
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails

    figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if not path.stem.startswith(("02_", "06_")):  # the lessons without a figure
        assert figures, f"{path.name} drew no figure: did %matplotlib inline stop working?"
    assert not any(tmp_path.glob("*.ipynb")), "a notebook wrote a notebook"


def test_fast_flag_is_read_first():
    """Every lesson reads MINICNN_FAST in its first code cell, so the test's small settings reach every cell."""
    for path in NOTEBOOKS:
        first = next(_source(c) for c in _cells(path) if c["cell_type"] == "code")
        assert 'os.environ.get("MINICNN_FAST") == "1"' in first, f"{path.name}: the first code cell must set FAST"
