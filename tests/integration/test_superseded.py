"""A resumed run's abandoned events: listed by `superseded_events`, left out of every run view.

The run below is recorded through the Python API: an attempt that germinates
seed-1 and trains it to epoch 2 (kept), goes on into epoch 3 and 4 (blending,
a second seed, other metrics) and dies there; `RunResumed` then sets those
rows aside, and the second attempt tells epoch 3 differently (seed-1 pruned,
seed-3 germinated). Every view must tell only the second story, on SQLite and
PostgreSQL alike, and a run never resumed must read as it did before
revision 0010.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import rawdb
from conftest import DEMO_RUN
from helpers import copy_run

from kasmina.events import (
    RUN_STREAM,
    CacheEvicted,
    EpochCompleted,
    NewEvent,
    Payload,
    RunResumed,
    SeedGateEvaluated,
    SeedGerminated,
    SeedPruned,
    SeedStageChanged,
    SeedTelemetrySampled,
    make_event,
    memory_stream,
    slot_stream,
)
from kasmina.export import export_run
from kasmina.ledger import Ledger, migrate
from kasmina.ledger.schema import COLUMNS, VIEWS
from kasmina.stages import SeedStage

RUN = "resumed"
D, G, T, B, H, P = (
    SeedStage.DORMANT,
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.PRUNED,
)
#: The views as of revision 0010 (`VIEWS` is in creation order; later revisions add more).
AS_OF_0010 = VIEWS[: VIEWS.index("superseded_events") + 1]
#: The views revision 0010 rebuilt over `live_events`: every view it found but the two it
#: adds, `runs` (which counts every stored row) and `transition_table` (which reads no event).
REBUILT = tuple(
    v
    for v in AS_OF_0010
    if v not in {"live_events", "superseded_events", "runs", "transition_table"}
)
CLOCK = ("recorded_at", "started_at", "finished_at")
SQL_PAGE = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


def _on_slot(payload: Payload, slot: str, seed: str, epoch: int) -> NewEvent:
    return make_event(payload, run_id=RUN, stream_id=slot_stream(slot), epoch=epoch, seed_id=seed)


def germinate(slot: str, seed: str, blueprint: str, epoch: int) -> NewEvent:
    return _on_slot(
        SeedGerminated(slot_id=slot, blueprint_id=blueprint, params=10), slot, seed, epoch
    )


def move(slot: str, seed: str, a: SeedStage, b: SeedStage, epoch: int) -> NewEvent:
    trigger = "prune" if b is P else "command"
    payload = SeedStageChanged(slot_id=slot, from_stage=a, to_stage=b, trigger=trigger, alpha=0.0)
    return _on_slot(payload, slot, seed, epoch)


def sample(slot: str, seed: str, stage: SeedStage, epoch: int, grad: float) -> NewEvent:
    payload = SeedTelemetrySampled(slot_id=slot, stage=stage, alpha=0.0, metrics={"grad": grad})
    return _on_slot(payload, slot, seed, epoch)


def gate(slot: str, seed: str, name: str, passed: bool, check: str, decision: str) -> NewEvent:
    payload = SeedGateEvaluated(
        slot_id=slot,
        gate=name,  # type: ignore[arg-type]
        passed=passed,
        score=0.5,
        target_stage=B if passed else T,
        checks_passed=[check] if passed else [],
        checks_failed=[] if passed else [check],
        decision_id=decision,
    )
    return _on_slot(payload, slot, seed, 3)


def evicted(count: int) -> NewEvent:
    payload = CacheEvicted(
        cache="kernels", evicted=count, reason="ttl", size_before=5, size_after=2
    )
    return make_event(payload, run_id=RUN, stream_id=memory_stream("kernels"), epoch=3)


def epoch_done(epoch: int, accuracy: float, lr: float) -> NewEvent:
    payload = EpochCompleted(val_accuracy=accuracy, metrics={"lr": lr})
    return make_event(payload, run_id=RUN, stream_id=RUN_STREAM, epoch=epoch)


def resume(after: int, attempt: int, from_epoch: int | None) -> NewEvent:
    payload = RunResumed(from_epoch=from_epoch, attempt=attempt, abandoned_after_position=after)
    return make_event(payload, run_id=RUN, stream_id=RUN_STREAM)


def last_position(ledger: Ledger) -> int:
    return max(e.position for e in ledger.read(RUN))


@dataclass(frozen=True)
class Recorded:
    """Where the run's rows landed: the last one kept, the abandoned ones, the resume."""

    kept: int
    abandoned: list[int]
    resumed_at: int


