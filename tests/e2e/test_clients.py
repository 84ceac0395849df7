"""Other clients read the ledger: the sqlite3 shell, psql and DuckDB.

The commands and code run here are parsed out of docs/clients.md, so the page
cannot rot: each client's rows must equal what `Ledger.sql` gives for the same
query.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import new_pg_database
from helpers import copy_run
from needs import tool
from pgserver import PgServer
from sqlalchemy.engine import make_url

from kasmina.ledger import Ledger

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
RUN = "clients"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def _commands(program: str) -> list[str]:
    lines = [
        line[2:]
        for block in _blocks("console")
        for line in block.splitlines()
        if line.startswith(f"$ {program} ")
    ]
    assert lines, f"docs/clients.md shows no {program} command"
    return lines


def _python(marker: str) -> list[str]:
    found = [code for code in _blocks("python") if marker in code]
    assert found, f"docs/clients.md has no python block with {marker!r}"
    return found


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's own first block, run where the page's commands will run."""
    folder = tmp_path_factory.mktemp("clients")
    setup = _blocks("python")[0]
    assert "run_demo" in setup and "export_run" in setup
    here = Path.cwd()
    os.chdir(folder)
    try:
        exec(compile(setup, str(DOC), "exec"), {"__name__": "__doc_example__"})
    finally:
        os.chdir(here)
    return folder


@pytest.fixture(scope="module")
def sqlite_ledger(recorded: Path) -> Iterator[Ledger]:
    with Ledger.open(f"sqlite:///{recorded / 'kasmina.db'}") as ledger:
        yield ledger


def _expected(ledger: Ledger, query: str) -> tuple[list[str], list[tuple[object, ...]]]:
    columns, rows = ledger.sql(query)
    return columns, list(rows)


def _same_cell(printed: str, value: object) -> bool:
    if value is None:
        return printed == ""
    if isinstance(value, bool):
        return printed in (("t", "true", "1") if value else ("f", "false", "0"))
    if isinstance(value, float):
        return float(printed) == pytest.approx(value, rel=1e-14)
    return printed == str(value)


def _check_csv(output: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    header, *printed = list(csv.reader(io.StringIO(output)))
    assert header == list(columns)
    assert rows, "the query found nothing: the example shows nothing"
    assert len(printed) == len(rows)
    for got, want in zip(printed, rows, strict=True):
        assert all(_same_cell(p, v) for p, v in zip(got, want, strict=True)), (got, want)


def _query(command: str) -> str:
    argv = shlex.split(command)
    return argv[argv.index("-c") + 1] if "-c" in argv else argv[-1]


@pytest.fixture(scope="module")
def sqlite3_shell() -> str:
    return tool("sqlite3", "sqlite3")


@pytest.mark.parametrize("command", _commands("sqlite3"), ids=lambda c: _query(c)[:40])
def test_sqlite3_shell(
    sqlite3_shell: str, recorded: Path, sqlite_ledger: Ledger, command: str
) -> None:
    proc = subprocess.run(
        ["bash", "-c", command], cwd=recorded, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    _check_csv(proc.stdout, *_expected(sqlite_ledger, _query(command)))


@pytest.fixture(scope="module")
def pg_ledger(
    pg_server: PgServer, sqlite_ledger: Ledger
) -> Iterator[tuple[Ledger, dict[str, str]]]:
    """The page's run copied into PostgreSQL, and the libpq variables psql connects with."""
    url = new_pg_database(pg_server)
    with Ledger.open(url) as ledger:
        copy_run(sqlite_ledger, ledger, RUN, RUN)
        database = str(make_url(url).database)
        env = {
            **os.environ,
            "PGHOST": pg_server.socket_dir,
            "PGPORT": str(pg_server.port),
            "PGUSER": "postgres",
            "PGDATABASE": database,
            "PATH": f"{pg_server.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        yield ledger, env


@pytest.mark.postgres
@pytest.mark.parametrize("command", _commands("psql"), ids=lambda c: _query(c)[:40])
def test_psql(pg_ledger: tuple[Ledger, dict[str, str]], command: str) -> None:
    ledger, env = pg_ledger
    proc = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    _check_csv(proc.stdout, *_expected(ledger, _query(command)))


def test_the_same_queries_run_on_both_databases() -> None:
    assert [_query(c) for c in _commands("sqlite3")] == [_query(c) for c in _commands("psql")]


@pytest.mark.parametrize(
    "code", _python("import duckdb"), ids=["parquet", "arrow", "sqlite-scanner"]
)
def test_duckdb(
    recorded: Path,
    sqlite_ledger: Ledger,
    code: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each DuckDB example as printed, on the page's run: the same rows as the ledger's SQL."""
    pytest.importorskip("duckdb")
    if "duckdb_extension_sqlite_scanner" in code:
        pytest.importorskip("duckdb_extension_sqlite_scanner")
    monkeypatch.chdir(recorded)
    scope: dict[str, object] = {"__name__": "__doc_example__"}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102
    _, want = _expected(sqlite_ledger, str(scope["query"]))
    assert want
    assert scope["rows"] == want
    assert capsys.readouterr().out.strip() == repr(want)


def test_the_scanner_wheel_is_built_for_the_installed_duckdb() -> None:
    """DuckDB loads only extensions of its own version: the two pins must move together."""
    duckdb = pytest.importorskip("duckdb")
    wheel = pytest.importorskip("duckdb_extension_sqlite_scanner")
    shipped = sorted(p.name for p in (Path(wheel.__file__).parent / "extensions").iterdir())
    assert shipped == [f"v{duckdb.__version__}"], (
        "keep duckdb and duckdb-extension-sqlite-scanner at the same version in pyproject.toml"
    )
