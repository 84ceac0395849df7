"""The synthetic run every system in bench/compare.py records: plain records, no kasmina types.

100 slots (a 10 x 10 grid, streams ``slot/r<row>c<col>``) over E epochs. Each
slot moves through a legal path of kasmina's stage machine (``kasmina.stages``),
recorded the way ``SeedSlot`` records it: germination with its
``SeedGerminated``, gate verdicts before each advance (some failing), an alpha
ramp when blending starts, then a fossilization or a prune followed by the
embargo, reset and a new seed after a pause. Starts are staggered over the
first ten epochs and every seed draws its own durations, so moves are spread
over the run. Each epoch every slot that holds a seed records one
``SeedTelemetrySampled`` (~300 bytes of canonical JSON), and the ``run``
stream records one ``EpochCompleted``.

The same records (same order, same payload dicts) go to every system; each
record is validated once with ``kasmina.events.event_from_dict`` when built.
``Workload.stages_at(N)`` is the expected answer to "stage of every slot at
epoch N" (after every move recorded at epochs <= N), against which each
system's answer is checked.

    .venv/bin/python bench/workload.py [--epochs 150]   # prints the counts
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ROWS = COLS = 10
#: Epochs giving about 20,000 events with 100 slots (see `main`).
DEFAULT_EPOCHS = 150
BLUEPRINTS = ("norm", "conv_light", "conv_small", "attention")
SAMPLED = frozenset({"GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"})
EMBARGO_EPOCHS = 2


@dataclass(frozen=True, slots=True)
class Record:
    """One event of the run, in the shape every system can take."""

    stream_id: str
    epoch: int
    seed_id: str | None
    event_type: str
    payload: dict[str, Any]

    @property
    def slot_id(self) -> str | None:
        return self.stream_id[5:] if self.stream_id.startswith("slot/") else None


@dataclass
class Workload:
    records: list[Record]
    epochs: int
    slots: list[str]
    #: (epoch, slot_id, to_stage) of every move, in record order.
    moves: list[tuple[int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def stages_at(self, epoch: int) -> dict[str, str]:
        """Stage name of every slot after the moves recorded at epochs <= `epoch`."""
        stages = dict.fromkeys(self.slots, "DORMANT")
        for when, slot, stage in self.moves:
            if when > epoch:
                break
            stages[slot] = stage
        return stages

    def stream_counts_at(self, epoch: int) -> dict[str, int]:
        """Events per stream among the records at epochs <= `epoch`."""
        counts: Counter[str] = Counter()
        for r in self.records:
            if r.epoch > epoch:
                break
            counts[r.stream_id] += 1
        return dict(counts)

    def type_counts(self) -> dict[str, int]:
        return dict(Counter(r.event_type for r in self.records))


class _Slot:
    """One slot's lifecycle, driven epoch by epoch; appends its records to `out`."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.slot_id = f"r{index // COLS}c{index % COLS}"
        self.stream = f"slot/{self.slot_id}"
        self.rng = rng
        self.stage = "DORMANT"
        self.wake = index % 10  # staggered first germination
        self.seeds = 0
        self.seed_id: str | None = None
        self.since = 0  # epoch the current stage began
        self.plan: dict[str, Any] = {}
        self.alpha = 0.0
        self.accuracy = 50.0 + 10.0 * rng.random()
        self.start_accuracy = self.accuracy

    # -- records ---------------------------------------------------------------

    def _emit(
        self, out: list[Record], epoch: int, event_type: str, payload: dict[str, Any]
    ) -> None:
        out.append(Record(self.stream, epoch, self.seed_id, event_type, payload))

    def _real(self, scale: float = 1.0) -> float:
        return round(scale * self.rng.random(), 9)

    def _gate(
        self, out: list[Record], epoch: int, gate: str, target: str, passed: bool, trigger: str
    ) -> None:
        checks = ["epochs_in_stage", "gradient_health", "accuracy_gain"]
        failed = [] if passed else checks[-1:]
        self._emit(
            out,
            epoch,
            "SeedGateEvaluated",
            {
                "slot_id": self.slot_id,
                "gate": gate,
                "passed": passed,
                "score": self._real(),
                "target_stage": target,
                "checks_passed": checks if passed else checks[:-1],
                "checks_failed": failed,
                "message": "" if passed else "not enough accuracy gain yet",
                "trigger": trigger,
            },
        )

    def _move(self, out: list[Record], epoch: int, to: str, trigger: str, moves: list[Any]) -> None:
        self._emit(
            out,
            epoch,
            "SeedStageChanged",
            {
                "slot_id": self.slot_id,
                "from_stage": self.stage,
                "to_stage": to,
                "trigger": trigger,
                "alpha": self.alpha,
                "accuracy": round(self.accuracy, 6),
                "accuracy_delta": round(self.accuracy - self.start_accuracy, 6),
                "epochs_in_stage": epoch - self.since,
                "grad_ratio": self._real(),
                "has_vanishing": False,
                "has_exploding": False,
                "alpha_curve": "LINEAR",
            },
        )
        moves.append((epoch, self.slot_id, to))
        self.stage = to
        self.since = epoch

    def _prune(self, out: list[Record], epoch: int, reason: str, moves: list[Any]) -> None:
        self._move(out, epoch, "PRUNED", "prune", moves)
        self._emit(
            out,
            epoch,
            "SeedPruned",
            {
                "slot_id": self.slot_id,
                "reason": reason,
                "blueprint_id": self.plan["blueprint"],
                "improvement": round(self.accuracy - self.start_accuracy, 6),
                "epochs_total": epoch - self.plan["born"],
                "initiator": "policy",
            },
        )
        self.alpha = 0.0

    # -- the epoch ---------------------------------------------------------------

    def step(self, out: list[Record], epoch: int, moves: list[Any]) -> None:
        rng = self.rng
        self.accuracy += rng.uniform(-0.2, 0.5)
        stage, age = self.stage, epoch - self.since
        plan = self.plan
        if stage == "DORMANT" and epoch >= self.wake:
            self.seeds += 1
            self.seed_id = f"{self.slot_id}-s{self.seeds}"
            self.start_accuracy = self.accuracy
            self.plan = plan = {
                "blueprint": rng.choice(BLUEPRINTS),
                "born": epoch,
                "train": rng.randint(2, 6),
                "tempo": rng.randint(3, 8),
                "hold": rng.randint(2, 6),
                "early_prune": rng.random() < 0.15,
                "fossilize": rng.random() < 0.08,
            }
            self._emit(
                out,
                epoch,
                "SeedGerminated",
                {
                    "slot_id": self.slot_id,
                    "blueprint_id": plan["blueprint"],
                    "params": rng.randint(1_000, 90_000),
                    "alpha": 0.0,
                    "blend_tempo_epochs": plan["tempo"],
                    "alpha_curve": "LINEAR",
                    "init_seed": rng.randrange(2**31),
                    "alpha_target": 1.0,
                },
            )
            self._move(out, epoch, "GERMINATED", "command", moves)
        elif stage == "GERMINATED" and age >= 1:
            self._gate(out, epoch, "G1", "TRAINING", True, "gate")
            self._move(out, epoch, "TRAINING", "gate", moves)
        elif stage == "TRAINING":
            if plan["early_prune"] and age >= 2:
                self._prune(out, epoch, "impatient", moves)
            elif age >= plan["train"]:
                self._gate(out, epoch, "G2", "BLENDING", True, "gate")
                self._move(out, epoch, "BLENDING", "gate", moves)
                self._emit(
                    out,
                    epoch,
                    "AlphaTargetSet",
                    {
                        "slot_id": self.slot_id,
                        "alpha_start": 0.0,
                        "target": 1.0,
                        "steps": plan["tempo"],
                        "curve": "LINEAR",
                        "steepness": 12.0,
                        "mode": "UP",
                        "initiator": "auto",
                    },
                )
            elif age >= 1 and rng.random() < 0.3:
                self._gate(out, epoch, "G2", "BLENDING", False, "gate")
        elif stage == "BLENDING":
            self.alpha = min(1.0, round(age / plan["tempo"], 6))
            if age >= plan["tempo"]:
                self.alpha = 1.0
                self._gate(out, epoch, "G3", "HOLDING", True, "gate")
                self._move(out, epoch, "HOLDING", "gate", moves)
        elif stage == "HOLDING" and age >= plan["hold"]:
            if plan["fossilize"]:
                self._gate(out, epoch, "G5", "FOSSILIZED", True, "command")
                self._move(out, epoch, "FOSSILIZED", "command", moves)
                self._emit(
                    out,
                    epoch,
                    "SeedFossilized",
                    {
                        "slot_id": self.slot_id,
                        "blueprint_id": plan["blueprint"],
                        "improvement": round(self.accuracy - self.start_accuracy, 6),
                        "params_added": rng.randint(1_000, 90_000),
                        "alpha": 1.0,
                        "epochs_total": epoch - plan["born"],
                        "param_digest": f"{rng.getrandbits(256):064x}",
                    },
                )
            else:
                self._prune(out, epoch, "no_gain", moves)
        elif stage == "PRUNED" and age >= 1:
            self._move(out, epoch, "EMBARGOED", "auto", moves)
        elif stage == "EMBARGOED" and age >= EMBARGO_EPOCHS:
            self._move(out, epoch, "RESETTING", "auto", moves)
        elif stage == "RESETTING" and age >= 1:
            self._move(out, epoch, "DORMANT", "auto", moves)
            self.wake = epoch + rng.randint(1, 4)
        if self.stage in SAMPLED:
            self._sample(out, epoch)

    def _sample(self, out: list[Record], epoch: int) -> None:
        blending = self.stage in ("BLENDING", "HOLDING")
        self._emit(
            out,
            epoch,
            "SeedTelemetrySampled",
            {
                "slot_id": self.slot_id,
                "stage": self.stage,
                "alpha": self.alpha,
                "alpha_target": 1.0,
                "alpha_mode": "UP" if self.stage == "BLENDING" else "HOLD",
                "accuracy": round(self.accuracy, 9),
                "accuracy_delta": round(self.accuracy - self.start_accuracy, 9),
                "counterfactual": self._real(3.0) if blending else None,
                "epochs_in_stage": epoch - self.since,
                "grad_norm": self._real(),
                "grad_health": self._real(),
                "has_vanishing": False,
                "has_exploding": False,
            },
        )


