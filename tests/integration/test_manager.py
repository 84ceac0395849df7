"""SeedManager in a user's own training loop: seeds join and leave the optimizer, gradients
are measured, the epoch is recorded, and a policy's decisions are recorded with their effects,
on SQLite and PostgreSQL.

The model is a small MLP on scikit-learn's wine data with tabular slots, a shape the docs do
not show. Everything runs on the CPU in a few milliseconds per epoch.
"""

from __future__ import annotations

import functools
import gc
import random
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_wine
from sklearn.metrics import f1_score
from torch import nn

from kasmina.errors import PayloadInvalid, SlotError
from kasmina.events import EpochCompleted, PolicyDecided, SeedGateEvaluated
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger, Run
from kasmina.policy import (
    Action,
    Advance,
    Fossilize,
    Germinate,
    HeuristicPolicy,
    Observation,
    Prune,
    RecordedPolicy,
    SetAlphaTarget,
    Wait,
)
from kasmina.runtime.isolation import GradientMonitor
from kasmina.runtime.manager import AUTO_SAMPLES, SEEDS_GROUP, EpochResult, SeedManager
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage

WIDTH = 8
#: Gates that let a healthy seed through quickly: one training epoch, no blending minimum.
EASY = QualityGates(permissive=True, min_training_epochs=1, min_blending_epochs=0)


# -- the model, its data and its loop ----------------------------------------------------


@functools.cache
def wine() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised wine features, shuffled once: 120 rows to train on, 58 to validate."""
    data = load_wine()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:120], y[:120], x[120:], y[120:]


class WineNet(nn.Module):
    """13 features -> 8 hidden -> the slots in turn -> 3 classes.

    A slot of topology ``transformer`` sees the hidden features as a sequence of one step.
    """

    def __init__(self, *slots: SeedSlot) -> None:
        super().__init__()
        self.inp = nn.Linear(13, WIDTH)
        self.blocks = nn.ModuleList(slots)
        self.out = nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x))
        for slot in self.blocks:
            assert isinstance(slot, SeedSlot)
            h = slot(h) if slot.topology == "tabular" else slot(h.unsqueeze(1)).squeeze(1)
        out: torch.Tensor = self.out(h)
        return out

    def slot(self, slot_id: str) -> SeedSlot:
        return next(s for s in self.blocks if isinstance(s, SeedSlot) and s.slot_id == slot_id)


def wine_net(*slot_ids: str, seed: int = 0, **slot_options: Any) -> WineNet:
    """The same weights for the same `seed`: each test's model is built from its own seed."""
    torch.manual_seed(seed)
    return WineNet(*(SeedSlot(i, WIDTH, topology="tabular", **slot_options) for i in slot_ids))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, manager: SeedManager) -> float:
    """One pass over the training rows in batches of 16; the mean loss.

    No graph outlives the call (a live `loss` would hold every parameter it touched).
    """
    x, y, _, _ = wine()
    losses = []
    for i in range(0, len(y), 16):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
        loss.backward()  # type: ignore[no-untyped-call]
        manager.after_backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return sum(losses) / len(losses)


def predictions(model: nn.Module) -> torch.Tensor:
    _, _, xv, _ = wine()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits: torch.Tensor = model(xv)
    model.train(was_training)
    return logits


def evaluate(model: nn.Module) -> dict[str, float]:
    """Validation accuracy (0-100) and loss, what `end_epoch(evaluate=...)` takes."""
    _, _, _, yv = wine()
    logits = predictions(model)
    return {
        "val_accuracy": float((logits.argmax(1) == yv).float().mean()) * 100,
        "val_loss": float(F.cross_entropy(logits, yv)),
    }


def macro_f1(model: nn.Module) -> float:
    _, _, _, yv = wine()
    return float(f1_score(yv.numpy(), predictions(model).argmax(1).numpy(), average="macro"))


class Scripted:
    """A policy that plays a script of actions by epoch and keeps what it was shown."""

    name = "scripted"

    def __init__(self, script: Mapping[int, Sequence[Action]] | None = None) -> None:
        self.script = dict(script or {})
        self.seen: list[Observation] = []

    def decide(self, observation: Observation) -> list[Action]:
        self.seen.append(observation)
        return list(self.script.get(observation.epoch, ()))


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05)


def run_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    manager: SeedManager,
    epochs: range,
    *,
    metrics: Callable[[], Mapping[str, float]] | None = None,
) -> list[EpochResult]:
    results = []
    for epoch in epochs:
        loss = train_epoch(model, optimizer, manager)
        extra = {"train_loss": loss, **(metrics() if metrics else {})}
        results.append(manager.end_epoch(epoch, metrics=extra, evaluate=evaluate))
    return results


@pytest.fixture
def run(ledger: Ledger) -> Run[Ledger]:
    return ledger.start_run("manager", seed=0)


@pytest.fixture
def sqlite_run(tmp_path: Path) -> Iterator[Run[Ledger]]:
    with Ledger.open(f"sqlite:///{tmp_path / 'manager.db'}") as led:
        yield led.start_run("manager", seed=0)


def rows(ledger: Ledger, query: str) -> list[tuple[Any, ...]]:
    _, found = ledger.sql(query)
    return [tuple(r) for r in found]


