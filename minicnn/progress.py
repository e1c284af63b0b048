"""A Keras-style progress bar: ``12/50 ━━━━━━━━━━━━────────────────── 3s 61ms/step - loss: 0.5321``.

``Progbar(target)`` is moved by ``update(current, values)`` or ``add(n, values)``, where ``values`` is a list of
``(name, value)``. A value is shown as its mean over all steps so far, each update weighted by the steps it
covers, unless its name is in ``stateful_metrics``: then it is shown as given (e.g. a running mean the caller
already keeps).

Where it draws (``file``, by default ``sys.stdout``):

* a terminal: one line redrawn in place with ``\\r``, at most every ``interval`` seconds, with ANSI colours;
* Jupyter (``ipykernel`` is loaded): redrawn with ``\\r`` too, which notebooks understand, as plain text;
* anything else (a file, a pipe, a CI log): no redraws, only the final line, so a log stays readable.

``verbose=2`` prints only the final line, ``verbose=0`` nothing.
"""

from __future__ import annotations

import re
import sys
import time

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Progbar:
    """Progress towards ``target`` steps (``None``: unknown), with ETA, time per step and metric means."""

    def __init__(
        self,
        target: int | None,
        width: int = 30,
        verbose: int = 1,
        interval: float = 0.05,
        stateful_metrics=None,
        unit_name: str = "step",
        batch_size: int | None = None,
        file=None,
    ):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.stateful_metrics = set(stateful_metrics or ())
        self.unit_name = unit_name
        self.batch_size = batch_size  # samples per step; adds "N samples/s" to the final line
        self.file = file if file is not None else sys.stdout

        is_tty = bool(getattr(self.file, "isatty", lambda: False)())
        in_notebook = _in_jupyter_kernel() and self.file in (sys.stdout, sys.stderr)
        self._redraw = is_tty or in_notebook
        self._color = is_tty and not in_notebook
        self._chars = ("━", "─") if _can_encode(self.file, "━─") else ("=", ".")

        self._values: dict[str, list] = {}  # name -> [sum of value * steps, steps]; stateful: [value, 1]
        self._seen = 0
        self._start = time.perf_counter()
        self._first = None  # (current, time) at the first update: per-step times leave out compile time
        self._last_draw = None
        self._prev_width = 0

    def update(self, current: int, values=None, finalize: bool | None = None) -> None:
        """Move to step ``current`` (1-based count of steps done) and record ``values``."""
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for name, value in values or ():
            if name in self.stateful_metrics:
                self._values[name] = [value, 1]
            else:
                # max(.., 1): a finalising update at the same step still counts, as in Keras
                steps = max(current - self._seen, 1)
                total, count = self._values.get(name, [0.0, 0])
                self._values[name] = [total + value * steps, count + steps]
        self._seen = current
        now = time.perf_counter()
        if self._first is None and current > 0:
            self._first = (current, now)

        if self.verbose == 1 and self._redraw:
            if finalize or self._last_draw is None or now - self._last_draw >= self.interval:
                self._draw(self._bar_line(current, now, finalize), finalize)
                self._last_draw = now
        elif self.verbose == 1 and finalize:
            self._write(self._bar_line(current, now, finalize) + "\n")
        elif self.verbose == 2 and finalize:
            self._write(self._summary_line(current, now) + "\n")

    def add(self, n: int, values=None) -> None:
        """Advance by ``n`` steps."""
        self.update(self._seen + n, values)

    # ------------------------------------------------------------------------------------------------ lines
    def _bar_line(self, current: int, now: float, finalize: bool) -> str:
        """``12/50 ━━━━━━━━────────── 3s 61ms/step - loss: 0.5321`` (ETA while running, elapsed at the end)."""
        if self.target is None:
            text = f"{current:7d}/Unknown"
        else:
            done = int(self.width * min(current / self.target, 1.0)) if self.target else self.width
            bar = self._style(self._chars[0] * done, "32") + self._style(self._chars[1] * (self.width - done), "90")
            text = f"{self._style(self._count(current), '1')} {bar}"
        if finalize or self.target is None:
            seconds = now - self._start
        else:
            seconds = self._time_per_step(current, now) * max(self.target - current, 0)
        text += f" {self._style(_format_duration(seconds), '1')} {self._per_step(current, now)}"
        return text + self._rate(current, now, finalize) + self._metrics()

    def _summary_line(self, current: int, now: float) -> str:
        """``50/50 - 3s - 61ms/step - loss: 0.5321``, the one line of ``verbose=2``."""
        count = self._count(current) if self.target is not None else str(current)
        text = f"{count} - {_format_duration(now - self._start)} - {self._per_step(current, now)}"
        return text + self._rate(current, now, True) + self._metrics()

    def _count(self, current: int) -> str:
        return f"{current:>{len(str(self.target))}}/{self.target}"

    def _per_step(self, current: int, now: float) -> str:
        t = self._time_per_step(current, now)
        if t >= 1 or t == 0:
            return f"{t:.0f}s/{self.unit_name}"
        if t >= 1e-3:
            return f"{t * 1e3:.0f}ms/{self.unit_name}"
        return f"{t * 1e6:.0f}us/{self.unit_name}"

    def _time_per_step(self, current: int, now: float) -> float:
        if self._first is not None and current > self._first[0]:
            first_step, first_time = self._first
            return (now - first_time) / (current - first_step)
        return (now - self._start) / current if current else 0.0

    def _rate(self, current: int, now: float, finalize: bool) -> str:
        elapsed = now - self._start
        if not (finalize and self.batch_size and elapsed > 0):
            return ""
        # current * batch_size overcounts a short last batch by less than one batch
        return f" - {current * self.batch_size / elapsed:.0f} samples/s"

    def _metrics(self) -> str:
        text = ""
        for name, (total, count) in self._values.items():
            text += f" - {name}: {_format_value(total if name in self.stateful_metrics else total / count)}"
        return text

    # ------------------------------------------------------------------------------------------------ output
    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self._color and text else text

    def _draw(self, line: str, finalize: bool) -> None:
        width = len(_ANSI.sub("", line))
        padding = " " * max(self._prev_width - width, 0)  # wipes the tail of a longer previous line
        self._write("\r" + line + padding + ("\n" if finalize else ""))
        self._prev_width = width

    def _write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()


def _format_value(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}"


def _format_duration(seconds: float) -> str:
    """``42s``, ``3:07`` or ``1:03:07``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    if s >= 60:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s}s"


def _can_encode(file, text: str) -> bool:
    try:
        text.encode(getattr(file, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _in_jupyter_kernel() -> bool:
    """True inside a running Jupyter kernel (ipykernel merely being imported, e.g. by a test, is not enough)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
