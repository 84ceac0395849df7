"""Alembic, driven from Python: the only way kasmina creates or changes a schema."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kasmina.errors import (
    DatabaseUnavailable,
    LedgerError,
    LedgerNotFound,
    ReadOnlyLedger,
    SchemaMismatch,
    WouldLoseData,
)
from kasmina.ledger.errors import redact, translate
from kasmina.ledger.urls import sqlite_path, with_sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

#: The revision this code reads and writes. A test holds it equal to Alembic's
#: head, so it cannot drift; it is a constant so that opening a ledger does not
#: have to import Alembic.
HEAD_REVISION = "0016"


def migrations_dir() -> Path:
    """The migrations shipped in the wheel, or those of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_migrations", here.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise LedgerError("kasmina's migrations are missing from this installation")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config(stdout=sys.stdout)  # its default is the stdout of when Alembic was imported
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _engine_url(url: str) -> str:
    """`url` for SQLAlchemy: a backend kasmina drives (else one line), PostgreSQL always
    through psycopg, the driver kasmina's own sessions use whatever the URL names."""
    from kasmina.ledger.urls import checked_backend, parse_url

    if url.startswith("postgres://"):  # a spelling SQLAlchemy no longer reads
        url = "postgresql://" + url.split("://", 1)[1]
    parsed = parse_url(url)
    if checked_backend(parsed, url) == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


#: What undoing each revision drops that nothing can rebuild: how to say it, and a
#: query counting the events concerned and their runs. Snapshots (0002) are a
#: cache that replay rebuilds and views are derived, so undoing those loses
#: nothing. A revision missing here is refused without ``--discard-data``:
#: whoever adds a migration decides what its downgrade loses.
DOWNGRADE_LOSSES: dict[str, tuple[str, str] | None] = {
    "0001": ("{events} in {runs}", "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM events"),
    "0002": None,
    "0003": None,
    "0004": None,
    "0005": (
        "the rank of {events} in {runs}",
        "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM events WHERE rank IS NOT NULL",
    ),
    "0006": None,
    "0007": None,
    "0008": None,
    "0009": None,
    "0010": None,
    "0011": None,
    "0012": None,
    "0013": (
        "the ledger format of {events} in {runs} (they would no longer verify)",
        "SELECT COUNT(*), COUNT(DISTINCT e.run_id) FROM events e "
        "JOIN ledger_runs r ON r.run_id = e.run_id WHERE r.format >= 2",
    ),
    "0014": None,
    "0015": None,
    "0016": None,
}

#: The revision that makes the events table: undoing it drops every event.
EVENTS_REVISION = "0001"

#: The tables kasmina's migrations make (the views are `schema.VIEWS`), for repairs.
_KASMINA_TABLES = frozenset(
    {
        "alembic_version",
        "events",
        "snapshots",
        "ledger_runs",
        "ledger_streams",
        "ledger_events",
        "ledger_types",
        "run_tips",
    }
)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate up to `revision`; a new SQLite file is made whole or not at all.

    A SQLite file that older kasmina versions left half-migrated (tables but
    no revision, no events) is rebuilt; one holding events is refused.
    """
    from alembic import command

    def step(cfg: Config) -> None:
        command.upgrade(cfg, revision)

    path = sqlite_path(url)
    if path is not None and not os.path.lexists(path):
        from kasmina.ledger.creation import create_file

        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise DatabaseUnavailable(f"cannot create {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise DatabaseUnavailable(f"cannot create {path}: folder {folder} is not writable")
        if create_file(path, lambda building: _run(step, with_sqlite_path(url, building))):
            return
    _refuse_read_only(path)
    _run(step, url, prepare=lambda conn: _repair_half_made(conn, url))


def downgrade(url: str, revision: str, *, discard_data: bool = False) -> list[str]:
    """Migrate down to `revision`; what that would drop of the recorded data is refused.

    With `discard_data` it is dropped; returns what was (empty if nothing).
    The count and the downgrade are one transaction that holds off writers,
    so nothing appended meanwhile is dropped uncounted.
    """
    from alembic import command

    path = sqlite_path(url)
    if path is not None and not os.path.lexists(path):
        raise LedgerNotFound(path)
    if path is not None:
        with translate(url):
            holds = sqlite_holds(path)
        if holds != "ledger":
            raise SchemaMismatch(f"{redact(url)} holds no kasmina schema to downgrade")
    _refuse_read_only(path)
    lost: list[str] = []
    targets: list[str] = []

    def prepare(conn: Connection) -> None:
        target, found = _losses(conn, revision)
        targets.append(target)
        lost.extend(found)
        if lost and not discard_data:
            raise WouldLoseData(
                f"downgrade to {revision} would drop {' and '.join(lost)}; "
                "pass --discard-data to drop them"
            )

    # Alembic is handed the revision whose losses were counted, never the words that named it.
    _run(lambda cfg: command.downgrade(cfg, targets[0]), url, prepare=prepare)
    return lost


def _refuse_read_only(path: str | None) -> None:
    from kasmina.ledger.sqlite import on_read_only_media

    if path is not None and on_read_only_media(path):
        raise ReadOnlyLedger(f"cannot migrate {path}: the file or its folder is read-only")


def _losses(conn: Connection, target: str) -> tuple[str, list[str]]:
    """The revision `target` names, and what going down to it would drop."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        raise SchemaMismatch(f"{redact(str(conn.engine.url))} has no kasmina schema to downgrade")
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    resolved = _downgrade_target(script, current, target)
    return resolved, _dropped(conn, _undone(script, current, resolved))


