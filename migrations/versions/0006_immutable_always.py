"""No back door around immutability: no row replaces another, triggers fire always, positions ≥ 1.

SQLite's ``INSERT OR REPLACE`` (and ``REPLACE INTO``) resolves a unique
conflict by deleting the old row, and fires delete triggers only under the
per-connection ``recursive_triggers`` pragma that an attacker never sets: a
sealed run could be rewritten row by row, re-chained and re-sealed. A BEFORE
INSERT trigger now refuses any row whose event id, version of its stream or
position is taken. Its message for a taken event id names
``events.event_id`` as SQLite's own unique error does, because kasmina
recognises a retried batch by that name.

PostgreSQL skips ordinary triggers under ``session_replication_role =
replica`` (a superuser's setting); the immutability triggers become ``ENABLE
ALWAYS``. A time PostgreSQL holds but Python cannot (``'infinity'``, year
10000) is refused by a CHECK: one such row made every read of the ledger fail.

Positions are handed out from 1. On PostgreSQL a CHECK says so, ``NOT VALID``
so that an older database holding a hand-made row at position ≤ 0 still
upgrades (`verify` reports that row). SQLite cannot add a CHECK without
rebuilding the table, which would copy every event, lift the immutability
triggers meanwhile, and fail on such a row; an AFTER INSERT trigger (a BEFORE
trigger sees -1 for a position the database has yet to assign) refuses it
instead.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PG_TRIGGERS = ("events_immutable", "events_no_truncate")
#: What Python's datetime can hold, a day inside either end for any time zone:
#: one row at 'infinity' made every read of the ledger fail.
_PYTHON_TIMES = "'0001-01-02 00:00:00+00' AND '9999-12-30 00:00:00+00'"

_TAKEN = "kasmina: events are immutable ({} is taken; a row may never replace another)"
_EVENT_ID = "EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id)"
_VERSION = (
    "EXISTS (SELECT 1 FROM events WHERE run_id = NEW.run_id "
    "AND stream_id = NEW.stream_id AND version = NEW.version)"
)
_POSITION = "EXISTS (SELECT 1 FROM events WHERE position = NEW.position)"

# The WHEN clause is the cheap common path; the body only names what was taken.
_SQLITE_NO_REPLACE = f"""
CREATE TRIGGER events_no_replace BEFORE INSERT ON events
WHEN {_EVENT_ID} OR {_VERSION} OR {_POSITION}
BEGIN
  SELECT RAISE(ABORT, '{_TAKEN.format("events.event_id")}') WHERE {_EVENT_ID};
  SELECT RAISE(ABORT, '{_TAKEN.format("events.run_id, events.stream_id, events.version")}')
  WHERE {_VERSION};
  SELECT RAISE(ABORT, '{_TAKEN.format("events.position")}');
END
"""

_SQLITE_POSITION = """
CREATE TRIGGER events_position_positive AFTER INSERT ON events
WHEN NEW.position < 1
BEGIN
  SELECT RAISE(ABORT, 'kasmina: events.position must be 1 or more');
END
"""


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for trigger in _PG_TRIGGERS:
            op.execute(f"ALTER TABLE events ENABLE ALWAYS TRIGGER {trigger}")
        op.execute(
            "ALTER TABLE events ADD CONSTRAINT ck_events_position_positive "
            "CHECK (position >= 1) NOT VALID"
        )
        op.execute(
            "ALTER TABLE events ADD CONSTRAINT ck_events_recorded_at_in_range "
            f"CHECK (recorded_at BETWEEN {_PYTHON_TIMES}) NOT VALID"
        )
    else:
        op.execute(_SQLITE_NO_REPLACE)
        op.execute(_SQLITE_POSITION)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE events DROP CONSTRAINT IF EXISTS ck_events_recorded_at_in_range")
        op.execute("ALTER TABLE events DROP CONSTRAINT IF EXISTS ck_events_position_positive")
        for trigger in _PG_TRIGGERS:
            op.execute(f"ALTER TABLE events ENABLE TRIGGER {trigger}")
    else:
        op.execute("DROP TRIGGER IF EXISTS events_position_positive")
        op.execute("DROP TRIGGER IF EXISTS events_no_replace")
