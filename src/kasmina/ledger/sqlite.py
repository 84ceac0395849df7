"""The embedded SQLite backend: WAL, a tunable `synchronous`, BEGIN IMMEDIATE.

Several processes may append to one SQLite ledger, within limits:

- One writer at a time. Every append is one ``BEGIN IMMEDIATE`` transaction,
  so writers queue for the database's single write lock (and positions are
  handed out in commit order: a reader tailing the file never skips an
  event). Readers never wait for writers, nor writers for readers (WAL).
- A writer that finds the lock taken waits inside SQLite for
  ``busy_timeout_ms`` (10 s); if it is still taken, or SQLite answers
  ``SQLITE_BUSY`` without waiting, `Store.transact` runs the whole
  transaction again after a pause that doubles each time (20 ms up to 1 s,
  with jitter) for up to `busy_retry_s` (30 s) in all, then raises
  `DatabaseLocked`. A retry never duplicates: a busy transaction is rolled
  back whole, and `Ledger.append` skips event ids already stored.
- A few writers on one machine: DDP ranks of one node, a trainer and an
  evaluator. Throughput is that of one writer (the lock is held per append),
  so batch appends; SQLite's busy waiting is not fair, so with many writers
  one can starve until it gives up. Use PostgreSQL for many writers, or
  writers on several machines.
- Checkpoints run on a thread of their own (`kasmina.ledger.checkpoints`),
  so a commit does not wait for the log to be copied into the file.
- A local disk only. WAL needs shared memory between the processes, and
  SQLite's file locks are unreliable on network filesystems (NFS, SMB,
  most cluster filesystems); there the database can be corrupted.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Literal, cast

from kasmina.canonical import Json, loads
from kasmina.ledger.checkpoints import BACKSTOP_PAGES, Checkpointer
from kasmina.ledger.store import Cursor, Param, Row, Store

Synchronous = Literal["NORMAL", "FULL"]

_DENIED_ACTIONS = {
    sqlite3.SQLITE_ATTACH,
    sqlite3.SQLITE_DETACH,
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_UPDATE,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_ALTER_TABLE,
    sqlite3.SQLITE_CREATE_INDEX,
    sqlite3.SQLITE_CREATE_TABLE,
    sqlite3.SQLITE_CREATE_TEMP_INDEX,
    sqlite3.SQLITE_CREATE_TEMP_TABLE,
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
    sqlite3.SQLITE_CREATE_TEMP_VIEW,
    sqlite3.SQLITE_CREATE_TRIGGER,
    sqlite3.SQLITE_CREATE_VIEW,
    sqlite3.SQLITE_CREATE_VTABLE,
    sqlite3.SQLITE_DROP_INDEX,
    sqlite3.SQLITE_DROP_TABLE,
    sqlite3.SQLITE_DROP_TRIGGER,
    sqlite3.SQLITE_DROP_VIEW,
    sqlite3.SQLITE_DROP_VTABLE,
}


def sqlite_uri(path: str, *, mode: str = "ro", immutable: bool = False) -> str:
    """A ``file:`` URI for `path`, every byte that means something in a URI escaped.

    A name holding ``#``, ``?`` or ``%`` would otherwise end the path early
    (``led#ger.db`` opened a new file ``led``) or be read as a parameter.
    """
    quoted = urllib.parse.quote(os.path.abspath(path), safe="/")
    uri = f"file:{quoted}?mode={mode}"
    return uri + "&immutable=1" if immutable else uri


def _readonly_authorizer(
    action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
) -> int:
    if action in _DENIED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None:
        return sqlite3.SQLITE_DENY  # setting a pragma; reading one is fine
    return sqlite3.SQLITE_OK


class SQLiteStore(Store):
    dialect = "sqlite"
    busy_hint = "; SQLite suits a few writers on one machine, use PostgreSQL for more"

    def __init__(
        self,
        url: str,
        path: str,
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_ms: int = 10_000,
        busy_retry_s: float = 30.0,
    ) -> None:
        super().__init__(url)
        self.path = path
        self.busy_retry_s = busy_retry_s
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        # Switching a new file to WAL needs it to itself: another process opening
        # it at the same moment gets SQLITE_BUSY at once, without the busy wait.
        self.retry_busy(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        self.checkpointer = Checkpointer(path)
        self._rows_in_transaction = 0

    def sql(self, text: str) -> str:
        return text

    def is_duplicate_event_id(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "events.event_id" in str(exc)

    def is_busy(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return int(code) & 0xFF == sqlite3.SQLITE_BUSY  # and its extended codes
        return "database is locked" in str(exc)

    def ids_lookup(self, ids: list[str]) -> tuple[str, Param]:
        return (
            "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))",
            json.dumps(ids),
        )

    @contextmanager
    def write(self, run_id: str) -> Iterator[Cursor]:
        with self.lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            self._rows_in_transaction = 0
            try:
                yield cast(Cursor, cur)
                cur.execute("COMMIT")
            except BaseException:
                self._conn.rollback()  # also after a failed COMMIT, which leaves it open
                raise
            self.checkpointer.committed(self._rows_in_transaction)

    def insert_events(self, cur: Cursor, rows: Iterable[Sequence[Param]]) -> None:
        super().insert_events(cur, rows)
        self._rows_in_transaction += max(cur.rowcount, 0)

    @contextmanager
    def first_open(self) -> Iterator[None]:
        """Hold an exclusive `flock` on the file's folder while a new file is migrated.

        The ranks of a distributed run open one new file at once; without this,
        two of them would both find it empty and both create the schema. The
        lock is on the folder, never the file: closing any descriptor of the
        database file drops this process's POSIX locks on it, SQLite's
        included, and then another process may take itself for the last
        connection and delete the write-ahead log under us (a test lost
        committed runs that way).
        """
        folder = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # releases the flock

    def fetch(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        with self.lock:
            return self._conn.execute(sql, params).fetchall()

    def has_events_table(self) -> bool:
        rows = self.fetch("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'")
        return bool(rows)

    def schema_revision(self) -> str | None:
        exists = self.fetch(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        )
        if not exists:
            return None
        rows = self.fetch("SELECT version_num FROM alembic_version")
        return str(rows[0][0]) if rows else None

    def payload_value(self, raw: object) -> Json:
        return loads(cast(str, raw))

    def payload_text(self, raw: object) -> str:
        return cast(str, raw)

    def recorded_at_param(self, when: datetime, text: str) -> Param:
        return text

    def recorded_at_text(self, raw: object) -> str:
        return cast(str, raw)  # stored as the hashed text itself

    def recorded_at_value(self, raw: object) -> datetime:
        return datetime.fromisoformat(cast(str, raw)).astimezone(UTC)

    def readonly_query(self, sql: str) -> tuple[list[str], Iterator[Row]]:
        uri = sqlite_uri(self.path)
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        conn.set_authorizer(_readonly_authorizer)
        try:
            cur = conn.execute(sql)
        except BaseException:
            conn.close()
            raise
        columns = [d[0] for d in cur.description or ()]

        def rows() -> Iterator[Row]:
            try:
                while batch := cur.fetchmany(1000):
                    yield from batch
            finally:
                conn.close()

        return columns, rows()

    def close(self) -> None:
        self.checkpointer.close()
        with self.lock:
            self._conn.close()
