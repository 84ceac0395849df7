"""Run references: ids, unique prefixes, unique names and `latest~N`, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kasmina.cli import main
from kasmina.errors import AmbiguousRun, RunNotFound
from kasmina.ledger import Ledger

FIRST = "aaaa1111" + "0" * 24
SECOND = "aaaa2222" + "0" * 24
THIRD = "bbbb3333" + "0" * 24


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    with Ledger.open(db_url) as opened:
        # Started in this order: `latest` is the last of them.
        opened.start_run("baseline", seed=0, run_id=FIRST).finish()
        opened.start_run("wide", seed=1, run_id=SECOND).finish()
        opened.start_run("wide", seed=2, run_id=THIRD).finish()
        yield opened


def test_a_full_id_a_unique_prefix_and_a_unique_name_name_one_run(ledger: Ledger) -> None:
    assert ledger.resolve_run(SECOND) == SECOND
    assert ledger.resolve_run("aaaa1") == FIRST
    assert ledger.resolve_run("bbbb") == THIRD
    assert ledger.resolve_run("baseline") == FIRST


def test_latest_counts_back_in_start_order(ledger: Ledger) -> None:
    assert [ledger.resolve_run(r) for r in ("latest", "latest~0", "latest~1", "latest~2")] == [
        THIRD,
        THIRD,
        SECOND,
        FIRST,
    ]
    with pytest.raises(RunNotFound, match=r"no run 'latest~3': the ledger holds 3 runs"):
        ledger.resolve_run("latest~3")


def test_a_prefix_shorter_than_four_characters_names_nothing(ledger: Ledger) -> None:
    with pytest.raises(RunNotFound, match=r"no run matches 'bbb' \(a run id, a unique"):
        ledger.resolve_run("bbb")


def test_an_ambiguous_reference_lists_every_run_it_could_mean(ledger: Ledger) -> None:
    with pytest.raises(AmbiguousRun) as shared_prefix:
        ledger.resolve_run("aaaa")
    assert shared_prefix.value.candidates == [
        f"'{FIRST}' (name 'baseline', started {_started(ledger, FIRST)})",
        f"'{SECOND}' (name 'wide', started {_started(ledger, SECOND)})",
    ]
    with pytest.raises(AmbiguousRun, match=r"'wide' names 2 runs: 'aaaa2222.*'bbbb3333"):
        ledger.resolve_run("wide")
    # The name of one run and the prefix of another: both are listed, neither guessed.
    ledger.start_run("bbbb", seed=3, run_id="c" * 32).finish()
    with pytest.raises(AmbiguousRun, match=r"'bbbb' names 2 runs"):
        ledger.resolve_run("bbbb")


def test_an_id_wins_over_every_other_reading(db_url: str) -> None:
    with Ledger.open(db_url) as ledger:
        ledger.start_run("first", seed=0, run_id="latest").finish()
        ledger.start_run("second", seed=0, run_id="d" * 32).finish()
        assert ledger.resolve_run("latest") == "latest"
        assert ledger.resolve_run("latest~0") == "d" * 32


def test_an_empty_ledger_has_no_latest_run(db_url: str) -> None:
    with Ledger.open(db_url) as ledger, pytest.raises(RunNotFound, match="holds no runs"):
        ledger.resolve_run("latest")


def test_every_command_that_takes_a_run_takes_a_reference(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ledger.url
    assert main(["--db", url, "history", "latest~2", "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(f'"run_id": "{FIRST}"' in line for line in lines)
    assert main(["--db", url, "verify", "baseline"]) == 0
    assert f"run {FIRST}:" in capsys.readouterr().out
    assert main(["--db", url, "replay", "bbbb", "--format", "json"]) == 0
    assert THIRD in capsys.readouterr().out
    assert main(["--db", url, "history", "wide"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'wide' names 2 runs" in err


def _started(ledger: Ledger, run_id: str) -> str:
    [info] = [r for r in ledger.runs() if r.run_id == run_id]
    return f"{info.started_at:%Y-%m-%d %H:%M:%S}"
