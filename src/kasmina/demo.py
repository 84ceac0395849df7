"""The demo job: a scripted morphogenetic run recorded through the ledger.

Until the torch runtime lands, seeds here follow a seeded random script rather
than real training: each slot germinates, trains, blends, holds and is then
fossilized or pruned and recycled through the cooldown, with every gate
verdict, alpha target and cache eviction recorded. Every stage move is checked
against the transition table, so the log is a legal history.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rich.console import Console

from kasmina.events import (
    AlphaTargetSet,
    CacheEvicted,
    EpochCompleted,
    GateName,
    Payload,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedPruned,
    SeedStageChanged,
    Trigger,
    memory_stream,
    slot_stream,
)
from kasmina.ledger import Ledger, Recorder
from kasmina.stages import SeedStage, is_legal

BLUEPRINTS = ("conv_small", "bottleneck", "depthwise", "norm")
EMBARGO_EPOCHS = 5
_GATES: dict[SeedStage, GateName] = {
    SeedStage.TRAINING: "G1",
    SeedStage.BLENDING: "G2",
    SeedStage.HOLDING: "G3",
    SeedStage.FOSSILIZED: "G5",
}


@dataclass
class _Slot:
    slot_id: str
    stage: SeedStage = SeedStage.DORMANT
    seed_id: str | None = None
    blueprint: str = ""
    alpha: float = 0.0
    in_stage: int = 0
    age: int = 0
    path: list[str] = field(default_factory=list)


class _Script:
    def __init__(self, recorder: Recorder, rng: random.Random) -> None:
        self.recorder = recorder
        self.rng = rng
        self.epoch = 0
        self.seeds = 0
        self.paths: dict[str, list[str]] = {}

    def emit(self, slot: _Slot, payload: Payload) -> None:
        self.recorder.emit(
            payload, stream_id=slot_stream(slot.slot_id), epoch=self.epoch, seed_id=slot.seed_id
        )

    def move(self, slot: _Slot, to: SeedStage, trigger: Trigger) -> None:
        if not is_legal(slot.stage, to):
            raise AssertionError(f"demo script made an illegal move {slot.stage.name}->{to.name}")
        self.emit(
            slot,
            SeedStageChanged(
                slot_id=slot.slot_id,
                from_stage=slot.stage,
                to_stage=to,
                trigger=trigger,
                alpha=slot.alpha,
                epochs_in_stage=slot.in_stage,
            ),
        )
        slot.stage, slot.in_stage = to, 0
        if slot.seed_id is not None:
            self.paths[slot.seed_id].append(to.name)

    def gate(self, slot: _Slot, target: SeedStage, passed: bool) -> bool:
        self.emit(
            slot,
            SeedGateEvaluated(
                slot_id=slot.slot_id,
                gate=_GATES[target],
                passed=passed,
                score=1.0 if passed else round(self.rng.random() * 0.5, 3),
                target_stage=target,
                checks_passed=["stage_ok"] if passed else [],
                checks_failed=[] if passed else [f"insufficient_{slot.stage.name.lower()}"],
            ),
        )
        return passed

    def tick(self, slot: _Slot) -> None:
        slot.in_stage += 1
        slot.age += 1
        stage = slot.stage
        if stage is SeedStage.DORMANT:
            if self.rng.random() < 0.6:
                self.seeds += 1
                slot.seed_id = f"s{self.seeds}"
                slot.blueprint = self.rng.choice(BLUEPRINTS)
                slot.alpha, slot.age = 0.0, 0
                self.paths[slot.seed_id] = ["DORMANT"]
                self.emit(
                    slot,
                    SeedGerminated(
                        slot_id=slot.slot_id,
                        blueprint_id=slot.blueprint,
                        params=self.rng.randint(100, 5000),
                    ),
                )
                self.move(slot, SeedStage.GERMINATED, "command")
        elif stage is SeedStage.GERMINATED:
            if self.gate(slot, SeedStage.TRAINING, True):
                self.move(slot, SeedStage.TRAINING, "gate")
        elif stage is SeedStage.TRAINING:
            if slot.in_stage >= 3 and self.rng.random() < 0.15:
                self.prune(slot, "no_improvement")
            elif slot.in_stage >= 2 and self.gate(
                slot, SeedStage.BLENDING, self.rng.random() < 0.6
            ):
                self.move(slot, SeedStage.BLENDING, "gate")
                self.emit(
                    slot,
                    AlphaTargetSet(
                        slot_id=slot.slot_id,
                        alpha_start=0.0,
                        target=1.0,
                        steps=3,
                        curve="LINEAR",
                        steepness=12.0,
                        mode="UP",
                    ),
                )
        elif stage is SeedStage.BLENDING:
            slot.alpha = min(1.0, round(slot.alpha + 1 / 3, 6))
            if slot.alpha >= 1.0 and self.gate(slot, SeedStage.HOLDING, True):
                self.move(slot, SeedStage.HOLDING, "gate")
        elif stage is SeedStage.HOLDING:
            gain = round(self.rng.uniform(-1.0, 4.0), 3)
            if self.gate(slot, SeedStage.FOSSILIZED, gain >= 1.0):
                self.move(slot, SeedStage.FOSSILIZED, "command")
                self.emit(
                    slot,
                    SeedFossilized(
                        slot_id=slot.slot_id,
                        blueprint_id=slot.blueprint,
                        improvement=gain,
                        params_added=100,
                        alpha=1.0,
                        epochs_total=slot.age,
                        counterfactual=gain,
                    ),
                )
            else:
                self.prune(slot, "low_contribution")
        elif stage is SeedStage.PRUNED:
            self.move(slot, SeedStage.EMBARGOED, "auto")
        elif stage is SeedStage.EMBARGOED:
            if slot.in_stage >= EMBARGO_EPOCHS:
                self.move(slot, SeedStage.RESETTING, "auto")
        elif stage is SeedStage.RESETTING:
            self.move(slot, SeedStage.DORMANT, "auto")
            slot.seed_id = None

    def prune(self, slot: _Slot, reason: str) -> None:
        self.move(slot, SeedStage.PRUNED, "prune")
        self.emit(
            slot,
            SeedPruned(
                slot_id=slot.slot_id,
                reason=reason,
                blueprint_id=slot.blueprint,
                epochs_total=slot.age,
                initiator="policy",
            ),
        )
        slot.alpha = 0.0


def run_demo(ledger: Ledger, *, epochs: int, slots: int, seed: int, console: Console) -> str:
    """Record a scripted run; returns its run id."""
    rng = random.Random(seed)
    run = ledger.start_run(
        name="demo-scripted", seed=seed, config={"epochs": epochs, "slots": slots}
    )
    script = _Script(run.recorder, rng)
    state = [_Slot(f"r0c{i}") for i in range(slots)]
    cache_size = 0
    for epoch in range(epochs):
        script.epoch = epoch
        for slot in state:
            script.tick(slot)
        cache_size += rng.randint(2, 6)
        if epoch % 3 == 2 and cache_size:
            evicted = rng.randint(1, cache_size)
            run.recorder.emit(
                CacheEvicted(
                    cache="kernels",
                    evicted=evicted,
                    reason="ttl",
                    size_before=cache_size,
                    size_after=cache_size - evicted,
                ),
                stream_id=memory_stream("kernels"),
                epoch=epoch,
            )
            cache_size -= evicted
        run.recorder.emit(
            EpochCompleted(val_accuracy=round(60 + 30 * epoch / max(epochs, 1), 3)),
            stream_id="run",
            epoch=epoch,
        )
    run.finish()
    report = ledger.verify(run.run_id)
    console.print(f"run id: {run.run_id}")
    console.print(f"events: {report.events}, verify: {'OK' if report.ok else 'FAULTS'}")
    for seed_id, path in script.paths.items():
        console.print(f"  {seed_id}: {' -> '.join(path)}")
    return run.run_id
