"""`kasmina export`: one file per table, the same bytes from SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785
from conftest import new_pg_database
from helpers import copy_run
from pgserver import PgServer

from kasmina.export import COLUMN_KINDS, NOT_EXPORTED, Kind, export_run
from kasmina.files import atomic_text
from kasmina.ledger import Ledger
from kasmina.ledger.schema import COLUMNS, VIEWS

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).with_name("kasmina"))
RUN = "clients"
OTHER = "other"
FORMATS = ("csv", "jsonl", "parquet")
#: Wall-clock columns, and the hashes chained over them: all that may differ between databases.
CLOCK = ("recorded_at", "started_at", "finished_at", "prev_hash", "hash")
TABLES = ("events", *(v for v in VIEWS if v not in NOT_EXPORTED))
#: Empty for a run never resumed (tests/integration/test_superseded.py exports one that was),
#: and for a run that is not a fork (tests/integration/test_fork.py reads a fork's lineage).
MAY_BE_EMPTY = ("superseded_events", "run_lineage")
#: How those clock values look in a file.
CLOCKED = re.compile(r"[0-9a-f]{64}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def kasmina(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    return subprocess.run(
        [BIN, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


class Recorded:
    def __init__(self, folder: Path, urls: dict[str, str]) -> None:
        self.folder = folder
        self.urls = urls

    def out(self, backend: str, fmt: str) -> Path:
        return self.folder / f"{backend}-{fmt}"


@pytest.fixture(scope="module")
def recorded(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """A synthetic run copied into SQLite (as ./kasmina.db) and PostgreSQL, then exported.

    Both copies hold the same events, so only the clock columns may differ; a
    second run beside it shows that views are cut to the exported run.
    """
    from kasmina.replay.synthetic import synthetic_run

    folder = tmp_path_factory.mktemp("export")
    urls = {"sqlite": f"sqlite:///{folder / 'kasmina.db'}", "postgres": new_pg_database(pg_server)}
    with Ledger.open(f"sqlite:///{folder / 'source.db'}") as source:
        run_id = synthetic_run(source, epochs=40, slots=4, seed=1)
        for url in urls.values():
            with Ledger.open(url) as target:
                copy_run(source, target, run_id, RUN)
                copy_run(source, target, run_id, OTHER)
    rec = Recorded(folder, urls)
    for backend, url in urls.items():
        with Ledger.open(url) as ledger:
            for fmt in FORMATS:
                export_run(ledger, RUN, rec.out(backend, fmt), fmt)
    return rec


@pytest.fixture
def sqlite_ledger(recorded: Recorded) -> Iterator[Ledger]:
    with Ledger.open(recorded.urls["sqlite"]) as ledger:
        yield ledger


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_one_file_per_table(recorded: Recorded, backend: str, fmt: str) -> None:
    names = sorted(p.name for p in recorded.out(backend, fmt).iterdir())
    assert names == sorted(f"{t}.{fmt}" for t in TABLES)


def _records(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as src:
            return list(csv.DictReader(src))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("table", TABLES)
def test_text_formats_are_the_same_bytes_on_both_databases_but_for_the_clock(
    recorded: Recorded, fmt: str, table: str
) -> None:
    lite = recorded.out("sqlite", fmt) / f"{table}.{fmt}"
    pg = recorded.out("postgres", fmt) / f"{table}.{fmt}"
    lite_rows, pg_rows = _records(lite), _records(pg)
    assert lite_rows or table in MAY_BE_EMPTY, f"{table} exported no rows"
    assert len(lite_rows) == len(pg_rows)
    clocked = [c for c in CLOCK if lite_rows and c in lite_rows[0]]
    if not clocked:
        assert lite.read_bytes() == pg.read_bytes()
        return
    assert CLOCKED.sub("~", lite.read_text()) == CLOCKED.sub("~", pg.read_text())
    for lite_row, pg_row in zip(lite_rows, pg_rows, strict=True):
        assert {k: v for k, v in lite_row.items() if k not in clocked} == {
            k: v for k, v in pg_row.items() if k not in clocked
        }


def test_text_formats_spell_values_one_way(recorded: Recorded) -> None:
    out = recorded.out("postgres", "csv")
    flags = {r["passed"] for r in _records(out / "gate_checks.csv")} | {
        r["has_vanishing"] for r in _records(out / "seed_moves.csv")
    }
    assert flags == {"true", "false"}
    summary = _records(out / "run_summary.csv")[0]
    assert summary["evicted"].isdigit()  # type: ignore[union-attr]  # SUM is numeric on PG
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", str(summary["started_at"]))
    jsonl = recorded.out("sqlite", "jsonl")
    flags = {r["passed"] for r in _records(jsonl / "gate_checks.jsonl")} | {
        r["has_vanishing"] for r in _records(jsonl / "seed_moves.jsonl")
    }
    assert flags == {True, False}
    scores = [r["score"] for r in _records(jsonl / "gate_evaluations.jsonl")]
    assert scores and all(isinstance(s, float) for s in scores if s is not None)


ARROW = {
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.TEXT: pa.string(),
    Kind.BOOL: pa.bool_(),
    Kind.TIME: pa.timestamp("us", tz="UTC"),
}


@pytest.mark.parametrize("table", TABLES)
def test_parquet_is_typed_and_the_same_on_both_databases(recorded: Recorded, table: str) -> None:
    lite = pq.read_table(recorded.out("sqlite", "parquet") / f"{table}.parquet")
    pg = pq.read_table(recorded.out("postgres", "parquet") / f"{table}.parquet")
    assert lite.schema == pg.schema
    for field in lite.schema:
        assert field.type == ARROW[COLUMN_KINDS[field.name]], (table, field.name)
    keep = [c for c in lite.column_names if c not in CLOCK]
    assert lite.select(keep).to_pylist() == pg.select(keep).to_pylist()
    assert lite.num_rows > 0 or table in MAY_BE_EMPTY


def test_column_kinds_match_the_database_types(recorded: Recorded) -> None:
    """Every column of events and of every view has a declared kind, and the right one."""
    pg_kind = {
        "integer": Kind.INT,
        "bigint": Kind.INT,
        "numeric": Kind.INT,
        "double precision": Kind.FLOAT,
        "boolean": Kind.BOOL,
        "text": Kind.TEXT,
        "character varying": Kind.TEXT,
        "jsonb": Kind.TEXT,
        "timestamp with time zone": Kind.TIME,
    }
    conninfo = recorded.urls["postgres"].replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            [list(TABLES)],
        ).fetchall()
    assert {r[0] for r in rows} == set(TABLES)
    for table, column, data_type in rows:
        assert COLUMN_KINDS.get(column) == pg_kind[data_type], (table, column, data_type)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_events_round_trip_and_the_chain_checks_from_the_file_alone(
    recorded: Recorded, backend: str
) -> None:
    events = _records(recorded.out(backend, "jsonl") / "events.jsonl")
    with Ledger.open(recorded.urls[backend]) as ledger:
        store = ledger.store
        stored = [
            dict(
                zip(
                    COLUMNS,
                    (
                        *raw[:9],
                        store.payload_text(raw[9], 2),
                        store.recorded_at_text(raw[10]),
                        *raw[11:],
                    ),
                    strict=True,
                )
            )
            for raw in ledger.raw_rows(RUN)
        ]
    assert events == stored
    _audit_with_jcs(events)


def _audit_with_jcs(events: list[dict[str, object]]) -> None:
    """What an auditor does with the file, an RFC 8785 library and hashlib: no kasmina code.

    A format-2 hash is SHA-256 of the JCS text of the row's columns but
    position and hash (payload as its JSON value), plus ``"format": 2`` and
    ``run_prev_hash``: the hash of the run's event before it by position, or
    for the run's first event, the run start it links to (its own prev_hash).
    Numbers are read as IEEE doubles, as RFC 8785 has it.
    """
    run_prev = events[0]["prev_hash"]
    heads: dict[object, object] = {"run": run_prev}  # other streams start from 64 zeros
    for event in events:
        assert event["prev_hash"] == heads.get(event["stream_id"], "0" * 64)
        hashed = {k: v for k, v in event.items() if k not in ("position", "hash")}
        hashed["payload"] = json.loads(str(hashed["payload"]), parse_int=float)
        hashed["format"] = 2
        hashed["run_prev_hash"] = run_prev
        digest = hashlib.sha256(rfc8785.dumps(hashed)).hexdigest()
        assert digest == event["hash"]
        heads[event["stream_id"]] = run_prev = event["hash"]


def test_views_hold_only_the_run_but_the_transition_table_is_whole(
    recorded: Recorded, sqlite_ledger: Ledger
) -> None:
    for table in TABLES:
        rows = _records(recorded.out("sqlite", "csv") / f"{table}.csv")
        if table == "transition_table":
            _, all_rows = sqlite_ledger.sql("SELECT COUNT(*) FROM transition_table")
            assert len(rows) == next(all_rows)[0]
            continue
        assert rows or table in MAY_BE_EMPTY, table
        assert {r["run_id"] for r in rows} <= {RUN}, table
        _, count = sqlite_ledger.sql(f"SELECT COUNT(*) FROM {table} WHERE run_id = '{RUN}'")
        assert len(rows) == next(count)[0], table


def test_cli_export_reports_on_stderr_and_replaces_files_in_place(recorded: Recorded) -> None:
    out = recorded.folder / "again"
    out.mkdir()
    (out / "events.csv").write_text("stale\n")
    (out / "notes.txt").write_text("mine\n")
    proc = kasmina("export", RUN, "-o", "again", cwd=recorded.folder)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"wrote {len(TABLES)} files to again"
    assert (out / "events.csv").read_bytes() == (
        recorded.out("sqlite", "csv") / "events.csv"
    ).read_bytes()
    assert (out / "notes.txt").read_text() == "mine\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_unknown_run_is_one_error_line_and_writes_nothing(recorded: Recorded) -> None:
    proc = kasmina("export", "no-such-run", "-o", "nothing", cwd=recorded.folder)
    assert "no-such-run" in _one_error_line(proc)
    assert not (recorded.folder / "nothing").exists()


def test_parquet_without_pyarrow_says_what_to_install(recorded: Recorded) -> None:
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from kasmina.cli import main\n"
        f"raise SystemExit(main(['export', {RUN!r}, '--format', 'parquet', '-o', 'pq']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=recorded.folder,
        timeout=60,
    )
    assert "pip install 'kasmina[parquet]'" in _one_error_line(proc)
    assert not (recorded.folder / "pq").exists()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "events.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_text(target) as partial:
        partial.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]


def test_an_older_schema_exports_the_views_it_has(tmp_path: Path) -> None:
    from kasmina.ledger import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Ledger.open(url) as ledger:
        ledger.new_run_format = 1  # as every run was written before format 2
        ledger.start_run("old", seed=1, run_id=RUN).finish()
    migrate.downgrade(url, "0003")
    with Ledger.open(url) as ledger:
        written = export_run(ledger, RUN, tmp_path / "out")
    names = {p.stem for p in written}
    assert "events" in names and "run_summary" in names and "seed_moves" not in names
    assert names < set(TABLES)


def test_the_docs_examples_run(recorded: Recorded) -> None:
    text = (ROOT / "docs" / "export.md").read_text()
    lines = [
        line[2:]
        for block in re.findall(r"```console\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.startswith("$ kasmina ")
    ]
    assert lines
    for line in lines:
        proc = kasmina(*shlex.split(line)[1:], cwd=recorded.folder)
        assert proc.returncode == 0, f"{line}\n{proc.stderr}"
