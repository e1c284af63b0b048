"""The ``minicnn`` command end to end on a small folder of photos: train, evaluate, predict --sort-into."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicnn.cli import main


def make_photo_folder(root: Path, n_per_class=12, seed=0) -> Path:
    """Two classes a tiny CNN separates: reddish images with a bright square vs bluish images with stripes."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(["cats", "dogs"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
            if k == 0:
                img[..., 0] += 150
                img[6:12, 6:12] = 250
            else:
                img[..., 2] += 150
                img[::4] = 250
            Image.fromarray(img).save(root / name / f"{name}{i}.{'png' if i % 2 else 'jpg'}")
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return root


def digest(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    photos = make_photo_folder(root / "photos")
    model = root / "model.safetensors"
    args = ["train", str(photos), "--model", "tiny", "--image-size", "16", "--epochs", "6", "--batch-size", "8",
            "--learning-rate", "0.01", "--validation-split", "0.25", "--out", str(model), "--plot",
            str(root / "curves.png"), "--verbose", "0"]  # fmt: skip
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert main(args) == 0
    return root, photos, model


def test_train_saves_model_and_curves(trained):
    root, _, model = trained
    assert model.stat().st_size > 0
    assert (root / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reports_accuracy_and_confusion_matrix(trained, capsys):
    root, photos, model = trained
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert main(["evaluate", str(model), str(photos), "--plot", str(root / "cm.png")]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "precision" in out and "recall" in out and "confusion matrix" in out
    accuracy = float(out.split("accuracy:")[1].split()[0])
    assert accuracy >= 0.9
    assert (root / "cm.png").exists()


def test_predict_sorts_copies_and_leaves_originals_untouched(trained, capsys):
    root, photos, model = trained
    before = digest(photos)
    out_dir = root / "sorted"
    code = main(["predict", str(model), str(photos), "--top", "2", "--csv", str(root / "p.csv"),
                 "--sort-into", str(out_dir), "--no-progress"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert digest(photos) == before  # nothing moved, changed or deleted
    copies = sorted(p.name for p in out_dir.rglob("*") if p.is_file())
    assert len(copies) == 24 and set(copies) == {p.name for p in photos.rglob("*") if p.suffix in (".png", ".jpg")
                                                  and p.name != "broken.jpg"}  # fmt: skip
    assert "skipped 1 unreadable file" in captured.err and "broken.jpg" in captured.err
    assert len(list((out_dir / "cats").glob("cats*"))) >= 10  # the model is accurate, so most land right
    rows = (root / "p.csv").read_text().splitlines()
    assert rows[0] == "path,label1,probability1,label2,probability2" and len(rows) == 25


def test_summary_lists_layers_and_classes(trained, capsys):
    _, _, model = trained
    assert main(["summary", str(model)]) == 0
    out = capsys.readouterr().out
    assert "Total params" in out and "classes: cats, dogs" in out


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such model file" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"definitely not a model")
    assert main(["summary", str(tmp_path / "junk.safetensors")]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope"), "--epochs", "1"]) == 2
    assert "DATA must be one of" in capsys.readouterr().err


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "minicnn", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("demo", "train", "evaluate", "predict", "summary", "bench"):
        assert command in result.stdout


def test_bench_passes_its_options_to_the_benchmark_suite(capsys):
    # 'minicnn bench --quick --out DIR' must reach benchmarks' own parser; --help shows that parser's options
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: minicnn bench" in out and "--quick" in out and "--out" in out


def test_train_parallel_batch_splits_each_batch(tmp_path, monkeypatch):
    import minicnn
    from minicnn import parallel
    from minicnn.kernels import cpu

    if cpu.PARALLEL:
        pytest.skip("MINICNN_NUMBA_PARALLEL=1: the engine's loops use every core, and no batch is split")

    photos = make_photo_folder(tmp_path / "photos", n_per_class=6)
    monkeypatch.setattr(parallel, "threads", lambda: 2)
    split = []
    real = parallel.forward_backward
    monkeypatch.setattr(parallel, "forward_backward", lambda *a: split.append(a[3]) or real(*a))
    args = ["train", str(photos), "--model", "tiny", "--image-size", "16", "--epochs", "1", "--batch-size", "4",
            "--validation-split", "0", "--out", str(tmp_path / "m.safetensors"), "--verbose", "0"]  # fmt: skip
    try:
        with pytest.warns(UserWarning, match="broken.jpg"):
            assert main([*args, "--parallel", "batch"]) == 0
        assert split == [2, 2, 2]  # 12 photos, batches of 4, each cut in two
        assert minicnn.get_parallel() == "batch"
    finally:
        minicnn.set_parallel("auto")
    with pytest.raises(SystemExit):
        main([*args, "--parallel", "gpu"])
