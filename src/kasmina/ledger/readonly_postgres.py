"""`kasmina sql` on PostgreSQL: one query, read only, timed, as a reader that cannot switch back.

The walls, each one stopping what the others let through:

1. The text is parsed by the server, never run, before anything else: the
   extended protocol takes one statement only, and the same text behind
   ``DECLARE ... CURSOR FOR`` must be a plain query (no COMMIT, SET, COPY,
   DO, CALL, LOCK, LISTEN, no data-modifying WITH). Parsing evaluates
   nothing, so no function of the text has run yet.
2. A READ ONLY transaction with ``SET LOCAL`` statement, lock and
   idle-in-transaction timeouts, and a check of the client's socket so that
   a killed client's query is cancelled by the server.
3. ``SET LOCAL ROLE kasmina_reader``: SELECT on kasmina's tables and views,
   nothing else, so ``pg_read_file``, ``lo_export``, ``pg_reload_conf`` fail
   by privilege.
4. The query runs inside `kasmina_reader_rows`, a SECURITY DEFINER function
   owned by the reader (migration 0007). A superuser's session can otherwise
   switch back within one SELECT (``set_config('role', 'postgres', true)``)
   and have ``query_to_xml`` or ``dblink`` run a query string as itself;
   inside a security-definer function PostgreSQL refuses to change ``role``
   or ``session_authorization`` at all, for the query and for any query
   string it runs.

Rows come through a server-side cursor, a thousand at a time, so the client's
memory does not grow with the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql as pgsql

from kasmina.errors import LedgerError, QueryError, ReadOnlyViolation, SchemaMismatch
from kasmina.ledger.errors import UPGRADE_HINT
from kasmina.ledger.readonly import (
    READER_ROLE,
    not_a_query,
    several_statements,
    timed_out,
)
from kasmina.ledger.store import Row

_FUNCTION = "kasmina_reader_rows"
_BATCH = 1000
#: How often the server looks whether the client is still there, in milliseconds (PG 14+).
_CLIENT_CHECK_MS = 1000


def open_query(
    conn: psycopg.Connection[Row], query: str, timeout_s: float, where: str
) -> tuple[list[str], Iterator[Row]]:
    """Columns and rows of `query` on `conn`, which the rows' iterator closes when done."""
    with _refusals(timeout_s):
        _begin(conn, timeout_s, where)
        names, types = _describe(conn, query)
        cur = conn.cursor(name="kasmina_sql")
        columns = pgsql.SQL(", ").join(
            pgsql.SQL("{} {}").format(pgsql.Identifier(f"c{i}"), pgsql.SQL(t))
            for i, t in enumerate(types)
        )
        cur.execute(
            pgsql.SQL("SELECT * FROM {}(%s) AS t({})").format(pgsql.Identifier(_FUNCTION), columns),
            (query,),
        )

    def rows() -> Iterator[Row]:
        try:
            with _refusals(timeout_s):
                while batch := cur.fetchmany(_BATCH):
                    yield from batch
        finally:
            conn.close()  # the transaction ends with it, never committed

    return names, rows()


def _begin(conn: psycopg.Connection[Row], timeout_s: float, where: str) -> None:
    ms = str(max(1, round(timeout_s * 1000)))
    settings = ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"]
    values = [ms, ms, ms]
    if conn.info.server_version >= 140000:
        settings.append("client_connection_check_interval")
        values.append(str(_CLIENT_CHECK_MS))
    calls = pgsql.SQL(", ").join(pgsql.SQL("set_config(%s, %s, true)") for _ in settings)
    conn.execute(
        pgsql.SQL("SELECT {}").format(calls),
        [item for pair in zip(settings, values, strict=True) for item in pair],
    )
    found = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s),"
        " (SELECT prosecdef AND pg_get_userbyid(proowner) = %s FROM pg_proc"
        "  WHERE oid = to_regprocedure(%s))",
        (READER_ROLE, READER_ROLE, f"{_FUNCTION}(text)"),
    ).fetchone()
    if found is None or not found[0] or found[1] is None:
        raise SchemaMismatch(
            f"{where} has no read-only role {READER_ROLE} for kasmina sql; {UPGRADE_HINT}"
        )
    if not found[1]:
        raise ReadOnlyViolation(
            f"refused: {_FUNCTION}(text) is not the security-definer function of "
            f"{READER_ROLE} that migration 0007 made"
        )
    try:
        conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(READER_ROLE)))
    except psycopg.errors.InsufficientPrivilege:
        login = conn.info.parameter_status("session_authorization") or "this login role"
        raise ReadOnlyViolation(
            f"role {login} may not use {READER_ROLE}: the database owner runs "
            f"`kasmina db grant-reader {login}`"
        ) from None


