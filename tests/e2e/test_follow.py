"""`kasmina history RUN --follow` as a user runs it: a real process tailing a live run.

Each step appends while the command runs and reads what it printed before going
on, so a line only arrives if the command flushed it as the event committed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import default_sigint, sample

from kasmina.events import StoredEvent
from kasmina.ledger import Ledger

BIN = str(Path(sys.executable).with_name("kasmina"))
WAIT = 60.0  # a bound on waits that should end much sooner, never a timing device


class Follower:
    """`kasmina --db URL history ARGS...` running, its stdout read line by line."""

    def __init__(self, url: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
        self.proc = subprocess.Popen(
            [BIN, "--db", url, "history", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=default_sigint,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def take(self, count: int) -> list[str]:
        """The next `count` lines, waiting for each."""
        lines = []
        for _ in range(count):
            line = self._lines.get(timeout=WAIT)
            if line is None:
                raise AssertionError(f"ended early: {self.finish()}")
            lines.append(line)
        return lines

    def finish(self) -> tuple[int, list[str], str]:
        """Exit code, the lines not taken yet, and stderr, once the command has ended."""
        code = self.proc.wait(WAIT)
        rest = []
        while (line := self._lines.get(timeout=WAIT)) is not None:
            rest.append(line)
        assert self.proc.stderr is not None
        return code, rest, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)


@pytest.fixture
def started(db_url: str) -> tuple[str, str]:
    with Ledger.open(db_url) as led:
        run = led.start_run("follow", seed=1)
        led.append([sample(run.run_id, "r0c0", n=i) for i in range(2)])
        return db_url, run.run_id


def _position(line: str, fmt: str) -> int:
    if fmt == "jsonl":
        return int(json.loads(line)["position"])
    return int(line.split()[0])


def _check(lines: list[str], events: list[StoredEvent], fmt: str) -> None:
    assert [_position(line, fmt) for line in lines] == [e.position for e in events]
    for line, event in zip(lines, events, strict=True):
        if fmt == "jsonl":
            assert json.loads(line)["event_id"] == event.event_id
        else:
            assert event.event_type in line and event.stream_id in line


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_prints_each_event_once_as_it_commits_and_exits_after_run_finished(
    started: tuple[str, str], fmt: str
) -> None:
    url, run_id = started
    follower = Follower(url, run_id, "--follow", "--format", fmt)
    try:
        with Ledger.open(url) as led:
            seen = list(led.read(run_id))
            if fmt == "table":
                assert follower.take(1)[0].split() == [
                    "pos",
                    "epoch",
                    "stream",
                    "v",
                    "event",
                    "seed",
                    "detail",
                ]
            _check(follower.take(len(seen)), seen, fmt)  # what was recorded before it started
            for step, size in enumerate((1, 7, 3)):
                led.append([sample(run_id, f"r{step % 2}c1", n=i) for i in range(size)])
                new = list(led.read(run_id, after=seen[-1].position))
                assert len(new) == size
                _check(follower.take(size), new, fmt)  # printed live, before the run ends
                seen += new
            led.finish_run(run_id, "completed")
            everything = list(led.read(run_id))
        code, rest, stderr = follower.finish()
        assert code == 0, stderr
        assert stderr == ""
        _check(rest, everything[len(seen) :], fmt)  # only RunFinished was left to print
        assert len(rest) == 1 and "RunFinished" in rest[0]
    finally:
        follower.kill()


def test_filters_apply_to_what_is_printed(started: tuple[str, str]) -> None:
    url, run_id = started
    follower = Follower(url, run_id, "--follow", "--slot", "r0c1", "--format", "jsonl")
    try:
        with Ledger.open(url) as led:
            led.append([sample(run_id, slot, n=i) for i in range(4) for slot in ("r0c0", "r0c1")])
            led.finish_run(run_id, "completed")
            wanted = list(led.history(run_id, slot_id="r0c1"))
        code, rest, stderr = follower.finish()
        assert code == 0, stderr
        assert len(wanted) == 4
        _check(rest, wanted, "jsonl")  # RunFinished ended it but is not a slot's event
    finally:
        follower.kill()


def test_unknown_run_is_one_error_line_and_exit_2(started: tuple[str, str]) -> None:
    url, _ = started
    proc = subprocess.run(
        [BIN, "--db", url, "history", "no-such-run", "--follow"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-such-run" in lines[0]


def test_one_json_document_cannot_follow_so_it_is_refused(started: tuple[str, str]) -> None:
    url, run_id = started
    proc = subprocess.run(
        [BIN, "--db", url, "history", run_id, "--follow", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--format jsonl" in lines[0]


def test_ctrl_c_exits_cleanly(started: tuple[str, str]) -> None:
    url, run_id = started
    follower = Follower(url, run_id, "--follow", "--format", "jsonl")
    try:
        follower.take(3)  # it is following now
        follower.proc.send_signal(signal.SIGINT)
        code, _, stderr = follower.finish()
        assert code == 130
        assert "Traceback" not in stderr
    finally:
        follower.kill()
