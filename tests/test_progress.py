"""The Keras-style progress bar, rendered into a StringIO with a fake clock."""

import io
import re
import sys
from types import SimpleNamespace

import pytest

from minicnn import progress
from minicnn.progress import Progbar


class Terminal(io.StringIO):
    """A StringIO that says it is a terminal, so the bar redraws and colours."""

    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    """A fake clock for the progress bar: ``clock.t`` is the time in seconds."""
    fake = SimpleNamespace(t=100.0)
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: fake.t))
    return fake


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def run(bar: Progbar, clock, steps: int, seconds_per_step: float = 0.05, values=lambda i: []):
    for i in range(1, steps + 1):
        clock.t += seconds_per_step
        bar.update(i, values(i))


def test_final_line_has_counts_bar_time_and_metric_means(clock):
    out = io.StringIO()
    bar = Progbar(50, file=out)
    run(bar, clock, 50, values=lambda i: [("loss", float(i)), ("accuracy", 0.5)])
    assert out.getvalue().count("\n") == 1  # not a terminal: only the final line
    line = out.getvalue().rstrip("\n")
    assert line.startswith("50/50 " + "━" * 30 + " 2s 50ms/step")
    assert line.endswith(" - loss: 25.5000 - accuracy: 0.5000")  # mean of 1..50, in order of first appearance
    assert "\x1b" not in line and "\r" not in line


def test_terminal_redraws_with_eta_and_colours(clock):
    out = Terminal()
    bar = Progbar(50, file=out, interval=0)
    run(bar, clock, 12, seconds_per_step=0.061, values=lambda i: [("loss", 0.5)])
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 12 and "\x1b[32m" in out.getvalue()
    last = plain(frames[-1])
    # 38 steps left at 61 ms: a 2 s ETA; 12/50 of 30 characters done
    assert last.startswith("12/50 " + "━" * 7 + "─" * 23 + " 2s 61ms/step - loss: 0.5000")


def test_redraw_pads_over_a_longer_previous_line(clock):
    out = Terminal()
    bar = Progbar(3, file=out, interval=0)
    bar.update(1, [("loss", 123456.0)])
    bar.update(2, [("loss", -123456.0)], finalize=False)
    first, second = (plain(f) for f in out.getvalue().split("\r")[1:])
    assert len(second) >= len(first)


def test_redraws_are_throttled_by_interval(clock):
    out = Terminal()
    bar = Progbar(100, file=out, interval=1.0)
    run(bar, clock, 100, seconds_per_step=0.1)  # 10 s in all: a frame a second, plus the first and the last
    assert 10 <= out.getvalue().count("\r") <= 12
    assert plain(out.getvalue()).endswith("100/100 " + "━" * 30 + " 10s 100ms/step\n")


def test_first_step_is_left_out_of_time_per_step(clock):
    out = io.StringIO()
    bar = Progbar(11, file=out)
    clock.t += 5.0  # a slow first step: compiling the kernels
    bar.update(1)
    run_from = [(i, 0.02) for i in range(2, 12)]
    for i, dt in run_from:
        clock.t += dt
        bar.update(i)
    assert " 5s 20ms/step" in out.getvalue()


def test_eta_over_a_minute_and_an_hour():
    assert progress._format_duration(42.4) == "42s"
    assert progress._format_duration(187) == "3:07"
    assert progress._format_duration(3787) == "1:03:07"


def test_values_are_weighted_by_the_steps_each_update_covers(clock):
    out = io.StringIO()
    bar = Progbar(4, file=out, verbose=2)
    bar.add(1, [("loss", 1.0)])
    bar.add(3, [("loss", 5.0)])  # three steps of 5.0 and one of 1.0
    assert "loss: 4.0000" in out.getvalue()


def test_stateful_metrics_are_shown_as_given(clock):
    out = io.StringIO()
    bar = Progbar(3, file=out, stateful_metrics=["accuracy", "phase"])
    for i, acc in enumerate([0.1, 0.2, 0.9], start=1):
        bar.update(i, [("accuracy", acc), ("loss", float(i)), ("phase", "warm-up")])
    assert out.getvalue().rstrip().endswith("- accuracy: 0.9000 - loss: 2.0000 - phase: warm-up")


def test_small_values_use_scientific_notation(clock):
    out = io.StringIO()
    Progbar(1, file=out).update(1, [("loss", 1.5e-5), ("lr", 0.0)])
    assert "loss: 1.5000e-05 - lr: 0.0000e+00" in out.getvalue()


def test_verbose_2_prints_one_line_at_the_end(clock):
    out = io.StringIO()
    bar = Progbar(20, file=out, verbose=2)
    run(bar, clock, 20, values=lambda i: [("loss", 2.0)])
    assert out.getvalue() == "20/20 - 1s - 50ms/step - loss: 2.0000\n"


def test_verbose_2_ignores_terminals_and_verbose_0_prints_nothing(clock):
    for verbose, lines in [(2, 1), (0, 0)]:
        out = Terminal()
        run(Progbar(10, file=out, verbose=verbose), clock, 10)
        assert out.getvalue().count("\n") == lines and "\r" not in out.getvalue()


def test_samples_per_second(clock):
    out = io.StringIO()
    run(Progbar(10, file=out, batch_size=32), clock, 10, seconds_per_step=0.1)
    assert "1s 100ms/step - 320 samples/s" in out.getvalue()


def test_unknown_target(clock):
    out = Terminal()
    bar = Progbar(None, file=out, interval=0)
    run(bar, clock, 7, values=lambda i: [("loss", 1.0)])
    bar.update(7, finalize=True)
    frames = [plain(f) for f in out.getvalue().split("\r")[1:]]
    assert frames[0].startswith("      1/Unknown 0s")
    assert frames[-1] == "      7/Unknown 0s 50ms/step - loss: 1.0000\n"


def test_unknown_target_verbose_2(clock):
    out = io.StringIO()
    bar = Progbar(None, file=out, verbose=2)
    run(bar, clock, 3)
    bar.update(3, finalize=True)
    assert out.getvalue() == "3 - 0s - 50ms/step\n"


def test_zero_length_does_not_raise(clock):
    for verbose in (0, 1, 2):
        out = io.StringIO()
        Progbar(0, file=out, verbose=verbose, batch_size=8).update(0)
        assert out.getvalue().count("\n") == (verbose > 0)
    out = io.StringIO()
    Progbar(None, file=out).update(0, finalize=True)
    assert "0/Unknown 0s 0s/step" in out.getvalue()


def test_jupyter_redraws_without_ansi(clock, monkeypatch):
    import minicnn.progress

    monkeypatch.setattr(minicnn.progress, "_in_jupyter_kernel", lambda: True)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    bar = Progbar(5, interval=0)
    run(bar, clock, 5)
    assert out.getvalue().count("\r") == 5 and "\x1b" not in out.getvalue()


def test_an_imported_ipykernel_is_not_a_notebook(clock, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", SimpleNamespace())  # e.g. imported by a notebook test runner
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    run(Progbar(5, interval=0), clock, 5)
    assert out.getvalue().startswith("5/5 ")


def test_ascii_fallback_when_the_file_cannot_encode_the_bar(clock):
    out = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    run(Progbar(4, file=out, width=8), clock, 4)
    out.seek(0)
    assert out.read().startswith("4/4 ======== ")


def test_default_file_is_stdout(clock, capsys):
    run(Progbar(2), clock, 2)
    assert capsys.readouterr().out.startswith("2/2 ")
