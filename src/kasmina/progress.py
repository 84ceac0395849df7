"""Long work's progress on stderr: a bar on a terminal, a line every few seconds elsewhere.

A bar is no use in a log file or a CI job, and nothing at all leaves a
reader guessing whether a long ``replay`` is stuck; so off a terminal the
progress is one plain line every `KASMINA_PROGRESS_S` seconds (5 by
default): what is being done, how far, and about how long is left. Work
that ends before the first line is due prints nothing.

The bar leaves standard output alone (rich would otherwise carry what is
printed there to the bar's console while it runs), so a command's output
stays where a pipe expects it; and with no console there is no progress,
for work done from Python rather than by the `kasmina` command.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import Progress as Bar

#: Seconds between the lines printed off a terminal.
EVERY_S = 5.0
EVERY_ENV = "KASMINA_PROGRESS_S"


def every_s() -> float:
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, EVERY_S)))
    except ValueError:
        return EVERY_S


class Progress:
    """`update(done)` as the work goes; used as a context manager around it."""

    def __init__(
        self,
        what: str,
        total: int | None,
        console: Console | None,
        *,
        unit: str = "events",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self._console, self._clock = console, clock
        self._bar: Bar | None = None
        self._every = every_s()
        self._start = self._next = 0.0

    def __enter__(self) -> Progress:
        self._start = self._clock()
        self._next = self._start + self._every
        if self._console is not None and self._console.is_terminal:
            self._bar = Bar(console=self._console, transient=True, redirect_stdout=False)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total)
        return self

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        if self._console is None:
            return
        now = self._clock()
        if now >= self._next:
            self._next = now + self._every
            self._console.print(self.line(done, now - self._start), markup=False, highlight=False)

    def line(self, done: int, elapsed: float) -> str:
        """The line printed off a terminal after `elapsed` seconds."""
        if not self.total:
            return f"{self.what}: {done:,} {self.unit}, {elapsed:.0f} s"
        left = elapsed * (self.total - done) / done if done else None
        eta = "" if left is None else f", about {left:.0f} s left"
        share = 100 * done / self.total
        return (
            f"{self.what}: {done:,}/{self.total:,} {self.unit} ({share:.0f}%), {elapsed:.0f} s{eta}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