def slot_streams(ledger: Ledger, run_id: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each slot stream as (event type, payload) pairs: what two runs of one script share."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for e in ledger.read(run_id):
        if e.slot_id is not None:
            out.setdefault(e.slot_id, []).append((e.event_type, e.payload.model_dump()))
    return out


def decisions_of(ledger: Ledger, run_id: str) -> list[tuple[int, PolicyDecided]]:
    """A run's decisions with their epochs: what `RecordedPolicy` takes."""
    found = []
    for e in ledger.read(run_id):
        if isinstance(e.payload, PolicyDecided):
            assert e.epoch is not None
            found.append((e.epoch, e.payload))
    return found


def stage_path(ledger: Ledger, run_id: str, slot_id: str) -> list[tuple[int, str, str]]:
    """(epoch, from, to) of every move of a slot, from the `stage_changes` view."""
    return [
        (int(epoch), str(a), str(b))
        for epoch, a, b in rows(
            ledger,
            f"SELECT epoch, from_stage, to_stage FROM stage_changes "
            f"WHERE run_id = '{run_id}' AND slot_id = '{slot_id}' ORDER BY position",
        )
    ]


# -- 1. a loop the docs do not show --------------------------------------------------------

#: What a strict G2 checks, in sorted order (each check's tag ends with its numbers).
STRICT_G2 = ("improvement_", "seed_gradient_", "training_epochs_10_of_10")


def test_strict_gates_carry_a_learning_seed_to_holding_and_custom_metrics_are_recorded(
    ledger: Ledger,
) -> None:
    model = wine_net("h1")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005)
    run = ledger.start_run("wine", seed=0)
    # A seed is pruned as soon as it is blended in at full strength: this run is about HOLDING.
    policy = HeuristicPolicy(min_contribution=1e9)
    manager = SeedManager(model, optimizer, run.recorder, policy=policy, gates=QualityGates())
    slot = model.slot("h1")
    assert slot.gates == QualityGates()

    f1_by_epoch: dict[int, float] = {}
    before: list[torch.Tensor] = []
    changed: list[bool] = []
    for epoch in range(40):
        train_epoch(model, optimizer, manager)
        if slot.seed is not None and slot.stage is not SeedStage.GERMINATED:
            params = list(slot.seed.parameters())
            assert all(p.grad is not None for p in params), epoch
            changed = [not torch.equal(a, p) for a, p in zip(before, params, strict=True)]
        f1_by_epoch[epoch] = macro_f1(model)
        result = manager.end_epoch(epoch, metrics={"f1": f1_by_epoch[epoch]}, evaluate=evaluate)
        if epoch == 0:
            assert slot.seed is not None  # the policy plants at once
            before = [p.detach().clone() for p in slot.seed.parameters()]
        if any(d.action == "PRUNE" for d in result.decisions):
            break
    run.finish()

    assert changed and all(changed), "every seed parameter moves while it trains"
    moves = [(a, b) for _, a, b in stage_path(ledger, run.run_id, "h1")]
    assert moves == [
        ("DORMANT", "GERMINATED"),
        ("GERMINATED", "TRAINING"),
        ("TRAINING", "BLENDING"),
        ("BLENDING", "HOLDING"),
        ("HOLDING", "PRUNED"),
    ]
    passes = rows(
        ledger,
        f"SELECT gate, checks_passed FROM gate_evaluations WHERE run_id = '{run.run_id}' "
        f"AND gate IN ('G2', 'G3') AND passed ORDER BY position",
    )
    # the strict checks, not the permissive ones, let the seed through
    assert [g for g, _ in passes] == ["G2", "G3"]
    g2, g3 = (sorted(checks.split(",")) for _, checks in passes)
    assert [c.startswith(p) for c, p in zip(g2, STRICT_G2, strict=True)] == [True] * 3, g2
    assert g3 == ["alpha_at_target", "alpha_target_full", "blending_epochs_10_of_10"]
    recorded = rows(
        ledger,
        f"SELECT epoch, value FROM metrics WHERE run_id = '{run.run_id}' AND name = 'f1' "
        f"AND slot_id IS NULL ORDER BY epoch",
    )
    assert recorded == sorted(f1_by_epoch.items())
    assert ledger.verify(run.run_id).ok


# -- 2. a pruned seed leaves nothing behind ------------------------------------------------


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_pruned_seed_leaves_the_optimizer_and_the_gradient_monitor(
    sqlite_run: Run[Ledger], make: Callable[[Any], torch.optim.Optimizer]
) -> None:
    model = wine_net("h1")
    optimizer = make(model.parameters())
    host = [p for n, p in model.named_parameters() if not n.startswith("blocks.")]
    policy = Scripted({0: [Germinate("h1", blueprint="mlp")], 2: [Prune("h1", reason="unwanted")]})
    manager = SeedManager(model, optimizer, sqlite_run.recorder, policy=policy, gates=EASY)
    slot = model.slot("h1")
    run_epochs(model, optimizer, manager, range(2))
    train_epoch(model, optimizer, manager)

    seed = slot.seed
    assert seed is not None and slot.stage is SeedStage.TRAINING
    seed_module = weakref.ref(seed)
    seed_params = [weakref.ref(p) for p in seed.parameters()]
    assert all(p in optimizer.state and optimizer.state[p] for p in seed.parameters())
    assert any(
        p is q for g in optimizer.param_groups[1:] for p in g["params"] for q in seed.parameters()
    )
    assert slot.gradients.watching
    del seed

    result = manager.end_epoch(2, evaluate=evaluate)
    assert [(d.action, d.accepted) for d in result.decisions] == [("PRUNE", True)]
    gc.collect()

    assert seed_module() is None
    assert all(p() is None for p in seed_params), "nothing may hold the seed's parameters"
    assert len(optimizer.param_groups) == 1
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in host]
    assert {id(p) for p in optimizer.state} <= {id(p) for p in host}
    assert not slot.gradients.watching
    assert manager.seed_parameters() == []
    # and the loop goes on
    run_epochs(model, optimizer, manager, range(3, 4))
    assert len(optimizer.param_groups) == 1


