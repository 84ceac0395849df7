"""A read never creates a ledger: a mistyped path is an error, and leaves nothing behind.

`kasmina --db sqlite:///typo.db runs` used to create an empty ledger there
and answer as if it were the real one; every reading command now refuses
with one line and writes no file, not even SQLite's -wal or -shm.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import rawdb

from kasmina.cli import main
from kasmina.errors import LedgerNotFound, SchemaMismatch
from kasmina.ledger import Ledger, migrate
from security.attacks import cli_error, fingerprint

READS = [
    ["runs"],
    ["verify"],
    ["verify", "victim"],
    ["sql", "SELECT 1"],
    ["history", "victim"],
    ["history", "victim", "--follow"],
    ["report", "victim", "-o", "{out}/run.html"],
    ["export", "victim", "-o", "{out}/export"],
    ["replay", "victim"],
    ["db", "current"],
    ["db", "downgrade", "base"],
    [
        "append",
        "victim",
        "--type",
        "SeedGerminated",
        "--stream",
        "slot/a",
        "--payload",
        '{"slot_id": "a", "blueprint_id": "conv_small", "params": 10}',
    ],
]


@pytest.mark.parametrize("args", READS, ids=lambda a: "-".join(a[:2]))
def test_a_read_of_a_missing_sqlite_file_is_refused_and_creates_nothing(
    args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    real = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.open(real).close()
    with Ledger.open(real) as ledger:
        ledger.start_run("victim", seed=1, run_id="victim").finish()
    before = fingerprint(real)
    out = tmp_path_factory.mktemp("out")
    typo = tmp_path / "ledgr.db"
    argv = ["--db", f"sqlite:///{typo}", *[a.replace("{out}", str(out)) for a in args]]
    line = cli_error(capsys, argv)
    assert line == f"error: no ledger at {typo} (`kasmina db upgrade` creates one)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.db"]
    assert list(out.iterdir()) == []
    assert fingerprint(real) == before


def test_opening_for_reading_from_python_raises_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(LedgerNotFound, match="no ledger at"):
        Ledger.open(f"sqlite:///{path}", create=False)
    assert list(tmp_path.iterdir()) == []


def _bytes(path: Path) -> list[tuple[str, bytes]]:
    """Every file in `path`'s folder with its bytes: what a refusal must leave as it was."""
    return sorted((p.name, p.read_bytes()) for p in path.parent.iterdir())


#: Other programs' databases: one plain, one in WAL whose tables carry names a kasmina
#: ledger has too (an app of its own with an ``events`` table, migrated by Alembic).
OTHERS = {
    "notes": ["CREATE TABLE notes (body TEXT)"],
    "wal-app": [
        "PRAGMA journal_mode=WAL",
        "CREATE TABLE events (what TEXT)",
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
        "INSERT INTO alembic_version VALUES ('3f2a9c1b7d4e')",
    ],
}


@pytest.mark.parametrize("other", sorted(OTHERS))
@pytest.mark.parametrize("args", READS, ids=lambda a: "-".join(a[:2]))
def test_a_read_of_another_programs_database_leaves_its_bytes_alone(
    args: list[str],
    other: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Not migrated, not switched to WAL (which a ledger's open did, for good), and no
    ``-wal`` or ``-shm`` made beside it."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    for statement in OTHERS[other]:
        conn.execute(statement)
    conn.commit()
    conn.close()
    before = _bytes(path)
    out = tmp_path_factory.mktemp("out")
    argv = ["--db", f"sqlite:///{path}", *[a.replace("{out}", str(out)) for a in args]]
    line = cli_error(capsys, argv)
    assert "kasmina" in line and "schema" in line, line
    assert _bytes(path) == before
    assert list(out.iterdir()) == []


def test_a_read_of_an_empty_file_is_refused_and_leaves_it_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    for args in (["runs"], ["sql", "SELECT 1"], ["verify"]):
        line = cli_error(capsys, ["--db", f"sqlite:///{path}", *args])
        assert line == f"error: sqlite:///{path} is empty: it holds no kasmina ledger"
    assert [p.name for p in tmp_path.iterdir()] == ["empty.db"]
    assert path.stat().st_size == 0


def test_python_writes_no_schema_into_another_programs_database(tmp_path: Path) -> None:
    """`Ledger.open` makes a ledger of a new or empty file only; `db upgrade` is the way
    to put one into a database that holds other tables, on purpose."""
    path = tmp_path / "other.db"
    rawdb.run(f"sqlite:///{path}", "CREATE TABLE notes (body TEXT)")
    before = _bytes(path)
    with pytest.raises(SchemaMismatch, match="is not a kasmina ledger: it holds other tables"):
        Ledger.open(f"sqlite:///{path}")
    assert _bytes(path) == before
    empty = tmp_path / "empty.db"
    empty.touch()
    with Ledger.open(f"sqlite:///{empty}") as ledger:
        ledger.start_run("in an empty file", seed=0).finish()
        assert ledger.verify().ok
    migrate.upgrade(f"sqlite:///{path}")
    with Ledger.open(f"sqlite:///{path}") as ledger:
        ledger.start_run("beside the notes", seed=0).finish()
        assert ledger.verify().ok
    assert rawdb.run(f"sqlite:///{path}", "SELECT COUNT(*) FROM notes") == [(0,)]


def test_a_read_of_a_postgres_database_without_a_schema_creates_nothing(
    empty_pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["runs"], ["verify"], ["sql", "SELECT 1"], ["db", "downgrade", "base"]):
        line = cli_error(capsys, ["--db", empty_pg_url, *args])
        assert "has no kasmina schema" in line, line
    tables = rawdb.run(
        empty_pg_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert tables == []


def test_writing_commands_and_the_python_default_still_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`db upgrade` and `Ledger.open` then `start_run` (the README's first lines) make one."""
    upgraded = tmp_path / "upgraded.db"
    assert main(["--db", f"sqlite:///{upgraded}", "db", "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"database at revision {migrate.HEAD_REVISION}"
    with Ledger.open(f"sqlite:///{tmp_path / 'python.db'}") as ledger:
        ledger.start_run("readme", seed=7).finish()
        assert ledger.verify().ok
    for name in ("upgraded.db", "python.db"):
        with Ledger.open(f"sqlite:///{tmp_path / name}", create=False) as ledger:
            assert ledger.revision == migrate.HEAD_REVISION
