"""Translate driver exceptions into kasmina's hierarchy at the ledger boundary."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from kasmina.errors import (
    BadDatabaseURL,
    DatabaseLocked,
    DatabaseUnavailable,
    KasminaError,
    LedgerError,
    QueryError,
    ReadOnlyViolation,
    SchemaMismatch,
)

UPGRADE_HINT = "run `kasmina db upgrade`"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(url: str) -> str:
    """A URL fit for an error message: the password is never printed."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def translate_exception(exc: BaseException, url: str) -> KasminaError | None:
    """The kasmina error for a driver error, or None if it is not a driver error."""
    where = redact(url)
    orig = getattr(exc, "orig", None)
    if orig is not None and isinstance(orig, BaseException) and orig is not exc:
        found = translate_exception(orig, url)
        if found is not None:
            return found
    line = _first_line(exc)
    if isinstance(exc, sqlite3.Error):
        lowered = line.lower()
        if "readonly" in lowered or "read-only" in lowered or "not authorized" in lowered:
            return ReadOnlyViolation(f"refused: the SQL path is read-only ({line})")
        if "no such table" in lowered:
            return SchemaMismatch(f"{where} has no kasmina schema ({line}); {UPGRADE_HINT}")
        if "unable to open" in lowered:
            return DatabaseUnavailable(f"cannot open {where}: {line}")
        if "database is locked" in lowered:
            return DatabaseLocked(f"database {where} is locked by another writer ({line})")
        if isinstance(exc, sqlite3.OperationalError | sqlite3.ProgrammingError):
            return QueryError(f"SQLite: {line}")
        return LedgerError(f"SQLite: {line}")
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        errors = psycopg.errors
        if isinstance(exc, errors.ReadOnlySqlTransaction | errors.InsufficientPrivilege):
            return ReadOnlyViolation(f"refused: the SQL path is read-only ({line})")
        if isinstance(exc, errors.UndefinedTable):
            return SchemaMismatch(f"{where} has no kasmina schema ({line}); {UPGRADE_HINT}")
        if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, errors.QueryCanceled):
            return DatabaseUnavailable(f"cannot reach {where}: {line}")
        if isinstance(exc, psycopg.ProgrammingError | psycopg.DataError):
            return QueryError(f"PostgreSQL: {line}")
        return LedgerError(f"PostgreSQL: {line}")
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None:
        if isinstance(exc, sqlalchemy_exc.ArgumentError | sqlalchemy_exc.NoSuchModuleError):
            return BadDatabaseURL(f"bad database URL {where!r}: {line}")
        if isinstance(exc, sqlalchemy_exc.SQLAlchemyError):
            return LedgerError(f"database error: {line}")
    alembic_util = sys.modules.get("alembic.util.exc")
    if alembic_util is not None and isinstance(exc, alembic_util.CommandError):
        return LedgerError(f"migration: {line}")
    return None


@contextmanager
def translate(url: str) -> Iterator[None]:
    """Re-raise driver errors as kasmina errors; kasmina errors pass through."""
    try:
        yield
    except KasminaError:
        raise
    except Exception as exc:
        found = translate_exception(exc, url)
        if found is None:
            raise
        raise found from exc
