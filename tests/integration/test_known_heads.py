"""Heads remembered between appends are used only while nobody else has appended."""

from __future__ import annotations

import pytest
from helpers import sample

from kasmina.errors import ConcurrencyError, RunClosed
from kasmina.events import slot_stream
from kasmina.ledger import Ledger


def _versions(ledger: Ledger, run_id: str, slot: str) -> list[int]:
    return [e.version for e in ledger.stream(run_id, slot_stream(slot))]


def test_another_writer_between_two_appends_is_seen(db_url: str) -> None:
    with Ledger.open(db_url) as mine, Ledger.open(db_url) as theirs:
        run = mine.start_run("heads", seed=0)
        rid = run.run_id
        mine.append([sample(rid, "a", n=i) for i in range(3)])
        mine.append([sample(rid, "a", n=3)])  # heads now remembered by `mine`
        theirs.append([sample(rid, "a", n=i) for i in range(4, 6)])
        mine.append([sample(rid, "a", n=6), sample(rid, "b", n=0)])
        assert _versions(mine, rid, "a") == list(range(1, 8))
        assert mine.verify(rid).ok


def test_a_refused_batch_leaves_the_remembered_heads_true(db_url: str) -> None:
    with Ledger.open(db_url) as ledger:
        rid = ledger.start_run("heads", seed=0).run_id
        ledger.append([sample(rid, "a", n=0)])
        stale = sample(rid, "a", n=1)._replace(version=1)
        with pytest.raises(ConcurrencyError):
            ledger.append([sample(rid, "b", n=0), stale])
        ledger.append([sample(rid, "b", n=1), sample(rid, "a", n=2)])
        assert _versions(ledger, rid, "b") == [1]
        assert _versions(ledger, rid, "a") == [1, 2]
        assert ledger.verify(rid).ok


def test_a_run_finished_elsewhere_refuses_the_next_append(db_url: str) -> None:
    with Ledger.open(db_url) as mine, Ledger.open(db_url) as theirs:
        rid = mine.start_run("heads", seed=0).run_id
        mine.append([sample(rid, "a", n=0)])
        mine.append([sample(rid, "a", n=1)])
        theirs.finish_run(rid, "completed")
        with pytest.raises(RunClosed):
            mine.append([sample(rid, "a", n=2)])
        assert _versions(mine, rid, "a") == [1, 2]
