"""SQLite with several writers: a busy database is waited out, never written twice.

The lock holders here are real: a raw sqlite3 connection in a write
transaction, or other processes appending. Threads wait on events set by the
store when it sees SQLITE_BUSY, not on sleeps.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from helpers import sample
from load_writer import CountingSQLiteStore, event_id, hold_write_lock, write_impatiently

from kasmina.errors import DatabaseLocked
from kasmina.events import NewEvent
from kasmina.ledger import AppendResult, Ledger
from kasmina.ledger.sqlite import SQLiteStore
from kasmina.ledger.store import Cursor


class SignallingStore(CountingSQLiteStore):
    """Sets `busy` when an attempt fails with SQLITE_BUSY; records its statements."""

    def __init__(self, path: str, *, busy_timeout_ms: int) -> None:
        super().__init__(f"sqlite:///{path}", path, busy_timeout_ms=busy_timeout_ms)
        self.busy = threading.Event()
        self.statements: list[str] = []
        self._conn.set_trace_callback(self.statements.append)

    def is_busy(self, exc: BaseException) -> bool:
        found = super().is_busy(exc)
        if found:
            self.busy.set()
        return found


def _path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _rows(path: str, run_id: str) -> list[tuple[str, str, int]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT event_id, stream_id, version FROM events WHERE run_id = ? ORDER BY position",
            (run_id,),
        ).fetchall()


def _append_in_thread(ledger: Ledger, batch: list[NewEvent]) -> tuple[threading.Thread, list]:
    outcome: list[AppendResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(ledger.append(batch))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.fixture
def run_id(sqlite_url: str) -> str:
    with Ledger.open(sqlite_url) as ledger:
        return ledger.start_run("busy", seed=1).run_id


def test_append_waits_out_a_held_write_lock(sqlite_url: str, run_id: str) -> None:
    path = _path(sqlite_url)
    store = SignallingStore(path, busy_timeout_ms=5)
    batch = [sample(run_id, "a", n=i) for i in range(20)]
    holder = hold_write_lock(path)
    with Ledger(store) as ledger:
        thread, outcome = _append_in_thread(ledger, batch)
        assert store.busy.wait(30), "the append never found the database locked"
        holder.execute("COMMIT")  # let it through
        thread.join(30)
    holder.close()
    assert not thread.is_alive()
    result = outcome[0]
    assert isinstance(result, AppendResult), result
    assert (result.appended, result.skipped) == (20, 0)
    assert store.busy_seen >= 1
    rows = _rows(path, run_id)
    assert len(rows) == len({r[0] for r in rows}) == 21  # RunStarted and the batch, once
    assert [r[0] for r in rows[1:]] == [e.event_id for e in batch]
    assert [r[2] for r in rows[1:]] == list(range(1, 21))
    with Ledger.open(sqlite_url) as ledger:
        assert ledger.verify(run_id).ok


def test_busy_at_commit_is_rolled_back_and_retried_once(sqlite_url: str, run_id: str) -> None:
    """A real SQLITE_BUSY from COMMIT, provoked in rollback-journal mode.

    In WAL mode (what the store sets) COMMIT does not report busy; with a
    rollback journal it must wait for readers to leave, and a COMMIT that
    times out leaves its transaction open. The store has to roll it back
    before the retry, which then writes the batch exactly once.
    """
    path = _path(sqlite_url)
    store = SignallingStore(path, busy_timeout_ms=5)
    store._conn.execute("PRAGMA journal_mode=DELETE")  # only this connection is open
    del store.statements[:]
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchall()  # holds a SHARED lock
    batch = [sample(run_id, "a", n=i) for i in range(5)]
    with Ledger(store) as ledger:
        thread, outcome = _append_in_thread(ledger, batch)
        assert store.busy.wait(30)
        reader.execute("COMMIT")
        thread.join(30)
    reader.close()
    assert isinstance(outcome[0], AppendResult), outcome[0]
    assert outcome[0].appended == 5
    failed = store.statements.index("ROLLBACK")
    assert store.statements[failed - 1] == "COMMIT", store.statements[:failed]
    rows = _rows(path, run_id)
    assert [r[2] for r in rows if r[1] == "slot/a"] == [1, 2, 3, 4, 5]
    assert len({r[0] for r in rows}) == len(rows) == 6


class CommitThenBusy(SQLiteStore):
    """Reports SQLITE_BUSY once after a transaction really committed (fault injection).

    SQLite does not do this, but it is the worst outcome a retry can meet: the
    write took effect and the caller was told it failed.
    """

    injected = False

    @contextmanager
    def write(self, run_id: str) -> Iterator[Cursor]:
        with super().write(run_id) as cur:
            yield cur
        if not self.injected:
            self.injected = True
            raise sqlite3.OperationalError("database is locked")


def test_a_retry_after_a_committed_busy_append_skips_every_event(
    sqlite_url: str, run_id: str
) -> None:
    path = _path(sqlite_url)
    batch = [sample(run_id, "a", n=i) for i in range(7)]
    with Ledger(CommitThenBusy(sqlite_url, path)) as ledger:
        result = ledger.append(batch)
        assert (result.appended, result.skipped) == (0, 7)
        assert ledger.store.injected  # type: ignore[attr-defined]
    rows = _rows(path, run_id)
    assert [r[2] for r in rows if r[1] == "slot/a"] == list(range(1, 8))
    assert len({r[0] for r in rows}) == len(rows) == 8


def test_a_lock_held_past_the_retry_budget_raises_database_locked(
    sqlite_url: str, run_id: str
) -> None:
    path = _path(sqlite_url)
    store = SQLiteStore(sqlite_url, path, busy_timeout_ms=5, busy_retry_s=0.2)
    holder = hold_write_lock(path)
    with Ledger(store) as ledger:
        with pytest.raises(DatabaseLocked) as caught:
            ledger.append([sample(run_id, "a")])
        message = str(caught.value)
        assert "\n" not in message
        assert path in message and "stayed locked" in message, message
        with pytest.raises(DatabaseLocked):
            ledger.finish_run(run_id, "completed")
        holder.execute("ROLLBACK")
        ledger.append([sample(run_id, "a")])  # the store is usable again
        ledger.finish_run(run_id, "completed")
    holder.close()
    assert [r[1] for r in _rows(path, run_id)] == ["run", "slot/a", "run"]


def test_is_busy_is_sqlite_busy_only(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    store = SQLiteStore(f"sqlite:///{path}", path)
    holder = hold_write_lock(path)
    other = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("BEGIN IMMEDIATE")
    assert store.is_busy(busy.value)
    with pytest.raises(sqlite3.OperationalError) as missing:
        other.execute("SELECT * FROM nowhere")
    assert not store.is_busy(missing.value)
    assert not store.is_busy(sqlite3.IntegrityError("UNIQUE constraint failed"))
    holder.close()
    other.close()
    store.close()


def test_writers_with_no_busy_timeout_retry_until_all_is_written(
    sqlite_url: str, run_id: str
) -> None:
    """Four processes that never wait inside SQLite: every collision is a retry."""
    writers, events, batch = 4, 800, 10
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=write_impatiently,
            args=(_path(sqlite_url), run_id, w, events, batch, barrier, results),
        )
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    reports = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * writers
    assert sorted(r[1] for r in reports) == [events] * writers
    busy = sum(r[2] for r in reports)
    rows = _rows(_path(sqlite_url), run_id)
    sent = {event_id(run_id, w, n) for w in range(writers) for n in range(events)}
    assert Counter(r[0] for r in rows if r[1] != "run") == Counter(dict.fromkeys(sent, 1))
    streams = Counter(r[1] for r in rows)
    for stream, count in streams.items():
        assert [r[2] for r in rows if r[1] == stream] == list(range(1, count + 1))
    with Ledger.open(sqlite_url) as ledger:
        assert ledger.verify(run_id).ok
    print(f"\n{writers} writers, busy timeout 0: {busy} busy attempts retried")
    assert busy > 0, "the writers never collided; the test exercised no retry"


def test_opening_a_file_another_connection_has_locked_waits_for_it(tmp_path: Path) -> None:
    """Switching a new file to WAL needs it alone; a busy answer is retried, not raised."""
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # still a rollback-journal file: nobody else gets in
    holder.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        store = SQLiteStore(f"sqlite:///{path}", str(path), busy_timeout_ms=0, busy_retry_s=10)
    finally:
        release.join()
        holder.close()
    try:
        assert store.fetch("PRAGMA journal_mode")[0][0] == "wal"
        assert store.fetch("SELECT x FROM t") == [(1,)]
    finally:
        store.close()