def _dropped(conn: Connection, undone: list[str]) -> list[str]:
    if conn.dialect.name == "postgresql" and any(DOWNGRADE_LOSSES.get(r, ()) for r in undone):
        conn.exec_driver_sql("LOCK TABLE events IN SHARE MODE")  # appends wait for the commit
    found = []
    for rev in reversed(undone):  # oldest first: dropping the events says all
        if rev not in DOWNGRADE_LOSSES:
            found.append(f"whatever revision {rev} added (kasmina does not know what it holds)")
            continue
        check = DOWNGRADE_LOSSES[rev]
        if check is None:
            continue
        what, query = check
        events, runs = conn.exec_driver_sql(query).one()
        if events:
            found.append(what.format(events=_counted(events, "event"), runs=_counted(runs, "run")))
            if rev == EVENTS_REVISION:
                return found
    return found


def _downgrade_target(script: ScriptDirectory, current: str, target: str) -> str:
    """`target` as one revision id (or ``base``): a revision's own id, ``base``, or ``-N``
    (N revisions below `current`).

    Alembic reads more (``0013-1``, ``head-2``, ``base+1``, id prefixes), and
    the losses must be counted for exactly the revision it goes to, so every
    other spelling is refused rather than resolved a second way.
    """
    known = [r.revision for r in script.walk_revisions()]
    if target == "base" or target in known:
        return target
    steps = target[1:]
    if target.startswith("-") and steps.isascii() and steps.isdigit() and int(steps) > 0:
        down: Any = current
        for _ in range(int(steps)):
            if not isinstance(down, str):
                raise LedgerError(
                    f"cannot go down {steps} revisions from {current}: base comes first"
                )
            down = script.get_revision(down).down_revision
        return down if isinstance(down, str) else "base"
    raise LedgerError(
        f"downgrade target {target!r} is not a revision: give one of {', '.join(reversed(known))}"
        ", base, or -N (N revisions down)"
    )


def _undone(script: ScriptDirectory, current: str, target: str) -> list[str]:
    """The revisions a downgrade from `current` to `target` (a `_downgrade_target`) undoes,
    newest first; none where it is no downgrade (Alembic's own error says so next)."""
    from alembic.script.revision import RevisionError

    try:
        return [r.revision for r in script.iterate_revisions(current, target)]
    except RevisionError:
        return []


