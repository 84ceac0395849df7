"""No back door around immutability: replace, upsert, replication role, hand-placed positions.

Each attack runs on a raw driver connection, as a user holding the database
would, and must be refused by the database itself with nothing changed.
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

_COLUMNS = (
    "position, event_id, run_id, stream_id, version, event_type, schema_version, epoch, "
    "seed_id, payload, recorded_at, prev_hash, hash"
)


def _refused(url: str, sql: str, params: tuple[object, ...] = ()) -> str:
    """Run one raw statement that must fail; returns the database's message."""
    with pytest.raises((sqlite3.Error, psycopg.Error)) as caught:
        rawdb.run(url, sql, params)
    return str(caught.value)


# -- SQLite: a row may never replace another -----------------------------------

_REPLACE = f"INTO events ({_COLUMNS}) SELECT {{position}}, {{event_id}}, run_id, stream_id, "
_REPLACE += "{version}, event_type, schema_version, 99, seed_id, payload, recorded_at, prev_hash, "
_REPLACE += "hash FROM events WHERE position = (SELECT MAX(position) FROM events)"

REPLACEMENTS = {
    # Each takes one key of the last row and keeps the others fresh.
    "event_id": {"position": "NULL", "event_id": "event_id", "version": "version + 100"},
    "version": {"position": "NULL", "event_id": "'fresh-id'", "version": "version"},
    "position": {"position": "position", "event_id": "'fresh-id'", "version": "version + 100"},
}


@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "REPLACE"])
@pytest.mark.parametrize("key", sorted(REPLACEMENTS))
def test_sqlite_replace_cannot_rewrite_a_row(sqlite_url: str, verb: str, key: str) -> None:
    record_small_run(sqlite_url)
    before = fingerprint(sqlite_url)
    message = _refused(sqlite_url, f"{verb} {_REPLACE.format(**REPLACEMENTS[key])}")
    assert "a row may never replace another" in message
    assert f"events.{key}" in message
    assert fingerprint(sqlite_url) == before


@pytest.mark.parametrize("verb", ["INSERT OR IGNORE", "INSERT OR FAIL", "INSERT OR ROLLBACK"])
def test_sqlite_other_conflict_clauses_are_refused_too(sqlite_url: str, verb: str) -> None:
    record_small_run(sqlite_url)
    before = fingerprint(sqlite_url)
    message = _refused(sqlite_url, f"{verb} {_REPLACE.format(**REPLACEMENTS['event_id'])}")
    assert "a row may never replace another" in message
    assert fingerprint(sqlite_url) == before


