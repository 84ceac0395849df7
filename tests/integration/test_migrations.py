"""Migrations are the only source of the schema, and they round-trip on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import rawdb

from kasmina.errors import SchemaMismatch
from kasmina.ledger import Ledger, migrate
from kasmina.ledger.schema import VIEWS
from kasmina.replay.synthetic import synthetic_run

SRC = Path(__file__).resolve().parents[2] / "src"


def _tables(url: str) -> set[str]:
    conn = rawdb.connect(url)
    try:
        if rawdb.is_pg(conn):
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        else:
            sql = (
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite%'"
            )
        return {str(r[0]) for r in conn.execute(sql).fetchall()}
    finally:
        conn.close()


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("empty_pg_url"))


EXPECTED = {
    "alembic_version",
    "events",
    "snapshots",
    "ledger_runs",
    "ledger_streams",
    "ledger_events",
    "ledger_types",
    "run_tips",
    *VIEWS,
}


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    assert _tables(empty_url) == EXPECTED
    migrate.downgrade(empty_url, "base")
    assert _tables(empty_url) <= {"alembic_version"}
    migrate.upgrade(empty_url)
    assert _tables(empty_url) == EXPECTED
    with Ledger.open(empty_url) as led:
        run = led.start_run("after-roundtrip", seed=1)
        run.finish()
        assert led.verify().ok


def _view_definitions(url: str) -> dict[str, str]:
    conn = rawdb.connect(url)
    try:
        if rawdb.is_pg(conn):
            sql = "SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()"
        else:
            sql = "SELECT name, sql FROM sqlite_master WHERE type = 'view'"
        return {str(name): str(text) for name, text in conn.execute(sql).fetchall()}
    finally:
        conn.close()


def test_0010_reads_the_run_views_over_live_events_and_its_downgrade_restores_0009_exactly(
    empty_url: str,
) -> None:
    migrate.upgrade(empty_url, "0009")
    before = _view_definitions(empty_url)
    migrate.upgrade(empty_url, "0010")
    after = _view_definitions(empty_url)
    assert set(after) - set(before) == {"live_events", "superseded_events"}
    changed = {view for view in before if after[view] != before[view]}
    assert changed == set(before) - {"runs", "transition_table"}
    assert all("live_events" in after[view] for view in changed)
    migrate.downgrade(empty_url, "0009")
    assert _view_definitions(empty_url) == before
    migrate.upgrade(empty_url, "0010")
    assert _view_definitions(empty_url) == after


def test_no_drift_between_models_and_migrations(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    migrate.check(empty_url)  # raises if autogenerate would emit anything


def test_head_constant_matches_alembic() -> None:
    assert migrate.HEAD_REVISION == migrate.script_head()


def test_schema_is_never_created_outside_migrations() -> None:
    offenders = [str(p) for p in SRC.rglob("*.py") if "create_all(" in p.read_text()]
    assert offenders == []


def test_postgres_without_schema_is_refused_with_a_hint(empty_pg_url: str) -> None:
    with pytest.raises(SchemaMismatch, match="kasmina db upgrade"):
        Ledger.open(empty_pg_url)


def test_new_sqlite_file_is_migrated_on_first_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with Ledger.open(url) as led:
        assert led.revision == migrate.HEAD_REVISION
    assert _tables(url) == EXPECTED


def test_sqlite_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Ledger.open(url) as led:
        store = led._store
        assert store.fetch("PRAGMA journal_mode")[0][0] == "wal"
        assert store.fetch("PRAGMA synchronous")[0][0] == 1  # NORMAL
        assert store.fetch("PRAGMA foreign_keys")[0][0] == 1
        assert int(store.fetch("PRAGMA busy_timeout")[0][0]) > 0  # type: ignore[call-overload]
    with Ledger.open(url, synchronous="FULL") as led:
        assert led._store.fetch("PRAGMA synchronous")[0][0] == 2


def _stats(url: str) -> dict[str, str]:
    return {str(i): str(s) for i, s in rawdb.run(url, "SELECT idx, stat FROM sqlite_stat1")}


def _plan(url: str, sql: str) -> str:
    if url.startswith("postgresql"):
        return " | ".join(str(r[0]) for r in rawdb.run(url, f"EXPLAIN {sql}"))
    return " | ".join(str(r[3]) for r in rawdb.run(url, f"EXPLAIN QUERY PLAN {sql}"))


def test_0016_sqlite_plans_for_long_runs_and_keeps_a_ledgers_own_statistics(
    tmp_path: Path,
) -> None:
    """A stream's version is found by its own index, not by reading the run; statistics
    someone measured are kept; downgrade takes back only what 0016 wrote."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    one_version = "SELECT hash FROM events WHERE run_id = 'r' AND stream_id = 'run' AND version = 3"
    migrate.upgrade(url, "0015")
    assert "(run_key=?)" in _plan(url, one_version)
    rawdb.run(url, "ANALYZE sqlite_schema")
    rawdb.run(
        url,
        "INSERT INTO sqlite_stat1 VALUES ('ledger_runs', 'sqlite_autoindex_ledger_runs_1', '7 1')",
    )
    migrate.upgrade(url, "0016")
    stats = _stats(url)
    assert stats["ix_ledger_events_run_key_position"] == "1000000 100000 1"
    assert stats["sqlite_autoindex_ledger_runs_1"] == "7 1"
    assert "(stream_key=? AND version=?)" in _plan(url, one_version)
    migrate.downgrade(url, "0015")
    assert _stats(url) == {"sqlite_autoindex_ledger_runs_1": "7 1"}
    migrate.upgrade(url)
    assert _stats(url) == stats


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM seed_outcomes ORDER BY run_id, seed_id",
        "SELECT run_id, final_val_accuracy FROM run_summary ORDER BY run_id",
    ],
    ids=["seed_outcomes", "run_summary"],
)
def test_0016_postgres_finds_a_last_row_by_its_own_index(pg_url: str, query: str) -> None:
    """A seed's last move and a run's last epoch are no longer found by walking the
    whole ledger back from its newest event (0015), and the rows are the same."""
    with Ledger.open(pg_url) as ledger:
        for seed in (0, 1):
            synthetic_run(ledger, epochs=750, slots=4, seed=seed, gc_period=1000)
    backward = "Index Scan Backward using pk_ledger_events"
    rawdb.run(pg_url, "ANALYZE")
    rows = rawdb.run(pg_url, query)
    assert rows and backward not in _plan(pg_url, query)
    migrate.downgrade(pg_url, "0015")
    rawdb.run(pg_url, "ANALYZE")
    assert rawdb.run(pg_url, query) == rows
    assert backward in _plan(pg_url, query)
