"""Queries over the ledger are planned as if its runs were long, on both databases.

Without statistics SQLite guesses that any index equality finds about ten
rows, so to join a seed's events to its run it would take the (run,
position) index, which holds every event of the run, as readily as the
(type, run, seed) one, which holds a few. On a run of a million events
several recipes of the SQL cookbook then read the whole run once per seed
and ran past `kasmina sql`'s 30-second limit, and the `events` view read a
whole run to find one version of one stream.

``ANALYZE`` would measure the ledger as it is now, which for a new ledger
is empty. This revision writes into ``sqlite_stat1`` the shape of a long
ledger instead: a run of 100,000 events, a stream of 1,000, a seed's events
of one type about 20, each event id and each (stream, version) one row.
Only an index with no statistics yet gets them, so a ledger someone has
analysed keeps its own, and a later ``ANALYZE`` replaces these. Statistics
steer plans only: no query answers differently.

PostgreSQL keeps statistics of its own (autovacuum's ``ANALYZE``), but it
took "the last of a seed's moves" (``seed_outcomes.final_stage``) and "a
run's last epoch" (``run_summary.final_val_accuracy``), each an ``ORDER BY
position DESC LIMIT 1``, by walking the primary key back from the newest
event until one matched: for every seed, the ledger was read back to that
seed's last move, and for every run, back through the runs after it. On a
ledger of 300,000 events the cookbook's fossilization rate per blueprint
took 31 s. Both now order by ``position + 0``, the same order, which no
index gives, so the database finds the seed's or the run's rows of that
type by the (type, run, seed) index and sorts them. The views are taken as
revision 0010 made them and changed only there (checked); their columns and
rows stay as they were.

Downgrade removes the statistics it wrote and puts the views back.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

#: Table -> an index's columns -> its ``sqlite_stat1`` line: the rows in the index,
#: then the rows that share a value of its first column, of its first two, ...
_SHAPE: dict[str, dict[tuple[str, ...], str]] = {
    "ledger_events": {
        ("event_id",): "1000000 1",
        ("stream_key", "version"): "1000000 1000 1",
        ("run_key", "position"): "1000000 100000 1",
        ("type_key", "run_key", "seed_id"): "1000000 50000 10000 20",
    },
    "ledger_runs": {("run_id",): "100 1"},
    "ledger_streams": {("run_key", "stream_id"): "10000 100 1"},
    "ledger_types": {("event_type",): "30 1"},
}


#: View -> what orders its "last" row, and the same order that no index gives.
_LAST_ROW = {
    "seed_outcomes": ("ORDER BY sc.position DESC LIMIT 1", "ORDER BY sc.position + 0 DESC LIMIT 1"),
    "run_summary": ("ORDER BY e.position DESC LIMIT 1", "ORDER BY e.position + 0 DESC LIMIT 1"),
}


def _revision_0010() -> ModuleType:
    """Revision 0010, which rebuilt the views over ``live_events``: it can say
    exactly what it created (a released migration never changes)."""
    path = Path(__file__).with_name("0010_superseded.py")
    spec = importlib.util.spec_from_file_location("kasmina_migration_0010", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _views(*, as_0010: bool) -> dict[str, str]:
    """`_LAST_ROW`'s views as 0010 created them, or ordered by ``position + 0``."""
    _0010 = _revision_0010()
    earlier = _0010._earlier_views()
    views = {}
    for name, (before, after) in _LAST_ROW.items():
        text = _0010._over_live_events(name, earlier[name])
        if text.count(before) != 1:
            raise RuntimeError(f"revision 0016 expected {before!r} once in view {name}")
        views[name] = text if as_0010 else text.replace(before, after)
    return views


def _replace_views(*, as_0010: bool) -> None:
    """No view reads these: PostgreSQL replaces each in place (keeping its grants),
    SQLite drops and creates it."""
    for name, text in _views(as_0010=as_0010).items():
        if _sqlite():
            op.execute(f"DROP VIEW {name}")
            op.execute(text)
        else:
            op.execute(text.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _shaped() -> list[tuple[str, str, str]]:
    """(table, index, line) of each index `_SHAPE` describes, found by its columns:
    SQLite names a unique constraint's index by its place in the table."""
    conn = op.get_bind()
    found = []
    for table, shapes in _SHAPE.items():
        for row in conn.exec_driver_sql(f"PRAGMA index_list('{table}')").fetchall():
            index = str(row[1])
            columns = tuple(
                str(c[2]) for c in conn.exec_driver_sql(f"PRAGMA index_info('{index}')").fetchall()
            )
            if columns in shapes:
                found.append((table, index, shapes[columns]))
    return found


def upgrade() -> None:
    _replace_views(as_0010=False)
    if not _sqlite():
        return
    op.execute("ANALYZE sqlite_schema")  # makes sqlite_stat1 where there is none, measures nothing
    conn = op.get_bind()
    for table, index, line in _shaped():
        conn.exec_driver_sql(
            "INSERT INTO sqlite_stat1 (tbl, idx, stat) SELECT ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM sqlite_stat1 WHERE tbl = ? AND idx = ?)",
            (table, index, line, table, index),
        )


def downgrade() -> None:
    _replace_views(as_0010=True)
    if not _sqlite():
        return
    conn = op.get_bind()
    if not conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'"
    ).fetchall():
        return
    for table, index, line in _shaped():
        conn.exec_driver_sql(
            "DELETE FROM sqlite_stat1 WHERE tbl = ? AND idx = ? AND stat = ?",
            (table, index, line),
        )
