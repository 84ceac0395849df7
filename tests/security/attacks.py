"""What the attack tests share: proof that nothing changed, a run to attack, the CLI's refusal.

Every attack test records a `fingerprint` of the ledger before the attack and
asserts it is equal afterwards: the rows (their hashes, in order), the
triggers and whether they are enabled, the roles of a PostgreSQL cluster, the
files beside a SQLite ledger, and `verify`'s verdict.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import rawdb
from helpers import sample
from pgserver import PgServer

from kasmina.ledger import Ledger

#: The installed command, run as a user runs it.
BIN = str(Path(sys.executable).with_name("kasmina"))

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
                "SELECT tgrelid::regclass::text || '.' || tgname, tgenabled FROM pg_trigger "
                "WHERE tgrelid IN ('ledger_events'::regclass, 'ledger_streams'::regclass, "
                "'ledger_runs'::regclass, 'run_tips'::regclass) AND NOT tgisinternal "
                "ORDER BY 1",
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


def record_small_run(url: str, run_id: str = "victim", *, ledger_format: int = 2) -> None:
    """A sealed run of a few events, the thing every attack tries to change."""
    with Ledger.open(url) as ledger:
        ledger.new_run_format = ledger_format
        run = ledger.start_run(name="victim", seed=1, config={"epochs": 2}, run_id=run_id)
        ledger.append([sample(run_id, n=n) for n in range(5)])
        run.finish()


def owner_url(server: PgServer, database: str) -> str:
    return f"postgresql+psycopg://{OWNER_ROLE}@/{database}?host={server.base}&port={server.port}"


def cli_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], *, unchanged: str | None = None
) -> str:
    """Run `kasmina.cli.main` expecting a refusal: exit 2 and one ``error:`` line, returned.

    With `unchanged`, the ledger at that URL must keep its `fingerprint`, and
    nothing may reach stdout.
    """
    from kasmina.cli import main

    before = None if unchanged is None else fingerprint(unchanged)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    if unchanged is not None:
        assert captured.out == "", captured.out
        assert fingerprint(unchanged) == before
    return lines[0]


def kasmina(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command on `url`, its output decoded exactly as written.

    No newline translation (a recorded cell may hold ``\\r``), and wide columns
    so that no table cell wraps an escaped string in two.
    """
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    env["COLUMNS"] = "1000"
    proc = subprocess.run([BIN, "--db", url, *args], capture_output=True, env=env, timeout=120)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )
