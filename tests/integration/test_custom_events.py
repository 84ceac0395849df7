"""A user's own event type: recorded, hashed and verified like a built-in one on both databases,
and read as raw JSON by a process that never saw the class."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rawdb

from kasmina.errors import EventError, UnknownEventType
from kasmina.events import (
    BUILT_IN_TYPES,
    EVENT_TYPES,
    Payload,
    RawPayload,
    Real,
    SeedStageChanged,
    json_schemas,
    make_event,
    register,
)
from kasmina.ledger import Ledger

BIN = str(Path(sys.executable).with_name("kasmina"))


class LearningRateChanged(Payload):
    """A user's event: the scheduler moved the learning rate."""

    group: int
    lr: Real
    note: str | None = None


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """The type is registered for each test here only, so other tests see the built-in set."""
    from kasmina import events

    register(LearningRateChanged)
    yield
    events._REGISTRY.pop("LearningRateChanged", None)


def _record(ledger: Ledger) -> str:
    run = ledger.start_run(name="custom", seed=1)
    rec = run.recorder
    rec.emit(LearningRateChanged(group=0, lr=0.1), stream_id="run", epoch=0)
    rec.emit(LearningRateChanged(group=0, lr=math.inf, note="warm ✓"), stream_id="run", epoch=1)
    rec.emit(LearningRateChanged(group=1, lr=math.nan), stream_id="slot/a", epoch=1)
    run.finish()
    return run.run_id


def test_a_registered_type_round_trips_and_verifies(ledger: Ledger) -> None:
    run_id = _record(ledger)
    events = [e for e in ledger.read(run_id) if e.event_type == "LearningRateChanged"]
    assert [type(e.payload) for e in events] == [LearningRateChanged] * 3
    first, second, third = (e.payload for e in events)
    assert isinstance(second, LearningRateChanged) and isinstance(third, LearningRateChanged)
    assert first == LearningRateChanged(group=0, lr=0.1)
    assert second.lr == math.inf and second.note == "warm ✓"
    assert math.isnan(third.lr)
    assert ledger.verify(run_id).ok
    folded = ledger.replay(run_id)  # no effect on slots or run totals, and no error
    assert folded.run.status == "completed" and folded.slot("a").stage.name == "DORMANT"
    assert "LearningRateChanged" in json_schemas()


def _without_the_class(url: str, code: str) -> str:
    """Run `code` in a fresh interpreter that imports kasmina but never the class."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from kasmina import Ledger\nledger = Ledger.open({url!r})\n{code}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_process_without_the_class_reads_verifies_and_folds_it(ledger: Ledger) -> None:
    run_id = _record(ledger)
    out = _without_the_class(
        ledger.url,
        f"""
