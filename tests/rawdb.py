"""Plain driver connections, bypassing kasmina: for tampering and raw checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import psycopg
from sqlalchemy.engine import make_url

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
