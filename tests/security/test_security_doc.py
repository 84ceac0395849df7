"""docs/security.md's console sessions are run against a real PostgreSQL, output compared.

Each ``console`` block is a session: ``$ `` lines are commands, the lines up
to the next command are what it prints (stdout, then stderr). ``$OWNER_URL``
is a database owned by a non-superuser login that holds one sealed run;
``$ANALYST_URL`` the same database reached as a login of no privileges.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psycopg
from pgserver import PgServer

from kasmina.ledger.urls import parse_url

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
BIN = str(Path(sys.executable).with_name("kasmina"))
ANALYST = "analyst"


def sessions() -> list[list[tuple[str, list[str]]]]:
    found = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), flags=re.S):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        found.append(steps)
    return found


def test_the_console_sessions_print_what_the_page_shows(
    owner_pg_url: str, pg_server: PgServer, tmp_path: Path
) -> None:
    from security.attacks import record_small_run

    record_small_run(owner_pg_url)
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ANALYST,)).fetchone():
            conn.execute(f"CREATE ROLE {ANALYST} LOGIN")
        conn.execute(f"REVOKE kasmina_reader FROM {ANALYST}")  # roles outlive databases
    analyst_url = parse_url(owner_pg_url).set(username=ANALYST).render_as_string()
    urls = {"$OWNER_URL": owner_pg_url, "$ANALYST_URL": analyst_url}
    env = {**os.environ, "COLUMNS": "80"}
    found = sessions()
    assert found, "docs/security.md has no console session"
    for steps in found:
        for command, expected in steps:
            argv = [urls.get(word, word) for word in shlex.split(command)]
            assert argv[0] == "kasmina", command
            proc = subprocess.run(
                [BIN, *argv[1:]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            printed = (proc.stdout + proc.stderr).rstrip("\n").splitlines()
            assert printed == expected, f"{command}\n{proc.stdout}{proc.stderr}"
