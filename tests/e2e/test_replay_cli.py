"""`kasmina replay`: state at a cut, and `--verify` proving a demo run reproduces."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rawdb
from test_cli import _one_error_line, kasmina

from kasmina.demo import run_demo
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run

EPOCHS = 10
FIRST = re.compile(r"first diverging event: position (\d+) (\w+) in (\S+)")


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


def _event_type_at(path: str, position: int) -> str:
    rows = rawdb.run(f"sqlite:///{path}", "SELECT event_type FROM events WHERE position = ?",
                     (position,))
    return str(rows[0][0])


def test_verify_on_a_fresh_demo_run_finds_no_divergence(demo_run: tuple[Path, str]) -> None:
    path, run_id = demo_run
    with Ledger.open(f"sqlite:///{path}") as ledger:
        recorded = next(r.events for r in ledger.runs() if r.run_id == run_id)
    proc = kasmina("replay", run_id, "--verify", db=f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{recorded} events compared" in proc.stdout
    assert "0 divergences" in proc.stdout


def _diverges(path: str, run_id: str, tampered_position: int) -> None:
    assert kasmina("verify", run_id, db=f"sqlite:///{path}").returncode == 0  # a clean forgery
    proc = kasmina("replay", run_id, "--verify", db=f"sqlite:///{path}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = FIRST.search(proc.stdout)
    assert found, proc.stdout
    position, event_type = int(found.group(1)), found.group(2)
    assert position >= tampered_position
    assert _event_type_at(path, position) == event_type
    assert "DIVERGES" in proc.stdout


def test_a_changed_decision_is_caught_and_the_first_divergence_named(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    path, run_id = _copy(demo_run, tmp_path)
    germinations = rawdb.run(
        f"sqlite:///{path}",
        "SELECT position FROM events WHERE event_type = 'SeedGerminated' ORDER BY position")
    first = int(germinations[0][0])  # type: ignore[call-overload]
    done: list[int] = []

    def edit(event_type: str, payload: dict[str, Any]) -> None:
        if event_type == "SeedGerminated" and not done:
            payload["init_seed"] += 1  # the policy "chose" another seed
            done.append(1)

    rawdb.rewrite_sqlite_run(path, run_id, edit)
    _diverges(path, run_id, first)


def test_a_changed_hyper_parameter_is_caught(demo_run: tuple[Path, str], tmp_path: Path) -> None:
    path, run_id = _copy(demo_run, tmp_path)

    def edit(event_type: str, payload: dict[str, Any]) -> None:
        if event_type == "RunStarted":
            payload["config"]["lr"] = 0.004

    rawdb.rewrite_sqlite_run(path, run_id, edit)
    _diverges(path, run_id, 1)


def test_a_tampered_chain_is_refused_with_its_position_unless_trusted(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    path, run_id = _copy(demo_run, tmp_path)
    url = f"sqlite:///{path}"
    rawdb.drop_triggers(url)
    target = rawdb.run(url, "SELECT MIN(position) FROM events WHERE event_type = 'SeedPruned'")
    position = int(target[0][0])  # type: ignore[call-overload]
    rawdb.run(url, "UPDATE events SET payload = json_set(payload, '$.reason', 'other') "
                   "WHERE position = ?", (position,))
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
    proc = kasmina("replay", run_id, "--at-epoch", "4", "--format", "json",
                   db=f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(expected))
    table = kasmina("replay", run_id, "--at-epoch", "4", db=f"sqlite:///{path}")
    assert table.returncode == 0
    assert f"run {run_id}" in table.stdout and "at epoch 4" in table.stdout
    for slot_id in expected["slots"]:  # type: ignore[union-attr]
        assert slot_id in table.stdout


def test_bad_replay_requests_get_one_error_line(demo_run: tuple[Path, str]) -> None:
    path, run_id = demo_run
    url = f"sqlite:///{path}"
    assert "no-such-run" in _one_error_line(kasmina("replay", "no-such-run", db=url))
    both = _one_error_line(kasmina("replay", run_id, "--at-epoch", "1", "--at-position", "3",
                                   db=url))
    assert "not both" in both
    assert "--verify" in _one_error_line(kasmina("replay", run_id, "--verify", "--at-epoch", "2",
                                                 db=url))


def test_a_run_of_an_unknown_host_says_why_it_cannot_be_re_executed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'synthetic.db'}"
    with Ledger.open(url) as ledger:
        run_id = synthetic_run(ledger, epochs=3, slots=2)
    line = _one_error_line(kasmina("replay", run_id, "--verify", db=url))
    assert "host 'synthetic'" in line and "cannot rebuild" in line
