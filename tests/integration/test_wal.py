"""SQLite's write-ahead log is copied back on the store's own thread, and stays bounded."""

from __future__ import annotations

import gc
import os
import sqlite3
from pathlib import Path

from helpers import sample

from kasmina.ledger import Ledger
from kasmina.ledger.sqlite import SQLiteStore
from kasmina.ledger.wal import BACKSTOP_PAGES

PAGE = 4096


def _store(ledger: Ledger) -> SQLiteStore:
    store = ledger._store
    assert isinstance(store, SQLiteStore)
    return store


def _append_batches(ledger: Ledger, run_id: str, batches: int, size: int = 1000) -> None:
    for b in range(batches):
        ledger.append([sample(run_id, f"s{i % 50}", epoch=b, n=i) for i in range(size)])


def test_the_thread_copies_committed_events_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        run_id = ledger.start_run("ckpt", seed=0).run_id
        before = path.stat().st_size
        _append_batches(ledger, run_id, 3)
        copier = _store(ledger).wal_copier
        copier.drain()
        assert copier.copies >= 1
        # Below the backstop the writer never copies the log back itself, so the rows in
        # the file itself were put there by the thread.
        assert path.stat().st_size > before + 1000 * 300
        reader = sqlite3.connect(path)
        try:
            assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 3001
        finally:
            reader.close()
        assert ledger.verify(run_id).ok


def test_the_log_stays_under_the_backstop_while_the_writer_never_pauses(
    tmp_path: Path,
) -> None:
    path = tmp_path / "k.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        run_id = ledger.start_run("ckpt", seed=0).run_id
        batches = [
            [sample(run_id, f"s{i % 50}", epoch=b, n=i) for i in range(2000)] for b in range(12)
        ]
        for batch in batches:
            ledger.append(batch)
        log = Path(f"{path}-wal").stat().st_size
        # One transaction may take the log past the backstop before the writer copies it.
        assert log <= (BACKSTOP_PAGES + 2000) * (PAGE + 24)
        assert ledger.verify(run_id).ok


def test_closing_the_ledger_stops_the_thread_and_removes_the_log(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        run_id = ledger.start_run("ckpt", seed=0).run_id
        _append_batches(ledger, run_id, 3)
        thread = _store(ledger).wal_copier._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()
    assert not os.path.exists(f"{path}-wal")  # the last connection copied it back and removed it
    with Ledger.open(f"sqlite:///{path}") as again:
        assert len(list(again.read(run_id))) == 3001


def test_a_ledger_dropped_without_closing_stops_its_thread(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'k.db'}")
    run_id = ledger.start_run("ckpt", seed=0).run_id
    _append_batches(ledger, run_id, 3)
    thread = _store(ledger).wal_copier._thread
    assert thread is not None and thread.is_alive()
    del ledger
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()
