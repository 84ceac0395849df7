"""Shared fixtures of the attack tests: ledgers to attack, and proof that nothing changed.

Every attack test records a `fingerprint` of the ledger before the attack and
asserts it is equal afterwards: the rows (their hashes, in order), the
triggers and whether they are enabled, the roles of a PostgreSQL cluster, the
files beside a SQLite ledger, and `verify`'s verdict.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rawdb  # noqa: E402
from helpers import sample  # noqa: E402
from pgserver import PgServer  # noqa: E402

from kasmina.ledger import Ledger, migrate  # noqa: E402

#: A login role that owns its database but is not a superuser (CREATEROLE, so
#: that it can run every migration itself, as a team's owner account would).
OWNER_ROLE = "kasmina_owner"


@dataclass(frozen=True)
class Fingerprint:
    rows: str
    count: int
    triggers: tuple[tuple[str, str], ...]
    roles: tuple[tuple[object, ...], ...]
    files: tuple[str, ...]
    verified: bool

    def __str__(self) -> str:
        return (
            f"{self.count} rows ({self.rows[:12]}), triggers {self.triggers}, "
            f"files {self.files}, verify ok={self.verified}"
        )


def fingerprint(url: str) -> Fingerprint:
    """What an attack must leave exactly as it was."""
    rows = rawdb.run(url, "SELECT position, event_id, hash FROM events ORDER BY position")
    digest = hashlib.sha256(repr(rows).encode()).hexdigest()
    if url.startswith("sqlite"):
        triggers = tuple(
            (str(name), "enabled")
            for (name,) in rawdb.run(
                url, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
            )
        )
        roles: tuple[tuple[object, ...], ...] = ()
        folder = Path(url.split(":///", 1)[1]).parent
        files = tuple(
            sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))
        )
    else:
        triggers = tuple(
            (str(name), str(enabled))
            for name, enabled in rawdb.run(
                url,
                "SELECT tgname, tgenabled FROM pg_trigger "
                "WHERE tgrelid = 'events'::regclass AND NOT tgisinternal ORDER BY tgname",
            )
        )
        roles = tuple(
            tuple(r)
            for r in rawdb.run(
                url,
                "SELECT rolname, rolsuper, rolcreaterole, rolcanlogin, rolbypassrls "
                "FROM pg_roles ORDER BY rolname",
            )
        )
        files = ()
    with Ledger.open(url) as ledger:
        verified = ledger.verify().ok
    return Fingerprint(digest, len(rows), triggers, roles, files, verified)


def record_small_run(url: str, run_id: str = "victim") -> None:
    """A sealed run of a few events, the thing every attack tries to change."""
    with Ledger.open(url) as ledger:
        run = ledger.start_run(name="victim", seed=1, config={"epochs": 2}, run_id=run_id)
        ledger.append([sample(run_id, n=n) for n in range(5)])
        run.finish()


@pytest.fixture(scope="session")
def owner_role(pg_server: PgServer) -> str:
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER_ROLE,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER CREATEROLE")
    return OWNER_ROLE


def owner_url(server: PgServer, database: str) -> str:
    return f"postgresql+psycopg://{OWNER_ROLE}@/{database}?host={server.base}&port={server.port}"


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
    record_small_run(url)
    yield url
