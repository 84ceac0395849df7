"""`kasmina sql` on SQLite: read-only, one statement, allow-listed functions, a timeout, Ctrl-C.

Each hostile statement goes through the real command against a sealed run and
must be refused with one line, leaving the rows, the triggers, `verify` and
the files of the ledger's folder exactly as they were.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rawdb
from helpers import default_sigint

from kasmina.cli import main
from kasmina.ledger import Ledger
from kasmina.ledger.readonly_sqlite import ALLOWED_FUNCTIONS
from security.attacks import cli_error, fingerprint, record_small_run

READ_ONLY = "read-only"
ONE_STATEMENT = "one statement per call"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    record_small_run(url)
    return url


def refused(capsys: pytest.CaptureFixture[str], url: str, statement: str, *args: str) -> str:
    return cli_error(capsys, ["--db", url, "sql", *args, statement], unchanged=url)


HOSTILE: list[tuple[str, str]] = [
    ("DELETE FROM ledger_events", READ_ONLY),
    ("UPDATE ledger_events SET epoch = 1", READ_ONLY),
    ("UPDATE sqlite_master SET sql = '' WHERE type = 'trigger'", ""),
    ("INSERT INTO ledger_events (event_id) VALUES ('x')", READ_ONLY),
    ("REPLACE INTO ledger_events (position, event_id) VALUES (1, 'x')", READ_ONLY),
    ("DROP TRIGGER ledger_events_no_delete", READ_ONLY),
    ("DROP TABLE ledger_events", READ_ONLY),
    ("DROP VIEW events", READ_ONLY),
    ("CREATE TABLE stolen AS SELECT * FROM events", READ_ONLY),
    ("CREATE TEMP TABLE scratch (a)", READ_ONLY),
    ("CREATE TEMP TRIGGER t AFTER INSERT ON ledger_events BEGIN SELECT 1; END", READ_ONLY),
    ("CREATE TEMP VIEW v AS SELECT 1", READ_ONLY),
    ("ALTER TABLE ledger_events RENAME TO old_events", READ_ONLY),
    ("ATTACH DATABASE '{folder}/other.db' AS other", "ATTACH"),
    ("VACUUM INTO '{folder}/copy.db'", "ATTACH"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
    ("PRAGMA query_only = OFF", "PRAGMA query_only"),
    ("PRAGMA writable_schema = ON", "PRAGMA writable_schema"),
    ("PRAGMA recursive_triggers = ON", "PRAGMA recursive_triggers"),
    ("SELECT load_extension('/tmp/evil.so')", "load_extension()"),
    ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer()"),
    ("SELECT zeroblob(1000000000)", "zeroblob()"),
    ("SELECT sqlite_compileoption_get(0)", "sqlite_compileoption_get()"),
    ("SELECT 1; DELETE FROM ledger_events", ONE_STATEMENT),
    ("SELECT 1; DROP TABLE events", ONE_STATEMENT),
    ("SELECT 1; ATTACH DATABASE '{folder}/other.db' AS o", ONE_STATEMENT),
    ("WITH gone AS (SELECT 1) DELETE FROM ledger_events", READ_ONLY),
    ("WITH x AS (SELECT 1) INSERT INTO ledger_events (event_id) SELECT 'x'", READ_ONLY),
    ("BEGIN IMMEDIATE", ""),
    ("VACUUM", ""),
]


@pytest.mark.parametrize(("statement", "needle"), HOSTILE, ids=[s for s, _ in HOSTILE])
def test_hostile_statement_is_refused(
    capsys: pytest.CaptureFixture[str], ledger_url: str, statement: str, needle: str
) -> None:
    folder = Path(ledger_url.split(":///", 1)[1]).parent
    line = refused(capsys, ledger_url, statement.replace("{folder}", str(folder)))
    assert needle in line


def test_the_functions_an_analyst_needs_are_allowed(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        _, rows = ledger.sql(
            "SELECT count(*), sum(version), avg(epoch), group_concat(DISTINCT event_type), "
            "max(json_extract(payload, '$.accuracy')), min(payload ->> '$.stage'), "
            "strftime('%Y', min(recorded_at)), round(sqrt(abs(-16.0)), 1), "
            "coalesce(NULL, upper(substr('abc', 1, 2))), json_group_array(position) "
            "FROM events"
        )
        (row,) = list(rows)
        assert row[0] == 7 and row[7] == 4.0 and row[8] == "AB"
        _, rows = ledger.sql(
            "SELECT position, row_number() OVER w, lag(position) OVER w FROM events "
            "WINDOW w AS (ORDER BY position) ORDER BY position LIMIT 2"
        )
        assert list(rows) == [(1, 1, None), (2, 2, 1)]
        _, rows = ledger.sql("SELECT count(*) FROM events, json_each(events.payload)")
        assert next(rows)[0] > 7
    assert {"load_extension", "fts3_tokenizer", "zeroblob"}.isdisjoint(ALLOWED_FUNCTIONS)


def test_every_view_works_under_the_allow_list(ledger_url: str) -> None:
    views = [
        name
        for (name,) in rawdb.run(
            ledger_url, "SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name"
        )
    ]
    assert "seed_timeline" in views
    with Ledger.open(ledger_url) as ledger:
        for view in views:
            columns, rows = ledger.sql(f"SELECT * FROM {view}")
            assert columns and isinstance(list(rows), list), view


def test_a_long_query_is_cut_by_the_timeout(ledger_url: str) -> None:
    """In a child process, so that a query the timeout fails to cut fails the test, not hangs it."""
    before = fingerprint(ledger_url)
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kasmina.cli", "--db", ledger_url, "sql", "--timeout", "1", endless],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc
    assert len(lines) == 1 and "1 s timeout" in lines[0], proc.stderr
    assert fingerprint(ledger_url) == before


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_refused(
    capsys: pytest.CaptureFixture[str], ledger_url: str, timeout: str
) -> None:
    assert "timeout" in refused(capsys, ledger_url, "SELECT 1", "--timeout", timeout)


def test_ctrl_c_stops_a_running_query_and_exits_130(ledger_url: str) -> None:
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; print('started', flush=True); from kasmina.cli import main; "
            "sys.exit(main(sys.argv[1:]))",
            "--db",
            ledger_url,
            "sql",
            "--timeout",
            "600",
            endless,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    try:
        _wait_until_busy(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130, stderr
    assert len(lines) == 1 and "interrupted" in lines[0], stderr


def _wait_until_busy(pid: int) -> None:
    """Until the process has used a second of CPU: it is inside the query, not still importing."""
    deadline = time.monotonic() + 60
    clock = 100  # os.sysconf("SC_CLK_TCK") on Linux
    while True:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if int(fields[11]) + int(fields[12]) > 3 * clock:
            return
        assert time.monotonic() < deadline, "the query never started"
        time.sleep(0.05)


@pytest.mark.parametrize("name", ["led#ger.db", "led%41ger.db", "100%.db", "a#b?c.db"])
def test_a_path_with_uri_characters_opens_the_right_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    url = f"sqlite:///{tmp_path / name}"
    record_small_run(url)
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(["--db", url, "sql", "--format", "csv", "SELECT count(*) AS n FROM events"]) == 0
    assert capsys.readouterr().out.split() == ["n", "7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("statement", [";", " ; ; ", "-- nothing", "/* c */", "/* open"])
def test_a_query_of_comments_and_semicolons_is_empty(
    capsys: pytest.CaptureFixture[str], ledger_url: str, statement: str
) -> None:
    assert refused(capsys, ledger_url, statement) == "error: empty SQL query"


def test_a_query_on_stdin_that_is_not_utf8_is_one_line(ledger_url: str) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("kasmina")), "--db", ledger_url, "sql", "-"],
        input=b"SELECT '\xff'",
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.decode()
        == "error: the query on standard input is not UTF-8: invalid start byte\n"
    )
