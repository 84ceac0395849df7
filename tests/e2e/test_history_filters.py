"""`history --type/--no-samples/--since-epoch/--limit`, the same with and without --follow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kasmina import events
from kasmina.cli import main
from kasmina.events import Payload, register
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

BIN = str(Path(sys.executable).with_name("kasmina"))


class HistoryFilterSpike(Payload):
    """A user's own event type: this test registers it, the CLI's process does not."""

    value: float


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


def test_a_type_nobody_recorded_is_refused_with_the_nearest_name(
    run_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", run_url, "history", "latest", "--type", "SeedStageChange"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: no event type 'SeedStageChange': not one of kasmina's, and this ledger "
        "has recorded none (did you mean SeedStageChanged?)"
    ]


def test_following_a_type_not_recorded_yet_warns_and_follows(
    run_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's own type may come later in a live run; a finished run just ends."""
    args = ["--db", run_url, "history", "latest", "--follow", "--type", "SeedStageChange"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert printed.err.strip().splitlines() == [
        "warning: no event type 'SeedStageChange': not one of kasmina's, and this ledger "
        "has recorded none yet (did you mean SeedStageChanged?); following in case it comes"
    ]
    assert printed.out.strip().splitlines()[1:] == []


def test_a_users_own_type_recorded_here_is_taken_without_its_class(run_url: str) -> None:
    """The CLI has not imported the user's module, yet their type is in the ledger."""
    register(HistoryFilterSpike)
    try:
        with Ledger.open(run_url) as ledger:
            run = ledger.start_run(name="own", seed=0)
            run.recorder.emit(HistoryFilterSpike(value=3.5), stream_id="run", epoch=0)
            run.finish()
            assert "HistoryFilterSpike" in ledger.event_types()
    finally:
        events._REGISTRY.pop("HistoryFilterSpike", None)
    env = {k: v for k, v in os.environ.items() if k != "KASMINA_DB"}
    args = ["--db", run_url, "history", run.run_id, "--format", "jsonl", "--type"]
    found = subprocess.run(
        [BIN, *args, "HistoryFilterSpike"], capture_output=True, text=True, env=env, timeout=120
    )
    assert found.returncode == 0, found.stderr
    printed = [json.loads(line) for line in found.stdout.splitlines()]
    assert [(e["event_type"], e["payload"]) for e in printed] == [
        ("HistoryFilterSpike", {"value": 3.5})
    ]
