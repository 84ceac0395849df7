"""`kasmina replay`: state at a cut, and `--verify` proving a demo run reproduces."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rawdb
from test_cli import _one_error_line, kasmina

from kasmina.demo import run_demo
from kasmina.events import EpochCompleted, PolicyDecided, SeedFossilized, StoredEvent
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

EPOCHS = 10
FIRST = re.compile(r"first diverging event: position (\d+) (\w+) in (\S+) ")
STREAMS = re.compile(r"DIVERGES in (\d+) stream\(s\)")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    path = tmp_path_factory.mktemp("replay") / "demo.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        run_id = run_demo(ledger, epochs=EPOCHS, seed=5).run_id
    yield path, run_id


def _copy(demo_run: tuple[Path, str], tmp_path: Path) -> tuple[str, str]:
    path, run_id = demo_run
    target = tmp_path / "copy.db"
    shutil.copy(path, target)
    return str(target), run_id


def _events(path: str, run_id: str) -> list[StoredEvent]:
    with Ledger.open(f"sqlite:///{path}") as ledger:
        return list(ledger.read(run_id))


def _recorded_digests(events: list[StoredEvent]) -> int:
    """Parameter digests the run recorded: one per seed per epoch, one per fossil."""
    per_epoch = sum(
        len(e.payload.param_digests) for e in events if isinstance(e.payload, EpochCompleted)
    )
    fossils = sum(
        1
        for e in events
        if isinstance(e.payload, SeedFossilized) and e.payload.param_digest is not None
    )
    return per_epoch + fossils


def test_verify_on_a_fresh_demo_run_finds_no_divergence(demo_run: tuple[Path, str]) -> None:
    path, run_id = demo_run
    events = _events(str(path), run_id)
    digests = _recorded_digests(events)
    assert any(e.event_type == "SeedFossilized" for e in events)  # both kinds of digest count
    proc = kasmina("replay", run_id, "--verify", db=f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        f"{len(events)} events compared, {digests} parameter digests equal, 0 divergences"
    ) in proc.stdout


def _first_divergence(path: str, run_id: str) -> tuple[int, str, str, int]:
    """The first diverging event the report names: position, type, stream, and stream count."""
    assert kasmina("verify", run_id, db=f"sqlite:///{path}").returncode == 0  # a clean forgery
    proc = kasmina("replay", run_id, "--verify", db=f"sqlite:///{path}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = FIRST.search(proc.stdout)
    streams = STREAMS.search(proc.stdout)
    assert found and streams, proc.stdout
    return int(found.group(1)), found.group(2), found.group(3), int(streams.group(1))


def _rewrite(path: str, run_id: str, edits: dict[int, Callable[[dict[str, Any]], None]]) -> None:
    """Edit the payloads at the given positions and re-chain the run (a forgery that verifies)."""
    order = iter(e.position for e in _events(path, run_id))

    def edit(event_type: str, payload: dict[str, Any]) -> None:
        change = edits.get(next(order))
        if change is not None:
            change(payload)

    rawdb.rewrite_sqlite_run(path, run_id, edit)


def test_a_changed_decision_is_caught_at_the_first_event_it_changes(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    """Another init seed gives other weights: the first digest of that seed is where it shows."""
    path, run_id = _copy(demo_run, tmp_path)
    events = _events(path, run_id)
    germinated = next(e for e in events if e.event_type == "SeedGerminated")
    shows = next(
        e
        for e in events
        if e.position > germinated.position
        and isinstance(e.payload, EpochCompleted)
        and germinated.seed_id in e.payload.param_digests
    )

    decided = next(
        e
        for e in events
        if isinstance(e.payload, PolicyDecided)
        and e.payload.decision_id == germinated.payload.decision_id
    )

    def another_seed(payload: dict[str, Any]) -> None:
        payload["init_seed"] += 1  # the seed it planted

    def another_choice(payload: dict[str, Any]) -> None:
        payload["arguments"]["init_seed"] += 1  # the policy "chose" another seed

    _rewrite(path, run_id, {germinated.position: another_seed, decided.position: another_choice})
    position, event_type, stream, _ = _first_divergence(path, run_id)
    assert (position, event_type, stream) == (shows.position, shows.event_type, shows.stream_id)


def test_a_changed_hyper_parameter_is_caught_at_the_first_epoch(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    """A learning rate changes training itself, so the first epoch's results already differ."""
    path, run_id = _copy(demo_run, tmp_path)
    events = _events(path, run_id)
    first_epoch = next(e for e in events if e.event_type == "EpochCompleted")

    def other_rate(payload: dict[str, Any]) -> None:
        payload["config"]["lr"] = 0.004

    _rewrite(path, run_id, {events[0].position: other_rate})
    position, event_type, stream, _ = _first_divergence(path, run_id)
    assert (position, event_type, stream) == (
        first_epoch.position,
        first_epoch.event_type,
        first_epoch.stream_id,
    )


