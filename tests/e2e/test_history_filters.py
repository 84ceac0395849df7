"""`history --type/--no-samples/--since-epoch/--limit`, the same with and without --follow."""

from __future__ import annotations

import json

import pytest

from kasmina.cli import main
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run


@pytest.fixture
def run_url(db_url: str) -> str:
    with Ledger.open(db_url) as ledger:
        synthetic_run(ledger, epochs=6, slots=3, seed=0, gc_period=1000)
    return db_url


def _history(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["--db", url, "history", "latest", "--format", "jsonl", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_type_keeps_only_the_types_named(run_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    every = _history(run_url, capsys)
    kinds = {"SeedStageChanged", "RunFinished"}
    picked = _history(run_url, capsys, "--type", "SeedStageChanged", "--type", "RunFinished")
    assert picked == [e for e in every if e["event_type"] in kinds]
    assert {e["event_type"] for e in picked} == kinds


def test_no_samples_leaves_out_telemetry(run_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    every = _history(run_url, capsys)
    assert any(e["event_type"] == "SeedTelemetrySampled" for e in every)
    quiet = _history(run_url, capsys, "--no-samples")
    assert quiet == [e for e in every if e["event_type"] != "SeedTelemetrySampled"]


def test_since_epoch_starts_at_the_epoch_and_keeps_the_seal(
    run_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    every = _history(run_url, capsys)
    first = next(i for i, e in enumerate(every) if e["epoch"] is not None and e["epoch"] >= 3)
    later = _history(run_url, capsys, "--since-epoch", "3")
    assert later == every[first:]
    assert later[-1]["event_type"] == "RunFinished"
    assert _history(run_url, capsys, "--since-epoch", "99") == []


def test_limit_prints_the_first_n(run_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    every = _history(run_url, capsys, "--no-samples")
    assert _history(run_url, capsys, "--no-samples", "--limit", "3") == every[:3]


def test_follow_applies_the_same_filters(run_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    filters = ("--type", "SeedStageChanged", "--since-epoch", "2")
    assert _history(run_url, capsys, "--follow", *filters) == _history(run_url, capsys, *filters)
    assert main(["--db", run_url, "history", "latest", "--follow", "--limit", "2"]) != 0
    assert "drop --limit" in capsys.readouterr().err
