"""Starting a run under a taken id says so, whatever state that run is in, and records nothing."""

from __future__ import annotations

import pytest

from kasmina.errors import ConcurrencyError, RunExists
from kasmina.events import EpochCompleted, make_event
from kasmina.ledger import Ledger


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
