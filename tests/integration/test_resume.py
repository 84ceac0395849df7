"""Resuming a crashed run: killed with SIGKILL again and again, it ends as if never stopped.

The program below is a user's own (breast cancer, an MLP with two slots,
dropout drawing on torch's generator, a data-order generator of its own). It
checkpoints at the end of every epoch and kills itself with SIGKILL where
``KILL_AT`` says (an epoch and a step, or ``end`` for after the epoch's
events and before its checkpoint), so the points are chosen by the test, not
by timing. Each attempt is a real process: `kasmina run`, then
`kasmina run --resume` until the run finishes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kasmina.events import CheckpointSaved, RunResumed
from kasmina.ledger import Ledger
from kasmina.ledger.rows import RowReader
from kasmina.replay.engine import replay_run
from kasmina.replay.reexecution import Reexecution, compare, live_events

BIN = str(Path(sys.executable).with_name("kasmina"))
EPOCHS = 10
STEPS = 8

PROGRAM = textwrap.dedent(
    """
    import os
    import signal

    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_breast_cancer
    from torch import nn

    from kasmina import HeuristicPolicy, QualityGates, SeedManager, SeedSlot


    def main(ctx):
        data = load_breast_cancer()
        x = torch.tensor(data.data, dtype=torch.float32)
        x = (x - x.mean(0)) / x.std(0)
        y = torch.tensor(data.target)
        ctx.dataset_digest("sklearn.load_breast_cancer", x.numpy().tobytes())
        model = nn.Sequential(
            nn.Linear(30, 16), nn.ReLU(), nn.Dropout(0.1),
            SeedSlot("first", 16, topology="tabular"),
            nn.Linear(16, 16), nn.ReLU(),
            SeedSlot("second", 16, topology="tabular"),
            nn.Linear(16, 2),
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        gates = QualityGates(permissive=True, min_training_epochs=1, min_blending_epochs=1)
        policy = ctx.policy(HeuristicPolicy(tempo=2, min_contribution=0.0, fossil_budget=1))
        manager = SeedManager(model, optimizer, ctx.recorder, policy=policy, gates=gates)
        order = torch.Generator().manual_seed(ctx.seed)
        done = ctx.restore(model, optimizer, manager=manager, order=order)

        def evaluate(m):
            m.eval()
            with torch.no_grad():
                hits = (m(x[400:]).argmax(1) == y[400:]).float().mean().item()
            m.train()
            return {"val_accuracy": 100 * hits}

        kill = os.environ.get("KILL_AT")
        for epoch in range(0 if done is None else done + 1, ctx.config["epochs"]):
            perm = torch.randperm(400, generator=order)
            for step in range(8):
                if kill == f"{epoch}:{step}":
                    os.kill(os.getpid(), signal.SIGKILL)
                index = perm[step * 50 : step * 50 + 50]
                optimizer.zero_grad()
                F.cross_entropy(model(x[index]), y[index]).backward()
                manager.after_backward()
                optimizer.step()
            manager.end_epoch(epoch, evaluate=evaluate)
            if kill == f"{epoch}:end":
                os.kill(os.getpid(), signal.SIGKILL)
            ctx.checkpoint(model, optimizer, epoch=epoch, manager=manager, order=order)
    """
)


def kasmina(url: str, artifacts: Path, *args: str, kill_at: str | None = None) -> int:
    env = {**os.environ, "KASMINA_ARTIFACTS": str(artifacts)}
    env.pop("KILL_AT", None)
    if kill_at is not None:
        env["KILL_AT"] = kill_at
    done = subprocess.run([BIN, "--db", url, *args], env=env, capture_output=True, text=True)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def kill_points(rng: random.Random, count: int) -> list[str]:
    """`count` points in the order a run reaches them, the first before any checkpoint."""
    points = [f"{e}:{s}" for e in range(EPOCHS) for s in [*map(str, range(STEPS)), "end"]]
    chosen = sorted(rng.sample(range(1, len(points) - 1), count - 1))
    return [points[0], *(points[i] for i in chosen)]


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("code") / "cancer.py"
    path.write_text(PROGRAM)
    return path


@pytest.fixture(scope="module")
def uninterrupted(program: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("reference")
    url = f"sqlite:///{folder / 'reference.db'}"
    config = f'{{"epochs": {EPOCHS}}}'
    assert kasmina(url, folder / "art", "run", f"{program}:main", "--run-id", "r",
                   "--config", config, "--seed", "3") == 0  # fmt: skip
    return url


def test_a_run_killed_ten_times_and_resumed_equals_the_uninterrupted_run(
    db_url: str, program: Path, uninterrupted: str, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    kills = kill_points(random.Random(2026), 10)
    config = f'{{"epochs": {EPOCHS}}}'
    first = kasmina(db_url, artifacts, "run", f"{program}:main", "--run-id", "r",
                    "--config", config, "--seed", "3", kill_at=kills[0])  # fmt: skip
    assert first == -signal.SIGKILL
    for point in kills[1:]:
        assert kasmina(db_url, artifacts, "run", "--resume", "r", kill_at=point) == -signal.SIGKILL
    assert kasmina(db_url, artifacts, "run", "--resume", "r") == 0

    with Ledger.open(db_url, artifacts=artifacts) as resumed, Ledger.open(uninterrupted) as ref:
        assert resumed.verify("r").ok  # every checkpoint file included
        resumes = [e for e in resumed.read("r") if isinstance(e.payload, RunResumed)]
        assert [e.payload.attempt for e in resumes] == list(range(2, 12))
        assert resumes[0].payload.from_epoch is None  # killed before its first checkpoint
        attempts = resumed.attempts("r")
        superseded = [e for e in resumed.read("r") if attempts.superseded(e.position)]
        assert superseded, "the kills left events of abandoned attempts behind"

        report = Reexecution("r")
        compare(ref, resumed, "r", report)
        assert report.divergences == []
        assert report.compared == sum(1 for _ in ref.read("r")) and report.digests > 0
        saved = [e.payload for e in live_events(resumed, "r", "run")]
        assert [p.epoch for p in saved if isinstance(p, CheckpointSaved)] == list(range(EPOCHS))
        assert replay_run(resumed, "r").slots == replay_run(ref, "r").slots
        for epoch in (2, 6):
            assert replay_run(resumed, "r", until_epoch=epoch).slots == (
                replay_run(ref, "r", until_epoch=epoch).slots
            )


TINY = textwrap.dedent(
    """
    import torch

    def main(ctx):
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(2):
            ctx.checkpoint(model, optimizer, epoch=epoch)
    """
)


def test_a_missing_or_corrupt_checkpoint_is_a_verify_fault_naming_its_digest(
    db_url: str, tmp_path: Path
) -> None:
    from kasmina.programs import run_program

    program = tmp_path / "tiny.py"
    program.write_text(TINY)
    with Ledger.open(db_url, artifacts=tmp_path / "store") as ledger:
        run_program(ledger, f"{program}:main", run_id="t")
        assert ledger.verify("t").ok
        saved = [e.payload for e in ledger.read("t") if isinstance(e.payload, CheckpointSaved)]
        assert ledger.artifacts is not None and len(saved) == 2
        first, second = (ledger.artifacts.root / p.path for p in saved)
        first.write_bytes(first.read_bytes() + b"x")
        second.unlink()
        faults = {(f.kind, f.detail.split()[1]) for f in ledger.verify("t").faults}
    assert faults == {("bad_artifact", saved[0].digest), ("missing_artifact", saved[1].digest)}


def test_verify_names_a_checkpoints_row_without_looking_up_its_previous_hash(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint row that hashes soundly is never rendered as the view shows it:
    its fault takes the stored columns, with no query for its stream's previous hash."""
    from kasmina.programs import run_program

    program = tmp_path / "tiny.py"
    program.write_text(TINY)
    with Ledger.open(db_url, artifacts=tmp_path / "store") as ledger:
        run_program(ledger, f"{program}:main", run_id="t")
        saved = [e for e in ledger.read("t") if isinstance(e.payload, CheckpointSaved)]
        assert ledger.artifacts is not None and len(saved) == 2
        for event in saved:
            assert isinstance(event.payload, CheckpointSaved)
            (ledger.artifacts.root / event.payload.path).unlink()
        looked_up: list[object] = []
        previous_at = RowReader._previous_at

        def recorded(reader: RowReader, position: object) -> object:
            looked_up.append(position)
            return previous_at(reader, position)

        monkeypatch.setattr(RowReader, "_previous_at", recorded)
        faults = ledger.verify("t").faults
    assert [(f.kind, f.stream_id, f.position, f.version) for f in faults] == [
        ("missing_artifact", e.stream_id, e.position, e.version) for e in saved
    ]
    assert not {e.position for e in saved} & set(looked_up)