def build(epochs: int = DEFAULT_EPOCHS, *, seed: int = 0, validate: bool = True) -> Workload:
    """The run's records in order; each validated once by kasmina's payload models."""
    rng = random.Random(seed)
    slots = [_Slot(i, random.Random(rng.randrange(2**63))) for i in range(ROWS * COLS)]
    records: list[Record] = []
    moves: list[tuple[int, str, str]] = []
    for epoch in range(epochs):
        for slot in slots:
            slot.step(records, epoch, moves)
        records.append(
            Record(
                "run",
                epoch,
                None,
                "EpochCompleted",
                {
                    "val_accuracy": round(60.0 + 30.0 * epoch / max(epochs, 1), 6),
                    "val_loss": round(rng.random(), 9),
                    "train_accuracy": round(70.0 + 20.0 * rng.random(), 6),
                    "train_loss": round(rng.random(), 9),
                    "host_grad_norm": round(rng.random(), 9),
                },
            )
        )
    if validate:
        from kasmina.events import event_from_dict

        for r in records:
            event_from_dict(
                r.event_type,
                r.payload,
                run_id="workload",
                stream_id=r.stream_id,
                epoch=r.epoch,
                seed_id=r.seed_id,
            )
    return Workload(records, epochs, [s.slot_id for s in slots], moves)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    args = parser.parse_args()
    import json

    work = build(args.epochs)
    sizes = [
        len(json.dumps(r.payload, separators=(",", ":"), sort_keys=True))
        for r in work.records
        if r.event_type == "SeedTelemetrySampled"
    ]
    print(f"{len(work):,} events over {work.epochs} epochs, {len(work.slots)} slots")
    for name, n in sorted(work.type_counts().items()):
        print(f"  {name:24} {n:7,d}")
    print(f"telemetry payload: {sum(sizes) / len(sizes):.0f} bytes of compact JSON on average")
    print(
        f"stages at epoch {work.epochs // 2}: {Counter(work.stages_at(work.epochs // 2).values())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
