"""Lean rows: events are stored with integer keys, 16-byte ids and 32-byte hashes.

The row of revision 0001 repeated the run id and stream id (up to 264
characters) in the row and in two indexes, kept ids and hashes as hex text,
stored ``prev_hash`` although it is the stream's previous ``hash``, and
indexed columns no query of kasmina's needed: it cost more to insert and
store than the rest of an append together. Now:

- ``ledger_runs`` gives every run an integer ``run_key`` (in the order runs
  started), its ledger format (1 for runs written before revision 0013) and,
  in format 2, ``start_prev``: the hash of the run start before it, which
  the run's first event links to.
- ``ledger_streams`` gives each (run, stream) an integer ``stream_key``.
- ``ledger_events`` holds the rest: the event id as 16 bytes (a UUID; on
  SQLite an id that is not a lowercase UUID stays text), ``recorded_at`` as
  integer microseconds on SQLite (a text that would not come back exactly
  stays text), the hash as 32 bytes, and no ``prev_hash``.

``events`` becomes a view with exactly the columns and rows it had, so every
view, query and export reads what it read before; ``prev_hash`` is rebuilt
from the stream's previous event (a missing one reads as 64 zeros). The
views of earlier revisions are recreated over it from their own stored
definitions. Every physical table is immutable as ``events`` was. On
PostgreSQL an event id that is not a UUID, or a hash that is not hex, cannot
be carried over: the upgrade stops on it, and nothing is changed.

Downgrade rebuilds the table of revision 0013 from the view, losing nothing.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

READER = "kasmina_reader"
ZEROS = "0" * 64
_TABLES = ("ledger_runs", "ledger_streams", "ledger_events")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_HASH = re.compile(r"[0-9a-f]{64}\Z")
_UUID_SQL = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _pg() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _rows(sql: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in op.get_bind().execute(sa.text(sql))]


# --- how a stored value reads as the text of revision 0013 (SQLite) ---------


def _hex(column: str) -> str:
    return f"CASE WHEN typeof({column}) = 'blob' THEN lower(hex({column})) ELSE {column} END"


def _id_text(column: str) -> str:
    h = f"lower(hex({column}))"
    dashed = (
        f"substr({h}, 1, 8) || '-' || substr({h}, 9, 4) || '-' || substr({h}, 13, 4) || '-' "
        f"|| substr({h}, 17, 4) || '-' || substr({h}, 21)"
    )
    return f"CASE WHEN typeof({column}) = 'blob' THEN {dashed} ELSE {column} END"


def _at_text(column: str) -> str:
    return (
        f"CASE WHEN typeof({column}) = 'integer' THEN "
        f"strftime('%Y-%m-%dT%H:%M:%S', {column} / 1000000, 'unixepoch') "
        f"|| printf('.%06d+00:00', {column} % 1000000) ELSE {column} END"
    )


# PostgreSQL has no column that holds either bytes or text: a value an older ledger
# holds that is not a UUID or a hash is kept as its UTF-8 bytes after one NUL
# (two where one would make it exactly as long as a UUID or a hash), and
# read back without them. Ids and hashes never hold a NUL.


def _pg_text_of(column: str) -> str:
    return f"convert_from(ltrim({column}, '\\x00'::bytea), 'UTF8')"


def _pg_hex(column: str) -> str:
    return (
        f"CASE WHEN length({column}) = 32 THEN encode({column}, 'hex') "
        f"ELSE {_pg_text_of(column)} END"
    )


def _pg_id_text(column: str) -> str:
    return (
        f"CASE WHEN length({column}) = 16 THEN encode({column}, 'hex')::uuid::text "
        f"ELSE {_pg_text_of(column)} END"
    )


def _pg_bytes(column: str, pattern: str, length: int, value: str) -> str:
    """The stored bytes of a text `column` that matches `pattern` as `value`, else kept."""
    text = f"convert_to({column}, 'UTF8')"
    return (
        f"CASE WHEN {column} ~ '{pattern}' THEN {value} "
        f"WHEN octet_length({column}) = {length - 1} THEN '\\x0000'::bytea || {text} "
        f"ELSE '\\x00'::bytea || {text} END"
    )


def _pg_at_text(column: str) -> str:
    return column


def _events_view() -> str:
    if _pg():
        hash_text, id_text, at_text = _pg_hex, _pg_id_text, _pg_at_text
    else:
        hash_text, id_text, at_text = _hex, _id_text, _at_text
    previous = (
        f"(SELECT {hash_text('p.hash')} FROM ledger_events p "
        "WHERE p.stream_key = e.stream_key AND p.version = e.version - 1)"
    )
    return f"""
        CREATE VIEW events AS
        SELECT e.position AS position,
               {id_text("e.event_id")} AS event_id,
               r.run_id AS run_id,
               s.stream_id AS stream_id,
               e.version AS version,
               e.event_type AS event_type,
               e.schema_version AS schema_version,
               e.epoch AS epoch,
               e.seed_id AS seed_id,
               e.payload AS payload,
               {at_text("e.recorded_at")} AS recorded_at,
               CASE WHEN e.version > 1 THEN COALESCE({previous}, '{ZEROS}')
                    WHEN r.format >= 2 AND s.stream_id = 'run'
                    THEN COALESCE({hash_text("r.start_prev")}, '{ZEROS}')
                    ELSE '{ZEROS}' END AS prev_hash,
               {hash_text("e.hash")} AS hash,
               e.rank AS rank
        FROM ledger_events e
        JOIN ledger_streams s ON s.stream_key = e.stream_key
        JOIN ledger_runs r ON r.run_key = e.run_key
    """


# --- the views of earlier revisions, kept by their own definitions ----------


def _views() -> list[tuple[str, str]]:
    """Every view but ``events`` as (name, CREATE statement), in an order that creates each
    after what it reads."""
    if not _pg():
        rows = _rows(
            "SELECT name, sql FROM sqlite_master WHERE type = 'view' AND name <> 'events' "
            "ORDER BY rowid"
        )
        return [(str(name), str(sql)) for name, sql in rows]
    rows = _rows(
        "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
        "WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace "
        "AND c.relname <> 'events'"
    )
    pending = {str(name): f"CREATE VIEW {name} AS {body}" for name, body in rows}
    deps: dict[str, set[str]] = {name: set() for name in pending}
    for view, used in _rows(
        "SELECT DISTINCT v.relname, u.relname FROM pg_depend d "
        "JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class "
        "JOIN pg_class u ON u.oid = d.refobjid "
        "WHERE d.classid = 'pg_rewrite'::regclass AND u.relkind = 'v' AND u.oid <> v.oid"
    ):
        if str(view) in deps and str(used) in pending:
            deps[str(view)].add(str(used))
    ordered: list[tuple[str, str]] = []
    while pending:
        ready = sorted(name for name in pending if not deps[name] & pending.keys())
        for name in ready:
            ordered.append((name, pending.pop(name)))
    return ordered


def _rebuild_views(change: object) -> None:
    views = _views()
    for name, _ in reversed(views):
        op.execute(f"DROP VIEW {name}")
    if callable(change):
        change()
    for name, create in views:
        op.execute(create)
        _grant(name)


def _grant(relation: str) -> None:
    if _pg():
        op.execute(
            f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') "
            f"THEN GRANT SELECT ON {relation} TO {READER}; END IF; END $$"
        )


# --- immutability -------------------------------------------------------------


def _no_changes(table: str) -> None:
    """No update or delete (and on PostgreSQL no truncate), whoever asks."""
    if _pg():
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION kasmina_ledger_immutable()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION kasmina_ledger_immutable()"
        )
        for trigger in (f"{table}_immutable", f"{table}_no_truncate"):
            op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}")
        _grant(table)
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'kasmina: {table} is immutable ({verb} refused)'); END"
        )


def _immutable(table: str, keys: tuple[tuple[str, ...], ...]) -> None:
    """`_no_changes`, and on SQLite no row replacing another on any key."""
    _no_changes(table)
    if _pg():
        return
    taken = [
        (
            f"EXISTS (SELECT 1 FROM {table} WHERE "
            + " AND ".join(f"{key} = NEW.{key}" for key in key_set)
            + ")",
            ", ".join(f"{table}.{key}" for key in key_set),
        )
        for key_set in keys
    ]
    raises = "".join(
        f"SELECT RAISE(ABORT, 'kasmina: {table} is immutable ({names} is taken; "
        f"a row may never replace another)') WHERE {exists}; "
        for exists, names in taken
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
        f"WHEN {' OR '.join(exists for exists, _ in taken)} BEGIN {raises}END"
    )


# --- upgrade ------------------------------------------------------------------


def _sqlite_converters() -> None:
    """SQLite 3.40 has no ``unhex``: the conversions run as functions of this connection."""
    conn = op.get_bind().connection.driver_connection

    def id_value(text: object) -> object:
        if isinstance(text, str) and _UUID.match(text):
            return bytes.fromhex(text.replace("-", ""))
        return text

    def hash_value(text: object) -> object:
        if isinstance(text, str) and _HASH.match(text):
            return bytes.fromhex(text)
        return text

    def time_value(text: object) -> object:
        if not isinstance(text, str):
            return text
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return text
        if when.tzinfo is None or when.year < 1970:
            return text
        delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        back = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
            microsecond=micros % 1_000_000
        )
        return micros if back.isoformat(timespec="microseconds") == text else text

    conn.create_function("kasmina_id_value", 1, id_value, deterministic=True)
    conn.create_function("kasmina_hash_value", 1, hash_value, deterministic=True)
    conn.create_function("kasmina_time_value", 1, time_value, deterministic=True)


def _create_tables() -> None:
    position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "ledger_runs",
        sa.Column("run_key", position, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("start_prev", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("run_key", name=op.f("pk_ledger_runs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_ledger_runs_run_id")),
        sa.CheckConstraint("format >= 1", name=op.f("ck_ledger_runs_format_known")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "ledger_streams",
        sa.Column("stream_key", position, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.BigInteger(), nullable=False),
        sa.Column("stream_id", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("stream_key", name=op.f("pk_ledger_streams")),
        sa.UniqueConstraint(
            "run_key", "stream_id", name=op.f("uq_ledger_streams_run_key_stream_id")
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "ledger_events",
        sa.Column("position", position, primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            sa.LargeBinary(),
            nullable=False,
        ),
        sa.Column("run_key", sa.BigInteger(), nullable=False),
        sa.Column("stream_key", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("seed_id", sa.String(200), nullable=True),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite"),
            nullable=False,
        ),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_ledger_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_ledger_events_event_id")),
        sa.UniqueConstraint(
            "stream_key", "version", name=op.f("uq_ledger_events_stream_key_version")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_ledger_events_run_key_position"), "ledger_events", ["run_key", "position"]
    )
    # Every view reads its rows by type; the cookbook's seed look-ups by type and seed.
    op.create_index(
        op.f("ix_ledger_events_event_type_run_key_seed_id"),
        "ledger_events",
        ["event_type", "run_key", "seed_id"],
    )


def _copy_up() -> None:
    """Carry every run, stream and event over, each run's format with it."""
    pg = _pg()
    if not pg:
        _sqlite_converters()
    if pg:
        as_id = _pg_bytes(
            "e.event_id", _UUID_SQL, 16, "decode(replace(e.event_id, '-', ''), 'hex')"
        )
        as_hash = _pg_bytes("{0}", "^[0-9a-f]{{64}}$", 32, "decode({0}, 'hex')")
    else:
        as_id, as_hash = "kasmina_id_value(e.event_id)", "kasmina_hash_value({0})"
    as_time = "e.recorded_at" if pg else "kasmina_time_value(e.recorded_at)"
    start = (
        "(SELECT x.prev_hash FROM events x WHERE x.run_id = f.run_id "
        "AND x.stream_id = 'run' AND x.version = 1)"
    )
    op.execute(
        f"""
        INSERT INTO ledger_runs (run_id, format, start_prev)
        SELECT f.run_id, COALESCE(o.format, 1),
               CASE WHEN o.format >= 2 THEN {as_hash.format(start)} END
        FROM (SELECT run_id, MIN(position) AS first FROM events GROUP BY run_id) f
        LEFT JOIN ledger_runs_0013 o ON o.run_id = f.run_id
        ORDER BY f.first
        """
    )
    op.execute(
        "INSERT INTO ledger_runs (run_id, format) SELECT o.run_id, o.format "
        "FROM ledger_runs_0013 o WHERE o.run_id NOT IN (SELECT run_id FROM ledger_runs) "
        "ORDER BY o.run_id"
    )
    op.execute(
        """
        INSERT INTO ledger_streams (run_key, stream_id)
        SELECT r.run_key, f.stream_id
        FROM (SELECT run_id, stream_id, MIN(position) AS first FROM events
              GROUP BY run_id, stream_id) f
        JOIN ledger_runs r ON r.run_id = f.run_id
        ORDER BY f.first
        """
    )
    op.execute(
        f"""
        INSERT INTO ledger_events (position, event_id, run_key, stream_key, version,
            event_type, schema_version, epoch, seed_id, payload, recorded_at, hash, rank)
        SELECT e.position, {as_id}, r.run_key, s.stream_key, e.version, e.event_type,
               e.schema_version, e.epoch, e.seed_id, e.payload, {as_time},
               {as_hash.format("e.hash")}, e.rank
        FROM events e
        JOIN ledger_runs r ON r.run_id = e.run_id
        JOIN ledger_streams s ON s.run_key = r.run_key AND s.stream_id = e.stream_id
        ORDER BY e.position
        """
    )
    # A position once handed out is never handed out again, deleted row or not.
    if pg:
        _carry_sequence("events", "ledger_events")
    else:
        taken = _rows("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        if taken:
            op.execute("DELETE FROM sqlite_sequence WHERE name = 'ledger_events'")
            op.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'ledger_events', "
                f"MAX({int(str(taken[0][0]))}, "
                "COALESCE((SELECT MAX(position) FROM ledger_events), 0))"
            )


