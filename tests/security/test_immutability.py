"""No back door around immutability: replace, upsert, replication role, hand-placed positions.

``events`` is a view over the physical tables ``ledger_events``,
``ledger_streams``, ``ledger_runs`` (revision 0014) and ``ledger_types``
(0015), beside ``run_tips``:
a write to the view fails by itself, so every attack here goes at the
tables beneath it. Each runs on a raw driver connection, as a user holding
the database would, and must be refused by the database itself with nothing
changed: neither what `fingerprint` reads through the view nor any row (or,
on PostgreSQL, trigger) of the physical tables.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest
import rawdb

from kasmina.canonical import GENESIS_HASH
from kasmina.ledger import Ledger, migrate
from security.attacks import fingerprint, record_small_run

#: The columns of each physical table of revision 0015, its integer key first.
_COLUMNS = {
    "ledger_events": (
        "position",
        "event_id",
        "run_key",
        "stream_key",
        "version",
        "type_key",
        "schema_version",
        "epoch",
        "seed_id",
        "payload",
        "recorded_at",
        "hash",
        "rank",
    ),
    "ledger_streams": ("stream_key", "run_key", "stream_id"),
    "ledger_runs": ("run_key", "run_id", "format", "start_prev"),
    "ledger_types": ("type_key", "event_type"),
}


def _refused(url: str, sql: str, params: tuple[object, ...] = ()) -> str:
    """Run one raw statement that must fail; returns the database's message."""
    with pytest.raises((sqlite3.Error, psycopg.Error)) as caught:
        rawdb.run(url, sql, params)
    return str(caught.value)


def _tables(url: str) -> tuple[object, ...]:
    """Every row of every physical table, and on PostgreSQL their triggers and whether
    each is enabled: what `fingerprint`, reading through the view, does not see."""
    rows = tuple(
        tuple(rawdb.run(url, f"SELECT * FROM {table} ORDER BY 1, 2")) for table in rawdb.PHYSICAL
    )
    if url.startswith("sqlite"):
        return rows  # `fingerprint` holds every trigger of a SQLite ledger
    tables = ", ".join(f"'{table}'::regclass" for table in rawdb.PHYSICAL)
    triggers = rawdb.run(
        url,
        "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger "
        f"WHERE tgrelid IN ({tables}) AND NOT tgisinternal ORDER BY 1, 2",
    )
    return (*rows, tuple(triggers))


def _state(url: str) -> tuple[object, ...]:
    """What an attack must leave exactly as it was."""
    return fingerprint(url), _tables(url)


def _fresh_id(url: str) -> str:
    """SQL for an event id no row has: 16 random bytes, as a UUID is stored."""
    return "randomblob(16)" if url.startswith("sqlite") else "uuid_send(gen_random_uuid())"


def _last_row_again(table: str, **values: str) -> str:
    """``INTO table (...) SELECT``: its last row again, with `values` (SQL) for some columns."""
    columns = _COLUMNS[table]
    key = columns[0]
    picked = ", ".join(values.get(column, column) for column in columns)
    return (
        f"INTO {table} ({', '.join(columns)}) SELECT {picked} FROM {table} "
        f"WHERE {key} = (SELECT MAX({key}) FROM {table})"
    )


# -- SQLite: a row may never replace another -----------------------------------

FRESH_ID = _fresh_id("sqlite")

REPLACEMENTS = {
    # Each takes one key (set) of a table's last row and keeps the others fresh.
    ("ledger_events", ("event_id",)): {
        "position": "NULL",
        "version": "version + 100",
        "epoch": "99",
    },
    ("ledger_events", ("stream_key", "version")): {
        "position": "NULL",
        "event_id": FRESH_ID,
        "epoch": "99",
    },
    ("ledger_events", ("position",)): {
        "event_id": FRESH_ID,
        "version": "version + 100",
        "epoch": "99",
    },
    ("ledger_streams", ("stream_key",)): {"stream_id": "stream_id || '-forged'"},
    ("ledger_streams", ("run_key", "stream_id")): {"stream_key": "NULL"},
    ("ledger_runs", ("run_key",)): {"run_id": "run_id || '-forged'"},
    ("ledger_runs", ("run_id",)): {"run_key": "NULL", "format": "1", "start_prev": "NULL"},
    ("ledger_types", ("type_key",)): {"event_type": "event_type || '-forged'"},
    ("ledger_types", ("event_type",)): {"type_key": "NULL"},
}


def _taken(table: str, keys: tuple[str, ...]) -> str:
    """The message of `table`'s ``_no_replace`` trigger for a taken key set."""
    names = ", ".join(f"{table}.{key}" for key in keys)
    return f"kasmina: {table} is immutable ({names} is taken; a row may never replace another)"


