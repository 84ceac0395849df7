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


def drop_triggers(url: str) -> None:
    conn = connect(url)
    try:
        if is_pg(conn):
            conn.execute("DROP TRIGGER events_immutable ON events")
            conn.execute("DROP TRIGGER events_no_truncate ON events")
            for table in ("ledger_runs", "run_tips"):
                found = conn.execute(f"SELECT to_regclass('{table}') IS NOT NULL").fetchone()
                if found and found[0]:
                    conn.execute(f"DROP TRIGGER {table}_immutable ON {table}")
                    conn.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        else:
            conn.execute("DROP TRIGGER events_no_update")
            conn.execute("DROP TRIGGER events_no_delete")
            for table in ("ledger_runs", "run_tips"):
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
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
