"""Format 2's run chain and chain of run starts catch what stream chains cannot.

Each attack here leaves every stream chain intact, so a format-1 ledger
verified after it; in format 2 every event also links to the run's event
before it by position, and each run's first event to the ledger's run start
before it (`kasmina.jcs`), so `verify` reports each one.
"""

from __future__ import annotations

import threading

import pytest
import rawdb
from helpers import sample, stage_change

from kasmina.cli import main
from kasmina.ledger import Ledger
from kasmina.stages import SeedStage

RUNS = ("first", "second", "third")
MOVES = [
    (SeedStage.DORMANT, SeedStage.GERMINATED),
    (SeedStage.GERMINATED, SeedStage.TRAINING),
    (SeedStage.TRAINING, SeedStage.BLENDING),
]


def _record(ledger: Ledger, run_id: str, *, finish: bool = True) -> None:
    """A run whose two slot streams interleave by position, then its seal."""
    run = ledger.start_run(run_id, seed=1, run_id=run_id)
    for n, (a, b) in enumerate(MOVES):
        ledger.append([stage_change(run_id, "r0c0", a, b, epoch=n)])
        ledger.append([sample(run_id, "r0c1", epoch=n, n=n)])
    if finish:
        run.finish()


@pytest.fixture
def three_runs(ledger: Ledger, db_url: str) -> tuple[Ledger, str]:
    for run_id in RUNS:
        _record(ledger, run_id)
    report = ledger.verify()
    assert report.ok and [r.format for r in report.runs] == [2, 2, 2]
    rawdb.drop_triggers(db_url)
    return ledger, db_url


def _position(url: str, run_id: str, stream: str, version: int) -> int:
    rows = rawdb.run(
        url,
        "SELECT position FROM events WHERE run_id = ? AND stream_id = ? AND version = ?",
        (run_id, stream, version),
    )
    return int(rows[0][0])  # type: ignore[call-overload]


def _faults(ledger: Ledger, run_id: str | None = None) -> list[tuple[str, str, str]]:
    """The faults `verify` names, the same whether each run is split between processes."""
    report = ledger.verify(run_id, jobs=1)
    assert ledger.verify(run_id, jobs=2) == report
    return [(f.kind, f.run_id, f.stream_id) for f in report.faults]


def test_events_of_two_streams_swapped_by_position_are_a_fault(
    three_runs: tuple[Ledger, str],
) -> None:
    ledger, url = three_runs
    a = _position(url, "second", "slot/r0c0", 2)
    b = _position(url, "second", "slot/r0c1", 2)
    spare = 1_000_000
    rawdb.run(url, "UPDATE events SET position = ? WHERE position = ?", (spare, a))
    rawdb.run(url, "UPDATE events SET position = ? WHERE position = ?", (a, b))
    rawdb.run(url, "UPDATE events SET position = ? WHERE position = ?", (b, spare))
    faults = _faults(ledger, "second")
    # Each stream is still in version order and linked: only the run chain sees it.
    assert {kind for kind, _, _ in faults} == {"hash_mismatch"}
    assert _faults(ledger, "first") == [] and _faults(ledger, "third") == []


def test_a_deleted_run_breaks_the_next_runs_link_and_its_format_row_names_it(
    three_runs: tuple[Ledger, str],
) -> None:
    ledger, url = three_runs
    rawdb.run(url, "DELETE FROM events WHERE run_id = 'second'")
    assert _faults(ledger) == [
        ("broken_run_link", "third", "run"),
        ("missing_run", "second", "run"),
    ]
    # A thorough forger deletes its format row as well: the link still breaks.
    rawdb.run(url, "DELETE FROM ledger_runs WHERE run_id = 'second'")
    assert _faults(ledger) == [("broken_run_link", "third", "run")]
    assert _faults(ledger, "third") == [("broken_run_link", "third", "run")]


def test_the_last_event_of_a_stream_cut_from_an_open_run_is_a_fault(
    ledger: Ledger, db_url: str
) -> None:
    """No seal names the stream's head yet; the run's next event links to the cut one."""
    _record(ledger, "open", finish=False)
    assert ledger.verify("open").ok
    rawdb.drop_triggers(db_url)
    rawdb.run(
        db_url,
        "DELETE FROM events WHERE position = ?",
        (_position(db_url, "open", "slot/r0c0", 3),),
    )
    assert _faults(ledger, "open") == [("hash_mismatch", "open", "slot/r0c1")]


def test_a_run_rewritten_as_format_1_after_format_2_runs_is_a_fault(
    three_runs: tuple[Ledger, str],
) -> None:
    ledger, url = three_runs
    rawdb.run(url, "UPDATE ledger_runs SET format = 1 WHERE run_id = 'third'")
    kinds = {kind for kind, run_id, _ in _faults(ledger) if run_id == "third"}
    assert "wrong_format" in kinds


def test_verify_says_which_format_each_run_is(
    three_runs: tuple[Ledger, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = three_runs
    assert main(["--db", url, "verify", "second"]) == 0
    assert ", sealed, format 2\n" in capsys.readouterr().out
    assert main(["--db", url, "verify", "second", "--format", "json"]) == 0
    assert '"format": 2' in capsys.readouterr().out


def test_runs_started_at_once_by_many_writers_chain_one_after_another(db_url: str) -> None:
    """Each run start links to the one before it: concurrent starts take turns.

    Without the ledger-wide lock two runs starting together would both link to
    the same earlier start, and `verify` would report a `broken_run_link`.
    """
    writers = 6
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def start(n: int) -> None:
        try:
            with Ledger.open(db_url) as own:
                barrier.wait()
                for k in range(3):
                    own.start_run(f"w{n}", seed=n, run_id=f"w{n}-{k}").finish()
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with Ledger.open(db_url) as ledger:
        report = ledger.verify()
    assert report.ok, report.faults[:3]
    assert len(report.runs) == writers * 3
    links = rawdb.run(
        db_url,
        "SELECT prev_hash FROM events WHERE event_type = 'RunStarted' ORDER BY position",
    )
    assert len(set(links)) == writers * 3  # no two runs link to the same start