@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "REPLACE"])
@pytest.mark.parametrize(
    ("table", "keys"), sorted(REPLACEMENTS), ids=lambda v: v if isinstance(v, str) else "+".join(v)
)
def test_sqlite_replace_cannot_rewrite_a_row(
    sqlite_url: str, verb: str, table: str, keys: tuple[str, ...]
) -> None:
    record_small_run(sqlite_url)
    before = _state(sqlite_url)
    statement = f"{verb} {_last_row_again(table, **REPLACEMENTS[table, keys])}"
    assert _taken(table, keys) in _refused(sqlite_url, statement)
    assert _state(sqlite_url) == before


@pytest.mark.parametrize("verb", ["INSERT OR IGNORE", "INSERT OR FAIL", "INSERT OR ROLLBACK"])
def test_sqlite_other_conflict_clauses_are_refused_too(sqlite_url: str, verb: str) -> None:
    record_small_run(sqlite_url)
    before = _state(sqlite_url)
    replacement = REPLACEMENTS["ledger_events", ("event_id",)]
    statement = f"{verb} {_last_row_again('ledger_events', **replacement)}"
    assert _taken("ledger_events", ("event_id",)) in _refused(sqlite_url, statement)
    assert _state(sqlite_url) == before


def _forge_by_replace(path: str) -> None:
    """Rewrite every row of the sealed run through REPLACE, re-chained and re-sealed.

    The attack of issue 18: with only the UPDATE and DELETE triggers, it went
    through and the forged run verified. The texts hashed are read through
    the view; the rows are written as ``ledger_events`` stores them.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute(
            "SELECT e.position, e.event_id, e.run_id, e.stream_id, e.version, e.event_type, "
            "e.schema_version, e.seed_id, e.payload, e.recorded_at, e.prev_hash, "
            "l.event_id, l.run_key, l.stream_key, l.recorded_at, l.rank "
            "FROM events e JOIN ledger_events l ON l.position = e.position "
            "WHERE e.run_id = 'victim' ORDER BY e.position"
        ).fetchall()
        form = rawdb.run_format(f"sqlite:///{path}", "victim")
        heads: dict[str, str] = {"run": rows[0][10]} if form >= 2 else {}
        run_prev = rows[0][10]
        conn.execute("BEGIN")
        for row in rows:
            position, eid, rid, stream, version, etype, sv, seed, text, at, _ = row[:11]
            stored_id, run_key, stream_key, stored_at, rank = row[11:]
            payload = json.loads(text)
            if etype == "RunFinished":
                payload["seal"] = dict(heads)
            if etype == "SeedTelemetrySampled":
                payload["accuracy"] = 99.0
            new_text = rawdb.payload_text(form, payload)
            prev = heads.get(stream, GENESIS_HASH)
            digest = run_prev = rawdb.forged_hash(
                form, prev_hash=prev, run_prev_hash=run_prev,
                event_id=eid, run_id=rid, stream_id=stream, version=version, event_type=etype,
                schema_version=sv, epoch=7, seed_id=seed, payload_text=new_text,
                recorded_at=at)  # fmt: skip
            conn.execute(
                f"REPLACE INTO ledger_events ({', '.join(_COLUMNS['ledger_events'])}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 7, ?, ?, ?, ?, ?)",
                (position, stored_id, run_key, stream_key, version, etype, sv, seed, new_text,
                 stored_at, bytes.fromhex(digest), rank),
            )  # fmt: skip
            heads[stream] = digest
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_sqlite_forged_sealed_run_through_replace_is_refused(sqlite_url: str) -> None:
    record_small_run(sqlite_url)
    before = _state(sqlite_url)
    with pytest.raises(sqlite3.IntegrityError) as caught:
        _forge_by_replace(sqlite_url.split(":///", 1)[1])
    assert _taken("ledger_events", ("event_id",)) in str(caught.value)
    assert _state(sqlite_url) == before


def test_retried_batch_is_still_skipped_by_id(sqlite_url: str) -> None:
    """kasmina recognises a retry by the taken event id, now named by the trigger first.

    600 events: two 250-row statements and 100 rows one by one, each path hit.
    """
    from helpers import sample

    with Ledger.open(sqlite_url) as ledger:
        run = ledger.start_run(name="r", seed=1, run_id="retry")
        batch = [sample(run.run_id, n=n) for n in range(600)]
        assert ledger.append(batch[:300]).appended == 300
        result = ledger.append(batch)
        assert (result.appended, result.skipped) == (300, 300)
        result = ledger.append(batch)
        assert (result.appended, result.skipped) == (0, 600)
        assert ledger.verify().ok
        assert ledger.verify().events == 601


# -- both databases: upserts, positions ------------------------------------------


def _resubmit_last_row(conflict: str) -> str:
    """The last row of ``ledger_events`` inserted again as it is, with an ON CONFLICT clause."""
    return f"INSERT {_last_row_again('ledger_events')} {conflict}"


@pytest.mark.parametrize("target", ["(event_id)", "(position)", "(stream_key, version)"])
def test_upsert_do_update_is_refused(attacked_url: str, target: str) -> None:
    before = _state(attacked_url)
    message = _refused(
        attacked_url, _resubmit_last_row(f"ON CONFLICT {target} DO UPDATE SET epoch = 99")
    )
    if attacked_url.startswith("sqlite"):
        assert _taken("ledger_events", ("event_id",)) in message  # the first key it checks
    else:
        assert "kasmina: ledger_events is immutable (UPDATE refused)" in message
    assert _state(attacked_url) == before


def test_upsert_do_nothing_changes_nothing(attacked_url: str) -> None:
    before = _state(attacked_url)
    sql = _resubmit_last_row("ON CONFLICT DO NOTHING")
    if attacked_url.startswith("sqlite"):
        assert _taken("ledger_events", ("event_id",)) in _refused(attacked_url, sql)
    else:
        rawdb.run(attacked_url, sql)  # PostgreSQL skips the row: there is nothing to refuse
    assert _state(attacked_url) == before


@pytest.mark.parametrize("position", [0, -1, -5])
def test_insert_at_a_position_below_one_is_refused(attacked_url: str, position: int) -> None:
    before = _state(attacked_url)
    sql = "INSERT " + _last_row_again(
        "ledger_events", position="?", event_id=_fresh_id(attacked_url), version="version + 50"
    )
    message = _refused(attacked_url, sql, (position,))
    if attacked_url.startswith("sqlite"):
        assert "kasmina: ledger_events.position must be 1 or more" in message
    else:
        assert "ck_ledger_events_position_positive" in message
    assert _state(attacked_url) == before


@pytest.mark.parametrize("who", ["pg_url", "owner_pg_url"])
@pytest.mark.parametrize("when", ["infinity", "-infinity", "10000-01-01 00:00:00+00"])
def test_postgres_refuses_a_time_python_cannot_read(
    request: pytest.FixtureRequest, who: str, when: str
) -> None:
    """One such row made `verify`, `history` and every other read of the ledger fail."""
    url = str(request.getfixturevalue(who))
    record_small_run(url)
    before = _state(url)
    sql = "INSERT " + _last_row_again(
        "ledger_events",
        position="position + 100",
        event_id=_fresh_id(url),
        version="version + 50",
        recorded_at="CAST(? AS timestamptz)",
    )
    assert "ck_ledger_events_recorded_at_in_range" in _refused(url, sql, (when,))
    assert _state(url) == before


# -- PostgreSQL: triggers fire whatever the replication role ---------------------


def _as_replica(url: str, statement: str) -> str:
    """Run `statement` after ``SET session_replication_role = replica`` on one connection."""
    conn = rawdb.connect(url)
    assert isinstance(conn, psycopg.Connection)
    try:
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement)
        return str(caught.value)
    finally:
        conn.close()


def _sign(url: str, tmp_path: Path) -> str:
    """Add a run written with a signing key to the ledger at `url`: rows in every table."""
    from kasmina.signing import generate

    with Ledger.open(url) as ledger:
        ledger.signing_key = generate(tmp_path / "key.pem")
        ledger.start_run("signed", seed=1, run_id="signed").finish()
    assert rawdb.run(url, "SELECT COUNT(*) FROM run_tips") == [(2,)]
    return url


@pytest.fixture
def signed_pg_url(pg_url: str, tmp_path: Path) -> str:
    """A PostgreSQL ledger (superuser) with a sealed run and a signed one."""
    record_small_run(pg_url)
    return _sign(pg_url, tmp_path)


#: A change to a row of each physical table (a row-level trigger fires only on rows).
_UPDATES = {
    "ledger_events": "UPDATE ledger_events SET epoch = 99",
    "ledger_streams": "UPDATE ledger_streams SET stream_id = 'x'",
    "ledger_runs": "UPDATE ledger_runs SET format = 1",
    "ledger_types": "UPDATE ledger_types SET event_type = 'x'",
    "run_tips": "UPDATE run_tips SET run_id = 'x'",
}


@pytest.mark.parametrize("op", ["UPDATE", "DELETE", "TRUNCATE"])
@pytest.mark.parametrize("table", rawdb.PHYSICAL)
def test_replica_role_does_not_skip_the_triggers(signed_pg_url: str, table: str, op: str) -> None:
    statement = {"UPDATE": _UPDATES[table], "DELETE": f"DELETE FROM {table}"}.get(
        op, f"TRUNCATE {table}"
    )
    before = _state(signed_pg_url)
    message = _as_replica(signed_pg_url, statement)
    assert f"kasmina: {table} is immutable ({op} refused)" in message
    assert _state(signed_pg_url) == before


def test_owner_cannot_take_the_replica_role(owner_pg_url: str) -> None:
    record_small_run(owner_pg_url)
    before = fingerprint(owner_pg_url)
    message = _refused(owner_pg_url, "SET session_replication_role = replica")
    assert "permission denied" in message
    assert fingerprint(owner_pg_url) == before


@pytest.mark.parametrize("table", rawdb.PHYSICAL)
def test_triggers_are_enabled_always(pg_url: str, table: str) -> None:
    rows = rawdb.run(
        pg_url,
        "SELECT tgname, tgenabled FROM pg_trigger "
        f"WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal ORDER BY tgname",
    )
    assert rows == [(f"{table}_immutable", "A"), (f"{table}_no_truncate", "A")]


# -- the revision round-trips ---------------------------------------------------


def _guards(url: str) -> list[tuple[object, ...]]:
    """Every trigger and CHECK on events, with its definition and state."""
    if url.startswith("sqlite"):
        return rawdb.run(
            url, "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
        )
    triggers = rawdb.run(
        url,
        "SELECT tgname, tgenabled, pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE tgrelid = 'events'::regclass AND NOT tgisinternal ORDER BY tgname",
    )
    checks = rawdb.run(
        url,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'events'::regclass AND contype = 'c' ORDER BY conname",
    )
    return [*triggers, *checks]


@pytest.fixture
def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return str(request.getfixturevalue("empty_pg_url"))


def test_downgrade_restores_the_old_guards_exactly(fresh_url: str) -> None:
    migrate.upgrade(fresh_url, "0005")
    old = _guards(fresh_url)
    migrate.upgrade(fresh_url, "0006")
    new = _guards(fresh_url)
    assert new != old
    migrate.downgrade(fresh_url, "0005")
    assert _guards(fresh_url) == old
    migrate.upgrade(fresh_url, "0006")
    assert _guards(fresh_url) == new
    migrate.upgrade(fresh_url)
    record_small_run(fresh_url)
    with Ledger.open(fresh_url) as ledger:
        assert ledger.verify().ok


# -- the ledger's other tables: formats and signed tips ---------------------------------


@pytest.fixture
def signed_url(attacked_url: str, tmp_path: Path) -> str:
    """The attacked ledger plus a run written with a signing key: rows in every table."""
    return _sign(attacked_url, tmp_path)


@pytest.mark.parametrize("table", ["ledger_runs", "run_tips"])
@pytest.mark.parametrize("verb", ["UPDATE {} SET run_id = 'x'", "DELETE FROM {}"])
def test_formats_and_signed_tips_are_immutable(signed_url: str, table: str, verb: str) -> None:
    before = fingerprint(signed_url), rawdb.run(signed_url, f"SELECT * FROM {table}")
    assert f"{table} is immutable" in _refused(signed_url, verb.format(table))
    assert (fingerprint(signed_url), rawdb.run(signed_url, f"SELECT * FROM {table}")) == before


@pytest.mark.parametrize("table", ["ledger_runs", "run_tips"])
def test_formats_and_signed_tips_cannot_be_replaced_or_truncated(
    signed_url: str, table: str
) -> None:
    before = rawdb.run(signed_url, f"SELECT * FROM {table}")
    if signed_url.startswith("sqlite"):
        statement = f"INSERT OR REPLACE INTO {table} SELECT * FROM {table}"
    else:
        statement = f"TRUNCATE {table}"
    assert f"{table} is immutable" in _refused(signed_url, statement)
    assert rawdb.run(signed_url, f"SELECT * FROM {table}") == before


@pytest.mark.parametrize("table", ["ledger_runs", "run_tips"])
def test_the_replica_role_does_not_skip_their_triggers(pg_url: str, table: str) -> None:
    record_small_run(pg_url)
    rows = rawdb.run(
        pg_url,
        "SELECT tgname, tgenabled FROM pg_trigger "
        f"WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal ORDER BY tgname",
    )
    assert rows == [(f"{table}_immutable", "A"), (f"{table}_no_truncate", "A")]
    assert f"{table} is immutable" in _as_replica(pg_url, f"TRUNCATE {table}")
