"""Forking a run: `kasmina run --fork RUN@EPOCH` starts a new run from a recorded one.

The program is a user's own (wine, an MLP with two slots, a data-order
generator of its own) that checkpoints every epoch. A fork at epoch N must
start in the parent's state at N (its fold at its start equals the parent's
fold at N, its trained weights equal the parent's checkpoint), then record a
history of its own; `run_lineage` answers which runs descend from which, the
same on both databases; a fork re-executes with 0 divergences.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kasmina.errors import ReplayError
from kasmina.events import CheckpointSaved, EpochCompleted, RunStarted
from kasmina.ledger import Ledger
from kasmina.programs import RecordedProgram, fork_program, load_program, parse_target
from kasmina.replay import restore_checkpoint
from kasmina.replay.engine import replay_run
from kasmina.replay.reexecution import reexecute

BIN = str(Path(sys.executable).with_name("kasmina"))
EPOCHS = 6

PROGRAM = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_wine
    from torch import nn

    from kasmina import HeuristicPolicy, QualityGates, SeedManager, SeedSlot


    def data():
        raw = load_wine()
        x = torch.tensor(raw.data, dtype=torch.float32)
        shuffle = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        return ((x - x.mean(0)) / x.std(0))[shuffle], torch.tensor(raw.target)[shuffle]


    def build():
        return nn.Sequential(
            nn.Linear(13, 12), nn.ReLU(),
            SeedSlot("early", 12, topology="tabular"),
            nn.Linear(12, 12), nn.ReLU(),
            SeedSlot("late", 12, topology="tabular"),
            nn.Linear(12, 3),
        )


    def main(ctx):
        x, y = data()
        ctx.dataset_digest("sklearn.load_wine", x.numpy().tobytes())
        model = build()
        optimizer = torch.optim.SGD(model.parameters(), lr=ctx.config["lr"], momentum=0.9)
        gates = QualityGates(permissive=True, min_training_epochs=1, min_blending_epochs=1)
        policy = ctx.policy(HeuristicPolicy(tempo=2, min_contribution=0.0, fossil_budget=1))
        manager = SeedManager(model, optimizer, ctx.recorder, policy=policy, gates=gates)
        order = torch.Generator().manual_seed(ctx.seed)
        done = ctx.restore(model, optimizer, manager=manager, order=order)
        for group in optimizer.param_groups:  # the what-if: a fork may change the rate
            group["lr"] = ctx.config["lr"]

        def evaluate(m):
            m.eval()
            with torch.no_grad():
                hits = (m(x[140:]).argmax(1) == y[140:]).float().mean().item()
            m.train()
            return {"val_accuracy": 100 * hits}

        for epoch in range(0 if done is None else done + 1, ctx.config["epochs"]):
            perm = torch.randperm(140, generator=order)
            for step in range(4):
                index = perm[step * 35 : step * 35 + 35]
                optimizer.zero_grad()
                F.cross_entropy(model(x[index]), y[index]).backward()
                manager.after_backward()
                optimizer.step()
            manager.end_epoch(epoch, evaluate=evaluate)
            ctx.checkpoint(model, optimizer, epoch=epoch, manager=manager, order=order)
    """
)