def record(ledger: Ledger, *, finish: bool = True) -> Recorded:
    run = ledger.start_run("resumed", seed=7, run_id=RUN)
    ledger.append(
        [
            germinate("a", "seed-1", "conv", 0),
            move("a", "seed-1", D, G, 0),
            epoch_done(0, 50.0, 0.1),
            move("a", "seed-1", G, T, 1),
            sample("a", "seed-1", T, 1, 0.5),
            epoch_done(1, 55.0, 0.1),
            sample("a", "seed-1", T, 2, 0.4),
            epoch_done(2, 58.0, 0.1),
        ]
    )
    kept = last_position(ledger)
    # The first attempt's epochs 3 and 4, after its last checkpoint: abandoned.
    ledger.append(
        [
            gate("a", "seed-1", "G2", True, "gain", "d-1"),
            move("a", "seed-1", T, B, 3),
            germinate("b", "seed-2", "mlp", 3),
            evicted(3),
            move("b", "seed-2", D, G, 3),
            sample("a", "seed-1", B, 3, 9.0),
            epoch_done(3, 70.0, 0.5),
            move("a", "seed-1", B, H, 4),
            epoch_done(4, 72.0, 0.5),
        ]
    )
    abandoned = [e.position for e in ledger.read(RUN) if e.position > kept]
    ledger.append([resume(kept, 2, 2)])
    resumed_at = last_position(ledger)
    # The second attempt tells epoch 3 another way.
    ledger.append(
        [
            move("a", "seed-1", T, P, 3),
            _on_slot(
                SeedPruned(slot_id="a", reason="no_gain", blueprint_id="conv"), "a", "seed-1", 3
            ),
            germinate("b", "seed-3", "attention", 3),
            move("b", "seed-3", D, G, 3),
            gate("b", "seed-3", "G1", False, "warmup", "d-2"),
            sample("b", "seed-3", G, 3, 0.3),
            epoch_done(3, 60.0, 0.05),
        ]
    )
    if finish:
        run.finish()
    return Recorded(kept, abandoned, resumed_at)


@pytest.fixture
def recorded(ledger: Ledger) -> Recorded:
    return record(ledger)


def rows(ledger: Ledger, query: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in ledger.sql(query)[1]]


def test_stage_changes_and_intervals_tell_only_the_live_history(
    ledger: Ledger, recorded: Recorded
) -> None:
    assert rows(
        ledger,
        "SELECT slot_id, seed_id, epoch, from_stage, to_stage FROM stage_changes ORDER BY position",
    ) == [
        ("a", "seed-1", 0, "DORMANT", "GERMINATED"),
        ("a", "seed-1", 1, "GERMINATED", "TRAINING"),
        ("a", "seed-1", 3, "TRAINING", "PRUNED"),
        ("b", "seed-3", 3, "DORMANT", "GERMINATED"),
    ]
    assert rows(
        ledger,
        "SELECT slot_id, seed_id, stage, from_epoch, to_epoch FROM stage_intervals "
        "ORDER BY slot_id, from_epoch, stage",
    ) == [
        ("a", "seed-1", "GERMINATED", 0, 1),
        ("a", "seed-1", "TRAINING", 1, 3),
        ("a", "seed-1", "PRUNED", 3, None),
        ("b", "seed-3", "GERMINATED", 3, None),
    ]


def test_seed_outcomes_and_metrics_tell_only_the_live_history(
    ledger: Ledger, recorded: Recorded
) -> None:
    assert rows(
        ledger,
        "SELECT seed_id, slot_id, blueprint_id, germinated_epoch, final_stage, "
        "ended_epoch FROM seed_outcomes ORDER BY seed_id",
    ) == [
        ("seed-1", "a", "conv", 0, "PRUNED", 3),
        ("seed-3", "b", "attention", 3, "GERMINATED", None),
    ]
    assert rows(ledger, "SELECT epoch, slot_id, name, value FROM metrics ORDER BY position") == [
        (0, None, "lr", 0.1),
        (1, "a", "grad", 0.5),
        (1, None, "lr", 0.1),
        (2, "a", "grad", 0.4),
        (2, None, "lr", 0.1),
        (3, "b", "grad", 0.3),
        (3, None, "lr", 0.05),
    ]
    assert rows(ledger, "SELECT epoch, val_accuracy FROM epoch_metrics ORDER BY epoch") == [
        (0, 50.0),
        (1, 55.0),
        (2, 58.0),
        (3, 60.0),
    ]
    assert rows(ledger, "SELECT seed_id, stage FROM seed_timeline ORDER BY position") == [
        ("seed-1", "TRAINING"),
        ("seed-1", "TRAINING"),
        ("seed-3", "GERMINATED"),
    ]
    assert rows(ledger, "SELECT seed_id, outcome FROM seed_endings") == [("seed-1", "PRUNED")]