def test_seeds_share_one_param_group_that_goes_with_the_last_seed(
    sqlite_run: Run[Ledger],
) -> None:
    model = wine_net("h1", "h2")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    plant = [Germinate("h1", blueprint="mlp"), Germinate("h2", blueprint="mlp")]
    policy = Scripted({0: plant, 2: [Prune("h1")], 4: [Prune("h2")]})
    manager = SeedManager(model, optimizer, sqlite_run.recorder, policy=policy, gates=EASY)
    ids = lambda params: [id(p) for p in params]  # noqa: E731

    run_epochs(model, optimizer, manager, range(2))
    train_epoch(model, optimizer, manager)
    first, second = model.slot("h1").seed, model.slot("h2").seed
    assert first is not None and second is not None
    assert len(optimizer.param_groups) == 2
    assert ids(optimizer.param_groups[1]["params"]) == ids(
        [*first.parameters(), *second.parameters()]
    )
    kept = [weakref.ref(p) for p in second.parameters()]
    assert all(optimizer.state[p] for p in second.parameters())
    del first, second

    manager.end_epoch(2, evaluate=evaluate)  # h1's seed goes; h2's stays in the group
    gc.collect()
    remaining = [p() for p in kept]
    assert len(optimizer.param_groups) == 2
    assert ids(optimizer.param_groups[1]["params"]) == ids(remaining)
    seed_ids = {id(p) for p in remaining}
    host_ids = set(ids(optimizer.param_groups[0]["params"]))
    assert {id(p) for p in optimizer.state} <= host_ids | seed_ids
    assert all(optimizer.state[p] for p in remaining if p is not None)
    del remaining

    run_epochs(model, optimizer, manager, range(3, 5))  # h2's seed goes at 4
    gc.collect()
    assert all(p() is None for p in kept)
    assert len(optimizer.param_groups) == 1
    assert {id(p) for p in optimizer.state} <= host_ids


SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    # T_max 2 reaches cosine's warm restart, which reads base_lrs group by group
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=2),
    # base_lr * factor(epoch), every epoch
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.8**e),
}


@pytest.mark.parametrize("make", SCHEDULERS.values(), ids=SCHEDULERS.keys())
def test_a_seed_group_follows_the_schedule_across_a_prune_and_a_new_seed(
    sqlite_run: Run[Ledger], make: Callable[[torch.optim.Optimizer], Any]
) -> None:
    model = wine_net("h1", embargo_epochs=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = make(optimizer)
    policy = Scripted(
        {
            1: [Germinate("h1", blueprint="mlp")],  # after the schedule has moved once
            3: [Prune("h1")],
            6: [Germinate("h1", blueprint="mlp")],
        }
    )
    manager = SeedManager(
        model, optimizer, sqlite_run.recorder, policy=policy, gates=EASY, scheduler=scheduler
    )
    slot = model.slot("h1")
    live_epochs = 0
    for epoch in range(9):
        train_epoch(model, optimizer, manager)
        manager.end_epoch(epoch, evaluate=evaluate)
        with_seed = slot.seed is not None
        assert len(optimizer.param_groups) == 1 + with_seed, epoch
        scheduler.step()
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert scheduler.get_last_lr() == lrs
        assert len(scheduler.base_lrs) == len(lrs)
        if with_seed:
            live_epochs += 1
            assert lrs[1] == pytest.approx(lrs[0], rel=1e-12, abs=1e-15), (epoch, lrs)
    assert live_epochs == 2 + 3  # epochs 1-2 and 6-8


# -- 3. the seed group's options -----------------------------------------------------------


def host_options(optimizer: torch.optim.Optimizer, index: int) -> dict[str, Any]:
    return {k: v for k, v in optimizer.param_groups[index].items() if k != "params"}


@pytest.mark.parametrize("seed_optimizer", [None, {"lr": 0.2}, {"lr": 0.2, "momentum": 0.0}])
def test_seed_optimizer_options_override_the_host_groups(
    sqlite_run: Run[Ledger], seed_optimizer: dict[str, float] | None
) -> None:
    model = wine_net("h1")
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True
    )
    manager = SeedManager(
        model,
        optimizer,
        sqlite_run.recorder,
        policy=Scripted({0: [Germinate("h1", blueprint="mlp")]}),
        seed_optimizer=seed_optimizer,
    )
    manager.end_epoch(0)
    assert len(optimizer.param_groups) == 2
    seed = model.slot("h1").seed
    assert seed is not None
    assert [id(p) for p in optimizer.param_groups[1]["params"]] == [
        id(p) for p in seed.parameters()
    ]
    seeds = host_options(optimizer, 1)
    assert seeds.pop(SEEDS_GROUP) is True  # the mark a restored optimizer is known by
    assert seeds == {**host_options(optimizer, 0), **(seed_optimizer or {})}


