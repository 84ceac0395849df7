"""One output convention: every command that prints data takes --format json|jsonl|csv
with the same meaning. ``json`` is one document `python -m json.tool` accepts, ``jsonl``
one object per line, ``csv`` a header and rows; the three carry the same records.

Each command runs as a user runs it, in a subprocess whose stdout is a pipe.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

BIN = str(Path(sys.executable).with_name("kasmina"))

#: Each command, and where its json document keeps the records jsonl and csv give one
#: per line or row (None: the document is the list of them). `replay`'s json is the
#: whole folded state, its jsonl and csv the table's columns of each slot: those agree
#: on the plain fields they share (the table sums up gates as "G1+ G2+").
COMMANDS: dict[tuple[str, ...], str | None] = {
    ("runs",): None,
    ("history", "latest"): None,
    ("history", "latest", "--type", "SeedStageChanged"): None,
    ("sql", "SELECT slot_id, seed_id, stage, from_epoch FROM stage_intervals"): None,
    ("replay", "latest"): "slots",
}
FULLER = {("replay", "latest")}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('formats') / 'ledger.db'}"
    with Ledger.open(url) as ledger:
        synthetic_run(ledger, epochs=8, slots=3, seed=2, gc_period=3)
        synthetic_run(ledger, epochs=5, slots=2, seed=3, gc_period=3)
    return url


def _out(url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    done = subprocess.run(
        [BIN, "--db", url, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _records(document: object, key: str | None) -> list[dict[str, object]]:
    found = document if key is None else document[key]  # type: ignore[index]
    if isinstance(found, dict):  # keyed by name, as replay's slots are
        found = list(found.values())
    assert isinstance(found, list) and all(isinstance(r, dict) for r in found)
    return found


def _csv_text(value: object) -> str:
    """How a JSON value reads in a CSV cell: empty for null, 1/0 never, JSON for nested."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


@pytest.mark.parametrize("command", list(COMMANDS), ids=lambda c: " ".join(c)[:40])
def test_json_jsonl_and_csv_carry_the_same_records(url: str, command: tuple[str, ...]) -> None:
    text = _out(url, *command, "--format", "json")
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=text, capture_output=True, text=True
    )
    assert tool.returncode == 0, tool.stderr
    records = _records(json.loads(text), COMMANDS[command])
    assert records

    lines = [json.loads(line) for line in _out(url, *command, "--format", "jsonl").splitlines()]
    if command in FULLER:
        assert len(lines) == len(records)
        for line, record in zip(lines, records, strict=True):
            shared = [k for k in line if k in record and not isinstance(record[k], dict | list)]
            assert {"slot_id", "stage", "seed_id"} <= set(shared)
            assert {k: line[k] for k in shared} == {k: record[k] for k in shared}
        records = lines
    else:
        assert lines == records

    table = list(csv.reader(io.StringIO(_out(url, *command, "--format", "csv"))))
    header, rows = table[0], table[1:]
    assert len(rows) == len(records)
    assert set(header) <= set().union(*(r.keys() for r in records))
    for row, record in zip(rows, records, strict=True):
        for name, cell in zip(header, row, strict=True):
            value = record.get(name)
            if isinstance(value, float):
                assert float(cell) == pytest.approx(value), name
            elif not isinstance(value, dict | list | bool):
                assert cell == _csv_text(value), name
