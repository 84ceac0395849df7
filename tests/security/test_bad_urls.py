"""A malformed PostgreSQL URL is one line naming what is wrong, its password redacted.

A port that is not a number and an IPv6 host without its ``]`` raised a bare
ValueError from SQLAlchemy's URL parser: a traceback, password and all.
"""

from __future__ import annotations

import pytest

from kasmina.errors import BadDatabaseURL
from kasmina.ledger import Ledger, migrate
from security.attacks import cli_error

PORT = "the port must be a whole number from 0 to 65535"
IPV6 = "the host has an unclosed '['"

CASES = [
    ("postgresql+psycopg://u@localhost:abc/db", "postgresql+psycopg://u@localhost:abc/db", PORT),
    (
        "postgresql+psycopg://u:hunter2@localhost:abc/db",
        "postgresql+psycopg://u:***@localhost:abc/db",
        PORT,
    ),
    ("postgresql+psycopg://u@[::1/db", "postgresql+psycopg://u@[::1/db", IPV6),
    ("postgresql+psycopg://u:hunter2@[::1/db", "postgresql+psycopg://u:***@[::1/db", IPV6),
    (
        "postgresql+psycopg://u:hunter2@localhost:99999/db",
        "postgresql+psycopg://u:***@localhost:99999/db",
        PORT,
    ),
]
COMMANDS = [
    ["runs"],
    ["verify"],
    ["sql", "SELECT 1"],
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "downgrade", "base"],
]


@pytest.mark.parametrize(("url", "shown", "reason"), CASES)
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: "-".join(a))
def test_a_malformed_url_is_one_redacted_line(
    url: str, shown: str, reason: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    line = cli_error(capsys, ["--db", url, *args])
    assert line.startswith(f"error: bad database URL {shown!r}: {reason}"), line
    assert "hunter2" not in line


@pytest.mark.parametrize(("url", "shown", "reason"), CASES[:4])
def test_python_callers_get_the_same_error(url: str, shown: str, reason: str) -> None:
    for attempt in (lambda: Ledger.open(url), lambda: migrate.upgrade(url)):
        with pytest.raises(BadDatabaseURL) as caught:
            attempt()
        assert str(caught.value).startswith(f"bad database URL {shown!r}: {reason}")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: "-".join(a))
def test_a_backend_kasmina_does_not_drive_is_one_line_for_every_command(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`db upgrade` and `downgrade` imported the driver the URL named (MySQLdb): a
    ModuleNotFoundError traceback where every other command said which backends there are."""
    url = "mysql://u:hunter2@127.0.0.1:1/db"
    line = cli_error(capsys, ["--db", url, *args])
    assert line == (
        "error: bad database URL 'mysql://u:***@127.0.0.1:1/db': unsupported backend 'mysql' "
        "(use sqlite or postgresql)"
    )


def test_migrations_reach_postgresql_through_psycopg_whatever_driver_the_url_names(
    pg_url: str,
) -> None:
    """Every other command connects with psycopg for a ``postgresql+psycopg2://`` URL;
    migrations asked SQLAlchemy for psycopg2, which is not installed."""
    other = pg_url.replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)
    assert other != pg_url
    migrate.upgrade(other)
    with Ledger.open(other) as ledger:
        assert ledger.revision == migrate.HEAD_REVISION