# -- 4. decisions and their effects --------------------------------------------------------

#: Strict gates any seed passes but G5, which asks for more than any seed can add.
NO_FOSSILS = QualityGates(
    min_training_improvement=-1e9,
    gradient_ratio_threshold=0.0,
    min_training_epochs=1,
    min_blending_epochs=0,
    min_fossilize_contribution=1e9,
)

#: Slots a, b and c go DORMANT -> GERMINATED (0) -> TRAINING (1) -> BLENDING (2) -> HOLDING (3).
SCRIPT: dict[int, list[Action]] = {
    0: [
        Germinate("a", blueprint="mlp", tempo=1, reason="room"),
        Germinate("a", blueprint="mlp"),  # occupied now
        Germinate("b", blueprint="no_such_blueprint"),
        Germinate("b", blueprint="mlp", tempo=1),
        Germinate("c", blueprint="mlp", tempo=1),
        Wait("b", reason="settling"),
    ],
    1: [
        Fossilize("a"),  # from TRAINING
        SetAlphaTarget("a", target=0.5),  # in TRAINING
        Advance("b", target="DORMANT"),
    ],
    2: [Wait("a")],
    3: [SetAlphaTarget("b", target=0.5, steps=1)],  # HOLDING -> BLENDING with a new target
    4: [Fossilize("a"), Prune("b", reason="unwanted"), Fossilize("c")],
    5: [Prune("a")],  # fossilized
}

#: decision id -> (action, accepted, what the refusal says, effects in order)
EXPECTED: dict[str, tuple[str, bool, str | None, list[str]]] = {
    "e0.0": ("GERMINATE", True, None, ["SeedGerminated", "SeedStageChanged"]),
    "e0.1": ("GERMINATE", False, "GERMINATED -> GERMINATED", []),
    "e0.2": ("GERMINATE", False, "unknown blueprint 'no_such_blueprint'", []),
    "e0.3": ("GERMINATE", True, None, ["SeedGerminated", "SeedStageChanged"]),
    "e0.4": ("GERMINATE", True, None, ["SeedGerminated", "SeedStageChanged"]),
    "e0.5": ("WAIT", True, None, []),
    "e1.0": ("FOSSILIZE", False, "TRAINING -> FOSSILIZED", []),
    "e1.1": ("SET_ALPHA_TARGET", False, "not TRAINING", []),
    "e1.2": ("ADVANCE", False, "TRAINING -> DORMANT", []),
    "e2.0": ("WAIT", True, None, []),
    "e3.0": ("SET_ALPHA_TARGET", True, None, ["SeedStageChanged", "AlphaTargetSet"]),
    "e4.0": (
        "FOSSILIZE",
        True,
        None,
        ["SeedGateEvaluated", "SeedStageChanged", "SeedFossilized"],
    ),
    "e4.1": ("PRUNE", True, None, ["SeedStageChanged", "SeedPruned"]),
    "e4.2": ("FOSSILIZE", False, "G5 failed: contribution_low_", ["SeedGateEvaluated"]),
    "e5.0": ("PRUNE", False, "fossilized", []),
}


def scripted_run(ledger: Ledger) -> tuple[str, list[EpochResult]]:
    model = WineNet(
        *(SeedSlot(i, WIDTH, topology="tabular") for i in "ab"),
        SeedSlot("c", WIDTH, topology="tabular", gates=NO_FOSSILS),
    )
    optimizer = sgd(model)
    run = ledger.start_run("decisions", seed=0)
    manager = SeedManager(model, optimizer, run.recorder, policy=Scripted(SCRIPT), gates=EASY)
    results = run_epochs(model, optimizer, manager, range(6))
    run.finish()
    return run.run_id, results


def test_every_decision_traces_to_its_effects_in_sql(ledger: Ledger) -> None:
    run_id, results = scripted_run(ledger)
    decided = rows(
        ledger,
        f"SELECT decision_id, action, accepted, refusal, position, policy "
        f"FROM decisions WHERE run_id = '{run_id}' ORDER BY position",
    )
    joined = rows(
        ledger,
        f"SELECT d.decision_id, e.event_type, e.position, e.slot_id, d.slot_id "
        f"FROM decisions d JOIN decision_effects e USING (run_id, decision_id) "
        f"WHERE d.run_id = '{run_id}' ORDER BY e.position",
    )
    effects: dict[str, list[str]] = {}
    positions: dict[str, list[int]] = {}
    for decision_id, event_type, position, effect_slot, decision_slot in joined:
        assert effect_slot == decision_slot
        effects.setdefault(decision_id, []).append(event_type)
        positions.setdefault(decision_id, []).append(int(position))

    got = {
        d: (action, bool(accepted), refusal, effects.get(d, []))
        for d, action, accepted, refusal, *_ in decided
    }
    assert list(got) == list(EXPECTED)
    for decision_id, (action, accepted, refusal, kinds) in EXPECTED.items():
        got_action, got_accepted, got_refusal, got_kinds = got[decision_id]
        assert (got_action, got_accepted, got_kinds) == (action, accepted, kinds), decision_id
        if refusal is None:
            assert got_refusal is None, decision_id
        else:
            assert got_refusal is not None and refusal in got_refusal, (decision_id, got_refusal)
    # each decision heads the batch of its effects
    for decision_id, _, _, _, position, _ in decided:
        found = positions.get(decision_id, [])
        assert found == list(range(int(position) + 1, int(position) + 1 + len(found)))
    assert {p for *_, p in decided} == {"scripted"}
    arguments = {d.decision_id: d.arguments for _, d in decisions_of(ledger, run_id)}
    assert arguments["e0.0"] == SCRIPT[0][0].arguments()
    assert arguments["e4.1"] == {"steps": 0}
    # what end_epoch returned is what was recorded
    returned = [(d.decision_id, d.accepted, d.refusal) for r in results for d in r.decisions]
    assert returned == [(d, bool(a), r) for d, _, a, r, *_ in decided]