def _carry_sequence(old: str, new: str) -> None:
    """PostgreSQL: `new` hands out positions after every one `old` ever handed out."""
    taken = _rows(f"SELECT pg_get_serial_sequence('{old}', 'position')")[0][0]
    op.execute(
        f"SELECT setval(pg_get_serial_sequence('{new}', 'position'), last) FROM ("
        f"SELECT GREATEST(CASE WHEN is_called THEN last_value ELSE 0 END, "
        f"(SELECT COALESCE(MAX(position), 0) FROM {new})) AS last FROM {taken}) handed "
        "WHERE last > 0"
    )


def _guard_up() -> None:
    keys: dict[str, tuple[tuple[str, ...], ...]] = {
        "ledger_runs": (("run_key",), ("run_id",)),
        "ledger_streams": (("stream_key",), ("run_key", "stream_id")),
        "ledger_events": (("event_id",), ("stream_key", "version"), ("position",)),
    }
    for table, key_sets in keys.items():
        _immutable(table, key_sets)
    if _pg():
        op.execute(
            "ALTER TABLE ledger_events ADD CONSTRAINT ck_ledger_events_position_positive "
            "CHECK (position >= 1) NOT VALID"
        )
        op.execute(
            "ALTER TABLE ledger_events ADD CONSTRAINT ck_ledger_events_recorded_at_in_range "
            "CHECK (recorded_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 00:00:00+00') "
            "NOT VALID"
        )
    else:
        op.execute(
            "CREATE TRIGGER ledger_events_position_positive AFTER INSERT ON ledger_events "
            "WHEN NEW.position < 1 BEGIN "
            "SELECT RAISE(ABORT, 'kasmina: ledger_events.position must be 1 or more'); END"
        )


