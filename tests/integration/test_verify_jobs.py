"""`verify` split between processes (`kasmina.ledger.verify_jobs`) says what one process says."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import rawdb

from kasmina.ledger import Ledger, verify_jobs
from kasmina.ledger.store import Param, Row
from kasmina.ledger.verify import ChainChecker
from kasmina.ledger.verify_jobs import range_ends, start_state
from kasmina.replay.synthetic import synthetic_run


def _record(ledger: Ledger) -> str:
    return synthetic_run(ledger, epochs=40, slots=4, seed=3, gc_period=10)


def test_each_range_starts_where_one_process_would_be(ledger: Ledger) -> None:
    """The state read from the rows before a position is the sequential checker's there."""
    run_id = _record(ledger)
    reader = ledger._rows
    run = reader.stored_run(run_id)
    assert run is not None
    checker = ChainChecker(ledger._store, run_id, readable=True)
    compared = 0
    for page in reader.stored_pages(run, page_size=50):
        for stored in page:
            checker.check_stored(run, [[stored]], lambda row: reader.render(run, row), [])
            start = start_state(ledger._store, run, stored[0])
            assert (start.heads, start.run_prev, start.sealed) == (
                checker.heads,
                checker.run_prev,
                checker.sealed,
            ), stored[0]
            compared += 1
    assert checker.faults == [] and checker.sealed and compared == checker.count > 100


def test_ranges_split_a_run_evenly(ledger: Ledger) -> None:
    run_id = _record(ledger)
    run = ledger._rows.stored_run(run_id)
    assert run is not None
    events = ledger.verify(run_id).runs[0].events
    ends = range_ends(ledger._store, run, 3)
    positions = [
        int(p)  # type: ignore[call-overload]
        for (p,) in rawdb.run(
            ledger.url, "SELECT position FROM events WHERE run_id = ? ORDER BY position", (run_id,)
        )
    ]
    assert ends == [positions[events // 3 - 1], positions[2 * events // 3 - 1]]
    assert range_ends(ledger._store, run, 1) == []


def _counted(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queries `ledger`'s store is asked from now on."""
    asked: list[str] = []
    fetch = ledger._store.fetch

    def recorded(sql: str, params: Sequence[Param] = ()) -> list[Row]:
        asked.append(sql)
        return fetch(sql, params)

    monkeypatch.setattr(ledger._store, "fetch", recorded)
    return asked


def test_a_run_too_short_to_split_is_not_counted(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _record(ledger)
    run = ledger._rows.stored_run(run_id)
    assert run is not None
    monkeypatch.setattr(verify_jobs, "available_cpus", lambda: 8)
    asked = _counted(ledger, monkeypatch)
    assert range_ends(ledger._store, run, None) == []
    assert range_ends(ledger._store, run, 1) == []
    assert asked and not [sql for sql in asked if "COUNT" in sql.upper()]


def test_a_run_long_enough_to_split_is_counted_and_split_as_before(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _record(ledger)
    run = ledger._rows.stored_run(run_id)
    assert run is not None
    events = ledger.verify(run_id).runs[0].events
    monkeypatch.setattr(verify_jobs, "available_cpus", lambda: 3)
    monkeypatch.setattr(verify_jobs, "EVENTS_PER_JOB", events // 3)
    asked = _counted(ledger, monkeypatch)
    assert range_ends(ledger._store, run, None) == range_ends(ledger._store, run, 3)
    assert len(range_ends(ledger._store, run, None)) == 2
    assert [sql for sql in asked if "COUNT" in sql.upper()]


def test_a_sound_run_split_between_processes_verifies_as_in_one(ledger: Ledger) -> None:
    run_id = _record(ledger)
    one = ledger.verify(run_id, jobs=1)
    assert one.ok and one.runs[0].sealed
    assert ledger.verify(run_id, jobs=3) == one
    assert ledger.verify(jobs=2) == ledger.verify(jobs=1)


def test_a_fault_in_a_later_range_is_reported_as_one_process_reports_it(
    ledger: Ledger, db_url: str
) -> None:
    run_id = _record(ledger)
    run = ledger._rows.stored_run(run_id)
    assert run is not None
    late = range_ends(ledger._store, run, 3)[1] + 5
    rawdb.drop_triggers(db_url)
    rawdb.run(db_url, "UPDATE ledger_events SET epoch = epoch + 1000 WHERE position = ?", (late,))
    one = ledger.verify(run_id, jobs=1)
    assert [(f.kind, f.position) for f in one.faults] == [("hash_mismatch", late)]
    assert ledger.verify(run_id, jobs=3) == one


def test_a_script_without_a_main_guard_is_not_run_again_by_verify_jobs(tmp_path: Path) -> None:
    """Workers are new interpreters given their job through a pipe, not multiprocessing's
    spawn, which would run the caller's script again in each."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger.open(url) as ledger:
        _record(ledger)
    runs = tmp_path / "runs.txt"
    script = tmp_path / "check.py"
    script.write_text(
        "import sys\n"
        "from kasmina.ledger import Ledger\n"
        "with open(sys.argv[2], 'a') as f:\n"
        "    f.write('ran\\n')\n"
        "with Ledger.open(sys.argv[1]) as ledger:\n"
        "    print(ledger.verify(jobs=2).ok)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), url, str(runs)], capture_output=True, text=True, check=True
    )
    assert done.stdout == "True\n"
    assert runs.read_text() == "ran\n"


def test_workers_started_before_a_failure_are_stopped(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker interpreters start while the ranges' states are read; when that
    fails, they are ended and the error is the caller's, not left running."""
    run_id = _record(ledger)
    started: list[verify_jobs._Worker] = []
    real_worker = verify_jobs._Worker

    def worker() -> verify_jobs._Worker:
        started.append(real_worker())
        return started[-1]

    def failing(*args: object) -> object:
        raise RuntimeError("the state could not be read")

    monkeypatch.setattr(verify_jobs, "_Worker", worker)
    monkeypatch.setattr(verify_jobs, "start_state", failing)
    with pytest.raises(RuntimeError, match="the state could not be read"):
        ledger.verify(run_id, jobs=3)
    assert len(started) == 2
    for item in started:
        process = item._process
        assert process is not None and process.returncode is not None


def test_a_worker_loads_no_event_models() -> None:
    """A worker starts in a tenth of a second because its modules leave pydantic and
    the event models unloaded; an import that brings them back costs every job that."""
    probe = (
        "import sys\n"
        "from kasmina.ledger.verify_jobs import main\n"
        "import kasmina.ledger.sqlite, kasmina.ledger.postgres\n"
        "print(sorted(m for m in ('kasmina.events', 'pydantic') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
