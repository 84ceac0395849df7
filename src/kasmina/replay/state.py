"""What a fold produces: the state of every slot and of the run, at one point of a log.

Plain frozen dataclasses with a JSON form, importable without torch. The JSON
form is complete (a fold can resume from it), which is what makes it usable
as a snapshot as well as the output of ``kasmina replay --format json``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

from kasmina.alpha import (
    DEFAULT_BLENDING_TOTAL_STEPS,
    DEFAULT_STEEPNESS,
    AlphaController,
    AlphaCurve,
    AlphaMode,
)
from kasmina.canonical import SPECIAL_FLOATS, Json, canonical_value
from kasmina.stages import SeedStage


def real(value: object) -> float | None:
    """A float read back from canonical JSON (where NaN is the string "NaN")."""
    if value is None:
        return None
    if isinstance(value, str):
        return SPECIAL_FLOATS[value]
    return float(cast(float, value))


@dataclass(frozen=True, slots=True)
class ControllerState:
    """An `AlphaController`, frozen, with its enums by name."""

    alpha: float = 0.0
    alpha_start: float = 0.0
    alpha_target: float = 0.0
    mode: str = "HOLD"
    curve: str = "LINEAR"
    steepness: float = DEFAULT_STEEPNESS
    steps_total: int = 0
    steps_done: int = 0

    @classmethod
    def of(cls, c: AlphaController) -> ControllerState:
        return cls(
            c.alpha,
            c.alpha_start,
            c.alpha_target,
            AlphaMode(c.mode).name,
            AlphaCurve(c.curve).name,
            c.steepness,
            c.steps_total,
            c.steps_done,
        )

    def controller(self) -> AlphaController:
        return AlphaController(
            alpha=self.alpha,
            alpha_start=self.alpha_start,
            alpha_target=self.alpha_target,
            mode=AlphaMode[self.mode],
            curve=AlphaCurve[self.curve],
            steepness=self.steepness,
            steps_total=self.steps_total,
            steps_done=self.steps_done,
        )


@dataclass(frozen=True, slots=True)
class SeedMetricsState:
    """The seed's numbers as recorded: baselines from its moves, the rest from its last sample.

    Field names are those of `kasmina.runtime.metrics.SeedMetrics` (without
    the epoch counters, which `SlotState` holds exactly), so restoring is a
    plain copy. Values come from droppable samples: after a dropped sample they
    lag the live seed until the next one, and `initial_accuracy` (the seed's
    first sampled accuracy) is off for the seed's life if that first sample
    was dropped. The stage, alpha and counters never depend on samples.
    """

    initial_accuracy: float | None = None
    training_start_accuracy: float | None = None
    blending_start_accuracy: float | None = None
    accuracy: float | None = None
    counterfactual: float | None = None
    grad_ratio: float | None = None
    grad_health: float | None = None
    has_vanishing: bool | None = None
    has_exploding: bool | None = None


@dataclass(frozen=True, slots=True)
class GateRecord:
    """Every evaluation of one gate for the current seed, summarised."""

    gate: str
    target_stage: str
    attempts: int
    passes: int
    last_passed: bool
    last_score: float
    last_epoch: int | None


@dataclass(frozen=True, slots=True)
class SlotState:
    """One slot as the log says it was (see `kasmina.replay` for what "was" means)."""

    slot_id: str
    stage: SeedStage = SeedStage.DORMANT
    epoch: int = 0
    seed_id: str | None = None
    blueprint_id: str | None = None
    init_seed: int | None = None
    blend_target: float = 1.0
    blend_steps: int = DEFAULT_BLENDING_TOTAL_STEPS
    blend_curve: str = "LINEAR"
    controller: ControllerState = field(default_factory=ControllerState)
    epochs_in_stage: int = 0
    epochs_total: int = 0
    #: (reason, initiator) of a scheduled prune still fading out.
    pending_prune: tuple[str, str] | None = None
    metrics: SeedMetricsState = field(default_factory=SeedMetricsState)
    gates: tuple[GateRecord, ...] = ()
    #: SHA-256 of the seed's parameters when it was fossilized.
    fossil_digest: str | None = None
    #: How the last seed of this slot ended: "fossilized" or "pruned: <reason>".
    outcome: str | None = None

    @property
    def alpha(self) -> float:
        return self.controller.alpha

    def to_json(self) -> dict[str, Json]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["stage"] = self.stage.name
        data["controller"] = {
            f.name: getattr(self.controller, f.name) for f in fields(ControllerState)
        }
        data["metrics"] = {f.name: getattr(self.metrics, f.name) for f in fields(SeedMetricsState)}
        data["gates"] = [
            {f.name: getattr(g, f.name) for f in fields(GateRecord)} for g in self.gates
        ]
        data["pending_prune"] = list(self.pending_prune) if self.pending_prune else None
        return cast(dict[str, Json], canonical_value(data))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SlotState:
        c = data["controller"]
        m = data["metrics"]
        pending = data["pending_prune"]
        return cls(
            slot_id=str(data["slot_id"]),
            stage=SeedStage[str(data["stage"])],
            epoch=int(data["epoch"]),
            seed_id=data["seed_id"],
            blueprint_id=data["blueprint_id"],
            init_seed=data["init_seed"],
            blend_target=cast(float, real(data["blend_target"])),
            blend_steps=int(data["blend_steps"]),
            blend_curve=str(data["blend_curve"]),
            controller=ControllerState(
                alpha=cast(float, real(c["alpha"])),
                alpha_start=cast(float, real(c["alpha_start"])),
                alpha_target=cast(float, real(c["alpha_target"])),
                mode=str(c["mode"]),
                curve=str(c["curve"]),
                steepness=cast(float, real(c["steepness"])),
                steps_total=int(c["steps_total"]),
                steps_done=int(c["steps_done"]),
            ),
            epochs_in_stage=int(data["epochs_in_stage"]),
            epochs_total=int(data["epochs_total"]),
            pending_prune=(str(pending[0]), str(pending[1])) if pending else None,
            metrics=SeedMetricsState(
                initial_accuracy=real(m["initial_accuracy"]),
                training_start_accuracy=real(m["training_start_accuracy"]),
                blending_start_accuracy=real(m["blending_start_accuracy"]),
                accuracy=real(m["accuracy"]),
                counterfactual=real(m["counterfactual"]),
                grad_ratio=real(m["grad_ratio"]),
                grad_health=real(m["grad_health"]),
                has_vanishing=m["has_vanishing"],
                has_exploding=m["has_exploding"],
            ),
            gates=tuple(
                GateRecord(
                    gate=str(g["gate"]),
                    target_stage=str(g["target_stage"]),
                    attempts=int(g["attempts"]),
                    passes=int(g["passes"]),
                    last_passed=bool(g["last_passed"]),
                    last_score=cast(float, real(g["last_score"])),
                    last_epoch=g["last_epoch"],
                )
                for g in data["gates"]
            ),
            fossil_digest=data["fossil_digest"],
            outcome=data["outcome"],
        )


@dataclass(frozen=True, slots=True)
class CacheStats:
    """GC evictions of one memory cache, as `CacheEvicted` events counted them."""

    evicted: int = 0
    passes: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    size: int | None = None


@dataclass(frozen=True, slots=True)
class RunState:
    """Run-level state: what started it, where it is, and memory governance totals."""

    run_id: str
    name: str | None = None
    seed: int | None = None
    config: Mapping[str, Json] = field(default_factory=dict)
    started: Mapping[str, Json] = field(default_factory=dict)
    status: str = "running"
    #: The epoch the state is at (the cut, or the last epoch seen).
    epoch: int | None = None
    #: The payload of the last `EpochCompleted` folded.
    last_epoch: Mapping[str, Json] = field(default_factory=dict)
    caches: Mapping[str, CacheStats] = field(default_factory=dict)
    blocks_released: int = 0
    samples_dropped: int = 0
    events: int = 0
    position: int = 0

    def to_json(self) -> dict[str, Json]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["caches"] = {
            name: {f.name: getattr(c, f.name) for f in fields(CacheStats)}
            for name, c in sorted(self.caches.items())
        }
        return cast(dict[str, Json], canonical_value(data))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunState:
        values = dict(data)
        values["caches"] = {
            name: CacheStats(
                evicted=int(c["evicted"]),
                passes=int(c["passes"]),
                by_reason=dict(c["by_reason"]),
                size=c["size"],
            )
            for name, c in data["caches"].items()
        }
        return cls(**values)


class ReplayState(Mapping[str, SlotState]):
    """``{slot_id: SlotState}`` plus the run's state; a slot never seen reads as DORMANT."""

    __slots__ = ("run", "slots")

    def __init__(self, slots: Mapping[str, SlotState], run: RunState) -> None:
        self.slots = dict(sorted(slots.items()))
        self.run = run

    def __getitem__(self, slot_id: str) -> SlotState:
        return self.slots[slot_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.slots)

    def __len__(self) -> int:
        return len(self.slots)

    def slot(self, slot_id: str) -> SlotState:
        """The slot's state, or a DORMANT slot at the run's epoch if the log never named it."""
        known = self.slots.get(slot_id)
        if known is not None:
            return known
        return SlotState(slot_id, epoch=self.run.epoch or 0)

    @property
    def position(self) -> int:
        return self.run.position

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplayState):
            return NotImplemented
        return self.slots == other.slots and self.run == other.run

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReplayState(position={self.run.position}, slots={list(self.slots)})"

    def to_json(self) -> dict[str, Json]:
        return {
            "run": self.run.to_json(),
            "slots": {k: v.to_json() for k, v in self.slots.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayState:
        return cls(
            {k: SlotState.from_json(v) for k, v in data["slots"].items()},
            RunState.from_json(data["run"]),
        )

    def with_run(self, **changes: Any) -> ReplayState:
        return ReplayState(self.slots, replace(self.run, **changes))


__all__ = [
    "CacheStats",
    "ControllerState",
    "GateRecord",
    "ReplayState",
    "RunState",
    "SeedMetricsState",
    "SlotState",
    "real",
]
