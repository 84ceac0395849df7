"""`kasmina history` on a resumed run: superseded events marked with their attempt, or left out.

The run is a real program's (a seed slot driven by a `SeedManager`,
checkpointed after every epoch) that raises where ``CRASH_AFTER_EPOCH``
says, after the epoch's events and before its checkpoint, so each crash
leaves events behind. Four attempts: the first dies after epoch 2, the
second after epoch 2 again (before any checkpoint of its own, so the third
resumes from the same checkpoint and its range covers the second's), the
third after epoch 4, and the fourth finishes. What `history` prints is
checked against `ledger.attempts` and against the database's own
`superseded_events` and `live_events` views, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import rawdb
from conftest import new_pg_database
from pgserver import PgServer

from kasmina.events import RunResumed, StoredEvent
from kasmina.layouts import HISTORY_COLUMNS, HISTORY_FIELDS
from kasmina.ledger import Ledger
from kasmina.ledger.attempts import Attempts
from kasmina.programs import ProgramFailed, resume_program, run_program

BIN = str(Path(sys.executable).with_name("kasmina"))
RUN = "resumed"
CRASH = "CRASH_AFTER_EPOCH"

PROGRAM = textwrap.dedent(
    """
    import os

    import torch
    import torch.nn.functional as F
    from torch import nn

    from kasmina import HeuristicPolicy, QualityGates, SeedManager, SeedSlot


    def main(ctx):
        data = torch.Generator().manual_seed(0)
        x = torch.randn(120, 4, generator=data)
        y = (x[:, 0] + x[:, 1] > 0).long()
        model = nn.Sequential(
            nn.Linear(4, 8), nn.ReLU(), SeedSlot("hidden", 8, topology="tabular"), nn.Linear(8, 2)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        gates = QualityGates(permissive=True, min_training_epochs=1, min_blending_epochs=1)
        policy = ctx.policy(HeuristicPolicy(tempo=2, min_contribution=0.0))
        manager = SeedManager(model, optimizer, ctx.recorder, policy=policy, gates=gates)
        done = ctx.restore(model, optimizer, manager=manager)

        def evaluate(m):
            with torch.no_grad():
                return {"val_accuracy": 100 * (m(x).argmax(1) == y).float().mean().item()}

        crash = os.environ.get("CRASH_AFTER_EPOCH")
        for epoch in range(0 if done is None else done + 1, ctx.config["epochs"]):
            for i in range(0, 120, 40):
                optimizer.zero_grad()
                F.cross_entropy(model(x[i : i + 40]), y[i : i + 40]).backward()
                manager.after_backward()
                optimizer.step()
            manager.end_epoch(epoch, evaluate=evaluate)
            if crash == str(epoch):
                raise RuntimeError(f"crashed after epoch {epoch}")
            ctx.checkpoint(model, optimizer, epoch=epoch, manager=manager)
    """
)


@dataclass(frozen=True)
class Resumed:
    url: str
    artifacts: Path
    events: list[StoredEvent]
    attempts: Attempts
    #: position -> attempt, as the database's `superseded_events` view has it.
    superseded: dict[int, int]
    #: positions of the run in the `live_events` view.
    live: list[int]


def _attempt(ledger: Ledger, program: Path, crash_after: int | None, *, first: bool) -> None:
    if crash_after is None:
        os.environ.pop(CRASH, None)
    else:
        os.environ[CRASH] = str(crash_after)
    try:
        if first:
            run_program(ledger, f"{program}:main", run_id=RUN, config={"epochs": 6}, seed=3)
        else:
            resume_program(ledger, RUN)
    except ProgramFailed:
        assert crash_after is not None
    else:
        assert crash_after is None
    finally:
        os.environ.pop(CRASH, None)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def resumed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Resumed]:
    folder = tmp_path_factory.mktemp("resumed")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'ledger.db'}"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = new_pg_database(server)
    program = folder / "crashing.py"
    program.write_text(PROGRAM)
    artifacts = folder / "artifacts"
    with Ledger.open(url, artifacts=artifacts) as ledger:
        for n, crash_after in enumerate((2, 2, 4, None)):
            _attempt(ledger, program, crash_after, first=n == 0)
        events = list(ledger.read(RUN))
        attempts = ledger.attempts(RUN)
    view = rawdb.run(url, "SELECT position, attempt FROM superseded_events WHERE run_id = ?", [RUN])
    live = rawdb.run(url, "SELECT position FROM live_events WHERE run_id = ? ORDER BY 1", [RUN])
    yield Resumed(
        url,
        artifacts,
        events,
        attempts,
        {int(str(p)): int(str(a)) for p, a in view},
        [int(str(p)) for (p,) in live],
    )


def kasmina(r: Resumed, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("KASMINA_DB", CRASH)}
    env |= {"KASMINA_ARTIFACTS": str(r.artifacts), "COLUMNS": "400"}
    proc = subprocess.run(
        [BIN, "--db", r.url, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def _marks_of_table(text: str) -> dict[int, int | None]:
    """Position -> the attempt the table marks it with, from a rich table or `--follow` lines."""
    marks: dict[int, int | None] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")] if "│" in line else line.split()
        if not cells or not cells[0].isdigit():
            continue  # borders and the header
        found = line.split("superseded (attempt ")
        marks[int(cells[0])] = int(found[1].split(")")[0]) if len(found) > 1 else None
    return marks


def test_the_run_has_what_the_marks_are_about(resumed: Resumed) -> None:
    resumes = [e.payload for e in resumed.events if isinstance(e.payload, RunResumed)]
    assert [p.attempt for p in resumes] == [2, 3, 4]
    assert resumes[0].abandoned_after_position == resumes[1].abandoned_after_position
    assert resumed.attempts.count == 4
    expected = {e.position: resumed.attempts.abandoned_by(e.position) for e in resumed.events}
    assert {p: a for p, a in expected.items() if a is not None} == resumed.superseded
    assert len(set(resumed.superseded.values())) >= 2  # two attempts left events behind
    # The second attempt's own RunResumed is inside the third's range: superseded too.
    second = next(e for e in resumed.events if isinstance(e.payload, RunResumed))
    assert second.position in resumed.superseded
    # Each abandoned event is charged to the attempt that wrote it (one more than the
    # resumes before it), though the third's wider range covers the first's events too.
    starts = [e.position for e in resumed.events if isinstance(e.payload, RunResumed)]
    writer = {p: 1 + sum(s < p for s in starts) for p in resumed.superseded}
    assert resumed.superseded == writer and 1 in writer.values()
    assert "verify: OK" in kasmina(resumed, "verify", RUN)  # every checkpoint file included


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_files_carry_the_abandoned_attempt_of_every_event(resumed: Resumed, fmt: str) -> None:
    text = kasmina(resumed, "history", RUN, "--format", fmt)
    if fmt == "json":
        items = json.loads(text)
    elif fmt == "jsonl":
        items = [json.loads(line) for line in text.splitlines()]
    else:
        items = list(csv.DictReader(io.StringIO(text)))
        for item in items:
            item["position"] = int(item["position"])
            item["abandoned_attempt"] = int(item["abandoned_attempt"] or 0) or None
    assert [i["position"] for i in items] == [e.position for e in resumed.events]
    marks = {i["position"]: i["abandoned_attempt"] for i in items}
    assert marks == {e.position: resumed.superseded.get(e.position) for e in resumed.events}


def test_the_table_marks_each_superseded_row_with_its_attempt(resumed: Resumed) -> None:
    marks = _marks_of_table(kasmina(resumed, "history", RUN))
    assert marks == {e.position: resumed.superseded.get(e.position) for e in resumed.events}


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_live_leaves_out_what_the_live_events_view_leaves_out(resumed: Resumed, fmt: str) -> None:
    text = kasmina(resumed, "history", RUN, "--live", "--format", fmt)
    if fmt == "jsonl":
        items = [json.loads(line) for line in text.splitlines()]
        marks = {i["position"]: i["abandoned_attempt"] for i in items}
    else:
        marks = _marks_of_table(text)
    assert list(marks) == resumed.live
    assert set(marks.values()) == {None}
    kept = [e.payload.attempt for e in resumed.events if isinstance(e.payload, RunResumed)]
    shown = [
        e.payload.attempt
        for e in resumed.events
        if isinstance(e.payload, RunResumed) and e.position in marks
    ]
    assert shown == kept[1:]  # the live resumes stay; the superseded one goes with its range


def test_live_and_the_filters_go_together(resumed: Resumed) -> None:
    text = kasmina(resumed, "history", RUN, "--live", "--slot", "hidden", "--format", "jsonl")
    positions = [json.loads(line)["position"] for line in text.splitlines()]
    expected = [
        e.position
        for e in resumed.events
        if e.stream_id == "slot/hidden" and e.position not in resumed.superseded
    ]
    assert positions == expected and positions


@pytest.mark.parametrize("live", [False, True])
def test_follow_marks_and_hides_as_the_plain_read_does(resumed: Resumed, live: bool) -> None:
    flag = ["--live"] if live else []
    plain = kasmina(resumed, "history", RUN, *flag, "--format", "jsonl")
    followed = kasmina(resumed, "history", RUN, *flag, "--follow", "--format", "jsonl")
    assert followed == plain
    table = kasmina(resumed, "history", RUN, *flag, "--follow")
    assert table.splitlines()[0].split() == list(HISTORY_COLUMNS)
    assert _marks_of_table(table) == {
        i["position"]: i["abandoned_attempt"] for i in map(json.loads, plain.splitlines())
    }
    text = kasmina(resumed, "history", RUN, *flag, "--follow", "--format", "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(HISTORY_FIELDS) and len(rows) == len(plain.splitlines()) + 1
