"""Translate driver exceptions into kasmina's hierarchy at the ledger boundary."""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote

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


#: ``scheme://user:SECRET@`` inside a longer text (up to the last ``@`` of the word).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.-]*://[^\s:/@]*:)\S*@")
#: ``password=SECRET`` in a query string or a libpq conninfo, quoted or not.
_PARAM_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)(?!\*\*\*)('(?:[^'\\]|\\.)*'?|[^\s&]*)")
#: Shorter secrets are masked only where they sit in a URL or a conninfo:
#: masking every "ab" in a message would garble it for no protection.
_MIN_SECRET = 3


def _secrets(url: str) -> set[str]:
    """The passwords a URL holds, as written, percent-decoded and percent-encoded.

    The user-info password runs from the first ``:`` after the user name to
    the *last* ``@`` (a password may contain ``@``, ``/`` or ``?``), and any
    ``password=`` query parameter counts too.
    """
    found: set[str] = set()
    rest = url.split("://", 1)[1] if "://" in url else ""
    creds = rest[: rest.rfind("@")] if "@" in rest else ""
    if ":" in creds:
        found.add(creds.split(":", 1)[1])
    query = url.split("?", 1)[1] if "?" in url else ""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "password":
            found.add(value)
    found |= {unquote(f) for f in found}
    found |= {quote(f, safe="") for f in found}  # as a driver re-renders the URL
    return {f for f in found if len(f) >= _MIN_SECRET}


def scrub(text: str, url: str) -> str:
    """`text` (an error message, a driver's text) with `url`'s passwords masked.

    Every copy of each password is masked wherever it appears (psycopg's own
    messages can quote the conninfo), then anything shaped like a URL's or a
    conninfo's password, so a password of another URL in the text is masked
    too.
    """
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _PARAM_PASSWORD.sub(r"\1***", text)


def redact(url: str) -> str:
    """A URL fit for an error message: the password is never printed."""
    return scrub(url, url)


def translate_exception(
    exc: BaseException, url: str, unknown_table: Callable[[str], KasminaError] | None = None
) -> KasminaError | None:
    """The kasmina error for a driver error, or None if it is not a driver error.

    A table the database lacks means a ledger without kasmina's schema,
    unless `unknown_table` says otherwise: in a user's own query, whose
    ledger was opened already, it is a name the user got wrong.
    """
    where = redact(url)
    orig = getattr(exc, "orig", None)
    if orig is not None and isinstance(orig, BaseException) and orig is not exc:
        found = translate_exception(orig, url, unknown_table)
        if found is not None:
            return found
    line = scrub(_first_line(exc), url)
    if isinstance(exc, sqlite3.Error):
        lowered = line.lower()
        if "readonly" in lowered or "read-only" in lowered or "not authorized" in lowered:
            return ReadOnlyViolation(f"refused: the SQL path is read-only ({line})")
        if "no such table" in lowered:
            if unknown_table is not None:
                return unknown_table(f"SQLite: {line}")
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
            if unknown_table is not None:
                return unknown_table(f"PostgreSQL: {line}")
            return SchemaMismatch(f"{where} has no kasmina schema ({line}); {UPGRADE_HINT}")
        state = getattr(exc, "sqlstate", None)
        if (
            isinstance(exc, psycopg.OperationalError)
            and not isinstance(exc, errors.QueryCanceled)
            and (state is None or state.startswith(("08", "57P", "53")))
        ):  # no answer, a lost connection, a server shut down or out of resources
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
def translate(
    url: str, unknown_table: Callable[[str], KasminaError] | None = None
) -> Iterator[None]:
    """Re-raise driver errors as kasmina errors; kasmina errors pass through."""
    try:
        yield
    except KasminaError:
        raise
    except Exception as exc:
        found = translate_exception(exc, url, unknown_table)
        if found is None:
            raise
        raise found from exc