def upgrade() -> None:
    def change() -> None:
        op.execute("CREATE TABLE ledger_runs_0013 AS SELECT run_id, format FROM ledger_runs")
        op.drop_table("ledger_runs")
        _create_tables()
        _copy_up()
        op.drop_table("events")
        op.drop_table("ledger_runs_0013")
        _guard_up()
        op.execute(_events_view())
        _grant("events")

    _rebuild_views(change)


# --- downgrade ----------------------------------------------------------------


def downgrade() -> None:
    def change() -> None:
        pg = _pg()
        position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
        op.create_table(
            "events_0014",
            sa.Column("position", position, primary_key=True, autoincrement=True),
            sa.Column("event_id", sa.String(36), nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("stream_id", sa.String(200), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("event_type", sa.String(64), nullable=False),
            sa.Column("schema_version", sa.Integer(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=True),
            sa.Column("seed_id", sa.String(200), nullable=True),
            sa.Column(
                "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
            ),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.Column("rank", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("position", name="pk_events"),
            sa.UniqueConstraint("event_id", name="uq_events_event_id"),
            sa.UniqueConstraint(
                "run_id", "stream_id", "version", name="uq_events_run_id_stream_id_version"
            ),
            sqlite_autoincrement=True,
        )
        columns = (
            "position, event_id, run_id, stream_id, version, event_type, schema_version, "
            "epoch, seed_id, payload, recorded_at, prev_hash, hash, rank"
        )
        op.execute(
            f"INSERT INTO events_0014 ({columns}) SELECT {columns} FROM events ORDER BY position"
        )
        op.execute(
            "CREATE TABLE ledger_runs_0014 AS SELECT run_id, format FROM ledger_runs "
            "WHERE format >= 2"
        )
        if pg:
            _carry_sequence("ledger_events", "events_0014")
        else:
            op.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'events_0014', seq "
                "FROM sqlite_sequence WHERE name = 'ledger_events'"
            )
        op.execute("DROP VIEW events")
        for table in _TABLES:
            op.drop_table(table)
        op.rename_table("events_0014", "events")
        op.create_table(
            "ledger_runs",
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("format", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("run_id", name="pk_ledger_runs"),
            sa.CheckConstraint("format >= 2", name="ck_ledger_runs_format_known"),
        )
        op.execute(
            "INSERT INTO ledger_runs (run_id, format) SELECT run_id, format FROM ledger_runs_0014"
        )
        op.drop_table("ledger_runs_0014")
        if pg:
            op.execute("ALTER SEQUENCE events_0014_position_seq RENAME TO events_position_seq")
        else:
            op.execute("DELETE FROM sqlite_sequence WHERE name = 'events_0014'")
        _guard_down()

    _rebuild_views(change)


def _guard_down() -> None:
    """Revision 0013's indexes, triggers and checks on ``events`` and ``ledger_runs``."""
    op.create_index("ix_events_run_id_position", "events", ["run_id", "position"])
    op.create_index("ix_events_seed_id", "events", ["seed_id"])
    op.create_index(
        "ix_events_event_type_run_id_seed_id", "events", ["event_type", "run_id", "seed_id"]
    )
    if _pg():
        op.execute(
            "CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events "
            "FOR EACH ROW EXECUTE FUNCTION kasmina_events_immutable()"
        )
        op.execute(
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION kasmina_events_immutable()"
        )
        for trigger in ("events_immutable", "events_no_truncate"):
            op.execute(f"ALTER TABLE events ENABLE ALWAYS TRIGGER {trigger}")
        op.execute(
            "ALTER TABLE events ADD CONSTRAINT ck_events_position_positive "
            "CHECK (position >= 1) NOT VALID"
        )
        op.execute(
            "ALTER TABLE events ADD CONSTRAINT ck_events_recorded_at_in_range "
            "CHECK (recorded_at BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 00:00:00+00') "
            "NOT VALID"
        )
        _grant("events")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER events_no_{verb.lower()} BEFORE {verb} ON events "
                f"BEGIN SELECT RAISE(ABORT, 'kasmina: events are immutable ({verb} refused)'); END"
            )
        taken = "kasmina: events are immutable ({} is taken; a row may never replace another)"
        event_id = "EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id)"
        version = (
            "EXISTS (SELECT 1 FROM events WHERE run_id = NEW.run_id "
            "AND stream_id = NEW.stream_id AND version = NEW.version)"
        )
        at = "EXISTS (SELECT 1 FROM events WHERE position = NEW.position)"
        versions = "events.run_id, events.stream_id, events.version"
        op.execute(
            f"CREATE TRIGGER events_no_replace BEFORE INSERT ON events "
            f"WHEN {event_id} OR {version} OR {at} BEGIN "
            f"SELECT RAISE(ABORT, '{taken.format('events.event_id')}') WHERE {event_id}; "
            f"SELECT RAISE(ABORT, '{taken.format(versions)}') WHERE {version}; "
            f"SELECT RAISE(ABORT, '{taken.format('events.position')}'); END"
        )
        op.execute(
            "CREATE TRIGGER events_position_positive AFTER INSERT ON events "
            "WHEN NEW.position < 1 BEGIN "
            "SELECT RAISE(ABORT, 'kasmina: events.position must be 1 or more'); END"
        )
    _immutable_0013("ledger_runs")


def _immutable_0013(table: str) -> None:
    """Revision 0013's guards of `table`, keyed by ``run_id``."""
    _no_changes(table)
    if _pg():
        return
    op.execute(
        f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
        f"WHEN EXISTS (SELECT 1 FROM {table} WHERE run_id = NEW.run_id) "
        f"BEGIN SELECT RAISE(ABORT, 'kasmina: {table} is immutable (REPLACE refused)'); "
        "END"
    )
