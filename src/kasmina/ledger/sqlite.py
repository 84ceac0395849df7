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
- The write-ahead log is copied back on a thread of its own (`kasmina.ledger.wal`),
  so a commit does not wait for the log to be copied into the file.
- A local disk only. WAL needs shared memory between the processes, and
  SQLite's file locks are unreliable on network filesystems (NFS, SMB,
  most cluster filesystems); there the database can be corrupted.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal, cast

from kasmina.canonical import Json, loads
from kasmina.errors import DatabaseUnavailable, ReadOnlyLedger
from kasmina.ids import uuid_text
from kasmina.ledger.creation import folder_lock
from kasmina.ledger.readonly import DEFAULT_TIMEOUT_S
from kasmina.ledger.readonly_sqlite import open_query
from kasmina.ledger.store import Cursor, Param, Row, Store, micros
from kasmina.ledger.wal import BACKSTOP_PAGES, WalCopier
from kasmina.ledger.writers import FileHolds

Synchronous = Literal["NORMAL", "FULL"]
#: Rows per INSERT statement of an append (see `SQLiteStore.insert_events`).
ROWS_PER_STATEMENT = 250
#: The view's text of a time kept as integer microseconds (revision 0014).
_AT_TEXT = (
    "strftime('%Y-%m-%dT%H:%M:%S', ?1 / 1000000, 'unixepoch') "
    "|| printf('.%06d+00:00', ?1 % 1000000)"
)
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_YEAR_10000 = 253_402_300_800


def _escaped_text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _flat(rows: list[Sequence[Param]]) -> list[Param]:
    return [value for row in rows for value in row]


def sqlite_uri(path: str, *, mode: str = "ro", immutable: bool = False) -> str:
    """A ``file:`` URI for `path`, every byte that means something in a URI escaped.

    A name holding ``#``, ``?`` or ``%`` would otherwise end the path early
    (``led#ger.db`` opened a new file ``led``) or be read as a parameter.
    """
    quoted = urllib.parse.quote(os.path.abspath(path), safe="/")
    uri = f"file:{quoted}?mode={mode}"
    return uri + "&immutable=1" if immutable else uri


def on_read_only_media(path: str) -> bool:
    """Whether kasmina cannot write here: a WAL ledger needs its folder writable, too."""
    if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        return True
    return os.path.exists(path) and not os.access(path, os.W_OK)


def _connect_read_only(path: str, timeout: float) -> sqlite3.Connection:
    """A connection that never writes, for a file on media kasmina cannot write.

    A WAL database is read through its ``-shm`` index, which a read-only
    folder cannot hold; SQLite then reads the file only as immutable. That
    is exact unless a write-ahead log lies beside it, which may hold commits
    (its writer was killed before copying them into the file) that SQLite
    reads only with the index: then say so rather than show an older ledger.
    """
    try:
        return _probed(sqlite_uri(path, mode="ro"), timeout)
    except sqlite3.OperationalError:
        wal = path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise DatabaseUnavailable(
                f"cannot read {path}: it is on read-only media and its write-ahead log "
                f"{wal} may hold commits not yet in the file, which SQLite reads only "
                "in a writable folder; copy both files to one"
            ) from None
    return _probed(sqlite_uri(path, mode="ro", immutable=True), timeout)


def _probed(uri: str, timeout: float) -> sqlite3.Connection:
    """Connect and read once: SQLite opens lazily, and a WAL file fails only at the first read."""
    conn = sqlite3.connect(
        uri, uri=True, isolation_level=None, check_same_thread=False, timeout=timeout
    )
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
    except BaseException:
        conn.close()
        raise
    return conn


