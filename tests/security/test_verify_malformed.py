"""`verify` reads every row, and a row kasmina never wrote is a reported fault, not a crash.

The rows are placed by hand on a raw connection, the guards lifted first, as
someone holding the database file (or an older kasmina's bug) could leave them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import rawdb

from kasmina.ledger import Ledger, migrate
from kasmina.ledger.verify import VerifyReport
from security.attacks import cli_error, kasmina, record_small_run

_COLUMNS = (
    "event_id, run_id, stream_id, version, event_type, schema_version, epoch, seed_id, "
    "payload, recorded_at, prev_hash, hash, rank"
)


def _lift_guards(url: str) -> None:
    """Drop every trigger and CHECK that would refuse a hand-made row."""
    if url.startswith("sqlite"):
        for (name,) in rawdb.run(url, "SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            rawdb.run(url, f"DROP TRIGGER {name}")
        rawdb.writable_events(url)
    else:
        rawdb.drop_triggers(url)
        rawdb.run(
            url,
            "ALTER TABLE ledger_events "
            "DROP CONSTRAINT IF EXISTS ck_ledger_events_position_positive",
        )


_tags = itertools.count(1)


def _insert_copy(url: str, **columns: str) -> int:
    """Insert a copy of the run's last sample with some columns replaced by SQL expressions.

    The copy takes a fresh event id and a fresh version of its stream unless
    told otherwise; returns its position.
    """
    tag = next(_tags)
    exprs = {"event_id": f"'hand-{tag}'", "version": f"version + {tag}", **columns}
    select = ", ".join(exprs.get(c, c) for c in _COLUMNS.split(", "))
    names = _COLUMNS
    if "position" in columns:
        names, select = f"position, {names}", f"{columns['position']}, {select}"
    rawdb.run(
        url,
        f"INSERT INTO events ({names}) SELECT {select} FROM events "
        "WHERE event_type = 'SeedTelemetrySampled' AND position < "
        "(SELECT position FROM events WHERE event_type = 'RunFinished') "
        "ORDER BY position DESC LIMIT 1",
    )
    if "position" in columns:
        return int(columns["position"])
    return int(rawdb.run(url, "SELECT MAX(position) FROM events")[0][0])  # type: ignore[call-overload]


def _verified(url: str) -> VerifyReport:
    with Ledger.open(url) as ledger:
        return ledger.verify()


def _faults_at(report: VerifyReport, position: int) -> dict[str, str]:
    return {f.kind: f.detail for f in report.faults if f.position == position}


@pytest.fixture
def exposed(db_url: str) -> str:
    """A sealed run with its guards lifted: anything may be inserted now."""
    record_small_run(db_url)
    _lift_guards(db_url)
    return db_url


@pytest.fixture
def exposed_sqlite(sqlite_url: str) -> str:
    record_small_run(sqlite_url)
    _lift_guards(sqlite_url)
    return sqlite_url


# -- positions below 1 ------------------------------------------------------------


@pytest.mark.parametrize("position", [0, -3])
def test_a_row_below_position_one_is_read_and_reported(exposed: str, position: int) -> None:
    _insert_copy(exposed, position=str(position), hash="'junk'")
    report = _verified(exposed)
    faults = _faults_at(report, position)
    assert "bad_position" in faults
    assert "hash_mismatch" in faults
    assert {f.position for f in report.faults} == {position}  # the chain after it is intact
    assert report.events == 8


def test_an_older_database_holding_such_a_row_upgrades_and_reports_it(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("empty_pg_url")))  # fmt: skip
    migrate.upgrade(url, "0005")
    columns = (
        "position, event_id, run_id, stream_id, version, event_type, schema_version, payload, "
        "recorded_at, prev_hash, hash"
    )
    rawdb.run(
        url,
        f"INSERT INTO events ({columns}) VALUES (0, 'old', 'r', 'run', 1, 'RunStarted', 1, "
        "'{}', '2026-01-01T00:00:00.000000+00:00', 'x', 'y')",
    )
    migrate.upgrade(url)
    report = _verified(url)
    assert "bad_position" in _faults_at(report, 0)


# -- malformed columns (SQLite stores anything anywhere) ----------------------------

SQLITE_JUNK = {
    "version": ("'abc'", "version holds 'abc', not an integer"),
    "schema_version": ("'v2'", "schema_version holds 'v2', not an integer"),
    "epoch": ("'seven'", "epoch holds 'seven', not an integer or NULL"),
    "rank": ("'r'", "rank holds 'r', not an integer or NULL"),
    "seed_id": ("x'00ff'", "seed_id holds b'\\x00\\xff', not text or NULL"),
    "stream_id": ("x'73'", "stream_id holds b's', not text"),
    "event_type": ("x'74'", "event_type holds b't', not text"),
    "payload": ("'not json'", "payload holds 'not json', not JSON"),
    "recorded_at": ("'yesterday'", "recorded_at holds 'yesterday', not an ISO 8601 time"),
}


@pytest.mark.parametrize("column", sorted(SQLITE_JUNK))
def test_sqlite_malformed_column_is_a_fault_naming_it(exposed_sqlite: str, column: str) -> None:
    value, detail = SQLITE_JUNK[column]
    position = _insert_copy(exposed_sqlite, **{column: value})
    after = _insert_copy(exposed_sqlite, hash="'junk'")  # checking goes on past it
    report = _verified(exposed_sqlite)
    assert detail in _faults_at(report, position)["malformed_row"]
    assert "hash_mismatch" in _faults_at(report, after)
    assert report.events == 9
    proc = kasmina(exposed_sqlite, "verify")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "malformed_row" in proc.stdout and column in proc.stdout


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("'[1, 2]'", "payload holds '[1, 2]', not a JSON object"),
        ("x'7b7d'", "payload holds b'{}', not JSON"),
    ],
)
def test_sqlite_payload_that_is_no_object(exposed_sqlite: str, value: str, detail: str) -> None:
    position = _insert_copy(exposed_sqlite, payload=value)
    assert detail in _faults_at(_verified(exposed_sqlite), position)["malformed_row"]


@pytest.mark.parametrize(
    ("column", "value"),
    [("event_id", "x'0102'"), ("hash", "x'68'"), ("recorded_at", "12345")],
)
def test_sqlite_stored_id_hash_or_time_of_another_value_is_a_fault(
    exposed_sqlite: str, column: str, value: str
) -> None:
    """Ids, hashes and times are stored as bytes and integers, which the `events` view
    reads as text: any other stored value reads as other text, which no longer hashes."""
    position = _insert_copy(exposed_sqlite, **{column: value})
    after = _insert_copy(exposed_sqlite, hash="'junk'")
    report = _verified(exposed_sqlite)
    assert "hash_mismatch" in _faults_at(report, position)
    assert "hash_mismatch" in _faults_at(report, after)


def test_sqlite_run_id_that_is_no_text_is_reported(exposed_sqlite: str) -> None:
    _insert_copy(exposed_sqlite, run_id="x'76696374696d'")
    report = _verified(exposed_sqlite)
    strays = [f for f in report.faults if f.kind == "malformed_row"]
    assert [f.detail for f in strays] == [
        "run_id holds b'victim', not text: its rows belong to no run"
    ]
    assert [r.run_id for r in report.runs] == ["victim"]


def test_a_malformed_row_with_a_matching_hash_is_still_a_fault(exposed_sqlite: str) -> None:
    """A forger who hashes junk by hand gets no pass: what verifies must be readable."""
    last = rawdb.run(
        exposed_sqlite,
        "SELECT event_id, run_id, stream_id, version, event_type, schema_version, epoch, "
        "seed_id, recorded_at, hash FROM events WHERE event_type = 'SeedTelemetrySampled' "
        "ORDER BY position DESC LIMIT 1",
    )[0]
    eid, rid, stream, version, etype, sv, epoch, seed, at, head = last
    rawdb.run(exposed_sqlite, "DELETE FROM events WHERE event_type = 'RunFinished'")
    prev = str(head)
    form, run_prev = (
        rawdb.run_format(exposed_sqlite, "victim"),
        rawdb.run_tip(exposed_sqlite, "victim"),
    )
    for n, payload in enumerate(["not json", '{"slot_id":"r0c0"}']):
        digest = run_prev = rawdb.forged_hash(
            form, prev_hash=prev, run_prev_hash=run_prev,
            event_id=f"forged-{n}", run_id=str(rid), stream_id=str(stream),
            version=int(version) + 1 + n,  # type: ignore[call-overload]
            event_type=str(etype), schema_version=int(sv),  # type: ignore[call-overload]
            epoch=epoch, seed_id=str(seed), payload_text=payload,
            recorded_at=str(at))  # fmt: skip
        rawdb.run(exposed_sqlite, f"INSERT INTO events ({_COLUMNS}) VALUES "
                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                  (f"forged-{n}", rid, stream, int(version) + 1 + n,  # type: ignore[call-overload]
                   etype, sv, epoch, seed, payload, at, prev, digest))  # fmt: skip
        prev = digest
    with Ledger.open(exposed_sqlite) as ledger:
        report = ledger.verify("victim")
    assert [(f.kind, f.detail) for f in report.faults] == [
        ("malformed_row", "payload holds 'not json', not JSON")
    ]


# -- PostgreSQL: typed columns refuse most junk; what they take is reported ---------


@pytest.mark.parametrize(
    ("value", "shown"),
    [("'[1, 2]'::jsonb", "[1, 2]"), ("'\"text\"'::jsonb", "'text'"), ("'null'::jsonb", "None")],
)
def test_postgres_payload_that_is_no_object(pg_url: str, value: str, shown: str) -> None:
    record_small_run(pg_url)
    _lift_guards(pg_url)
    position = _insert_copy(pg_url, payload=value)
    after = _insert_copy(pg_url, hash="'junk'")
    report = _verified(pg_url)
    detail = _faults_at(report, position)["malformed_row"]
    assert detail == f"payload holds {shown}, not a JSON object"
    assert "hash_mismatch" in _faults_at(report, after)


@pytest.mark.parametrize("column", ["version", "schema_version", "epoch", "rank"])
def test_reading_a_malformed_integer_is_one_line(
    exposed_sqlite: str, column: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _insert_copy(exposed_sqlite, **{column: "'abc'"})
    line = cli_error(capsys, ["--db", exposed_sqlite, "history", "victim"])
    assert "'abc'" in line and "not an integer" in line, line


def test_a_type_key_naming_no_type_is_reported(exposed: str) -> None:
    """A row's type key changed by hand to one ``ledger_types`` does not hold: the view
    leaves the row out, and `verify` names it rather than passing over it."""
    [(position,)] = rawdb.run(
        exposed,
        "SELECT MAX(e.position) FROM ledger_events e JOIN ledger_types t "
        "ON t.type_key = e.type_key WHERE t.event_type = 'SeedTelemetrySampled'",
    )
    rawdb.run(exposed, f"UPDATE ledger_events SET type_key = 999 WHERE position = {position}")
    assert rawdb.run(exposed, f"SELECT 1 FROM events WHERE position = {position}") == []
    faults = _faults_at(_verified(exposed), int(str(position)))
    assert "event_type holds None" in faults["malformed_row"]


# -- every other reader: one line, never a traceback -------------------------------------------

_DEEP = '\'{"m":' + "[" * 5000 + "]" * 5000 + "}'"


def _stored_copy(url: str, **columns: str) -> None:
    """A copy of the run's last sample inserted into `ledger_events` as stored, with some
    columns replaced by SQL expressions (the guards allow an insert of a new row)."""
    names = (
        "event_id, run_key, stream_key, version, type_key, schema_version, epoch, seed_id, "
        "payload, recorded_at, hash, rank"
    )
    exprs = {"event_id": "randomblob(16)", "version": "version + 1000", **columns}
    select = ", ".join(exprs.get(c, c) for c in names.split(", "))
    rawdb.run(
        url,
        f"INSERT INTO ledger_events ({names}) SELECT {select} FROM ledger_events WHERE type_key = "
        "(SELECT type_key FROM ledger_types WHERE event_type = 'SeedTelemetrySampled') "
        "ORDER BY position DESC LIMIT 1",
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("payload", _DEEP),
        ("payload", "'not json {'"),
        ("payload", "x'00ff00'"),
        ("recorded_at", "'yesterday'"),
        ("recorded_at", "9223372036854775807"),
        ("epoch", "'x'"),
        ("version", "'six'"),
    ],
    ids=[
        "deep-json",
        "not-json",
        "blob-payload",
        "text-time",
        "huge-time",
        "text-epoch",
        "text-version",
    ],
)
def test_sqlite_a_malformed_row_is_never_a_traceback_for_any_reader(
    sqlite_url: str, tmp_path: Path, column: str, value: str
) -> None:
    """`verify` names it as a fault; `history`, `export`, `report` and `replay --trust`
    each read on or refuse in one line (they crashed with RecursionError, TypeError,
    ValueError)."""
    record_small_run(sqlite_url)
    _stored_copy(sqlite_url, **{column: value})
    proc = kasmina(sqlite_url, "verify")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    commands = [
        ["history", "victim"],
        ["export", "victim", "-o", str(tmp_path / "csv")],
        ["export", "victim", "--format", "jsonl", "-o", str(tmp_path / "jsonl")],
        ["report", "victim", "-o", str(tmp_path / "run.html")],
        ["replay", "victim", "--trust"],
    ]
    for args in commands:
        proc = kasmina(sqlite_url, *args)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 2), (args, proc.stderr)
        if proc.returncode == 2:
            [line] = proc.stderr.splitlines()
            assert line.startswith("error: "), (args, line)


def test_sqlite_text_that_is_not_utf8_is_a_fault_and_every_run_is_still_checked(
    sqlite_url: str,
) -> None:
    """SQLite stores any bytes as text; reading them stopped `verify` of the whole ledger
    ("Could not decode to UTF-8") and `runs`. The bad bytes are now shown escaped."""
    record_small_run(sqlite_url)
    record_small_run(sqlite_url, "second")
    _stored_copy(sqlite_url, seed_id="CAST(X'73ff' AS TEXT)")
    (position,) = rawdb.run(sqlite_url, "SELECT MAX(position) FROM ledger_events")[0]
    report = _verified(sqlite_url)
    assert sorted(r.run_id for r in report.runs) == ["second", "victim"]
    assert all(r.events > 0 for r in report.runs)
    assert "hash_mismatch" in _faults_at(report, int(position))  # type: ignore[call-overload]
    proc = kasmina(sqlite_url, "history", "second", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert '"seed_id": "s\\\\xff"' in proc.stdout


@pytest.mark.parametrize(
    "payload",
    [
        '{"val_accuracy": ' + "[" * 5000 + "]" * 5000 + "}",  # past every parser's depth
        '{"val_accuracy": 1' + "0" * 5000 + "}",  # past Python's digits for an int
        '{"val_accuracy": 1e400, "val_loss": -1e400}',  # JSONB keeps it: past any double
    ],
    ids=["deep", "digits", "overflow"],
)
def test_postgres_jsonb_no_reader_can_take_is_a_fault_and_one_line(
    pg_url: str, tmp_path: Path, payload: str
) -> None:
    """psycopg decoded JSONB inside `fetchall`, before kasmina saw the row: every reader,
    `verify` and `kasmina sql` included, stopped with a traceback."""
    record_small_run(pg_url)
    rawdb.run(
        pg_url,
        "INSERT INTO ledger_events (event_id, run_key, stream_key, version, type_key, "
        "schema_version, epoch, seed_id, payload, recorded_at, hash, rank) "
        "SELECT decode(md5(random()::text), 'hex'), run_key, stream_key, version + 1000, "
        "type_key, schema_version, epoch, seed_id, CAST(%s AS jsonb), recorded_at, hash, rank "
        "FROM ledger_events ORDER BY position DESC LIMIT 1",
        (payload,),
    )
    proc = kasmina(pg_url, "verify")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "FAULT malformed_row" in proc.stdout
    for args in (["history", "victim"], ["sql", "SELECT payload FROM events"]):
        proc = kasmina(pg_url, *args)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 2) and len(proc.stderr.splitlines()) <= 1, proc.stderr