def test_refusals_and_waits_are_recorded_alone_and_the_gate_verdict_is_the_effect(
    sqlite_run: Run[Ledger],
) -> None:
    ledger = sqlite_run.ledger
    run_id, _ = scripted_run(ledger)
    events = list(ledger.read(run_id))
    ends = {
        int(e.epoch or 0): i for i, e in enumerate(events) if isinstance(e.payload, EpochCompleted)
    }
    for epoch, end in ends.items():
        # what the decisions of the epoch recorded: everything after its EpochCompleted at it
        phase = [e for e in events[end + 1 :] if e.epoch == epoch]
        heads = [e for e in phase if isinstance(e.payload, PolicyDecided)]
        assert len(heads) == len(SCRIPT.get(epoch, []))
        cause: str | None = None
        for e in phase:
            if isinstance(e.payload, PolicyDecided):
                cause = e.payload.decision_id
                refused = not e.payload.accepted
                gate_refusal = (
                    refused and e.payload.action == "FOSSILIZE" and "G5" in str(e.payload.refusal)
                )
                allowed = {"SeedGateEvaluated"} if gate_refusal else set()
                continue
            assert getattr(e.payload, "decision_id", None) == cause, (epoch, e.event_type)
            if refused:
                assert e.event_type in allowed, (cause, e.event_type)
    only_refusals = [e.event_type for e in events[ends[1] + 1 :] if e.epoch == 1]
    assert only_refusals == ["PolicyDecided"] * 3
    only_wait = [e for e in events[ends[2] + 1 :] if e.epoch == 2]
    assert [(e.event_type, getattr(e.payload, "action", None)) for e in only_wait] == [
        ("PolicyDecided", "WAIT")
    ]
    g5 = [e for e in events if getattr(e.payload, "decision_id", None) == "e4.2"]
    assert [e.event_type for e in g5] == ["PolicyDecided", "SeedGateEvaluated"]
    head, verdict = (e.payload for e in g5)
    assert isinstance(head, PolicyDecided) and head.accepted is False
    assert isinstance(verdict, SeedGateEvaluated) and verdict.decision_id == "e4.2"
    assert verdict.gate == "G5" and verdict.passed is False and head.refusal == verdict.message


def test_a_policy_naming_a_slot_the_model_lacks_raises_and_records_no_decision(
    ledger: Ledger,
) -> None:
    model = wine_net("h1")
    run = ledger.start_run("decisions", seed=0)
    policy = Scripted({0: [Wait("nowhere")]})
    manager = SeedManager(model, sgd(model), run.recorder, policy=policy)
    with pytest.raises(SlotError, match=r"'nowhere'.*\['h1'\]"):
        manager.end_epoch(0)
    assert decisions_of(ledger, run.run_id) == []
    assert rows(ledger, f"SELECT count(*) FROM decisions WHERE run_id = '{run.run_id}'") == [(0,)]


def test_one_unknown_slot_among_good_actions_applies_none_and_the_epoch_stays_ended(
    sqlite_run: Run[Ledger],
) -> None:
    ledger, run = sqlite_run.ledger, sqlite_run
    model = wine_net("h1")
    policy = Scripted({0: [Wait("h1"), Wait("zz")]})
    manager = SeedManager(model, sgd(model), run.recorder, policy=policy)
    with pytest.raises(SlotError, match="'zz'"):
        manager.end_epoch(0)
    assert decisions_of(ledger, run.run_id) == []
    with pytest.raises(SlotError, match="epoch 0 comes after epoch 0"):
        manager.end_epoch(0)  # the epoch was recorded: it is not recorded twice


def test_an_unknown_stage_name_is_a_refusal(sqlite_run: Run[Ledger]) -> None:
    run = sqlite_run
    model = wine_net("h1")
    policy = Scripted({0: [Germinate("h1", blueprint="mlp")], 1: [Advance("h1", target="BOGUS")]})
    manager = SeedManager(model, sgd(model), run.recorder, policy=policy)
    manager.end_epoch(0)
    [result] = manager.end_epoch(1).decisions
    assert not result.accepted and result.refusal is not None and "BOGUS" in result.refusal


# -- 5. a run's decisions, applied again -------------------------------------------------


