"""Plain driver connections, bypassing kasmina: for tampering and raw checks."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from kasmina import jcs
from kasmina.canonical import GENESIS_HASH, canonical_json, chain_hash, envelope_text

Conn = sqlite3.Connection | psycopg.Connection[tuple[object, ...]]


def connect(url: str) -> Conn:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return sqlite3.connect(str(parsed.database), isolation_level=None)
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(conninfo, autocommit=True)


def is_pg(conn: Conn) -> bool:
    return isinstance(conn, psycopg.Connection)


def run(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    conn = connect(url)
    try:
        if is_pg(conn):
            sql = sql.replace("?", "%s")
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def run_format(url: str, run_id: str) -> int:
    """The ledger format a run is hashed in (1 when it has no `ledger_runs` row)."""
    rows = run(url, "SELECT format FROM ledger_runs WHERE run_id = ?", (run_id,))
    return int(rows[0][0]) if rows else 1  # type: ignore[call-overload]


def run_tip(url: str, run_id: str) -> str:
    """The hash of the run's last event by position: what the next one links to (format 2)."""
    rows = run(
        url, "SELECT hash FROM events WHERE run_id = ? ORDER BY position DESC LIMIT 1", (run_id,)
    )
    return str(rows[0][0])


def forged_hash(form: int, *, prev_hash: str, run_prev_hash: str, **columns: Any) -> str:
    """The hash a forger with write access computes for a row, in the run's ledger format."""
    if form >= 2:
        columns.setdefault("rank", None)
        return jcs.event_hash(
            jcs.envelope(**columns, prev_hash=prev_hash, run_prev_hash=run_prev_hash)
        )
    return chain_hash(prev_hash, envelope_text(**columns, prev_hash=prev_hash))


def payload_text(form: int, payload: object) -> str:
    return jcs.jcs_text(payload) if form >= 2 else canonical_json(payload)


#: The physical tables and their immutability triggers (revisions 0013 to 0015).
PHYSICAL = ("ledger_events", "ledger_streams", "ledger_runs", "ledger_types", "run_tips")

_SQLITE_WRITABLE_EVENTS = """
CREATE TRIGGER events_tamper_delete INSTEAD OF DELETE ON events BEGIN
  DELETE FROM ledger_events WHERE position = OLD.position;
END;
CREATE TRIGGER events_tamper_update INSTEAD OF UPDATE ON events BEGIN
  INSERT INTO ledger_types (event_type) SELECT NEW.event_type
  WHERE NOT EXISTS (SELECT 1 FROM ledger_types WHERE event_type IS NEW.event_type);
  UPDATE ledger_events SET
    position = NEW.position,
    event_id = CASE WHEN NEW.event_id IS OLD.event_id THEN event_id ELSE NEW.event_id END,
    version = NEW.version,
    type_key = (SELECT type_key FROM ledger_types WHERE event_type IS NEW.event_type),
    schema_version = NEW.schema_version,
    epoch = NEW.epoch, seed_id = NEW.seed_id, payload = NEW.payload,
    recorded_at = CASE WHEN NEW.recorded_at IS OLD.recorded_at THEN recorded_at
                       ELSE NEW.recorded_at END,
    hash = CASE WHEN NEW.hash IS OLD.hash THEN hash ELSE NEW.hash END,
    rank = NEW.rank
  WHERE position = OLD.position;
END;
CREATE TRIGGER events_tamper_insert INSTEAD OF INSERT ON events BEGIN
  INSERT INTO ledger_runs (run_id, format) SELECT NEW.run_id, 1
  WHERE NOT EXISTS (SELECT 1 FROM ledger_runs WHERE run_id = NEW.run_id);
  INSERT INTO ledger_streams (run_key, stream_id) SELECT r.run_key, NEW.stream_id
  FROM ledger_runs r WHERE r.run_id = NEW.run_id AND NOT EXISTS
    (SELECT 1 FROM ledger_streams s WHERE s.run_key = r.run_key AND s.stream_id = NEW.stream_id);
  INSERT INTO ledger_types (event_type) SELECT NEW.event_type
  WHERE NOT EXISTS (SELECT 1 FROM ledger_types WHERE event_type IS NEW.event_type);
  INSERT INTO ledger_events (position, event_id, run_key, stream_key, version, type_key,
    schema_version, epoch, seed_id, payload, recorded_at, hash, rank)
  SELECT NEW.position, NEW.event_id, r.run_key, s.stream_key, NEW.version, t.type_key,
    NEW.schema_version, NEW.epoch, NEW.seed_id, NEW.payload, NEW.recorded_at, NEW.hash, NEW.rank
  FROM ledger_runs r JOIN ledger_streams s ON s.run_key = r.run_key AND s.stream_id = NEW.stream_id
  JOIN ledger_types t ON t.event_type IS NEW.event_type
  WHERE r.run_id = NEW.run_id;
END;
"""

