"""Type keys: an event's type is stored as a small integer, its name in ``ledger_types``.

Revision 0014 kept the type's name (about 18 characters) in every row and
again in every entry of the index views read by type: 37 bytes an event of
the 535 the bench's run stores, and the widest key an append has to place.
Now ``ledger_types`` gives every type a ``type_key`` (in the order types
first appear), ``ledger_events`` holds that key, and the index is on
(``type_key``, ``run_key``, ``seed_id``). ``events`` keeps its columns and
rows: the view looks the name up. ``ledger_types`` is immutable like every
physical table, and the reader role reads it.

On PostgreSQL the column changes type in place (one rewrite of the table,
through a function that looks the key up, dropped again); SQLite cannot
change a column's type, so the table is rebuilt with every position, and
the positions it has handed out, kept. Downgrade undoes both, losing
nothing.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_TYPE_INDEX = "ix_ledger_events_type_key_run_key_seed_id"
_NAME_INDEX = "ix_ledger_events_event_type_run_key_seed_id"
_POSITION_INDEX = "ix_ledger_events_run_key_position"
_SQLITE_TRIGGERS = ("no_update", "no_delete", "no_replace", "position_positive")


def _revision_0014() -> ModuleType:
    """Revision 0014's helpers (its views, grants and guards): a released migration
    never changes, so this one uses them rather than copying them."""
    path = Path(__file__).with_name("0014_lean_rows.py")
    spec = importlib.util.spec_from_file_location("kasmina_migration_0014", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0014 = _revision_0014()


def _pg() -> bool:
    return bool(_0014._pg())


def _events_view(typed: bool) -> str:
    view = str(_0014._events_view())
    if not typed:
        return view
    return view.replace("e.event_type AS event_type", "t.event_type AS event_type").replace(
        "JOIN ledger_runs r ON r.run_key = e.run_key",
        "JOIN ledger_runs r ON r.run_key = e.run_key\n"
        "        JOIN ledger_types t ON t.type_key = e.type_key",
    )


def _events_table(name: str, typed: bool) -> None:
    """``ledger_events`` as revision 0014 made it, with the type by key or by name (SQLite)."""
    kind = (
        sa.Column("type_key", sa.Integer(), nullable=False)
        if typed
        else sa.Column("event_type", sa.String(64), nullable=False)
    )
    op.create_table(
        name,
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.LargeBinary(), nullable=False),
        sa.Column("run_key", sa.BigInteger(), nullable=False),
        sa.Column("stream_key", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        kind,
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("seed_id", sa.String(200), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("position", name="pk_ledger_events"),
        sa.UniqueConstraint("event_id", name="uq_ledger_events_event_id"),
        sa.UniqueConstraint("stream_key", "version", name="uq_ledger_events_stream_key_version"),
        sqlite_autoincrement=True,
    )


def _rebuild_sqlite(typed: bool) -> None:
    """SQLite: the events table again, its type column as `typed` says, every row and
    every position handed out kept."""
    for trigger in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS ledger_events_{trigger}")
    op.drop_index(_POSITION_INDEX, table_name="ledger_events")
    op.drop_index(_NAME_INDEX if typed else _TYPE_INDEX, table_name="ledger_events")
    op.rename_table("ledger_events", "ledger_events_old")
    _events_table("ledger_events", typed)
    shared = (
        "position, event_id, run_key, stream_key, version, schema_version, epoch, seed_id, "
        "payload, recorded_at, hash, rank"
    )
    picked = ", ".join(f"e.{column.strip()}" for column in shared.split(","))
    # Every row is carried: a key naming no type (only a hand can leave one) stays as it is.
    if typed:
        join, kind, value = "t.event_type = e.event_type", "type_key", "t.type_key"
    else:
        join, kind, value = "t.type_key = e.type_key", "event_type", "t.event_type"
    op.execute(
        f"INSERT INTO ledger_events ({shared}, {kind}) SELECT {picked}, "
        f"COALESCE({value}, e.{'event_type' if typed else 'type_key'}) "
        f"FROM ledger_events_old e LEFT JOIN ledger_types t ON {join} ORDER BY e.position"
    )
    op.execute(
        "UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence "
        "WHERE name = 'ledger_events_old')) WHERE name = 'ledger_events'"
    )
    op.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'ledger_events', seq FROM sqlite_sequence "
        "WHERE name = 'ledger_events_old' AND NOT EXISTS "
        "(SELECT 1 FROM sqlite_sequence WHERE name = 'ledger_events')"
    )
    op.drop_table("ledger_events_old")
    op.execute("DELETE FROM sqlite_sequence WHERE name = 'ledger_events_old'")
    op.create_index(_POSITION_INDEX, "ledger_events", ["run_key", "position"])
    _0014._immutable("ledger_events", (("event_id",), ("stream_key", "version"), ("position",)))
    op.execute(
        "CREATE TRIGGER ledger_events_position_positive AFTER INSERT ON ledger_events "
        "WHEN NEW.position < 1 BEGIN "
        "SELECT RAISE(ABORT, 'kasmina: ledger_events.position must be 1 or more'); END"
    )


def _retype_postgres(typed: bool) -> None:
    """PostgreSQL: the type column changes type in place, through a look-up function."""
    if typed:
        old, new, kind, look_up = (
            "event_type",
            "type_key",
            "integer",
            (
                "CREATE FUNCTION kasmina_0015_look_up(name text) RETURNS integer "
                "LANGUAGE sql STABLE AS 'SELECT type_key FROM ledger_types WHERE event_type = name'"
            ),
        )
    else:
        old, new, kind, look_up = (
            "type_key",
            "event_type",
            "varchar(64)",
            (
                "CREATE FUNCTION kasmina_0015_look_up(key integer) RETURNS varchar "
                "LANGUAGE sql STABLE AS 'SELECT event_type FROM ledger_types WHERE type_key = key'"
            ),
        )
    op.execute(look_up)
    op.execute(
        f"ALTER TABLE ledger_events ALTER COLUMN {old} TYPE {kind} "
        f"USING kasmina_0015_look_up({old})"
    )
    op.execute("DROP FUNCTION kasmina_0015_look_up")
    op.execute(f"ALTER TABLE ledger_events RENAME COLUMN {old} TO {new}")
    op.execute(
        f"ALTER INDEX {_NAME_INDEX if typed else _TYPE_INDEX} "
        f"RENAME TO {_TYPE_INDEX if typed else _NAME_INDEX}"
    )


def upgrade() -> None:
    def change() -> None:
        op.execute("DROP VIEW events")
        op.create_table(
            "ledger_types",
            sa.Column("type_key", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("event_type", sa.String(64), nullable=False),
            sa.PrimaryKeyConstraint("type_key", name="pk_ledger_types"),
            sa.UniqueConstraint("event_type", name="uq_ledger_types_event_type"),
            sqlite_autoincrement=True,
        )
        op.execute(
            "INSERT INTO ledger_types (event_type) SELECT event_type FROM ledger_events "
            "GROUP BY event_type ORDER BY MIN(position)"
        )
        if _pg():
            _retype_postgres(typed=True)
        else:
            _rebuild_sqlite(typed=True)
            op.create_index(_TYPE_INDEX, "ledger_events", ["type_key", "run_key", "seed_id"])
        _0014._immutable("ledger_types", (("type_key",), ("event_type",)))
        op.execute(_events_view(typed=True))
        _0014._grant("events")

    _0014._rebuild_views(change)


def downgrade() -> None:
    def change() -> None:
        op.execute("DROP VIEW events")
        if _pg():
            _retype_postgres(typed=False)
        else:
            _rebuild_sqlite(typed=False)
            op.create_index(_NAME_INDEX, "ledger_events", ["event_type", "run_key", "seed_id"])
        op.drop_table("ledger_types")
        op.execute(_events_view(typed=False))
        _0014._grant("events")

    _0014._rebuild_views(change)
