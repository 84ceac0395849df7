"""The PostgreSQL backend (psycopg 3): the shared store for many writers.

Appends to one run take a transaction-scoped advisory lock keyed by the run,
so positions within a run are handed out in commit order: a reader tailing a
run from a position never misses an event that commits later with a lower one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import psycopg
from psycopg.types.json import set_json_loads

from kasmina.canonical import Json, dumps_canonical, loads
from kasmina.errors import LedgerError, RunHeld
from kasmina.ids import uuid_text
from kasmina.jcs import stored_jcs_text
from kasmina.ledger.errors import redact, translate
from kasmina.ledger.readonly import DEFAULT_TIMEOUT_S
from kasmina.ledger.readonly_postgres import grant_reader, open_query
from kasmina.ledger.store import INSERT_COLUMNS, Cursor, Param, Row, Store

#: Held while a run starts (`Store.lock_run_starts`): "kasm", 1.
_RUN_STARTS_LOCK = (0x6B61736D, 1)

_COPY = f"COPY ledger_events ({', '.join(INSERT_COLUMNS)}) FROM STDIN"


#: Writer holds (`kasmina.ledger.writers`): session advisory locks, which the server
#: drops with the session, keyed apart from the appends' transaction locks.
_HOLD_SHARED = "SELECT pg_try_advisory_lock_shared(hashtextextended(%s, 0))"
_RELEASE_SHARED = "SELECT pg_advisory_unlock_shared(hashtextextended(%s, 0))"
_HOLD_ALONE = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
_RELEASE_ALONE = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"


def _stored_json(text: str | bytes) -> Json:
    """A JSONB value as read; text no parser takes (nested past 1,024 levels, an
    integer of thousands of digits) as that text, for `verify` to name as a payload
    that is not an object, rather than stopping every reader inside the driver."""
    try:
        return loads(text)
    except (ValueError, RecursionError):
        return text if isinstance(text, str) else text.decode("utf-8", "backslashreplace")


def catalog_first(conn: Any) -> None:
    """Leave ``pg_catalog`` out of the session's ``search_path``, which puts it first.

    A database's owner may set its ``search_path`` to name a schema of theirs
    before ``pg_catalog`` and put functions there named like PostgreSQL's
    (``set_config``, ``to_regclass``): any session that then calls the bare
    name, a superuser's included, runs the owner's code as itself. Named
    nowhere, ``pg_catalog`` is searched before every schema, while
    ``current_schema()`` stays the ledger's. `conn` is a DB-API connection
    (psycopg's own, or the one beneath SQLAlchemy); the change is committed.
    """
    with conn.cursor() as cur:
        cur.execute("SHOW search_path")
        (path,) = cur.fetchone()
        kept = [
            name
            for name in (part.strip() for part in str(path).split(","))
            if name and name not in ("pg_catalog", '"pg_catalog"')
        ]
        cur.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (", ".join(kept),))
    if not getattr(conn, "autocommit", False):
        conn.commit()


def _hold_key(run_id: str) -> str:
    return f"kasmina writer {run_id}"


class PostgresStore(Store):
    dialect = "postgresql"
    payload_placeholder = "CAST(? AS jsonb)"
    streams_rows = True

    def __init__(self, url: str, conninfo: str, *, connect_timeout: int = 5) -> None:
        super().__init__(url)
        self._conninfo = conninfo
        self._timeout = connect_timeout
        self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout)
        catalog_first(self._conn)
        # Times then load as UTC, which `recorded_at_value` keeps as they are; in the
        # server's zone, psycopg converted each row's time to it and we back again.
        self._conn.execute("SET TIME ZONE 'UTC'")
        #: The runs whose writer hold this session shares (`kasmina.ledger.writers`).
        self._held: set[str] = set()
        set_json_loads(_stored_json, self._conn)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def is_duplicate_event_id(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, psycopg.errors.UniqueViolation)
            and exc.diag.constraint_name == "uq_ledger_events_event_id"
        )

    def ids_filter(self, uuids: list[bytes]) -> tuple[str, list[Param]]:
        return "event_id = ANY(%s)", [uuids]

    @contextmanager
    def write(self, run_id: str) -> Iterator[Cursor]:
        with self.lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (run_id,))
            yield cast(Cursor, cur)

    def insert_events(self, cur: Cursor, rows: Iterable[Sequence[Param]]) -> None:
        """One ``COPY`` per batch: a stream of rows, not a statement per row.

        Unique violations (a retried ``event_id``, a version taken) are raised
        by COPY exactly as by INSERT, so the ledger's retry logic is the same.
        Rows are sent as they are made, so the server inserts while the
        ledger hashes the rest (`Store.streams_rows`).
        """
        with cast(psycopg.Cursor[Row], cur).copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)

    def fetch(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        with self.lock, self._conn.cursor() as cur:
            cur.execute(self.sql(sql), params)
            return cur.fetchall()

    def has_table(self, name: str) -> bool:
        rows = self.fetch("SELECT to_regclass(?) IS NOT NULL", (name,))
        return bool(rows and rows[0][0])

    def schema_revision(self) -> str | None:
        exists = self.fetch("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not exists or not exists[0][0]:
            return None
        try:
            rows = self.fetch("SELECT version_num FROM alembic_version")
        except psycopg.errors.InsufficientPrivilege:
            login = self._conn.info.user
            raise LedgerError(
                f"login {login!r} may not read this ledger; its owner can let it read: "
                f"kasmina db grant-reader {login}"
            ) from None
        return str(rows[0][0]) if rows else None

    def hold_run(self, run_id: str) -> bool:
        """Best effort, as on SQLite: a lost connection fails the append, not this."""
        if run_id in self._held:
            return False
        try:
            with self.lock:
                got = self._conn.execute(_HOLD_SHARED, (_hold_key(run_id),)).fetchone()
        except psycopg.Error:
            return False
        if got and got[0]:
            self._held.add(run_id)
            return True
        return False

    def release_run(self, run_id: str) -> None:
        if run_id in self._held:
            self._held.discard(run_id)
            try:
                with self.lock:
                    self._conn.execute(_RELEASE_SHARED, (_hold_key(run_id),))
            except psycopg.Error:
                pass  # the server lets go with the session

    @contextmanager
    def run_alone(self, run_id: str) -> Iterator[None]:
        self.release_run(run_id)
        with self.lock:
            got = self._conn.execute(_HOLD_ALONE, (_hold_key(run_id),)).fetchone()
        if not (got and got[0]):
            raise RunHeld(run_id, "a session still connected to the database")
        try:
            yield
        finally:
            with self.lock:
                self._conn.execute(_RELEASE_ALONE, (_hold_key(run_id),))

    def opener(self) -> Callable[[], Store]:
        return partial(PostgresStore, self.url, self._conninfo, connect_timeout=self._timeout)

    def payload_value(self, raw: object) -> Json:
        return cast(Json, raw)

    def payload_text(self, raw: object, form: int = 1) -> str:
        if form >= 2:
            return stored_jcs_text(cast(Json, raw))
        return dumps_canonical(cast(Json, raw))

    def view_id(self, raw: object) -> object:
        if type(raw) is not bytes:  # an older ledger's text
            return raw
        return uuid_text(raw) if len(raw) == 16 else raw.lstrip(b"\0").decode(errors="replace")

    def lock_run_starts(self, cur: Cursor) -> None:
        # The two-key form: a key space apart from the runs' one-key locks.
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _RUN_STARTS_LOCK)

    def recorded_at_param(self, when: datetime, text: str) -> Param:
        return when

    def recorded_at_value(self, raw: object) -> datetime:
        return cast(datetime, raw).astimezone(UTC)

    def readonly_query(
        self, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> tuple[list[str], Iterator[Row]]:
        conn = psycopg.connect(
            self._conninfo, connect_timeout=self._timeout, application_name="kasmina sql"
        )
        try:
            catalog_first(conn)
            set_json_loads(_stored_json, conn)
            conn.read_only = True
            return open_query(conn, sql, timeout_s, redact(self.url))
        except BaseException:
            conn.close()
            raise

    def grant_reader(self, role: str) -> None:
        """Let login `role` use the read-only role (``kasmina db grant-reader``)."""
        with self.lock, translate(self.url):
            grant_reader(self._conn, role, redact(self.url))

    def close(self) -> None:
        """Let go of every run this session holds, then disconnect.

        The server would drop the holds with the session, but only once its
        backend has wound down, after ``close`` has returned: another
        session asking at once could still find the run held.
        """
        if self._held:
            self._held.clear()
            try:
                with self.lock:
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                pass  # the server lets go with the session
        with self.lock:
            self._conn.close()