_PG_WRITABLE_EVENTS = r"""
CREATE FUNCTION kasmina_test_stored(value text, pattern text, length int) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN value ~ pattern THEN decode(replace(value, '-', ''), 'hex')
              WHEN octet_length(value) = length - 1
              THEN '\x0000'::bytea || convert_to(value, 'UTF8')
              ELSE '\x00'::bytea || convert_to(value, 'UTF8') END
$$;
CREATE FUNCTION kasmina_test_id(value text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
  SELECT kasmina_test_stored(
    value, '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', 16)
$$;
CREATE FUNCTION kasmina_test_hash(value text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
  SELECT kasmina_test_stored(value, '^[0-9a-f]{64}$', 32)
$$;
CREATE FUNCTION kasmina_test_events_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM ledger_events WHERE position = OLD.position;
    RETURN OLD;
  END IF;
  INSERT INTO ledger_types (event_type) SELECT NEW.event_type
  WHERE NOT EXISTS (SELECT 1 FROM ledger_types WHERE event_type = NEW.event_type);
  IF TG_OP = 'UPDATE' THEN
    UPDATE ledger_events SET position = NEW.position, event_id = kasmina_test_id(NEW.event_id),
      version = NEW.version,
      type_key = (SELECT type_key FROM ledger_types WHERE event_type = NEW.event_type),
      schema_version = NEW.schema_version,
      epoch = NEW.epoch, seed_id = NEW.seed_id, payload = NEW.payload,
      recorded_at = NEW.recorded_at, hash = kasmina_test_hash(NEW.hash), rank = NEW.rank
    WHERE position = OLD.position;
    RETURN NEW;
  END IF;
  INSERT INTO ledger_runs (run_id, format) SELECT NEW.run_id, 1
  WHERE NOT EXISTS (SELECT 1 FROM ledger_runs WHERE run_id = NEW.run_id);
  INSERT INTO ledger_streams (run_key, stream_id) SELECT r.run_key, NEW.stream_id
  FROM ledger_runs r WHERE r.run_id = NEW.run_id AND NOT EXISTS
    (SELECT 1 FROM ledger_streams s WHERE s.run_key = r.run_key AND s.stream_id = NEW.stream_id);
  INSERT INTO ledger_events (position, event_id, run_key, stream_key, version, type_key,
    schema_version, epoch, seed_id, payload, recorded_at, hash, rank)
  SELECT COALESCE(NEW.position, nextval(pg_get_serial_sequence('ledger_events', 'position'))),
    kasmina_test_id(NEW.event_id), r.run_key, s.stream_key, NEW.version, t.type_key,
    NEW.schema_version, NEW.epoch, NEW.seed_id, NEW.payload, NEW.recorded_at,
    kasmina_test_hash(NEW.hash), NEW.rank
  FROM ledger_runs r JOIN ledger_streams s ON s.run_key = r.run_key AND s.stream_id = NEW.stream_id
  JOIN ledger_types t ON t.event_type = NEW.event_type
  WHERE r.run_id = NEW.run_id;
  RETURN NEW;
END $$;
CREATE TRIGGER events_tamper INSTEAD OF INSERT OR UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION kasmina_test_events_write();
"""


def writable_events(url: str) -> None:
    """Let a test state a row written by hand on the columns of `events`.

    Triggers write the physical tables beneath the view, as someone with
    write access would by hand: a hash or id written as text stays text
    there (on SQLite), which the view gives back as written; a written
    ``prev_hash`` is ignored, since it is the stream's previous hash, not
    stored. Immutability still holds: an update or delete reaches the
    tables' own triggers (`drop_triggers` lifts them).
    """
    conn = connect(url)
    try:
        found = conn.execute(
            "SELECT to_regproc('kasmina_test_events_write') IS NOT NULL"
            if is_pg(conn)
            else "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_tamper_insert'"
        ).fetchone()
        if found and found[0]:
            return
        if is_pg(conn):
            conn.execute(_PG_WRITABLE_EVENTS)
        else:
            conn.executescript(_SQLITE_WRITABLE_EVENTS)
    finally:
        conn.close()


def drop_triggers(url: str) -> None:
    """What an attacker with write access does first: lift the immutability triggers
    of every physical table; then `writable_events`."""
    conn = connect(url)
    try:
        for table in PHYSICAL:
            if is_pg(conn):
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            else:
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    finally:
        conn.close()
    writable_events(url)


def rewrite_sqlite_run(path: str, run_id: str, edit: Callable[[str, dict[str, Any]], None]) -> None:
    """Edit payloads of a SQLite run in place and re-compute its whole hash chain and seal.

    What a forger with write access could do: the result verifies, so only
    re-execution can tell. `edit(event_type, payload)` mutates payloads.
    """
    drop_triggers(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute(
            "SELECT position, event_id, run_id, stream_id, version, event_type, schema_version, "
            "epoch, seed_id, payload, recorded_at FROM events WHERE run_id = ? ORDER BY position",
            (run_id,),
        ).fetchall()
        form = run_format(f"sqlite:///{path}", run_id)
        first_link = conn.execute(
            "SELECT prev_hash FROM events WHERE run_id = ? ORDER BY position LIMIT 1", (run_id,)
        ).fetchone()[0]
        heads: dict[str, str] = {"run": first_link} if form >= 2 else {}
        run_prev = first_link
        conn.execute("BEGIN")
        for pos, eid, rid, stream, version, etype, sv, epoch, seed, text, at in rows:
            payload = json.loads(text)
            edit(etype, payload)
            if etype == "RunFinished":
                payload["seal"] = dict(heads)
            new_text = payload_text(form, payload)
            prev = heads.get(stream, GENESIS_HASH)
            digest = forged_hash(
                form,
                prev_hash=prev,
                run_prev_hash=run_prev,
                event_id=eid,
                run_id=rid,
                stream_id=stream,
                version=version,
                event_type=etype,
                schema_version=sv,
                epoch=epoch,
                seed_id=seed,
                payload_text=new_text,
                recorded_at=at,
            )
            conn.execute(
                "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE position = ?",
                (new_text, prev, digest, pos),
            )
            heads[stream] = run_prev = digest
        conn.execute("COMMIT")
    finally:
        conn.close()