class RandomPolicy:
    """An RL agent's stand-in: any action on any slot, drawn from its own random stream."""

    name = "random-agent"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def decide(self, observation: Observation) -> list[Action]:
        r = self.rng
        actions: list[Action] = []
        for slot_id in sorted(observation.slots):
            for _ in range(r.randint(0, 2)):
                actions.append(self._one(slot_id))
        return actions

    def _one(self, slot_id: str) -> Action:
        r = self.rng
        kind = r.choice(["wait", "germinate", "germinate", "alpha", "prune", "fossil", "advance"])
        if kind == "germinate":
            return Germinate(
                slot_id,
                blueprint=r.choice(["mlp", "norm", "no_such_blueprint"]),
                init_seed=r.choice([None, r.randrange(1000)]),
                alpha_target=r.choice([0.5, 1.0]),
                tempo=r.randint(1, 3),
                curve=r.choice(["LINEAR", "COSINE", "SIGMOID"]),
            )
        if kind == "alpha":
            return SetAlphaTarget(slot_id, target=r.choice([0.3, 1.0]), steps=r.randint(1, 2))
        if kind == "prune":
            return Prune(slot_id, steps=r.choice([0, 2]), reason="agent")
        if kind == "fossil":
            return Fossilize(slot_id)
        if kind == "advance":
            return Advance(slot_id, target=r.choice([None, "BLENDING", "HOLDING"]))
        return Wait(slot_id)


def policy_run(ledger: Ledger, policy: Any, epochs: int) -> str:
    """Two slots on the wine MLP, the same weights every time, driven by `policy`."""
    model = wine_net("a", "b", embargo_epochs=1)
    optimizer = sgd(model)
    run = ledger.start_run("replayed", seed=0)
    manager = SeedManager(model, optimizer, run.recorder, policy=policy, gates=EASY)
    run_epochs(model, optimizer, manager, range(epochs), metrics=lambda: {"f1": macro_f1(model)})
    run.finish()
    return run.run_id


@pytest.mark.parametrize(
    ("make", "epochs"),
    [
        (lambda: HeuristicPolicy(["mlp", "norm"], min_contribution=0.0, tempo=1, seed=1), 10),
        (lambda: RandomPolicy(seed=7), 12),
    ],
    ids=["heuristic", "random-agent"],
)
def test_recorded_decisions_drive_a_second_run_to_the_same_slot_events(
    ledger: Ledger, make: Callable[[], Any], epochs: int
) -> None:
    first = policy_run(ledger, make(), epochs)
    decisions = decisions_of(ledger, first)
    kinds = {(d.action, d.accepted) for _, d in decisions}
    assert ("GERMINATE", True) in kinds and len(kinds) >= 2, kinds

    again = RecordedPolicy(decisions, name=decisions[0][1].policy)
    second = policy_run(ledger, again, epochs)

    assert again.left == 0
    assert second != first
    streams = slot_streams(ledger, first)
    assert set(streams) == {"a", "b"}
    assert slot_streams(ledger, second) == streams


# -- 6. what the policy sees ---------------------------------------------------------------


def test_the_observation_has_every_slot_the_epochs_metrics_and_the_topologies(
    sqlite_run: Run[Ledger],
) -> None:
    model = WineNet(
        SeedSlot("a", WIDTH, topology="tabular"), SeedSlot("t", WIDTH, topology="transformer")
    )
    optimizer = sgd(model)
    policy = Scripted({0: [Germinate("a", blueprint="mlp", tempo=1)]})
    manager = SeedManager(model, optimizer, sqlite_run.recorder, policy=policy, gates=EASY)
    results = run_epochs(
        model, optimizer, manager, range(5), metrics=lambda: {"f1": macro_f1(model)}
    )

    assert [o.epoch for o in policy.seen] == [0, 1, 2, 3, 4]
    stages = [(o.slots["a"].stage, o.slots["t"].stage) for o in policy.seen]
    assert stages == [
        (SeedStage.DORMANT, SeedStage.DORMANT),  # before its own germination
        (SeedStage.TRAINING, SeedStage.DORMANT),  # after the epoch's tick
        (SeedStage.BLENDING, SeedStage.DORMANT),
        (SeedStage.HOLDING, SeedStage.DORMANT),
        (SeedStage.HOLDING, SeedStage.DORMANT),
    ]
    for observation, result in zip(policy.seen, results, strict=True):
        assert observation.topologies == {"a": "tabular", "t": "transformer"}
        assert dict(observation.metrics) == dict(result.metrics)
        assert set(observation.metrics) == {"train_loss", "f1", "val_accuracy", "val_loss"}
        a = observation.slots["a"]
        assert all(s.epoch == observation.epoch for s in observation.slots.values())
        if a.stage is not SeedStage.DORMANT:
            assert a.seed_id == "a-e0.0" and a.blueprint_id == "mlp"
            assert a.metrics.accuracy == result.metrics["val_accuracy"]
            assert a.metrics.counterfactual == result.contributions.get("a")
    assert policy.seen[-1].slots["a"] == model.slot("a").state
    assert policy.seen[-1].slots["a"].metrics.counterfactual is not None


# -- 7. what end_epoch refuses -------------------------------------------------------------


def test_an_epoch_must_come_after_the_last_one(sqlite_run: Run[Ledger]) -> None:
    model = wine_net("h1")
    manager = SeedManager(model, sgd(model), sqlite_run.recorder)
    manager.end_epoch(3)
    for epoch in (3, 2):
        with pytest.raises(SlotError, match=f"epoch {epoch} comes after epoch 3"):
            manager.end_epoch(epoch)
    manager.end_epoch(5)
    ends = [
        e.epoch
        for e in sqlite_run.ledger.read(sqlite_run.run_id)
        if e.event_type == "EpochCompleted"
    ]
    assert ends == [3, 5]


