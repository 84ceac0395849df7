"""`verify --format`: every format parses as what it says, on a sound and a tampered
ledger, and a fault still exits 1 whatever the format."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import rawdb

from kasmina.cli import main
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run
from kasmina.spreadsheet import original

RUN_FIELDS = ["run_id", "events", "streams", "sealed", "format"]
FAULT_FIELDS = ["run_id", "stream_id", "position", "version", "kind", "detail"]


@pytest.fixture
def two_runs(db_url: str) -> tuple[str, list[str]]:
    with Ledger.open(db_url) as ledger:
        runs = [synthetic_run(ledger, epochs=4, slots=2, seed=s, gc_period=10) for s in (1, 2)]
    return db_url, runs


def _verify(capsys: pytest.CaptureFixture[str], url: str, fmt: str, *args: str) -> tuple[int, str]:
    code = main(["--db", url, "verify", "--format", fmt, *args])
    return code, capsys.readouterr().out


def _tamper(url: str, run_id: str) -> int:
    """Change one event's epoch in place: a hash that no longer matches its row."""
    rawdb.drop_triggers(url)
    [(position,)] = rawdb.run(
        url, "SELECT MAX(position) FROM events WHERE run_id = ? AND epoch IS NOT NULL", (run_id,)
    )
    rawdb.run(url, "UPDATE ledger_events SET epoch = epoch + 1000 WHERE position = ?", (position,))
    assert isinstance(position, int)
    return position


@pytest.mark.parametrize("tampered", [False, True], ids=["sound", "tampered"])
def test_each_format_parses_and_says_the_same(
    two_runs: tuple[str, list[str]], tampered: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    url, runs = two_runs
    position = _tamper(url, runs[1]) if tampered else None
    expected_code = 1 if tampered else 0

    code, text = _verify(capsys, url, "json")
    assert code == expected_code
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=text, capture_output=True, text=True
    )
    assert tool.returncode == 0, tool.stderr
    document = json.loads(text)
    assert document["ok"] is not tampered
    assert sorted(r["run_id"] for r in document["runs"]) == sorted(runs)
    faults = document["faults"]
    assert bool(faults) is tampered
    if tampered:
        assert {(f["run_id"], f["kind"], f["position"]) for f in faults} >= {
            (runs[1], "hash_mismatch", position)
        }

    code, text = _verify(capsys, url, "jsonl")
    assert code == expected_code
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["record"] for r in records] == ["run"] * len(runs) + ["fault"] * len(faults)
    assert [{k: r[k] for k in RUN_FIELDS} for r in records[: len(runs)]] == document["runs"]
    assert [{k: r[k] for k in FAULT_FIELDS} for r in records[len(runs) :]] == faults

    code, text = _verify(capsys, url, "csv")
    assert code == expected_code
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == FAULT_FIELDS
    assert [[original(c) for c in row] for row in rows[1:]] == [
        [str(f[k]) if f[k] is not None else "" for k in FAULT_FIELDS] for f in faults
    ]

    code, text = _verify(capsys, url, "table")
    assert code == expected_code
    assert ("verify: OK" in text) is not tampered


def test_a_run_named_keeps_its_format(
    two_runs: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, runs = two_runs
    position = _tamper(url, runs[0])
    code, text = _verify(capsys, url, "jsonl", runs[0])
    records = [json.loads(line) for line in text.splitlines()]
    assert code == 1
    assert (records[0]["record"], records[0]["run_id"]) == ("run", runs[0])
    assert ("fault", "hash_mismatch", position) in {
        (r["record"], r.get("kind"), r.get("position")) for r in records
    }
    assert _verify(capsys, url, "csv", runs[1]) == (0, ",".join(FAULT_FIELDS) + "\n")