def _forge_by_replace(path: str) -> None:
    """Rewrite every row of the sealed run through REPLACE, re-chained and re-sealed.

    The attack of issue 18: with only the UPDATE and DELETE triggers, it went
    through and the forged run verified.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE run_id = 'victim' ORDER BY position"
        ).fetchall()
        form = rawdb.run_format(f"sqlite:///{path}", "victim")
        heads: dict[str, str] = {"run": rows[0][11]} if form >= 2 else {}
        run_prev = rows[0][11]
        conn.execute("BEGIN")
        for position, eid, rid, stream, version, etype, sv, _, seed, text, at, _, _ in rows:
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
                f"REPLACE INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 7, ?, ?, ?, ?, ?)",
                (position, eid, rid, stream, version, etype, sv, seed, new_text, at, prev, digest),
            )
            heads[stream] = digest
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_sqlite_forged_sealed_run_through_replace_is_refused(sqlite_url: str) -> None:
    record_small_run(sqlite_url)
    before = fingerprint(sqlite_url)
    with pytest.raises(sqlite3.IntegrityError, match="a row may never replace another"):
        _forge_by_replace(sqlite_url.split(":///", 1)[1])
    assert fingerprint(sqlite_url) == before


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
    """The last row inserted again as it is, with an ON CONFLICT clause."""
    return (
        f"INSERT INTO events ({_COLUMNS}) SELECT position, event_id, run_id, stream_id, version, "
        "event_type, schema_version, epoch, seed_id, payload, recorded_at, prev_hash, hash "
        f"FROM events WHERE position = (SELECT MAX(position) FROM events) {conflict}"
    )


@pytest.mark.parametrize("target", ["(event_id)", "(position)", "(run_id, stream_id, version)"])
def test_upsert_do_update_is_refused(attacked_url: str, target: str) -> None:
    before = fingerprint(attacked_url)
    message = _refused(
        attacked_url, _resubmit_last_row(f"ON CONFLICT {target} DO UPDATE SET epoch = 99")
    )
    assert "immutable" in message
    assert fingerprint(attacked_url) == before


def test_upsert_do_nothing_changes_nothing(attacked_url: str) -> None:
    before = fingerprint(attacked_url)
    sql = _resubmit_last_row("ON CONFLICT DO NOTHING")
    if attacked_url.startswith("sqlite"):
        assert "a row may never replace another" in _refused(attacked_url, sql)
    else:
        rawdb.run(attacked_url, sql)  # PostgreSQL skips the row: there is nothing to refuse
    assert fingerprint(attacked_url) == before


@pytest.mark.parametrize("position", [0, -1, -5])
def test_insert_at_a_position_below_one_is_refused(attacked_url: str, position: int) -> None:
    before = fingerprint(attacked_url)
    sql = (
        f"INSERT INTO events ({_COLUMNS}) SELECT ?, 'junk-id', run_id, stream_id, version + 50, "
        "event_type, schema_version, epoch, seed_id, payload, recorded_at, prev_hash, 'junk' "
        "FROM events WHERE position = (SELECT MAX(position) FROM events)"
    )
    message = _refused(attacked_url, sql, (position,))
    assert "position" in message
    assert fingerprint(attacked_url) == before


@pytest.mark.parametrize("who", ["pg_url", "owner_pg_url"])
@pytest.mark.parametrize("when", ["infinity", "-infinity", "10000-01-01 00:00:00+00"])
def test_postgres_refuses_a_time_python_cannot_read(
    request: pytest.FixtureRequest, who: str, when: str
) -> None:
    """One such row made `verify`, `history` and every other read of the ledger fail."""
    url = str(request.getfixturevalue(who))
    record_small_run(url)
    before = fingerprint(url)
    sql = (
        f"INSERT INTO events ({_COLUMNS}) SELECT position + 100, 'late-id', run_id, stream_id, "
        "version + 50, event_type, schema_version, epoch, seed_id, payload, "
        "CAST(? AS timestamptz), prev_hash, hash "
        "FROM events WHERE position = (SELECT MAX(position) FROM events)"
    )
    assert "ck_events_recorded_at_in_range" in _refused(url, sql, (when,))
    assert fingerprint(url) == before


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


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET epoch = 99", "DELETE FROM events", "TRUNCATE events"],
)
def test_replica_role_does_not_skip_the_triggers(pg_url: str, statement: str) -> None:
    record_small_run(pg_url)
    before = fingerprint(pg_url)
    assert "events are immutable" in _as_replica(pg_url, statement)
    assert fingerprint(pg_url) == before


def test_owner_cannot_take_the_replica_role(owner_pg_url: str) -> None:
    record_small_run(owner_pg_url)
    before = fingerprint(owner_pg_url)
    message = _refused(owner_pg_url, "SET session_replication_role = replica")
    assert "permission denied" in message
    assert fingerprint(owner_pg_url) == before


def test_triggers_are_enabled_always(pg_url: str) -> None:
    rows = rawdb.run(
        pg_url,
        "SELECT tgname, tgenabled FROM pg_trigger "
        "WHERE tgrelid = 'events'::regclass AND NOT tgisinternal ORDER BY tgname",
    )
    assert rows == [("events_immutable", "A"), ("events_no_truncate", "A")]


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
    """The attacked ledger plus a run written with a signing key: rows in both tables."""
    from kasmina.ledger import Ledger
    from kasmina.signing import generate

    with Ledger.open(attacked_url) as ledger:
        ledger.signing_key = generate(tmp_path / "key.pem")
        ledger.start_run("signed", seed=1, run_id="signed").finish()
    assert rawdb.run(attacked_url, "SELECT COUNT(*) FROM run_tips") == [(2,)]
    return attacked_url


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
