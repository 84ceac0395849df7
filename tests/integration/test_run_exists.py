"""Starting a run under a taken id says so, whatever state that run is in, and records nothing."""

from __future__ import annotations

import pytest
import rawdb

from kasmina.errors import ConcurrencyError, RunExists
from kasmina.events import EpochCompleted, make_event
from kasmina.ledger import Ledger
from kasmina.ledger.heads import event_at
from kasmina.ledger.store import hash_text


@pytest.mark.parametrize("finished", [True, False])
def test_a_taken_run_id_is_refused_by_name(db_url: str, finished: bool) -> None:
    with Ledger.open(db_url) as ledger:
        run = ledger.start_run("first", seed=0, run_id="taken")
        if finished:
            run.finish()
        before = ledger.runs()
        with pytest.raises(RunExists, match=r"a run with id 'taken' already exists"):
            ledger.start_run("second", seed=1, run_id="taken")
        assert ledger.runs() == before


def test_a_concurrency_error_says_what_happened(db_url: str) -> None:
    with Ledger.open(db_url) as ledger:
        run = ledger.start_run("r", seed=0)
        stale = make_event(EpochCompleted(), run_id=run.run_id, stream_id="run", version=1)
        with pytest.raises(ConcurrencyError, match=r"is at version 1, so an event written as"):
            ledger.append([stale])


def _view_says(url: str, run_id: str) -> str | None:
    """The hash the view shows for the run's first ``run`` event, if any."""
    rows = rawdb.run(
        url,
        "SELECT hash FROM events WHERE run_id = ? AND stream_id = 'run' AND version = 1",
        (run_id,),
    )
    return str(rows[0][0]) if rows else None


def _answers(ledger: Ledger, run_id: str) -> str | None:
    """`run_exists`, and the hash `event_at` finds for the same event."""
    row = event_at(ledger.store, run_id, "run", 1, lean=ledger.lean)
    assert ledger.run_exists(run_id) is (row is not None)
    return None if row is None else hash_text(row[0])


def test_run_exists_and_event_at_answer_as_the_events_view(db_url: str) -> None:
    """`event_at` (and `run_exists` through it) asks the keys first and the view where
    they find nothing; its answer is the view's, a hand-made row filed under another
    run's stream included."""
    with Ledger.open(db_url) as ledger:
        ledger.start_run("a", seed=0, run_id="a")
        assert _answers(ledger, "a") == _view_says(db_url, "a") is not None
        assert _answers(ledger, "c") is _view_says(db_url, "c") is None
    (a_key,) = rawdb.run(db_url, "SELECT run_key FROM ledger_runs WHERE run_id = 'a'")[0]
    (a_row,) = rawdb.run(
        db_url,
        "SELECT e.type_key, e.recorded_at FROM ledger_events e JOIN ledger_streams s "
        "ON s.stream_key = e.stream_key WHERE e.run_key = ? AND s.stream_id = 'run'",
        (a_key,),
    )
    # Run "d" has a run stream with no event; run "c"'s one row is filed under it.
    rawdb.run(db_url, "INSERT INTO ledger_runs (run_id, format) VALUES ('c', 2), ('d', 2)")
    keys = dict(rawdb.run(db_url, "SELECT run_id, run_key FROM ledger_runs"))  # type: ignore[arg-type]
    rawdb.run(
        db_url, "INSERT INTO ledger_streams (run_key, stream_id) VALUES (?, 'run')", (keys["d"],)
    )
    (d_stream,) = rawdb.run(
        db_url, "SELECT stream_key FROM ledger_streams WHERE run_key = ?", (keys["d"],)
    )[0]
    rawdb.run(
        db_url,
        "INSERT INTO ledger_events (event_id, run_key, stream_key, version, type_key, "
        "schema_version, payload, recorded_at, hash) VALUES (?, ?, ?, 1, ?, 1, '{}', ?, ?)",
        (bytes(16), keys["c"], d_stream, a_row[0], a_row[1], bytes(32)),
    )
    assert _view_says(db_url, "c") == "0" * 64 and _view_says(db_url, "d") is None
    with Ledger.open(db_url) as ledger:
        assert _answers(ledger, "c") == "0" * 64
        assert _answers(ledger, "d") is None
