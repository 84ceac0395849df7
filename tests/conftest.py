from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from needs import missing  # noqa: E402
from pgserver import PgServer, start_server  # noqa: E402

from kasmina.ledger import Ledger, migrate  # noqa: E402

TEMPLATE = "kasmina_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = start_server()
    except RuntimeError as exc:
        missing(f"no PostgreSQL server: {exc}")
    try:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        migrate.upgrade(server.url(TEMPLATE))
        yield server
    finally:
        server.stop()


def new_pg_database(server: PgServer, *, migrated: bool = True) -> str:
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        template = f" TEMPLATE {TEMPLATE}" if migrated else ""
        conn.execute(f"CREATE DATABASE {name}{template}")
    return server.url(name)


DEMO_RUN = "demo"


@pytest.fixture(scope="session")
def demo_ledgers(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Ledger]]:
    """The default demo recorded on SQLite and on PostgreSQL as run ``demo``; read only.

    The demo is deterministic, so both databases hold the same events and any
    query over them must give the same rows.
    """
    from kasmina.demo import run_demo

    urls = {
        "sqlite": f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}",
        "postgres": new_pg_database(pg_server),
    }
    opened = {name: Ledger.open(url) for name, url in urls.items()}
    try:
        for ledger in opened.values():
            run_demo(ledger, run_id=DEMO_RUN)
        yield opened
    finally:
        for ledger in opened.values():
            ledger.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return new_pg_database(pg_server)


@pytest.fixture
def empty_pg_url(pg_server: PgServer) -> str:
    return new_pg_database(pg_server, migrated=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """One URL per backend: the contract suite runs once on each."""
    if backend == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    led = Ledger.open(db_url)
    yield led
    led.close()