def _describe(conn: psycopg.Connection[Row], query: str) -> tuple[list[str], list[str]]:
    """Column names and SQL types of `query`, from the server's parser alone (nothing runs)."""
    pgconn = conn.pgconn
    encoding = conn.info.encoding
    text = query.encode(encoding)
    refused = _parse(conn, b"DECLARE kasmina_check NO SCROLL CURSOR FOR " + text)
    if refused is not None:
        message = _first_line(refused)
        if "multiple commands" in message:
            raise several_statements()
        if not isinstance(refused, psycopg.errors.SyntaxError | psycopg.errors.FeatureNotSupported):
            raise refused
    failed = _parse(conn, text)
    if refused is not None:  # a plain typo fails alone too, and is reported as such
        if isinstance(failed, psycopg.errors.SyntaxError):
            raise failed
        raise not_a_query(_first_line(refused))
    if failed is not None:
        raise failed
    described = pgconn.describe_prepared(b"")
    if described.status != psycopg.pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(described, encoding=encoding)
    names = [(described.fname(i) or b"").decode(encoding) for i in range(described.nfields)]
    oids = [described.ftype(i) for i in range(described.nfields)]
    mods = [described.fmod(i) for i in range(described.nfields)]
    if not names:
        raise QueryError("the query returns no columns; name at least one")
    types = conn.execute(
        "SELECT format_type(u.t, u.m), typtype FROM unnest(%s::oid[], %s::int[])"
        " WITH ORDINALITY AS u(t, m, i) JOIN pg_type ON pg_type.oid = u.t ORDER BY u.i",
        (oids, mods),
    ).fetchall()
    for name, (typename, kind) in zip(names, types, strict=True):
        if kind == "p":
            raise QueryError(f"column {name!r} has the pseudo-type {typename}; cast it (::text)")
    return names, [str(typename) for typename, _ in types]


def _parse(conn: psycopg.Connection[Row], text: bytes) -> psycopg.Error | None:
    """Parse `text` as the unnamed statement: the server's error, or None if it parses."""
    result = conn.pgconn.prepare(b"", text)
    if result.status == psycopg.pq.ExecStatus.COMMAND_OK:
        return None
    return psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def _refusals(timeout_s: float) -> Iterator[None]:
    """The server's refusals in kasmina's words; any other error is left to `translate`."""
    try:
        yield
    except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
        if "timeout" not in str(exc):
            raise
        raise timed_out(timeout_s) from None
    except psycopg.errors.FeatureNotSupported as exc:
        if "non-volatile" not in str(exc):
            raise
        raise ReadOnlyViolation(
            f"refused: the SQL path is read-only ({_first_line(exc)})"
        ) from None


def grant_reader(conn: psycopg.Connection[Row], role: str, where: str) -> None:
    """Make login `role` a member of `kasmina_reader` (on an autocommit `conn`).

    The name comes from the command line: it reaches SQL as a parameter or
    quoted as an identifier, never spliced.
    """
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone():
        raise SchemaMismatch(f"{where} has no role {READER_ROLE} yet; {UPGRADE_HINT}")
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        raise LedgerError(f"no role {role!r} in this PostgreSQL cluster; create the login first")
    try:
        conn.execute(
            pgsql.SQL("GRANT {} TO {}").format(
                pgsql.Identifier(READER_ROLE), pgsql.Identifier(role)
            )
        )
    except psycopg.Error as exc:
        raise LedgerError(
            f"cannot grant {READER_ROLE} to {role!r}: {_first_line(exc)} (the role that "
            "ran `kasmina db upgrade`, or a superuser, may)"
        ) from None
