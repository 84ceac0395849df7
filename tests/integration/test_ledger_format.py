"""Ledgers written before format 2 upgrade, keep verifying as format 1, and take format-2 runs.

The fixture ``ledger_0005_124ed2c.db`` was written by kasmina at commit
124ed2c (schema revision 0005), exactly as a user of that version made it:
``git archive 124ed2c src migrations alembic.ini | tar -x -C OLD`` and then
``PYTHONPATH=OLD/src python -c "import sys; from kasmina.cli import main;
sys.exit(main())" --db sqlite:///ledger_0005_124ed2c.db demo --epochs 3
--run-id old-demo`` (25 events). On PostgreSQL its rows are copied into a
database migrated to 0005, as that version would have stored them.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import rawdb

from kasmina.cli import main
from kasmina.errors import WouldLoseData
from kasmina.ledger import Ledger, migrate
from kasmina.ledger.schema import VIEWS
from kasmina.recipes import example, recipes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger_0005_124ed2c.db"
OLD_RUN = "old-demo"
_COLUMNS = (
    "event_id, run_id, stream_id, version, event_type, schema_version, epoch, seed_id, "
    "payload, recorded_at, prev_hash, hash, rank"
)


@pytest.fixture
def old_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        path = tmp_path / "old.db"
        shutil.copyfile(FIXTURE, path)
        return f"sqlite:///{path}"
    url = str(request.getfixturevalue("empty_pg_url"))
    migrate.upgrade(url, "0005")
    source = sqlite3.connect(FIXTURE)
    rows = source.execute(f"SELECT {_COLUMNS} FROM events ORDER BY position").fetchall()
    source.close()
    conn = rawdb.connect(url)
    try:
        for row in rows:
            values = list(row)
            values[9] = datetime.fromisoformat(values[9])
            conn.execute(
                f"INSERT INTO events ({_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, CAST(%s AS jsonb), %s, %s, %s, %s)",
                values,
            )
    finally:
        conn.close()
    return url


def _formats(ledger: Ledger) -> dict[str, int]:
    report = ledger.verify()
    assert report.ok, report.faults
    return {check.run_id: check.format for check in report.runs}


def test_the_fixture_is_what_124ed2c_wrote() -> None:
    conn = sqlite3.connect(FIXTURE)
    try:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
        assert conn.execute("SELECT COUNT(*), MIN(run_id) FROM events").fetchall() == [
            (25, OLD_RUN)
        ]
    finally:
        conn.close()


def test_an_old_ledger_upgrades_verifies_as_format_1_and_new_runs_are_format_2(
    old_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate.upgrade(old_url)
    with Ledger.open(old_url) as ledger:
        assert _formats(ledger) == {OLD_RUN: 1}
        assert ledger.replay(OLD_RUN).run.events == 25
        ledger.start_run("new", seed=1, run_id="new-run").finish()
        assert _formats(ledger) == {OLD_RUN: 1, "new-run": 2}
    # The new run's start links to the old run's: the ledger's chain of run starts.
    [(link,)] = rawdb.run(
        old_url, "SELECT prev_hash FROM events WHERE run_id = 'new-run' AND version = 1"
    )
    [(old_start,)] = rawdb.run(
        old_url, f"SELECT hash FROM events WHERE run_id = '{OLD_RUN}' AND event_type = 'RunStarted'"
    )
    assert link == old_start
    assert main(["--db", old_url, "verify"]) == 0
    out = capsys.readouterr().out
    assert f"run {OLD_RUN}: 25 events" in out and ", format 1\n" in out
    assert "run new-run: 2 events in 1 streams, sealed, format 2\n" in out


def test_upgrade_downgrade_upgrade_keeps_the_old_runs_verifying(old_url: str) -> None:
    migrate.upgrade(old_url)
    migrate.downgrade(old_url, "0012")  # no format-2 run yet: nothing is lost
    migrate.upgrade(old_url)
    with Ledger.open(old_url) as ledger:
        ledger.start_run("new", seed=1, run_id="new-run").finish()
        assert _formats(ledger) == {OLD_RUN: 1, "new-run": 2}
    with pytest.raises(WouldLoseData, match=r"the ledger format of 2 events in 1 run"):
        migrate.downgrade(old_url, "0012")
    with Ledger.open(old_url) as ledger:
        assert _formats(ledger) == {OLD_RUN: 1, "new-run": 2}
    # Out of the lean rows (0014) and back loses nothing: every run still verifies.
    before = rawdb.run(old_url, "SELECT * FROM events ORDER BY position")
    migrate.downgrade(old_url, "0013")
    assert rawdb.run(old_url, "SELECT * FROM events ORDER BY position") == before
    with Ledger.open(old_url) as ledger:
        assert _formats(ledger) == {OLD_RUN: 1, "new-run": 2}
    migrate.upgrade(old_url)
    assert rawdb.run(old_url, "SELECT * FROM events ORDER BY position") == before
    with Ledger.open(old_url) as ledger:
        ledger.start_run("third", seed=1, run_id="third").finish()
        assert _formats(ledger) == {OLD_RUN: 1, "new-run": 2, "third": 2}


def _odd_rows(url: str, run_id: str) -> None:
    """Rows only a hand (or an older ledger) could leave: ids, hashes and times that are
    not what kasmina writes, and a version whose predecessor is missing."""
    [(run_key, stream_key)] = rawdb.run(
        url,
        "SELECT s.run_key, s.stream_key FROM ledger_streams s JOIN ledger_runs r "
        "ON r.run_key = s.run_key WHERE r.run_id = ? AND s.stream_id = 'run'",
        (run_id,),
    )
    pg = url.startswith("postgresql")
    odd: list[tuple[object, object, object]] = (
        [
            (b"\0not-a-uuid", b"\0abc", datetime.fromisoformat("2020-01-01T00:00:00+00:00")),
            (b"\x01\x02", b"\x00ab", datetime.fromisoformat("1960-05-01T12:00:00.5+00:00")),
        ]
        if pg
        else [
            ("not-a-uuid", "abc", "2020-01-01T00:00:00+00:00"),
            (b"\x01\x02", b"\x00\xff", -1),
            (b"\x03" * 16, b"\x04" * 32, 253_402_300_800_000_005),
            (b"\x05" * 16, 7, 1.5),
        ]
    )
    rawdb.run(url, "INSERT INTO ledger_types (event_type) VALUES ('Note')")
    note = "(SELECT type_key FROM ledger_types WHERE event_type = 'Note')"
    for number, (event_id, digest, at) in enumerate(odd):
        rawdb.run(
            url,
            "INSERT INTO ledger_events (event_id, run_key, stream_key, version, type_key, "
            "schema_version, epoch, seed_id, payload, recorded_at, hash, rank) "
            f"VALUES (?, ?, ?, ?, {note}, 1, NULL, NULL, ?, ?, ?, NULL)",
            (event_id, run_key, stream_key, 40 + 2 * number, '{"text": "x"}', at, digest),
        )
    # A type key naming no type: the view's join leaves the row out, as the ledger must.
    rawdb.run(
        url,
        "INSERT INTO ledger_events (event_id, run_key, stream_key, version, type_key, "
        "schema_version, payload, recorded_at, hash) VALUES (?, ?, ?, 60, 9999, 1, '{}', ?, ?)",
        (b"\x08" * 16, run_key, stream_key, *odd[0][2:], b"\x09" * 32),
    )
    # A run key and a stream key naming nothing: the view's joins leave these out too.
    for run, stream in ((run_key, 99_999), (99_998, stream_key)):
        rawdb.run(
            url,
            "INSERT INTO ledger_events (event_id, run_key, stream_key, version, type_key, "
            f"schema_version, payload, recorded_at, hash) VALUES (?, ?, ?, 70, {note}, 1, '{{}}', "
            "?, ?)",
            (bytes([run % 256]) * 16, run, stream, odd[0][2], b"\x0a" * 32),
        )
    if not pg:  # SQLite keeps a blob in an integer column, above any number, yet subtracts from it
        rawdb.run(
            url,
            "INSERT INTO ledger_events (event_id, run_key, stream_key, version, type_key, "
            f"schema_version, payload, recorded_at, hash) "
            f"VALUES (X'06', ?, ?, CAST('41' AS BLOB), {note}, 1, '{{}}', 0, X'07')",
            (run_key, stream_key),
        )


def test_the_ledger_reads_the_rows_the_events_view_shows(old_url: str) -> None:
    """The ledger renders ids, hashes and times from the lean tables itself
    (`kasmina.ledger.rows`); the view is the contract it must agree with."""
    migrate.upgrade(old_url)
    with Ledger.open(old_url) as ledger:
        ledger.start_run("new", seed=1, run_id="new-run").finish()
    _odd_rows(old_url, "new-run")
    view = rawdb.run(old_url, "SELECT * FROM events ORDER BY position")
    assert len(view) > 27
    with Ledger.open(old_url) as ledger:
        assert [tuple(row) for row in ledger.raw_rows(page_size=7)] == view
        seed = next(row[8] for row in view if row[2] == OLD_RUN and row[8] is not None)
        picked = [tuple(r) for r in ledger.raw_rows(OLD_RUN, seed_id=str(seed), after=3)]
        assert picked == [r for r in view if r[2] == OLD_RUN and r[8] == seed and r[0] > 3]
        assert picked
        # `read` renders only what an event holds, from the same rows: the same envelopes.
        events = [*ledger.read(OLD_RUN), *ledger.read("new-run", skip_types=["Note"])]
    fields = ("position", "event_id", "run_id", "stream_id", "version", "event_type")
    more = ("schema_version", "epoch", "seed_id")
    shown = [(*(getattr(e, f) for f in fields + more), e.prev_hash, e.hash, e.rank) for e in events]
    kept = [r for r in view if r[5] != "Note"]
    assert shown == [(*r[:9], *r[11:]) for r in kept]
    assert len(shown) > 20
    # The time too: SQLite's read goes from stored microseconds to a datetime directly.
    times = [
        r[10] if isinstance(r[10], datetime) else datetime.fromisoformat(str(r[10])) for r in kept
    ]
    assert [e.recorded_at for e in events] == times
    assert all(e.recorded_at.utcoffset() == timedelta(0) for e in events)


def _everything(url: str) -> dict[str, list[str]]:
    """Every view's rows and every cookbook recipe's answer for the old run."""
    out = {view: sorted(map(repr, rawdb.run(url, f"SELECT * FROM {view}"))) for view in VIEWS}
    with Ledger.open(url, create=False) as ledger:
        for name, sql in recipes().items():
            params = example(name) | ({"run": OLD_RUN} if re.search(r":run\b", sql) else {})
            out[name] = [repr(tuple(row)) for row in ledger.sql(sql, params=params)[1]]
    return out


def test_type_keys_round_trip_through_revision_0014(old_url: str) -> None:
    """Revision 0015 stores types by key: out of it and back loses nothing (events, every
    view, every recipe), a ledger left at 0014 is read through its view, and positions go
    on from where they were."""
    migrate.upgrade(old_url)
    with Ledger.open(old_url) as ledger:
        ledger.start_run("new", seed=1, run_id="new-run").finish()
    before = rawdb.run(old_url, "SELECT * FROM events ORDER BY position")
    answers = _everything(old_url)
    assert all(answers[view] for view in ("stage_changes", "seed_timeline", "runs"))
    first_seen = list(dict.fromkeys(str(row[5]) for row in before))
    assert [
        name
        for (name,) in rawdb.run(old_url, "SELECT event_type FROM ledger_types ORDER BY type_key")
    ] == first_seen
    migrate.downgrade(old_url, "0014")
    assert rawdb.run(old_url, "SELECT * FROM events ORDER BY position") == before
    assert _everything(old_url) == answers
    with Ledger.open(old_url) as ledger:
        assert not ledger.lean  # read through the view, as it is
        assert _formats(ledger) == {OLD_RUN: 1, "new-run": 2}
        assert [tuple(row) for row in ledger.raw_rows()] == before
    migrate.upgrade(old_url)
    assert rawdb.run(old_url, "SELECT * FROM events ORDER BY position") == before
    assert _everything(old_url) == answers
    with Ledger.open(old_url) as ledger:
        assert ledger.lean
        ledger.start_run("third", seed=1, run_id="third").finish()
        assert _formats(ledger) == {OLD_RUN: 1, "new-run": 2, "third": 2}
    [(first_new,)] = rawdb.run(old_url, "SELECT MIN(position) FROM events WHERE run_id = 'third'")
    assert first_new == max(int(row[0]) for row in before) + 1


def test_downgrading_type_keys_never_drops_a_row(old_url: str) -> None:
    """A row whose type key names no type (left by a hand): SQLite's downgrade keeps it,
    with the key as its type; PostgreSQL's stops on it, changing nothing."""
    migrate.upgrade(old_url)
    rawdb.drop_triggers(old_url)
    rawdb.run(old_url, "UPDATE ledger_events SET type_key = 999 WHERE position = 3")
    stored = rawdb.run(old_url, "SELECT COUNT(*) FROM ledger_events")
    if old_url.startswith("postgresql"):
        with pytest.raises(Exception, match="type_key|event_type|null"):
            migrate.downgrade(old_url, "0014")
        head = [(migrate.HEAD_REVISION,)]
        assert rawdb.run(old_url, "SELECT version_num FROM alembic_version") == head
        assert rawdb.run(old_url, "SELECT COUNT(*) FROM ledger_events") == stored
        return
    migrate.downgrade(old_url, "0014")
    assert rawdb.run(old_url, "SELECT COUNT(*) FROM ledger_events") == stored
    assert rawdb.run(old_url, "SELECT event_type FROM ledger_events WHERE position = 3") == [
        ("999",)
    ]
    with Ledger.open(old_url) as ledger:
        kinds = {fault.kind for fault in ledger.verify().faults if fault.position == 3}
    assert kinds
