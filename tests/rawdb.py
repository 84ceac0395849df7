"""Plain driver connections, bypassing kasmina: for tampering and raw checks."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

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


def drop_triggers(url: str) -> None:
    conn = connect(url)
    try:
        if is_pg(conn):
            conn.execute("DROP TRIGGER events_immutable ON events")
            conn.execute("DROP TRIGGER events_no_truncate ON events")
        else:
            conn.execute("DROP TRIGGER events_no_update")
            conn.execute("DROP TRIGGER events_no_delete")
    finally:
        conn.close()


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
        heads: dict[str, str] = {}
        conn.execute("BEGIN")
        for pos, eid, rid, stream, version, etype, sv, epoch, seed, text, at in rows:
            payload = json.loads(text)
            edit(etype, payload)
            if etype == "RunFinished":
                payload["seal"] = dict(heads)
            new_text = canonical_json(payload)
            prev = heads.get(stream, GENESIS_HASH)
            digest = chain_hash(
                prev,
                envelope_text(
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
                    prev_hash=prev,
                ),
            )
            conn.execute(
                "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE position = ?",
                (new_text, prev, digest, pos),
            )
            heads[stream] = digest
        conn.execute("COMMIT")
    finally:
        conn.close()
