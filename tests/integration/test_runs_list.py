"""`kasmina runs`: filters, sorting, the summary columns, and ids never cut, on both databases."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from kasmina.cli import main
from kasmina.events import EpochCompleted
from kasmina.layouts import print_table
from kasmina.ledger import Ledger
from kasmina.run_list import RUN_COLUMNS, RUN_DROPPABLE, since_time


def _record(db_url: str) -> dict[str, str]:
    """Three runs: two finished with an accuracy each, one left open."""
    ids = {}
    with Ledger.open(db_url) as ledger:
        for name, accuracies, status in (
            ("wide-a", [50.0, 71.5], "completed"),
            ("narrow", [40.0, 88.25], "failed"),
            ("wide-b", [30.0], None),
        ):
            run = ledger.start_run(name, seed=0)
            for epoch, accuracy in enumerate(accuracies):
                run.recorder.emit(
                    EpochCompleted(val_accuracy=accuracy), stream_id="run", epoch=epoch
                )
            run.recorder.flush()
            if status is not None:
                run.finish(status)  # type: ignore[arg-type]
            ids[name] = run.run_id
    return ids


def _listed(db_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["--db", db_url, "runs", "--format", "json", *args]) == 0
    return list(json.loads(capsys.readouterr().out))


def test_runs_give_status_epochs_final_accuracy_and_duration(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _record(db_url)
    listed = _listed(db_url, capsys)
    assert [r["run_id"] for r in listed] == [ids["wide-a"], ids["narrow"], ids["wide-b"]]
    assert [(r["status"], r["epochs"], r["final_val_accuracy"]) for r in listed] == [
        ("completed", 2, 71.5),
        ("failed", 2, 88.25),
        ("open", 1, 30.0),
    ]
    durations = [r["duration_s"] for r in listed]
    assert all(isinstance(d, float) and d >= 0 for d in durations[:2]) and durations[2] is None


def test_runs_filter_by_name_pattern_status_and_start(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _record(db_url)
    wide = [r["run_id"] for r in _listed(db_url, capsys, "--name", "wide-*")]
    assert wide == [ids["wide-a"], ids["wide-b"]]
    assert [r["run_id"] for r in _listed(db_url, capsys, "--status", "open")] == [ids["wide-b"]]
    assert len(_listed(db_url, capsys, "--since", "1h")) == 3
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert _listed(db_url, capsys, "--since", tomorrow) == []


def test_runs_sort_by_any_column_with_missing_values_last(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _record(db_url)
    by_accuracy = _listed(db_url, capsys, "--sort", "accuracy", "--reverse")
    assert [r["run_id"] for r in by_accuracy] == [ids["narrow"], ids["wide-a"], ids["wide-b"]]
    by_duration = _listed(db_url, capsys, "--sort", "duration")
    assert by_duration[-1]["run_id"] == ids["wide-b"]  # open: no duration yet
    by_name = _listed(db_url, capsys, "--sort", "name")
    assert [r["name"] for r in by_name] == ["narrow", "wide-a", "wide-b"]


def test_a_bad_since_is_one_line(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db_url, "runs", "--since", "yesterday"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--since 'yesterday' is neither a date" in err


def test_since_reads_dates_times_and_ages() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert since_time("3d", now) == now - timedelta(days=3)
    assert since_time("90m", now) == now - timedelta(minutes=90)
    assert since_time("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert since_time("2026-12-01T09:30+01:00", now) == datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


def test_the_table_in_a_pipe_cuts_no_id_or_status(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _record(db_url)
    with Ledger.open(db_url) as ledger:
        long_id = "a-run-id-far-longer-than-any-terminal-column-" + "x" * 15
        ledger.start_run("long", seed=0, run_id=long_id).finish()
    assert main(["--db", db_url, "runs"]) == 0
    table = capsys.readouterr().out
    for word in (*ids.values(), long_id, "completed", "failed", "open"):
        assert word in table


def test_a_narrow_terminal_drops_columns_before_it_wraps_a_value() -> None:
    run_id = "0123456789abcdef0123456789abcdef"
    row = (run_id, "wide-a", "completed", "2", "71.5", "23", "0.9s", "2026-12-06 12:00:00")
    buffer = io.StringIO()
    terminal = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    print_table(RUN_COLUMNS, [row], terminal, buffer, droppable=RUN_DROPPABLE)
    drawn = buffer.getvalue()
    assert run_id in drawn and "completed" in drawn and "wide-a" in drawn
    assert "events" not in drawn and "started" not in drawn  # the first to go
    assert max(len(line) for line in drawn.splitlines()) <= 80
