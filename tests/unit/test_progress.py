"""Progress off a terminal: a line when one is due, with how far and about how long is left."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from kasmina.progress import EVERY_ENV, Progress


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_share_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVERY_ENV, "5")
    text = io.StringIO()
    clock = Clock()
    with Progress("folding", 1000, Console(file=text), clock=clock) as progress:
        clock.now += 1
        progress.update(100)  # not due yet
        clock.now += 4
        progress.update(250)  # 5 s in: a quarter done, 15 s left
        clock.now += 1
        progress.update(300)  # the next is due at 10 s
        clock.now += 5
        progress.update(500)
    assert text.getvalue().splitlines() == [
        "folding: 250/1,000 events (25%), 5 s, about 15 s left",
        "folding: 500/1,000 events (50%), 11 s, about 11 s left",
    ]


def test_work_of_unknown_size_says_how_much_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVERY_ENV, "0")
    text = io.StringIO()
    clock = Clock()
    with Progress("exporting", None, Console(file=text), unit="rows", clock=clock) as progress:
        clock.now += 2
        progress.update(42)
    assert text.getvalue() == "exporting: 42 rows, 2 s\n"


def test_a_bad_interval_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVERY_ENV, "soon")
    text = io.StringIO()
    clock = Clock()
    with Progress("folding", 10, Console(file=text), clock=clock) as progress:
        clock.now += 4.9
        progress.update(5)
        clock.now += 0.1
        progress.update(6)
    assert text.getvalue() == "folding: 6/10 events (60%), 5 s, about 3 s left\n"


def test_no_console_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVERY_ENV, "0")
    with Progress("folding", 10, None) as progress:
        progress.update(5)  # nowhere to go, and no error


def test_the_bar_leaves_standard_output_where_it_is() -> None:
    """Rich would carry what is printed to stdout onto the bar's console (stderr) while
    the bar runs: a command's output would leave the pipe it was meant for."""
    terminal = Console(file=io.StringIO(), force_terminal=True)
    before = sys.stdout
    with Progress("folding", 10, terminal) as progress:
        assert sys.stdout is before
        progress.update(5)
    assert sys.stdout is before