def test_gates_decisions_and_evictions_tell_only_the_live_history(
    ledger: Ledger, recorded: Recorded
) -> None:
    gates = rows(ledger, "SELECT seed_id, gate, passed, checks_failed FROM gate_evaluations")
    assert [(seed, g, bool(ok), failed) for seed, g, ok, failed in gates] == [
        ("seed-3", "G1", False, "warmup")
    ]
    checks = rows(ledger, "SELECT seed_id, check_name, passed FROM gate_checks")
    assert [(seed, c, bool(ok)) for seed, c, ok in checks] == [("seed-3", "warmup", False)]
    assert rows(ledger, "SELECT decision_id, event_type FROM decision_effects") == [
        ("d-2", "SeedGateEvaluated")
    ]
    assert rows(ledger, "SELECT * FROM gc_evictions") == []


def test_run_summary_counts_the_live_story_but_every_stored_row(
    ledger: Ledger, recorded: Recorded
) -> None:
    stored = sum(1 for _ in ledger.read(RUN))
    assert rows(ledger, "SELECT events FROM runs") == [(stored,)]
    assert rows(
        ledger,
        "SELECT events, epochs, seeds, fossilized, pruned, final_val_accuracy, status "
        "FROM run_summary",
    ) == [(stored, 4, 2, 0, 1, 60.0, "completed")]


def test_superseded_events_are_exactly_the_abandoned_rows(
    ledger: Ledger, recorded: Recorded
) -> None:
    by_position = {e.position: e for e in ledger.read(RUN)}
    expected = [
        (
            RUN,
            p,
            by_position[p].stream_id,
            by_position[p].event_type,
            by_position[p].epoch,
            1,
            recorded.resumed_at,
        )
        for p in recorded.abandoned
    ]
    assert len(expected) == 9
    assert rows(ledger, "SELECT * FROM superseded_events ORDER BY position") == expected
    attempts = ledger.attempts(RUN)
    assert [p for p in by_position if attempts.superseded(p)] == recorded.abandoned


def test_live_events_are_the_events_less_the_superseded(ledger: Ledger, recorded: Recorded) -> None:
    columns, live = ledger.sql("SELECT * FROM live_events ORDER BY position")
    assert columns == list(COLUMNS)
    stored = rows(ledger, "SELECT * FROM events ORDER BY position")
    assert list(live) == [row for row in stored if row[0] not in recorded.abandoned]


def test_a_run_resumed_twice_with_nested_ranges_agrees_with_the_attempts(ledger: Ledger) -> None:
    first = record(ledger, finish=False)
    # A third attempt resumes from before the second one started (after epoch
    # 1): the first abandoned range lies inside the second, and the resume of
    # attempt 2 is itself set aside.
    epoch_1 = next(
        e.position for e in ledger.read(RUN) if e.event_type == "EpochCompleted" and e.epoch == 1
    )
    assert epoch_1 < first.kept
    ledger.append([resume(epoch_1, 3, 1), epoch_done(2, 59.0, 0.2)])
    stored = [e.position for e in ledger.read(RUN)]
    attempts = ledger.attempts(RUN)
    expected = {p: attempts.abandoned_by(p) for p in stored if attempts.superseded(p)}
    assert set(expected.values()) == {1, 2}
    got = rows(ledger, "SELECT position, attempt FROM superseded_events ORDER BY position")
    assert got == sorted(expected.items())  # one row per event, attempt as the fold says
    live = rows(ledger, "SELECT position FROM live_events WHERE run_id = 'resumed'")
    assert [p for (p,) in live] == [p for p in stored if p not in expected]
    assert rows(ledger, "SELECT epoch, val_accuracy FROM epoch_metrics ORDER BY position") == [
        (0, 50.0),
        (1, 55.0),
        (2, 59.0),
    ]