import json
from kasmina.events import RawPayload
events = [e for e in ledger.read({run_id!r}) if e.event_type == "LearningRateChanged"]
assert all(isinstance(e.payload, RawPayload) for e in events)
print(json.dumps([e.payload.data() for e in events]))
assert ledger.verify({run_id!r}).ok
assert ledger.replay({run_id!r}).run.status == "completed"
""",
    )
    assert json.loads(out) == [
        {"group": 0, "lr": 0.1, "note": None},
        {"group": 0, "lr": "Infinity", "note": "warm ✓"},
        {"group": 1, "lr": "NaN", "note": None},
    ]


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, "--db", url, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_command_line_reads_exports_and_queries_it(ledger: Ledger, tmp_path: Path) -> None:
    run_id = _record(ledger)
    url = ledger.url
    history = _cli(url, "history", run_id, "--format", "jsonl")
    assert history.returncode == 0, history.stderr
    rows = [json.loads(line) for line in history.stdout.splitlines()]
    custom = [r for r in rows if r["event_type"] == "LearningRateChanged"]
    assert [r["payload"]["lr"] for r in custom] == [0.1, "Infinity", "NaN"]
    assert _cli(url, "history", run_id).returncode == 0  # the table, too
    assert _cli(url, "verify", run_id).returncode == 0
    assert _cli(url, "replay", run_id).returncode == 0
    report = _cli(url, "report", run_id, "-o", str(tmp_path / "run.html"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "run.html").stat().st_size > 0
    exported = _cli(url, "export", run_id, "--format", "jsonl", "-o", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    lines = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    assert sum('"LearningRateChanged"' in line for line in lines) == 3
    query = (
        "SELECT count(*) AS n FROM events "
        f"WHERE event_type = 'LearningRateChanged' AND run_id = '{run_id}'"
    )
    sql = _cli(url, "sql", query, "--format", "json")
    assert sql.returncode == 0, sql.stderr
    assert json.loads(sql.stdout) == [{"n": 3}]


class Other(Payload):
    x: int


def test_registering_is_checked() -> None:
    before = dict(EVENT_TYPES)
    assert register(LearningRateChanged) is LearningRateChanged  # again: a no-op
    with pytest.raises(EventError, match="'SeedStageChanged' is a built-in event type"):
        register(type("SeedStageChanged", (Payload,), {"__annotations__": {"x": int}}))
    with pytest.raises(EventError, match="already registered"):
        register(type("LearningRateChanged", (Payload,), {"__annotations__": {"x": int}}))
    with pytest.raises(EventError, match="CamelCase"):
        register(type("lower_case", (Payload,), {"__annotations__": {"x": int}}))
    with pytest.raises(EventError, match="subclass of kasmina.events.Payload"):
        register(dict)  # type: ignore[type-var]
    with pytest.raises(EventError, match="RawPayload"):
        register(RawPayload)
    assert dict(EVENT_TYPES) == before
    assert (
        "SeedStageChanged" in BUILT_IN_TYPES and EVENT_TYPES["SeedStageChanged"] is SeedStageChanged
    )


def test_an_unregistered_class_is_refused_at_emit(ledger: Ledger) -> None:
    run = ledger.start_run(name="custom", seed=1)
    with pytest.raises(UnknownEventType):
        run.recorder.emit(Other(x=1), stream_id="run")
    assert [e.event_type for e in ledger.read(run.run_id)] == ["RunStarted"]


def _waiting_on_a_lock(url: str) -> bool:
    rows = rawdb.run(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database() AND pid <> pg_backend_pid()",
    )
    return bool(rows)


@pytest.mark.parametrize("other_commits", [True, False], ids=["commits", "rolls-back"])
def test_a_type_another_writer_is_adding_gets_one_key(pg_url: str, other_commits: bool) -> None:
    """Two writers adding the same new event type at once: the second waits for the
    first, then takes its key (or, if it rolled back, makes the key itself)."""
    ledger = Ledger.open(pg_url)
    run = ledger.start_run(name="types", seed=1)
    other = rawdb.connect(pg_url)
    try:
        other.execute("BEGIN")
        row = other.execute(
            "INSERT INTO ledger_types (event_type) VALUES ('LearningRateChanged') "
            "RETURNING type_key"
        ).fetchone()
        assert row is not None
        failed: list[BaseException] = []

        def append() -> None:
            try:
                event = make_event(
                    LearningRateChanged(group=0, lr=0.5),
                    run_id=run.run_id,
                    stream_id="run",
                    epoch=0,
                )
                ledger.append([event])
            except BaseException as exc:  # reported by the test thread
                failed.append(exc)

        writer = threading.Thread(target=append)
        writer.start()
        deadline = time.monotonic() + 30
        while not _waiting_on_a_lock(pg_url):
            assert time.monotonic() < deadline, "the append never waited for the other writer"
            time.sleep(0.05)
        other.execute("COMMIT" if other_commits else "ROLLBACK")
        writer.join(30)
        assert not writer.is_alive() and not failed, failed
    finally:
        other.close()
    keys = rawdb.run(
        pg_url, "SELECT type_key FROM ledger_types WHERE event_type = 'LearningRateChanged'"
    )
    assert len(keys) == 1
    if other_commits:
        assert keys[0][0] == row[0]
    [stored] = [e for e in ledger.read(run.run_id) if e.event_type == "LearningRateChanged"]
    assert stored.payload == LearningRateChanged(group=0, lr=0.5)
    run.finish()
    assert ledger.verify(run.run_id).ok
    ledger.close()