def peek(path: str, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection that reads `path` and leaves its folder as it was.

    A read-only open of a WAL database makes its ``-wal`` and ``-shm`` files
    where they are missing; while no log lies beside the file, the file is
    whole, and reading it as immutable makes nothing.
    """
    if os.path.exists(path + "-wal"):
        return _connect_read_only(path, timeout)
    return _probed(sqlite_uri(path, mode="ro", immutable=True), timeout)


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
        self._last_second: tuple[int, str] = (-1, "")
        self.busy_retry_s = busy_retry_s
        self.read_only = on_read_only_media(path)
        if self.read_only:
            self._conn = _connect_read_only(path, busy_timeout_ms / 1000)
        else:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
            # Switching a new file to WAL needs it to itself: another process opening
            # it at the same moment gets SQLITE_BUSY at once, without the busy wait.
            self.retry_busy(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self.wal_copier = WalCopier(path)
        self._rows_in_transaction = 0
        #: An INSERT of N rows, by N (`insert_events`).
        self._insert_sql_by_rows: dict[int, str] = {}
        self._holds = FileHolds(path)

    def sql(self, text: str) -> str:
        return text

    def is_duplicate_event_id(self, exc: BaseException) -> bool:
        """The name ``ledger_events.event_id`` is in the unique index's message and in
        that of the trigger refusing a replaced row (revision 0014), which fires first."""
        return isinstance(exc, sqlite3.IntegrityError) and "ledger_events.event_id" in str(exc)

    def is_busy(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return int(code) & 0xFF == sqlite3.SQLITE_BUSY  # and its extended codes
        return "database is locked" in str(exc)

    def ids_filter(self, uuids: list[bytes]) -> tuple[str, list[Param]]:
        return f"event_id IN ({', '.join('?' * len(uuids))})", list(uuids)

    @contextmanager
    def write(self, run_id: str) -> Iterator[Cursor]:
        if self.read_only:
            raise ReadOnlyLedger(
                f"cannot write to {self.path}: the file or its folder is read-only "
                "(the ledger was opened for reading only)"
            )
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
            self.wal_copier.committed(self._rows_in_transaction)

    def insert_events(self, cur: Cursor, rows: Iterable[Sequence[Param]]) -> int | None:
        """Rows go `ROWS_PER_STATEMENT` to an INSERT, the rest in one more.

        Each run of a statement sets up the triggers of revision 0006 anew, so
        one run per row (`executemany`) pays that for every row: with them,
        250-row statements store in about 0.8 of its time (bench/storage.py).
        A statement run by ``execute`` also leaves the last row's position in
        ``lastrowid``, which saves the append a query for its run's tip.
        """
        part: list[Sequence[Param]] = []
        for row in rows:
            part.append(row)
            if len(part) == ROWS_PER_STATEMENT:
                cur.execute(self._insert_rows_sql(ROWS_PER_STATEMENT), _flat(part))
                self._rows_in_transaction += ROWS_PER_STATEMENT
                part.clear()
        if part:
            cur.execute(self._insert_rows_sql(len(part)), _flat(part))
            self._rows_in_transaction += len(part)
        last = cast(sqlite3.Cursor, cur).lastrowid
        return last if type(last) is int and last > 0 else None

    def _insert_rows_sql(self, rows: int) -> str:
        sql = self._insert_sql_by_rows.get(rows)
        if sql is None:
            head, one = self._insert_sql.split(" VALUES ")
            sql = self._insert_sql_by_rows[rows] = f"{head} VALUES {', '.join([one] * rows)}"
        return sql

    def first_open(self) -> AbstractContextManager[None]:
        """Hold the folder lock while an existing file without a schema is migrated."""
        return folder_lock(self.path)

    def fetch(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        with self.lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if not str(exc).startswith("Could not decode to UTF-8"):
                    raise
            # Text that is not UTF-8, which kasmina never writes: read with its bad bytes
            # escaped (\xff), so `verify` names the row and goes on, and others show it.
            self._conn.text_factory = _escaped_text
            try:
                return self._conn.execute(sql, params).fetchall()
            finally:
                self._conn.text_factory = str

    def has_table(self, name: str) -> bool:
        rows = self.fetch(
            "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name=?", (name,)
        )
        return bool(rows)

    def schema_revision(self) -> str | None:
        exists = self.fetch(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        )
        if not exists:
            return None
        rows = self.fetch("SELECT version_num FROM alembic_version")
        return str(rows[0][0]) if rows else None

    def hold_run(self, run_id: str) -> bool:
        return not self.read_only and self._holds.hold(run_id)

    def release_run(self, run_id: str) -> None:
        self._holds.release(run_id)

    def run_alone(self, run_id: str) -> AbstractContextManager[None]:
        return self._holds.alone(run_id)

    def opener(self) -> Callable[[], Store]:
        return partial(SQLiteStore, self.url, self.path)

    def payload_value(self, raw: object) -> Json:
        if type(raw) is not str:  # stored as the hashed text: anything else came by hand
            raise TypeError(f"a payload is stored as text, not {type(raw).__name__}")
        return loads(raw)

    def payload_text(self, raw: object, form: int = 1) -> str:
        return cast(str, raw)  # stored as the hashed text itself, in any format

    def recorded_at_param(self, when: datetime, text: str) -> Param:
        return micros(when)

    def recorded_at_text(self, raw: object) -> str:
        return cast(str, raw)  # stored as the hashed text itself

    def view_id(self, raw: object) -> object:
        return uuid_text(raw) if type(raw) is bytes else raw  # the view dashes any blob

    def view_hash(self, raw: object) -> object:
        return raw.hex() if type(raw) is bytes else raw

    def view_time(self, raw: object) -> object:
        if type(raw) is not int:
            return raw
        seconds, micro = divmod(raw, 1_000_000)
        if not 0 <= seconds < _YEAR_10000:  # where strftime's answer is SQLite's own
            return self.fetch(f"SELECT {_AT_TEXT}", [raw])[0][0]
        second, text = self._last_second  # one tuple: threads may share the store
        if seconds != second:
            text = (_EPOCH + timedelta(0, seconds)).isoformat()
            self._last_second = (seconds, text)
        return f"{text}.{micro:06d}+00:00"

    def recorded_at_value(self, raw: object) -> datetime:
        if type(raw) is int and 0 <= raw < _YEAR_10000 * 1_000_000:  # as stored: `view_time`'s
            return _EPOCH_UTC + timedelta(microseconds=raw)
        return datetime.fromisoformat(cast(str, self.view_time(raw))).astimezone(UTC)

    def readonly_query(
        self, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> tuple[list[str], Iterator[Row]]:
        return open_query(_connect_read_only(self.path, timeout_s), sql, timeout_s)

    def close(self) -> None:
        self._holds.release_all()
        self.wal_copier.close()
        with self.lock:
            self._conn.close()
