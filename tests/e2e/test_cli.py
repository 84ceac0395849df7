"""The `kasmina` command as a user runs it: real processes, real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rawdb

from kasmina.events import SeedStageChanged
from kasmina.ledger import Ledger

BIN = str(Path(sys.executable).with_name("kasmina"))


def kasmina(
    *args: str, db: str | None = None, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    full = [BIN, *(["--db", db] if db else []), *args]
    return subprocess.run(
        full, capture_output=True, text=True, env=env, input=stdin, cwd=cwd, timeout=120
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    return lines[0]


@pytest.fixture
def demo_db(db_url: str) -> tuple[str, str]:
    with Ledger.open(db_url) as led:
        run = led.start_run("cli", seed=1)
        run.recorder.emit(_germinated(), stream_id="slot/r0c0", epoch=0, seed_id="s1")
        return db_url, run.run_id


def _germinated() -> object:
    from kasmina.events import SeedGerminated

    return SeedGerminated(slot_id="r0c0", blueprint_id="conv_small", params=10)


def _snapshot(url: str) -> list[tuple[object, ...]]:
    return rawdb.run(url, "SELECT position, hash FROM events ORDER BY position")


class TestBadInput:
    def test_unknown_event_type(self, demo_db: tuple[str, str]) -> None:
        url, run_id = demo_db
        before = _snapshot(url)
        proc = kasmina(
            "append",
            run_id,
            "--type",
            "SeedExploded",
            "--payload",
            "{}",
            "--stream",
            "slot/r0c0",
            db=url,
        )
        assert "SeedExploded" in _one_error_line(proc)
        assert _snapshot(url) == before

    def test_payload_failing_validation(self, demo_db: tuple[str, str]) -> None:
        url, run_id = demo_db
        before = _snapshot(url)
        proc = kasmina(
            "append",
            run_id,
            "--type",
            "SeedGerminated",
            "--payload",
            '{"slot_id": "r0c0", "blueprint_id": "x", "params": -3, "colour": 1}',
            "--stream",
            "slot/r0c0",
            db=url,
        )
        line = _one_error_line(proc)
        assert "params" in line and "colour" in line
        assert _snapshot(url) == before

    def test_batch_file_with_one_bad_line_appends_nothing(
        self, demo_db: tuple[str, str], tmp_path: Path
    ) -> None:
        url, run_id = demo_db
        before = _snapshot(url)
        good = {
            "event_type": "SeedGerminated",
            "stream_id": "slot/r0c1",
            "payload": {"slot_id": "r0c1", "blueprint_id": "norm", "params": 1},
        }
        bad = {
            "event_type": "SeedGerminated",
            "stream_id": "slot/r0c1",
            "payload": {"slot_id": "r0c1"},
        }
        lines = "\n".join(json.dumps(x) for x in (good, good, bad))
        proc = kasmina("append", run_id, "--file", "-", db=url, stdin=lines)
        assert "line 3" in _one_error_line(proc)
        assert _snapshot(url) == before

    def test_bad_url(self) -> None:
        assert "bad database URL" in _one_error_line(kasmina("runs", db="nosuchdb://x"))

    def test_unreachable_postgres(self, tmp_path: Path) -> None:
        url = f"postgresql+psycopg://postgres@/x?host={tmp_path}&port=1"
        assert "cannot reach" in _one_error_line(kasmina("runs", db=url))

    def test_missing_run_id(self, demo_db: tuple[str, str]) -> None:
        url, _ = demo_db
        before = _snapshot(url)
        for args in (
            ("history", "no-such-run"),
            ("verify", "no-such-run"),
            (
                "append",
                "no-such-run",
                "--type",
                "SeedGerminated",
                "--stream",
                "s",
                "--payload",
                '{"slot_id": "a", "blueprint_id": "b", "params": 1}',
            ),
        ):
            assert "no-such-run" in _one_error_line(kasmina(*args, db=url))
        assert _snapshot(url) == before

    def test_write_through_sql_is_refused(self, demo_db: tuple[str, str], tmp_path: Path) -> None:
        url, _ = demo_db
        before = _snapshot(url)
        statements = [
            "DELETE FROM ledger_events",
            "UPDATE ledger_events SET epoch = 1",
            "CREATE TABLE x (a int)",
            "DROP VIEW runs",
        ]
        if url.startswith("sqlite"):
            statements += [
                f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS o",
                "PRAGMA journal_mode = DELETE",
            ]
        for statement in statements:
            line = _one_error_line(kasmina("sql", statement, db=url))
            assert "read-only" in line, statement
        assert _snapshot(url) == before
        assert not (tmp_path / "other.db").exists()

    def test_a_placeholder_without_a_value_and_an_unknown_status_are_named(
        self, demo_db: tuple[str, str]
    ) -> None:
        """The placeholder reached the driver unbound ("Incorrect number of bindings"), and
        `runs --status` took any word and listed nothing."""
        url, _ = demo_db
        line = _one_error_line(kasmina("sql", "SELECT :s", db=url))
        assert line == "error: the query uses :s but no --param s=VALUE is given"
        line = _one_error_line(kasmina("runs", "--status", "weird", db=url))
        assert "'weird' is not one of 'open', 'completed', 'failed', 'aborted'" in line
        listed = kasmina("runs", "--status", "open", "--format", "csv", db=url)
        assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2

    def test_a_misspelt_view_in_sql_is_named_with_the_views_there_are(
        self, demo_db: tuple[str, str]
    ) -> None:
        """Not "no kasmina schema; run `kasmina db upgrade`": the ledger was opened."""
        url, _ = demo_db
        line = _one_error_line(kasmina("sql", "SELECT * FROM seed_timelin", db=url))
        assert "seed_timelin" in line and "this ledger's views: " in line, line
        assert "seed_timeline" in line.split("this ledger's views: ")[1]
        assert "schema" not in line and "upgrade" not in line


class TestCommands:
    def test_runs_history_verify_sql_schema(self, demo_db: tuple[str, str]) -> None:
        url, run_id = demo_db
        runs = kasmina("runs", "--format", "json", db=url)
        assert runs.returncode == 0 and run_id in runs.stdout
        hist = kasmina("history", run_id, "--seed-id", "s1", "--format", "json", db=url)
        assert hist.returncode == 0
        [event] = json.loads(hist.stdout)
        assert event["event_type"] == "SeedGerminated"
        lines = kasmina("history", run_id, "--seed-id", "s1", "--format", "jsonl", db=url)
        [line] = lines.stdout.splitlines()
        assert json.loads(line) == event
        ok = kasmina("verify", run_id, db=url)
        assert ok.returncode == 0 and "verify: OK" in ok.stdout
        csv_out = kasmina(
            "sql", "SELECT event_type FROM events ORDER BY position", "--format", "csv", db=url
        )
        assert csv_out.stdout.splitlines() == ["event_type", "RunStarted", "SeedGerminated"]
        js = kasmina("sql", "SELECT COUNT(*) AS n FROM events", "--format", "json", db=url)
        assert json.loads(js.stdout) == [{"n": 2}]
        schema = json.loads(kasmina("schema").stdout)
        version = SeedStageChanged.schema_version
        assert schema["SeedStageChanged"]["x-schema-version"] == version

    def test_sql_output_writes_the_result_to_a_file(
        self, demo_db: tuple[str, str], tmp_path: Path
    ) -> None:
        url, _ = demo_db
        target = tmp_path / "types.csv"
        proc = kasmina(
            "sql",
            "SELECT event_type FROM events ORDER BY position",
            "--format",
            "csv",
            "--output",
            str(target),
            db=url,
        )
        assert proc.returncode == 0 and proc.stdout == ""
        assert target.read_text().splitlines() == ["event_type", "RunStarted", "SeedGerminated"]
        table = tmp_path / "n.txt"
        assert (
            kasmina("sql", "SELECT COUNT(*) AS n FROM events", "-o", str(table), db=url).returncode
            == 0
        )
        assert "n" in table.read_text() and "2" in table.read_text()
        failed = tmp_path / "bad.json"
        _one_error_line(
            kasmina("sql", "SELECT nope FROM events", "--format", "json", "-o", str(failed), db=url)
        )
        assert not failed.exists() and list(tmp_path.glob(".*partial")) == []

    def test_verify_exits_1_on_a_fault(self, demo_db: tuple[str, str]) -> None:
        url, run_id = demo_db
        rawdb.drop_triggers(url)
        rawdb.run(url, "UPDATE events SET epoch = 5 WHERE stream_id = 'slot/r0c0'")
        proc = kasmina("verify", db=url)
        assert proc.returncode == 1
        assert "hash_mismatch" in proc.stdout

    def test_db_upgrade_and_current(self, empty_pg_url: str) -> None:
        assert "none" in kasmina("db", "current", db=empty_pg_url).stdout
        up = kasmina("db", "upgrade", db=empty_pg_url)
        assert up.returncode == 0, up.stderr
        assert "(head)" in kasmina("db", "current", db=empty_pg_url).stdout

    def test_kasmina_db_env_var(self, demo_db: tuple[str, str]) -> None:
        url, run_id = demo_db
        env = {**os.environ, "KASMINA_DB": url}
        proc = subprocess.run(
            [BIN, "runs", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
        )
        assert run_id in proc.stdout

    def test_demo_prints_a_run_id_that_verifies(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'demo.db'}"
        proc = kasmina("demo", "--epochs", "4", db=url)
        assert proc.returncode == 0, proc.stderr
        run_id = proc.stdout.split("run id:")[1].split()[0]
        with Ledger.open(url) as led:
            assert led.verify(run_id).ok


TORCH_FREE = [
    ["--help"],
    ["db", "current"],
    ["runs"],
    ["history", "{run}"],
    ["verify"],
    ["sql", "SELECT 1"],
    ["schema"],
    ["export", "{run}", "-o", "{tmp}/export"],
    ["export", "{run}", "--format", "jsonl", "-o", "{tmp}/export"],
    ["report", "{run}", "-o", "{tmp}/run.html"],
]


@pytest.mark.parametrize("args", TORCH_FREE, ids=lambda a: a[0])
def test_commands_that_need_no_torch_never_import_it(args: list[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(url) as led:
        run_id = led.start_run("t", seed=1).run_id
    argv = [a.replace("{run}", run_id).replace("{tmp}", str(tmp_path)) for a in args]
    code = (
        "import sys; from kasmina.cli import main\n"
        f"rc = main({['--db', url, *argv]!r})\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'sklearn') if m in sys.modules)\n"
        "print('RESULT', rc, heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    result = proc.stdout.splitlines()[-1]
    assert result == "RESULT 0 []", proc.stdout + proc.stderr


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_no_database_or_validation_stack(flag: str) -> None:
    code = (
        "import sys; from kasmina.cli import main\n"
        f"rc = main([{flag!r}])\n"
        "heavy = ('torch', 'sqlalchemy', 'alembic', 'psycopg', 'pydantic', 'kasmina.ledger.core')\n"
        "print('RESULT', rc, sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "RESULT 0 []", proc.stdout + proc.stderr