def test_evaluate_must_return_the_score_from_the_first_epoch(sqlite_run: Run[Ledger]) -> None:
    """Without it no seed is ever measured and every gate fails as never measured, with
    nothing to say why: refused at once, before the epoch records anything in the ledger."""
    model = wine_net("h1")
    optimizer = sgd(model)
    policy = Scripted({0: [Germinate("h1", blueprint="mlp")]})
    manager = SeedManager(model, optimizer, sqlite_run.recorder, policy=policy, gates=EASY)

    def accuracy_only(m: nn.Module) -> dict[str, float]:
        return {"accuracy": evaluate(m)["val_accuracy"]}

    train_epoch(model, optimizer, manager)
    with pytest.raises(SlotError, match=r"no 'val_accuracy' .*it returned \['accuracy'\]"):
        manager.end_epoch(0, evaluate=accuracy_only)
    ledger = sqlite_run.ledger
    assert [e.event_type for e in ledger.read(sqlite_run.run_id)] == ["RunStarted"]


def test_the_score_can_have_another_name(sqlite_run: Run[Ledger]) -> None:
    model = wine_net("h1")
    optimizer = sgd(model)
    policy = Scripted({0: [Germinate("h1", blueprint="mlp", tempo=1)]})
    manager = SeedManager(
        model, optimizer, sqlite_run.recorder, policy=policy, gates=EASY, score="accuracy"
    )

    def accuracy_only(m: nn.Module) -> dict[str, float]:
        return {"accuracy": evaluate(m)["val_accuracy"]}

    results = []
    for epoch in range(5):
        train_epoch(model, optimizer, manager)
        results.append(manager.end_epoch(epoch, evaluate=accuracy_only))
    assert model.slot("h1").stage is SeedStage.HOLDING
    assert set(results[-1].contributions) == {"h1"}
    assert model.slot("h1").metrics.accuracy == results[-1].metrics["accuracy"]


def test_a_model_without_slots_is_refused() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 3))
    with pytest.raises(SlotError, match="Sequential contains no SeedSlot"):
        SeedManager(model, sgd(model), _NoRecorder())


def test_two_slots_of_one_id_are_refused() -> None:
    torch.manual_seed(0)
    model = WineNet(*(SeedSlot(i, WIDTH, topology="tabular") for i in ("h1", "h2", "h1")))
    with pytest.raises(SlotError, match=r"repeated: \['h1'\]"):
        SeedManager(model, sgd(model), _NoRecorder())


