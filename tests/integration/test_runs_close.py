"""`kasmina runs close`: a crashed writer's run is sealed as failed or aborted; a live one is not.

A writer holds its run while it writes (`kasmina.ledger.writers`): an flock
on SQLite, a session advisory lock on PostgreSQL, both dropped with the
process. The crash here is real: a child process that starts a run and
leaves by ``os._exit``, finishing nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import sample

from kasmina.cli import main
from kasmina.errors import RunClosed, RunHeld
from kasmina.events import RunFinished
from kasmina.ledger import Ledger

CRASHING_WRITER = """
import os, sys
from kasmina.ledger import Ledger
from kasmina.events import EpochCompleted, make_event
ledger = Ledger.open(sys.argv[1])
run = ledger.start_run("crashy", seed=0, run_id=sys.argv[2])
ledger.append([make_event(EpochCompleted(), run_id=sys.argv[2], stream_id="run", epoch=0)])
os._exit(3)
"""


def _crash(url: str, run_id: str) -> None:
    done = subprocess.run([sys.executable, "-c", CRASHING_WRITER, url, run_id], check=False)
    assert done.returncode == 3


def _status(url: str, capsys: pytest.CaptureFixture[str], run_id: str) -> str:
    capsys.readouterr()
    assert main(["--db", url, "runs", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return str(next(r["status"] for r in rows if r["run_id"] == run_id))


def test_a_crashed_writers_run_is_closed_with_a_seal_that_verifies(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _crash(db_url, "crashed-run")
    assert _status(db_url, capsys, "crashed-run") == "open"
    assert main(["--db", db_url, "runs", "close", "crash", "--status", "failed"]) == 0
    assert "closed run crashed-run as failed" in capsys.readouterr().out
    assert _status(db_url, capsys, "crashed-run") == "failed"
    with Ledger.open(db_url) as ledger:
        report = ledger.verify("crashed-run")
        assert report.ok and report.runs[0].sealed and report.runs[0].events == 3
        (finished,) = ledger.of_type("crashed-run", "RunFinished")
        assert isinstance(finished.payload, RunFinished)
        assert finished.payload.status == "failed" and set(finished.payload.seal) == {"run"}
        assert ledger.replay("crashed-run").run.status == "failed"


def test_closing_a_run_a_live_writer_holds_is_refused_and_records_nothing(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = Ledger.open(db_url)
    writer.start_run("live", seed=0, run_id="live-run")
    with Ledger.open(db_url) as closer:
        with pytest.raises(RunHeld, match=r"run 'live-run' is still being written by"):
            closer.close_run("live-run", "aborted")
        assert main(["--db", db_url, "runs", "close", "live-run", "--status", "aborted"]) == 2
        assert "is still being written by" in capsys.readouterr().err
        assert [r.events for r in closer.runs()] == [1]
        writer.append([sample("live-run")])  # the writer goes on, unharmed
        writer.close()  # it stops without finishing: now the run can be closed
        closer.close_run("live-run", "aborted")
        assert closer.runs()[0].status == "aborted" and closer.verify().ok


def test_every_writer_of_a_run_holds_it_until_the_last_lets_go(db_url: str) -> None:
    """The ranks of a distributed run all write it: each holds it, none excludes another."""
    first, second = Ledger.open(db_url), Ledger.open(db_url)
    first.start_run("shared", seed=0, run_id="shared-run")
    second.append([sample("shared-run", "r0c1")])
    with Ledger.open(db_url) as closer:
        first.close()
        with pytest.raises(RunHeld):
            closer.close_run("shared-run", "failed")
        second.close()
        closer.close_run("shared-run", "failed")
        assert closer.runs()[0].status == "failed"


def test_a_writer_that_seals_its_run_lets_go_of_it(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url) as ledger:
        folder = Path(sqlite_url.removeprefix("sqlite:///") + "-writers")
        run = ledger.start_run("done", seed=0)
        assert len(list(folder.iterdir())) == 1
        run.finish()
        assert not folder.exists()  # nothing stays beside the ledger once no run is written


def test_a_sealed_run_is_not_closed_again(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Ledger.open(db_url) as ledger:
        ledger.start_run("done", seed=0, run_id="done-run").finish()
        with pytest.raises(RunClosed, match=r"'done-run' is sealed already \(completed\)"):
            ledger.close_run("done-run", "failed")
    assert main(["--db", db_url, "runs", "close", "done-run", "--status", "completed"]) == 2
    assert "'completed' is not one of 'failed', 'aborted'" in capsys.readouterr().err
    assert _status(db_url, capsys, "done-run") == "completed"