def kasmina(url: str, artifacts: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, "--db", url, "--artifacts", str(artifacts), *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("code") / "wine.py"
    path.write_text(PROGRAM)
    return path


def _lineage(ledger: Ledger) -> list[tuple[object, ...]]:
    return sorted(
        tuple(row)
        for row in ledger.sql(
            "SELECT run_id, ancestor_run_id, depth, epoch FROM run_lineage ORDER BY run_id, depth"
        )[1]
    )


def test_a_fork_starts_in_its_parents_state_and_goes_its_own_way(
    db_url: str, program: Path, tmp_path: Path
) -> None:
    art = tmp_path / "art"
    config = f'{{"epochs": {EPOCHS}, "lr": 0.05}}'
    done = kasmina(db_url, art, "run", f"{program}:main", "--run-id", "p",
                   "--config", config, "--seed", "5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    fork = kasmina(db_url, art, "run", "--fork", "p@2", "--run-id", "f", "--config", '{"lr": 0.2}')
    assert fork.returncode == 0, fork.stderr
    grand = kasmina(db_url, art, "run", "--fork", "f@4", "--run-id", "g")
    assert grand.returncode == 0, grand.stderr

    with Ledger.open(db_url, artifacts=art) as ledger:
        for run in ("p", "f", "g"):
            assert ledger.verify(run).ok, run
        started = next(ledger.read("f", stream_id="run")).payload
        assert isinstance(started, RunStarted) and started.parent is not None
        saved = {
            e.payload.epoch: e
            for e in ledger.read("p", stream_id="run")
            if isinstance(e.payload, CheckpointSaved)
        }
        assert (started.parent.run_id, started.parent.epoch) == ("p", 2)
        assert started.parent.position == saved[2].position
        assert started.config == {"epochs": EPOCHS, "lr": 0.2} and started.seed == 5

        # Folded fork at its start == folded parent at the fork's epoch.
        at_start = replay_run(ledger, "f", until_position=next(ledger.read("f")).position)
        assert at_start.slots == replay_run(ledger, "p", until_epoch=2).slots
        assert replay_run(ledger, "f", until_epoch=2).slots == at_start.slots
        # ... and its own later history: epochs 3.. only, different from the parent's.
        ours = {
            e.epoch: e.payload for e in ledger.read("f") if isinstance(e.payload, EpochCompleted)
        }
        theirs = {
            e.epoch: e.payload for e in ledger.read("p") if isinstance(e.payload, EpochCompleted)
        }
        assert sorted(ours) == list(range(3, EPOCHS))
        assert all(ours[k].param_digests != theirs[k].param_digests for k in ours)
        with pytest.raises(ReplayError, match="starts from run p at epoch 2"):
            replay_run(ledger, "f", until_epoch=1)

        assert _lineage(ledger) == [("f", "p", 1, 2), ("g", "f", 1, 4), ("g", "p", 2, 2)]
        descendants = ledger.sql(
            "SELECT run_id FROM run_lineage WHERE ancestor_run_id = 'p' ORDER BY run_id"
        )[1]
        assert [r[0] for r in descendants] == ["f", "g"]


def test_a_fork_re_executes_with_no_divergence(
    sqlite_url: str, program: Path, tmp_path: Path
) -> None:
    art = tmp_path / "art"
    with Ledger.open(sqlite_url, artifacts=art) as ledger:
        from kasmina.programs import run_program

        run_program(ledger, f"{program}:main", run_id="p", config={"epochs": 4, "lr": 0.05})
        fork_program(ledger, "p@1", run_id="f", config={"lr": 0.1})
        report = reexecute(ledger, "f", RecordedProgram(source=ledger))
    assert report.ok, report.divergences
    # The re-run's policy is the log's decisions, so its checkpoint files differ from the
    # recorded ones in the policy's own state alone: weights and optimizer are compared.
    assert any("apart from the policy's own" in note for note in report.notes)
    assert report.compared == sum(1 for _ in Ledger.open(sqlite_url).read("f"))
    assert report.digests > 0


def test_the_checkpoint_at_an_epoch_restores_the_trained_weights(
    sqlite_url: str, program: Path, tmp_path: Path
) -> None:
    art = tmp_path / "art"
    entry = parse_target(f"{program}:main")
    module = sys.modules[load_program(entry).__module__]
    with Ledger.open(sqlite_url, artifacts=art) as ledger:
        from kasmina.programs import run_program

        run_program(ledger, f"{program}:main", run_id="p", config={"epochs": 4, "lr": 0.05})
        recorded = {
            e.epoch: e.payload
            for e in ledger.read("p", stream_id="run")
            if isinstance(e.payload, EpochCompleted)
        }
        fresh = module.build()
        untrained = [p.detach().clone() for p in fresh.parameters()]
        epoch = restore_checkpoint(fresh, ledger, "p", until_epoch=2)
        assert epoch == 2
        folded = replay_run(ledger, "p", until_epoch=2)
        assert {s.slot_id: s for s in (m.state for m in _slots(fresh))} == {
            k: v for k, v in folded.slots.items()
        }
        # The weights are training's, not germination's: every recorded digest matches.
        digests = recorded[2].param_digests
        assert digests, "the run recorded no seed digests at epoch 2"
        from kasmina.runtime.blueprints import param_digests

        live = param_digests({m.seed_id: m.seed for m in _slots(fresh) if m.seed is not None})
        assert {k: live[k] for k in digests} == digests
        trained = list(fresh.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(untrained, trained, strict=True))
        x, y = module.data()
        fresh.eval()
        with torch.no_grad():
            hits = (fresh(x[140:]).argmax(1) == y[140:]).float().mean().item()
        assert 100 * hits == recorded[2].val_accuracy


def _slots(model: torch.nn.Module) -> list:  # type: ignore[type-arg]
    from kasmina.runtime.slot import SeedSlot

    return [m for m in model.modules() if isinstance(m, SeedSlot)]


def test_a_fork_point_without_a_checkpoint_is_one_clear_error(
    sqlite_url: str, program: Path, tmp_path: Path
) -> None:
    art = tmp_path / "art"
    done = kasmina(sqlite_url, art, "run", f"{program}:main", "--run-id", "p",
                   "--config", '{"epochs": 2, "lr": 0.05}')  # fmt: skip
    assert done.returncode == 0, done.stderr
    for spec, says in [
        ("p@7", "run p has no checkpoint at epoch 7 to fork from (its checkpoints: 0, 1)"),
        ("nope@1", "nope"),
        ("p-1", "a fork point is written RUN@EPOCH"),
    ]:
        bad = kasmina(sqlite_url, art, "run", "--fork", spec)
        assert bad.returncode != 0
        assert says in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_checkpoints_that_differ_in_one_weight_are_told_apart_by_path() -> None:
    from kasmina.checkpoints import capture, state_differences

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = capture(model, optimizer, epoch=0, stateful={})
    with torch.no_grad():
        model.bias[1] += 1e-6
    after = capture(model, optimizer, epoch=0, stateful={})
    assert state_differences(before, before) == []
    assert state_differences(before, after) == ["/model/bias"]
