"""The SQL views: the same rows on SQLite and PostgreSQL for the same recorded run."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import DEMO_RUN

from kasmina.events import SeedGateEvaluated, SeedTelemetrySampled
from kasmina.ledger import Ledger
from kasmina.ledger.schema import COLUMNS, VIEWS
from kasmina.stages import edges

RUN = DEMO_RUN


@pytest.fixture
def ledgers(demo_ledgers: dict[str, Ledger]) -> dict[str, Ledger]:
    return demo_ledgers


def _rows(ledger: Ledger, view: str) -> tuple[list[str], list[tuple[object, ...]]]:
    columns, rows = ledger.sql(f"SELECT * FROM {view}")
    keep = [
        i for i, c in enumerate(columns) if c not in ("recorded_at", "started_at", "finished_at")
    ]
    out = []
    for row in rows:
        assert not any(isinstance(row[i], datetime) for i in keep)
        out.append(tuple(row[i] for i in keep))
    return [columns[i] for i in keep], sorted(out, key=repr)


#: `live_events` holds the event ids and hashes, which differ between the two
#: recordings: it is held to `events` instead, below.
COMPARED = tuple(v for v in VIEWS if v != "live_events")
#: The demo run is never resumed, and is not a fork (tests/integration/test_fork.py
#: compares a lineage on both databases).
EMPTY_FOR_THE_DEMO = ("superseded_events", "run_lineage")


@pytest.mark.parametrize("view", COMPARED)
def test_each_view_gives_the_same_rows_on_both_databases(
    ledgers: dict[str, Ledger], view: str
) -> None:
    sqlite_columns, sqlite_rows = _rows(ledgers["sqlite"], view)
    pg_columns, pg_rows = _rows(ledgers["postgres"], view)
    assert sqlite_columns == pg_columns
    assert bool(sqlite_rows) != (view in EMPTY_FOR_THE_DEMO), f"{view} rows for the demo run"
    assert sqlite_rows == pg_rows


def test_live_events_of_a_run_never_resumed_are_its_events(ledgers: dict[str, Ledger]) -> None:
    for ledger in ledgers.values():
        columns, live = ledger.sql("SELECT * FROM live_events ORDER BY position")
        assert columns == list(COLUMNS)
        assert list(live) == list(ledger.sql("SELECT * FROM events ORDER BY position")[1])


def test_transition_table_is_the_code_table(ledgers: dict[str, Ledger]) -> None:
    expected = {(a.name, b.name) for a, b in edges()}
    for ledger in ledgers.values():
        _, rows = ledger.sql("SELECT from_stage, to_stage FROM transition_table")
        assert {(str(a), str(b)) for a, b in rows} == expected


def test_every_recorded_move_is_in_the_transition_table(ledgers: dict[str, Ledger]) -> None:
    for ledger in ledgers.values():
        _, rows = ledger.sql(
            "SELECT COUNT(*) FROM stage_changes s WHERE NOT EXISTS (SELECT 1 FROM "
            "transition_table t WHERE t.from_stage = s.from_stage AND t.to_stage = s.to_stage)"
        )
        assert list(rows) == [(0,)]


def test_gate_evaluations_match_the_events(ledgers: dict[str, Ledger]) -> None:
    ledger = ledgers["postgres"]
    expected = sorted(
        (
            e.position,
            e.payload.gate,
            bool(e.payload.passed),
            ",".join(e.payload.checks_failed) or None,
            e.payload.trigger,
        )
        for e in ledger.read(RUN)
        if isinstance(e.payload, SeedGateEvaluated)
    )
    assert expected
    for led in ledgers.values():
        _, rows = led.sql(
            'SELECT position, gate, passed, checks_failed, "trigger" '
            "FROM gate_evaluations ORDER BY position"
        )
        assert [(p, g, bool(ok), f, t) for p, g, ok, f, t in rows] == expected


def test_seed_timeline_has_one_row_per_sample(ledgers: dict[str, Ledger]) -> None:
    ledger = ledgers["sqlite"]
    samples = [
        (e.seed_id, e.epoch, e.payload.stage.name, e.payload.alpha)
        for e in ledger.read(RUN)
        if isinstance(e.payload, SeedTelemetrySampled)
    ]
    _, rows = ledger.sql("SELECT seed_id, epoch, stage, alpha FROM seed_timeline ORDER BY position")
    assert list(rows) == samples


def test_run_summary_counts_the_run(ledgers: dict[str, Ledger]) -> None:
    for ledger in ledgers.values():
        events = list(ledger.read(RUN))
        _, rows = ledger.sql(
            "SELECT events, epochs, seeds, fossilized, pruned, status FROM run_summary"
        )
        (row,) = list(rows)
        count = {
            t: sum(e.event_type == t for e in events)
            for t in ("SeedGerminated", "SeedFossilized", "SeedPruned")
        }
        epochs = max(e.epoch for e in events if e.epoch is not None) + 1
        assert row == (
            len(events),
            epochs,
            count["SeedGerminated"],
            count["SeedFossilized"],
            count["SeedPruned"],
            "completed",
        )
