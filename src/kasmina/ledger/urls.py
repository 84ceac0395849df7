"""Database URLs, read in one place so that every malformed one gets the same clear line."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from kasmina.errors import BadDatabaseURL
from kasmina.ledger.errors import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

EXPECTED = "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
PORT_RANGE = "the port must be a whole number from 0 to 65535"


def parse_url(url: str) -> URL:
    """SQLAlchemy's reading of `url`, or `BadDatabaseURL` (password redacted) saying what is wrong.

    SQLAlchemy raises a bare ValueError for a port that is not a number or
    an IPv6 host without its ``]``; those reached the user as a traceback.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise BadDatabaseURL(f"bad database URL {redact(url)!r}: {_problem(url)}") from None
    if parsed.port is not None and not 0 <= parsed.port <= 65535:
        raise BadDatabaseURL(f"bad database URL {redact(url)!r}: {PORT_RANGE}")
    return parsed


def checked_backend(parsed: URL, url: str) -> str:
    """``sqlite`` or ``postgresql`` (through psycopg): the only backends kasmina drives.

    Any other is one line here, rather than SQLAlchemy's import of a driver that is
    not installed (``psycopg2``, ``MySQLdb``) raising from deep inside.
    """
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2", "postgresql", ""):
            raise BadDatabaseURL(
                f"bad database URL {redact(url)!r}: use the psycopg driver "
                "(postgresql+psycopg://...)"
            )
        return backend
    if backend != "sqlite":
        raise BadDatabaseURL(
            f"bad database URL {redact(url)!r}: unsupported backend {backend!r} "
            "(use sqlite or postgresql)"
        )
    return backend


def plain_sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite:///PATH`` (no query, no %-escape), read without
    SQLAlchemy, whose import alone costs a third of a second at every start; None
    for any other URL, which `parse_url` reads. The same file SQLAlchemy would read."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    return path if path and "?" not in path and "%" not in path else None


def _problem(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "the host has an unclosed '[' (an IPv6 address goes in [brackets])"
    try:
        parts.port  # noqa: B018  (reading it is what checks it)
    except ValueError:
        return PORT_RANGE
    return EXPECTED


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names (None for any other database)."""
    plain = plain_sqlite_path(url)
    if plain is not None:
        return plain
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return parsed.database or None


def with_sqlite_path(url: str, path: str) -> str:
    """The same SQLite URL naming another file (its query options kept)."""
    return parse_url(url).set(database=path).render_as_string(hide_password=False)
