"""Long synthetic runs for replay benchmarks and tests: real slots, no training.

Real `SeedSlot`s driven by a random policy that uses every action a policy
has (germinate, fossilize, prune, scheduled prune, new alpha targets), with
made-up accuracies instead of a model. Everything is recorded as in a real
run, so a fold of the log must equal the slots at every epoch, and the same
seed gives the same log.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from kasmina.alpha import AlphaCurve, AlphaMode
from kasmina.events import EpochCompleted
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger
from kasmina.policy import Action, Fossilize, Germinate, Prune, SetAlphaTarget
from kasmina.replay.live import LiveStates, live_state
from kasmina.runtime.decisions import decide
from kasmina.runtime.memory import MemoryGovernor, TTLMemoryCache
from kasmina.runtime.slot import SeedSlot
from kasmina.runtime.telemetry import emit_sample
from kasmina.stages import SeedStage

BLUEPRINTS = ("norm", "conv_light", "conv_small")
CHANNELS = 4


class _Clock:
    def __init__(self) -> None:
        self.epoch = 0

    def __call__(self) -> float:
        return float(self.epoch)


class RandomPolicy:
    """Random decisions, weighted so seeds keep cycling through every stage.

    It sees one slot at a time (`act`), as a policy made for one slot would;
    every decision is recorded through `kasmina.runtime.decisions.decide`.
    """

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.planted = 0

    def act(self, slot: SeedSlot, epoch: int) -> Action | None:
        rng = self.rng
        stage = slot.stage
        sid = slot.slot_id
        resting = slot.controller.mode is AlphaMode.HOLD
        roll = rng.random()
        if stage is SeedStage.DORMANT and roll < 0.5:
            self.planted += 1
            return Germinate(
                sid,
                blueprint=rng.choice(BLUEPRINTS),
                seed_id=f"seed-{self.planted}",
                init_seed=rng.randrange(2**31),
                tempo=rng.randint(1, 4),
                curve=rng.choice(list(AlphaCurve)).name,
                alpha_target=rng.choice((1.0, 1.0, 0.75)),
            )
        if stage in (SeedStage.GERMINATED, SeedStage.TRAINING) and roll < 0.03:
            return Prune(sid, reason="impatient")
        if stage is SeedStage.BLENDING and resting and roll < 0.2:
            if slot.controller.alpha_target < 1.0 and roll < 0.1:
                return SetAlphaTarget(sid, target=1.0, steps=rng.randint(0, 3), curve="COSINE")
            return Prune(sid, steps=rng.randint(0, 3), reason="fade_out")
        if stage is SeedStage.HOLDING and roll < 0.6:
            if roll < 0.05:
                return Fossilize(sid)
            if roll < 0.25:
                return SetAlphaTarget(sid, target=0.5, steps=rng.randint(1, 3), curve="SIGMOID")
            if roll < 0.4:
                return Prune(sid, steps=rng.randint(1, 3), reason="holding_too_long")
            return Prune(sid, reason="no_gain")
        return None


def synthetic_run(
    ledger: Ledger,
    *,
    epochs: int,
    slots: int = 8,
    seed: int = 0,
    capture: LiveStates | None = None,
    buffer_size: int = 1000,
    gc_period: int = 25,
    on_epoch: Callable[[int], None] | None = None,
) -> str:
    """Record a synthetic run; returns its run id. `capture` gets live states per epoch.

    `gc_period` spaces the memory governor's passes: each one runs Python's
    `gc.collect`, which with torch loaded costs far more than an epoch here.
    """
    rng = random.Random(seed)
    run = ledger.start_run(
        "synthetic",
        seed=seed,
        config={"epochs": epochs, "slots": slots},
        buffer_size=buffer_size,
        host="synthetic",
    )
    recorder = run.recorder
    gates = QualityGates(permissive=True, min_training_epochs=2, min_blending_epochs=2)
    slot_list = [
        SeedSlot(
            f"s{i}", CHANNELS, recorder=recorder, gates=gates, auto_advance=True, embargo_epochs=2
        )
        for i in range(slots)
    ]
    clock = _Clock()
    governor = MemoryGovernor(
        recorder,
        gc_period=gc_period,
        caches=[TTLMemoryCache[str, int]("kernels", ttl=3.0, clock=clock)],
    )
    policy = RandomPolicy(rng)
    for epoch in range(epochs):
        accuracy = round(50.0 + 40.0 * rng.random(), 4)
        for slot in slot_list:
            if slot.seed is not None and slot.stage is SeedStage.TRAINING:
                # what capture_gradients measures in real training; G2 asks for it
                slot.measure(
                    grad_health=round(rng.uniform(0.7, 1.0), 3),
                    has_exploding=False,
                    has_vanishing=False,
                )
            counterfactual = None
            if slot.seed is not None and slot.stage in (SeedStage.BLENDING, SeedStage.HOLDING):
                counterfactual = round(rng.uniform(-1.0, 3.0), 4)
            slot.step_epoch(accuracy=accuracy, counterfactual=counterfactual, epoch=epoch)
            emit_sample(recorder, slot, epoch)
            action = policy.act(slot, epoch)
            if action is not None:
                decide(slot, action, f"e{epoch}.{slot.slot_id}", policy.name)
            if slot.seed_id is not None:
                governor.cache("kernels").put(f"{slot.seed_id}", epoch)
        recorder.emit(
            EpochCompleted(
                val_accuracy=accuracy,
                metrics={
                    "lr": round(1e-3 * 0.99**epoch, 9),
                    "live_seeds": float(sum(s.seed is not None for s in slot_list)),
                },
            ),
            stream_id="run",
            epoch=epoch,
        )
        clock.epoch = epoch + 1
        governor.periodic_gc(epoch)
        if capture is not None:
            capture[epoch] = {s.slot_id: live_state(s) for s in slot_list}
        if on_epoch is not None:
            on_epoch(epoch)
    run.finish()
    return run.run_id


__all__ = ["RandomPolicy", "synthetic_run"]