def test_forged_results_in_three_streams_name_the_earliest_first(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    """Results are no input of the re-run, so each forged one is where its stream diverges.

    The earliest is in the middle of the report's sorted streams: naming the
    first or the last of the list, or the latest divergence, cannot pass.
    """
    path, run_id = _copy(demo_run, tmp_path)
    events = _events(path, run_id)

    def at(event_type: str, epoch: int, stream: str) -> StoredEvent:
        return next(
            e for e in events if (e.event_type, e.epoch, e.stream_id) == (event_type, epoch, stream)
        )

    forged = [
        at("CacheEvicted", 5, "memory/telemetry"),
        at("EpochCompleted", 3, "run"),
        at("SeedTelemetrySampled", 6, "slot/r0c1"),
    ]
    changes: dict[str, Callable[[dict[str, Any]], None]] = {
        "CacheEvicted": lambda p: p.update(evicted=p["evicted"] + 1),
        "EpochCompleted": lambda p: p.update(val_loss=p["val_loss"] + 1.0),
        "SeedTelemetrySampled": lambda p: p.update(epochs_in_stage=p["epochs_in_stage"] + 1),
    }
    _rewrite(path, run_id, {e.position: changes[e.event_type] for e in forged})
    earliest = min(forged, key=lambda e: e.position)
    assert earliest is forged[1]
    assert _first_divergence(path, run_id) == (
        earliest.position,
        earliest.event_type,
        earliest.stream_id,
        len(forged),
    )


def test_a_tampered_chain_is_refused_with_its_position_unless_trusted(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    path, run_id = _copy(demo_run, tmp_path)
    url = f"sqlite:///{path}"
    rawdb.drop_triggers(url)
    target = rawdb.run(url, "SELECT MIN(position) FROM events WHERE event_type = 'SeedPruned'")
    position = int(target[0][0])  # type: ignore[call-overload]
    rawdb.run(
        url,
        "UPDATE events SET payload = json_set(payload, '$.reason', 'other') WHERE position = ?",
        (position,),
    )
    for args in (("replay", run_id), ("replay", run_id, "--verify")):
        line = _one_error_line(kasmina(*args, db=url))
        assert f"position {position}:" in line and "--trust" in line
    trusted = kasmina("replay", run_id, "--trust", "--format", "json", db=url)
    assert trusted.returncode == 0, trusted.stderr
    slots = json.loads(trusted.stdout)["slots"]
    assert any(s["outcome"] == "pruned: other" for s in slots.values())


def test_state_at_an_epoch_as_json_is_the_fold(demo_run: tuple[Path, str]) -> None:
    path, run_id = demo_run
    with Ledger.open(f"sqlite:///{path}") as ledger:
        expected = ledger.replay(run_id, until_epoch=4).to_json()
    proc = kasmina("replay", run_id, "--at-epoch", "4", "--format", "json", db=f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(expected))
    table = kasmina("replay", run_id, "--at-epoch", "4", db=f"sqlite:///{path}")
    assert table.returncode == 0
    assert f"run {run_id}" in table.stdout and "at epoch 4" in table.stdout
    for slot_id in expected["slots"]:  # type: ignore[union-attr]
        assert slot_id in table.stdout


def test_jsonl_and_csv_give_a_slot_a_row_as_the_fold_has_it(demo_run: tuple[Path, str]) -> None:
    path, run_id = demo_run
    with Ledger.open(f"sqlite:///{path}") as ledger:
        state = ledger.replay(run_id, until_epoch=4)
    db = f"sqlite:///{path}"
    lines = kasmina("replay", run_id, "--at-epoch", "4", "--format", "jsonl", db=db)
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    expected = [(s.slot_id, s.stage.name, s.seed_id, s.alpha) for s in state.values()]
    assert [(r["slot_id"], r["stage"], r["seed_id"], r["alpha"]) for r in rows] == expected
    table = kasmina("replay", run_id, "--at-epoch", "4", "--format", "csv", db=db)
    records = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [(r["slot_id"], r["stage"]) for r in records] == [e[:2] for e in expected]
    assert list(records[0]) == list(rows[0])


def test_off_a_terminal_folding_prints_progress_lines_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'long.db'}"
    with Ledger.open(db) as ledger:
        run_id = synthetic_run(ledger, epochs=3000, slots=2, seed=0, gc_period=1000)
        total = ledger.runs()[0].events
    monkeypatch.setenv("KASMINA_PROGRESS_S", "0")  # a line at every step of the fold
    done = kasmina("replay", run_id, "--no-snapshots", "--format", "json", db=db)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)  # the output is untouched by the progress
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("folding: ") for line in lines)
    assert f"4,096/{total:,} events" in lines[0] and "s left" in lines[0]


def test_the_state_table_explains_its_gates_column(demo_run: tuple[Path, str]) -> None:
    path, run_id = demo_run
    table = kasmina("replay", run_id, db=f"sqlite:///{path}")
    assert table.returncode == 0, table.stderr
    flat = " ".join(table.stdout.split())
    assert "G2+ the last verdict of G2 passed, G2- it failed" in flat
    assert "(G2+3: three, the last passed)" in flat


def test_bad_replay_requests_get_one_error_line(demo_run: tuple[Path, str]) -> None:
    path, run_id = demo_run
    url = f"sqlite:///{path}"
    assert "no-such-run" in _one_error_line(kasmina("replay", "no-such-run", db=url))
    both = _one_error_line(
        kasmina("replay", run_id, "--at-epoch", "1", "--at-position", "3", db=url)
    )
    assert "not both" in both
    assert "--verify" in _one_error_line(
        kasmina("replay", run_id, "--verify", "--at-epoch", "2", db=url)
    )


def test_a_run_of_an_unknown_host_says_why_it_cannot_be_re_executed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'synthetic.db'}"
    with Ledger.open(url) as ledger:
        run_id = synthetic_run(ledger, epochs=3, slots=2)
    line = _one_error_line(kasmina("replay", run_id, "--verify", db=url))
    assert "host 'synthetic'" in line and "cannot rebuild" in line