def _comparable(ledger: Ledger, view: str) -> list[tuple[object, ...]]:
    """The view's rows, less what differs between two recordings (clock, ids, hashes)."""
    columns, found = ledger.sql(f"SELECT * FROM {view}")
    drop = {*CLOCK, "event_id", "prev_hash", "hash"}
    keep = [i for i, c in enumerate(columns) if c not in drop]
    out = []
    for row in found:
        values = {columns[i]: row[i] for i in keep}
        assert not any(isinstance(v, datetime) for v in values.values())
        if "payload" in values:  # JSON text on SQLite, JSONB on PostgreSQL; a seal holds hashes
            payload = values["payload"]
            payload = json.loads(payload) if isinstance(payload, str) else payload
            values["payload"] = {k: v for k, v in payload.items() if k != "seal"}  # type: ignore[union-attr]
        out.append(tuple(values.values()))
    return sorted(out, key=repr)


def test_every_view_gives_the_same_rows_on_both_databases(sqlite_url: str, pg_url: str) -> None:
    ledgers = {url: Ledger.open(url) for url in (sqlite_url, pg_url)}
    try:
        for ledger in ledgers.values():
            record(ledger)
        lite, pg = ledgers.values()
        for view in VIEWS:
            lite_rows = _comparable(lite, view)
            # No cache evicts and no policy decides here, and no run is a fork.
            empty = ("gc_evictions", "decisions", "run_lineage")
            assert bool(lite_rows) == (view not in empty), view
            assert lite_rows == _comparable(pg, view), view
    finally:
        for ledger in ledgers.values():
            ledger.close()


def _snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        view: sorted(rawdb.run(url, f"SELECT * FROM {view} WHERE run_id = 'plain'"), key=repr)
        for view in REBUILT
    }


def test_a_run_never_resumed_reads_as_it_did_before_0010(
    db_url: str, demo_ledgers: dict[str, Ledger], backend: str
) -> None:
    with Ledger.open(db_url) as ledger:
        ledger.new_run_format = 1  # as every run was written before format 2
        copy_run(demo_ledgers[backend], ledger, DEMO_RUN, "plain")
        record(ledger)  # a resumed run beside it changes nothing of it
    now = _snapshot(db_url)
    assert all(now.values()), [v for v, found in now.items() if not found]
    migrate.downgrade(db_url, "0009")
    assert _snapshot(db_url) == now
    migrate.upgrade(db_url)


def test_the_reader_role_may_read_the_new_views(pg_url: str) -> None:
    for view in ("live_events", "superseded_events", *REBUILT):
        [(allowed,)] = rawdb.run(
            pg_url, f"SELECT has_table_privilege('kasmina_reader', '{view}', 'SELECT')"
        )
        assert allowed is True, view
    with Ledger.open(pg_url) as ledger:  # `sql` runs as the reader
        record(ledger)
        assert len(rows(ledger, "SELECT * FROM superseded_events")) == 9


def test_an_export_of_a_resumed_run_lists_what_was_superseded(
    ledger: Ledger, recorded: Recorded, tmp_path: Path
) -> None:
    export_run(ledger, RUN, tmp_path)

    def read(table: str) -> Iterator[dict[str, str]]:
        with (tmp_path / f"{table}.csv").open(newline="") as src:
            yield from csv.DictReader(src)

    assert not (tmp_path / "live_events.csv").exists()
    assert [int(r["position"]) for r in read("superseded_events")] == recorded.abandoned
    assert {r["attempt"] for r in read("superseded_events")} == {"1"}
    assert len(list(read("events"))) == sum(1 for _ in ledger.read(RUN))
    assert [r["to_stage"] for r in read("stage_changes")] == [
        "GERMINATED",
        "TRAINING",
        "PRUNED",
        "GERMINATED",
    ]


def test_the_example_in_the_sql_page_runs(ledger: Ledger, recorded: Recorded) -> None:
    (example,) = re.findall(
        r"```sql\n(-- what each abandoned attempt.*?)```", SQL_PAGE.read_text(), re.S
    )
    assert rows(ledger, example) == [(RUN, 1, 9, 3, 4)]
