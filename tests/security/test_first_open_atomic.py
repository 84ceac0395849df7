"""Creating a SQLite ledger is all or nothing, and `db upgrade` repairs what older versions left.

A process killed during its first open (tried 190 times) sometimes left
kasmina's tables without a revision; `db upgrade` then stopped at ``table
events already exists``. Here a new ledger's first open is killed with
SIGKILL at moments spread over the whole of it, and every file left must be
absent or a complete ledger at the head.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import rawdb

from kasmina.cli import main
from kasmina.errors import LedgerError
from kasmina.ledger import Ledger, migrate
from security.attacks import cli_error, fingerprint, record_small_run

KILLS = 40


def _first_open(url: str) -> None:
    Ledger.open(url).close()


def _revision(path: Path) -> str | None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "alembic_version" not in tables:
            return None
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        return str(rows[0][0]) if rows else None
    finally:
        conn.close()


def _leftovers(folder: Path) -> list[str]:
    """Files other than the ledger and SQLite's own companions: a killed builder's."""
    companions = {"ledger.db", "ledger.db-wal", "ledger.db-shm"}
    return sorted(p.name for p in folder.iterdir() if p.name not in companions)


def test_a_first_open_killed_at_any_moment_leaves_no_file_or_a_whole_ledger(
    tmp_path: Path,
) -> None:
    ctx = multiprocessing.get_context("fork")  # children start with the imports done
    start = time.perf_counter()
    _first_open(f"sqlite:///{tmp_path / 'timing.db'}")
    whole = time.perf_counter() - start
    absent = complete = 0
    for n in range(KILLS):
        folder = tmp_path / f"kill{n}"
        folder.mkdir()
        path = folder / "ledger.db"
        child = ctx.Process(target=_first_open, args=(f"sqlite:///{path}",))
        child.start()
        time.sleep(2 * whole * n / KILLS)  # only varies the moment of the kill
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        if not path.exists():
            absent += 1
        else:
            complete += 1
            assert _revision(path) == migrate.HEAD_REVISION, f"kill {n}: half-made ledger"
        left = _leftovers(folder)
        assert all(name.startswith(".ledger.db.") for name in left), (n, left)
        with Ledger.open(f"sqlite:///{path}") as ledger:  # a new open finishes or starts over
            assert ledger.revision == migrate.HEAD_REVISION
            ledger.start_run("after-kill", seed=n).finish()
            assert ledger.verify().ok
    assert absent and complete, (absent, complete)  # the kills spanned the first open


def test_a_migration_that_fails_midway_leaves_no_schema(tmp_path: Path) -> None:
    """SQLite DDL commits statement by statement unless a transaction is begun: it now is."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    rawdb.run(url, "CREATE TABLE notes (x)")
    rawdb.run(url, "CREATE INDEX ix_events_seed_id ON notes (x)")  # 0001 stops on this
    before = rawdb.run(url, "SELECT type, name FROM sqlite_master ORDER BY name")
    with pytest.raises(LedgerError, match="ix_events_seed_id"):
        migrate.upgrade(url)
    assert rawdb.run(url, "SELECT type, name FROM sqlite_master ORDER BY name") == before


def _half_made(path: Path, source: Path, keep: int) -> None:
    """What an older kasmina killed during its first open left: some of the schema, no revision."""
    objects = (
        sqlite3.connect(source)
        .execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid"
        )
        .fetchall()
    )
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        for (sql,) in objects[:keep]:
            if "alembic_version" not in sql:
                conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("keep", [2, 5, 9])
def test_db_upgrade_rebuilds_a_half_made_schema_without_events(
    keep: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "older.db"  # the schema of the kasmina that left it (0005)
    migrate.upgrade(f"sqlite:///{source}", "0005")
    path = tmp_path / "ledger.db"
    _half_made(path, source, keep)
    url = f"sqlite:///{path}"
    assert rawdb.run(url, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events'") == [(1,)]
    assert main(["--db", url, "db", "upgrade"]) == 0, capsys.readouterr()
    assert _revision(path) == migrate.HEAD_REVISION
    whole = tmp_path / "whole.db"
    migrate.upgrade(f"sqlite:///{whole}")
    objects = "SELECT type, name FROM sqlite_master ORDER BY type, name"
    assert rawdb.run(url, objects) == rawdb.run(f"sqlite:///{whole}", objects)
    record_small_run(url)
    assert fingerprint(url).verified


def test_db_upgrade_never_drops_events_of_a_schema_without_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    record_small_run(url)
    rawdb.run(url, "DROP TABLE alembic_version")
    before = fingerprint(url)
    line = cli_error(capsys, ["--db", url, "db", "upgrade"])
    assert "holds 7 events but no schema revision" in line, line
    assert "would drop them" in line
    assert fingerprint(url) == before


def test_db_upgrade_never_drops_a_table_that_is_not_kasminas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file with someone's own `runs` table and an empty `alembic_version` is not 'repaired'."""
    url = f"sqlite:///{tmp_path / 'theirs.db'}"
    rawdb.run(url, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    rawdb.run(url, "CREATE TABLE runs (name TEXT)")
    rawdb.run(url, "INSERT INTO runs VALUES ('mine')")
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    before = rawdb.run(url, schema)
    line = cli_error(capsys, ["--db", url, "db", "upgrade"])
    assert "runs" in line and "already exists" in line, line
    assert rawdb.run(url, schema) == before
    assert rawdb.run(url, "SELECT name FROM runs") == [("mine",)]
