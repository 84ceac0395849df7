"""Fixtures of the attack tests: ledgers to attack (helpers in `security.attacks`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgserver import PgServer

from kasmina.ledger import migrate
from security.attacks import OWNER_ROLE, owner_url, record_small_run


@pytest.fixture(scope="session")
def owner_role(pg_server: PgServer) -> str:
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER_ROLE,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER CREATEROLE")
    return OWNER_ROLE


@pytest.fixture
def owner_pg_url(pg_server: PgServer, owner_role: str) -> str:
    """A new database owned by a non-superuser role, migrated by that role."""
    name = f"o{os.getpid()}_{next(_owned)}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER {owner_role}")
    url = owner_url(pg_server, name)
    migrate.upgrade(url)
    return url


_owned = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgres", "postgres-owner"])
def attacked_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger holding one sealed run, on SQLite, PostgreSQL as superuser, and as an owner."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    elif request.param == "postgres":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = request.getfixturevalue("owner_pg_url")
    marker = request.node.get_closest_marker("ledger_format")
    record_small_run(url, ledger_format=marker.args[0] if marker else 2)
    yield url