def _counted(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _ours(kinds: dict[str, str]) -> set[str]:
    """The tables and views (name: kind) that kasmina's migrations make."""
    from kasmina.ledger.schema import VIEWS

    return {
        name
        for name, kind in kinds.items()
        if (kind == "view" and (name in VIEWS or name == "events"))
        or (kind == "table" and (name in _KASMINA_TABLES or name.startswith("_alembic_tmp_")))
    }


def sqlite_holds(path: str) -> Literal["ledger", "empty", "other"]:
    """What an existing SQLite file holds, read without changing it or its folder.

    Opening it as a ledger switches it to WAL for good, and creating writes
    kasmina's schema into it; neither may happen to another program's
    database, nor on a read that finds no ledger. A table named ``events``
    or ``alembic_version`` is common elsewhere, so a ledger is known by its
    own table, by a kasmina revision, or as a first migration cut short.
    """
    from kasmina.ledger.sqlite import peek

    conn = peek(path)
    try:
        kinds = {
            str(name): str(kind)
            for kind, name in conn.execute(
                "SELECT type, name FROM sqlite_master "
                "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
            )
        }
        if not kinds:
            return "empty"
        if kinds.get("ledger_events") == "table":
            return "ledger"
        if kinds.get("alembic_version") == "table":
            revisions = [str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version")]
            if any(r in DOWNGRADE_LOSSES for r in revisions):
                return "ledger"
            if not revisions and _ours(kinds) == set(kinds):
                return "ledger"  # half made: `upgrade` repairs it
        return "other"
    finally:
        conn.close()


def _repair_half_made(conn: Connection, url: str) -> None:
    """Drop the schema an interrupted first migration of an older kasmina left.

    SQLite's DDL committed statement by statement then, so a kill left an
    empty ``alembic_version`` and some of the tables, and Alembic, starting
    from scratch, stopped at ``table events already exists``. Without events
    nothing is lost by starting again. Events are never dropped, and a file
    holding anything that is not kasmina's is left to Alembic as it is.
    """
    from alembic.migration import MigrationContext

    if conn.dialect.name != "sqlite" or MigrationContext.configure(conn).get_current_revision():
        return
    kinds = {
        str(name): str(kind)
        for kind, name in conn.exec_driver_sql(
            "SELECT type, name FROM sqlite_master "
            "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
        )
    }
    for table in ("events", "_alembic_tmp_events", "ledger_events"):
        if kinds.get(table) == "table":
            (events,) = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").one()
            if events:
                raise SchemaMismatch(
                    f"{redact(url)} holds {_counted(events, 'event')} but no schema "
                    "revision; kasmina will not rebuild it, which would drop them"
                )
    ours = _ours(kinds)
    if "alembic_version" not in kinds or ours != set(kinds):
        return
    for name in sorted(ours, key=lambda n: kinds[n] != "view"):  # views before their tables
        conn.exec_driver_sql(f'DROP {kinds[name].upper()} "{name}"')


def check(url: str) -> None:
    """Raise if the models and the migrated database differ (``alembic check``)."""
    from alembic import command

    _run(lambda cfg: command.check(cfg), url)


def script_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _run(
    step: Callable[[Config], object],
    url: str,
    prepare: Callable[[Connection], None] | None = None,
) -> None:
    """Run `step` (after `prepare`) in one transaction: all of it commits, or none."""
    from sqlalchemy import create_engine, pool

    with translate(url):
        engine = create_engine(_engine_url(url), poolclass=pool.NullPool)
    try:
        if engine.dialect.name == "sqlite":
            _one_transaction(engine)
        else:  # a migration binds the functions its views call: PostgreSQL's own
            from sqlalchemy import event

            from kasmina.ledger.postgres import catalog_first

            event.listen(engine, "connect", lambda dbapi, _record: catalog_first(dbapi))
        with translate(url), engine.begin() as conn:
            if prepare is not None:
                prepare(conn)
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            step(cfg)
    finally:
        engine.dispose()


def _one_transaction(engine: Engine) -> None:
    """Make a SQLite migration one transaction, as it is on PostgreSQL.

    pysqlite sends no BEGIN before DDL, so each CREATE committed on its own
    and a migration killed midway left half a schema (or a batch
    migration's copy of the events table, half renamed). BEGIN IMMEDIATE
    also takes the write lock first: no append lands between a downgrade's
    count of what it drops and the drop.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