class _NoRecorder:
    """A recorder that is never reached: the manager refuses the model before recording."""

    def emit(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("nothing is recorded for a refused model")

    emit_many = emit
    flush = emit


def test_an_invalid_metric_name_is_one_line(sqlite_run: Run[Ledger]) -> None:
    model = wine_net("h1")
    manager = SeedManager(model, sgd(model), sqlite_run.recorder)
    with pytest.raises(PayloadInvalid, match="F1 Score") as info:
        manager.end_epoch(0, metrics={"F1 Score": 0.5})
    assert "\n" not in str(info.value)


def test_an_invalid_metric_records_nothing_of_the_epoch(sqlite_run: Run[Ledger]) -> None:
    model = wine_net("h1")
    optimizer = sgd(model)
    policy = Scripted({0: [Germinate("h1", blueprint="mlp")]})
    manager = SeedManager(model, optimizer, sqlite_run.recorder, policy=policy)
    run_epochs(model, optimizer, manager, range(1))
    ledger, run_id = sqlite_run.ledger, sqlite_run.run_id
    before = [e.position for e in ledger.read(run_id)]
    state = model.slot("h1").state
    with pytest.raises(Exception, match="F1 Score"):
        manager.end_epoch(1, metrics={"F1 Score": 0.5})
    assert [e.position for e in ledger.read(run_id)] == before
    assert model.slot("h1").state == state


def test_the_random_agent_is_refused_as_often_as_it_is_obeyed(ledger: Ledger) -> None:
    """The run the random agent replays is not a trivial one: refusals of several causes."""
    run_id = policy_run(ledger, RandomPolicy(seed=7), 12)
    decisions = [d for _, d in decisions_of(ledger, run_id)]
    refused = [d for d in decisions if not d.accepted]
    accepted = [d for d in decisions if d.accepted]
    assert len({d.action for d in refused}) >= 3 and len({d.action for d in accepted}) >= 3
    assert all(d.refusal for d in refused)
    assert all(d.refusal is None for d in accepted)


# -- 8. a slot's own recorder, gates and auto-advance ------------------------------------------


def test_slots_keep_what_they_were_built_with_and_adopt_the_rest(ledger: Ledger) -> None:
    own_run = ledger.start_run("own", seed=0)
    manager_run = ledger.start_run("manager", seed=0)
    own_gates = QualityGates(permissive=True, min_training_epochs=3)
    torch.manual_seed(0)
    model = WineNet(
        SeedSlot(
            "own",
            WIDTH,
            topology="tabular",
            recorder=own_run.recorder,
            gates=own_gates,
            auto_advance=False,
        ),
        SeedSlot("bare", WIDTH, topology="tabular"),
    )
    optimizer = sgd(model)
    policy = Scripted({0: [Germinate("own", blueprint="mlp"), Germinate("bare", blueprint="mlp")]})
    manager = SeedManager(
        model, optimizer, manager_run.recorder, policy=policy, gates=EASY, auto_advance=True
    )
    own, bare = model.slot("own"), model.slot("bare")
    assert (own.recorder, own.gates, own.auto_advance) == (own_run.recorder, own_gates, False)
    assert (bare.recorder, bare.gates, bare.auto_advance) == (manager_run.recorder, EASY, True)

    run_epochs(model, optimizer, manager, range(2))
    assert own.stage is SeedStage.GERMINATED  # nothing advances it
    assert bare.stage is SeedStage.TRAINING
    streams = {
        run.run_id: {e.stream_id for e in ledger.read(run.run_id)} for run in (own_run, manager_run)
    }
    assert streams[own_run.run_id] == {"run", "slot/own"}
    assert streams[manager_run.run_id] == {"run", "slot/bare"}
    decided = {d.slot_id for _, d in decisions_of(ledger, own_run.run_id)}
    assert decided == {"own"}


# -- 9. gradients measured without a sync per step -------------------------------------------


def seeded_in_training(seed: int = 0) -> tuple[WineNet, SeedSlot]:
    model = wine_net("h1", seed=seed)
    slot = model.slot("h1")
    slot.germinate("mlp", "s1", init_seed=11)
    assert slot.advance_stage(SeedStage.TRAINING).passed
    return model, slot


def host_of(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.startswith("blocks.")]


def steps(model: nn.Module, optimizer: torch.optim.Optimizer, after: Callable[[], None]) -> None:
    x, y, _, _ = wine()
    for _ in range(2):
        for i in range(0, len(y), 16):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
            loss.backward()  # type: ignore[no-untyped-call]
            after()
            optimizer.step()


GRADIENT_FIELDS = ("grad_ratio", "grad_health", "has_vanishing", "has_exploding")


def test_recorded_gradients_drain_to_the_per_step_numbers(sqlite_run: Run[Ledger]) -> None:
    per_step, per_step_slot = seeded_in_training()
    drained, drained_slot = seeded_in_training()
    managed, managed_slot = seeded_in_training()
    optimizers = []
    for model, slot in ((per_step, per_step_slot), (drained, drained_slot)):
        # the host's parameters, then the seed's in a group of its own, as the manager has them
        optimizer = torch.optim.SGD(host_of(model), lr=0.05)
        assert slot.seed is not None
        optimizer.add_param_group({"params": list(slot.seed.parameters())})
        slot.watch_gradients(host_of(model))
        optimizers.append(optimizer)
    managed_optimizer = torch.optim.SGD(host_of(managed), lr=0.05)
    manager = SeedManager(managed, managed_optimizer, sqlite_run.recorder)

    seed_of = drained_slot.seed
    assert seed_of is not None
    steps(per_step, optimizers[0], per_step_slot.capture_gradients)
    steps(drained, optimizers[1], lambda: drained_slot.gradients.record(seed_of))
    steps(managed, managed_optimizer, manager.after_backward)
    assert all(getattr(drained_slot.metrics, f) is None for f in GRADIENT_FIELDS)
    drained_slot.settle_gradients()
    manager.end_epoch(0)

    expected = per_step_slot.metrics
    assert expected.grad_ratio is not None and expected.grad_ratio > 0
    assert expected.grad_health is not None
    for slot in (drained_slot, managed_slot):
        got = slot.metrics
        assert got.grad_ratio == pytest.approx(expected.grad_ratio, abs=1e-9)
        assert got.grad_health == pytest.approx(expected.grad_health, abs=1e-9)
        assert (got.has_vanishing, got.has_exploding) == (
            expected.has_vanishing,
            expected.has_exploding,
        )


@pytest.mark.parametrize("every", [None, 1, 3])
def test_gradient_every_picks_the_backwards_measured(
    sqlite_run: Run[Ledger], every: int | None
) -> None:
    model = wine_net("h1")
    optimizer = sgd(model)
    policy = Scripted({0: [Germinate("h1", blueprint="mlp")]})
    manager = SeedManager(
        model, optimizer, sqlite_run.recorder, policy=policy, gates=EASY, gradient_every=every
    )
    backwards = len(range(0, len(wine()[1]), 16))
    measured = []
    for epoch in range(4):
        train_epoch(model, optimizer, manager)
        measured.append(manager.end_epoch(epoch, evaluate=evaluate).measured_backwards)
    # no gradient reaches the seed before TRAINING (epoch 2); then by default AUTO_SAMPLES
    k = every or max(1, backwards // AUTO_SAMPLES)
    assert k > 1 or every == 1
    assert measured == [0, 0, backwards // k, backwards // k]
    assert model.slot("h1").metrics.grad_ratio is not None


def test_draining_with_nothing_recorded_gives_none(sqlite_run: Run[Ledger]) -> None:
    model, slot = seeded_in_training()
    assert slot.seed is not None
    monitor = GradientMonitor()
    assert monitor.drain(slot.seed, None) is None  # not watching
    monitor.watch(host_of(model))
    assert monitor.drain(slot.seed, 0.5) is None  # watching, no backward yet
    steps(model, sgd(model), lambda: monitor.record(slot.seed))  # type: ignore[arg-type]
    first = monitor.drain(slot.seed, None)
    assert first is not None and first["grad_ratio"] is not None
    assert monitor.drain(slot.seed, first["grad_ratio"]) is None  # drained already
    slot.watch_gradients(host_of(model))
    state = slot.state
    slot.settle_gradients()
    assert slot.state == state
