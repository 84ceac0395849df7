"""What an event does to a slot: `SlotState`, `evolve` and `tick`, in one place.

A slot is an event-sourced aggregate. Its state is a frozen value, and the
only ways to get a new one are the pure functions here: `evolve` applies one
recorded event, `tick` advances the slot's clock, `measured` takes in numbers
the runtime measured (accuracy, gradients) that reach the log only through
telemetry samples. The live `SeedSlot` sets its state with these functions
over exactly the payloads it recorded; the fold applies the same functions to
the rows it reads. So the two cannot disagree about a rule, only about input.

Torch-free: the alpha ramp is `kasmina.alpha`'s controller, and payloads are
read as the JSON the ledger stored (special floats as strings), so a live
payload and a folded row go through the same code.

The fold reads a run of millions of events, so the effects are kept narrow
and stated here, for a reader that batches them (`kasmina.replay.fold`):
a telemetry sample writes only `metrics` (and `initial_accuracy` only while it
is None); a gate verdict writes only `gates`; `tick` writes only the clock,
the epoch counters and the controller. Two events whose writes and reads do
not overlap commute, and consecutive samples overwrite each other. The events
that read or write what a sample writes are named by `uses_measurements`;
those that throw away the seed's history by `discards_seed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple, cast

from kasmina.alpha import (
    DEFAULT_BLENDING_TOTAL_STEPS,
    DEFAULT_STEEPNESS,
    AlphaController,
    AlphaCurve,
    AlphaMode,
)
from kasmina.canonical import SPECIAL_FLOATS, Json, canonical_value
from kasmina.errors import ReplayError
from kasmina.events import Payload
from kasmina.stages import SeedStage, is_legal


def real(value: object) -> float | None:
    """A float read back from canonical JSON (where NaN is the string "NaN")."""
    if value is None:
        return None
    if isinstance(value, str):
        return SPECIAL_FLOATS[value]
    return float(cast(float, value))


def _flag(value: object) -> bool | None:
    return None if value is None else bool(value)


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
        """A mutable copy, to compute a new ramp from; changing it changes no state."""
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

    @property
    def ramping(self) -> bool:
        return self.mode != "HOLD"

    def stepped(self, ticks: int) -> ControllerState:
        if self.mode == "HOLD" or self.steps_total == 0 or ticks <= 0:
            return self
        ramp = self.controller()
        for _ in range(ticks):
            ramp.step()
        return ControllerState.of(ramp)


#: Alpha pinned at full strength, as HOLDING has it.
_FULL = ControllerState(alpha=1.0, alpha_start=1.0, alpha_target=1.0)


def _delta(now: float | None, then: float | None) -> float | None:
    return None if now is None or then is None else now - then


@dataclass(frozen=True, slots=True)
class SeedMetricsState:
    """The seed's measured numbers: baselines taken at its moves, the rest as last measured.

    Live, they come from what the runtime measured (`measured`); folded, from
    the seed's telemetry samples. Samples are droppable: after a dropped
    sample the fold lags the live seed until the next one, and
    `initial_accuracy` (the first sampled accuracy) is off for the seed's life
    if that first sample was dropped. Stage, alpha and counters never depend
    on samples.
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

    @property
    def accuracy_delta(self) -> float:
        return _delta(self.accuracy, self.initial_accuracy) or 0.0

    @property
    def improvement_since_training(self) -> float | None:
        return _delta(self.accuracy, self.training_start_accuracy)

    @property
    def blending_delta(self) -> float | None:
        return _delta(self.accuracy, self.blending_start_accuracy)


#: The fields a telemetry sample (or the runtime) measures; the baselines are not among them.
MEASURED = (
    "accuracy",
    "counterfactual",
    "grad_ratio",
    "grad_health",
    "has_vanishing",
    "has_exploding",
)


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
    """One slot: its stage, its seed's identity, alpha ramp, clock, numbers and record."""

    slot_id: str
    stage: SeedStage = SeedStage.DORMANT
    epoch: int = 0
    seed_id: str | None = None
    blueprint_id: str | None = None
    init_seed: int | None = None
    #: The ramp BLENDING starts with, chosen at germination.
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


class Fact(NamedTuple):
    """One recorded event as `evolve` reads it: its type and its payload as stored."""

    event_type: str
    data: Mapping[str, Any]
    epoch: int | None = None
    seed_id: str | None = None


def fact(payload: Payload, *, epoch: int | None, seed_id: str | None) -> Fact:
    """A live payload in the form the ledger stores it, so live and fold read the same values."""
    return Fact(type(payload).__name__, json.loads(payload.canonical_text()), epoch, seed_id)


def from_legacy_checkpoint(slot_id: str, old: Mapping[str, Any]) -> SlotState:
    """The state in a slot checkpoint written before the checkpoint format had a number.

    That form held the stage, ids, blend settings as ``[target, steps,
    curve number]``, the controller as `AlphaController.to_dict`, and the
    epoch counters among the metrics; gate history and outcome were not kept.
    """
    blend = old["blend"]
    metrics = old["metrics"]
    pending = old["pending_prune"]
    return SlotState(
        slot_id=slot_id,
        stage=SeedStage[str(old["stage"])],
        epoch=int(old["epoch"]),
        seed_id=old["seed_id"],
        blueprint_id=old["blueprint_id"],
        init_seed=old["init_seed"],
        blend_target=float(blend[0]),
        blend_steps=int(blend[1]),
        blend_curve=AlphaCurve(int(blend[2])).name,
        controller=ControllerState.of(AlphaController.from_dict(old["controller"])),
        epochs_in_stage=int(metrics["epochs_in_stage"]),
        epochs_total=int(metrics["epochs_total"]),
        pending_prune=(str(pending[0]), str(pending[1])) if pending else None,
        metrics=SeedMetricsState(**{f.name: metrics[f.name] for f in fields(SeedMetricsState)}),
    )


def dormant(slot_id: str, epoch: int = 0) -> SlotState:
    """A slot no event has named yet."""
    return SlotState(slot_id, epoch=epoch)


def _cleared(state: SlotState) -> SlotState:
    """The slot without its seed: what DORMANT (and a new germination) starts from."""
    return SlotState(state.slot_id, stage=state.stage, epoch=state.epoch, outcome=state.outcome)


def _stage(value: object) -> SeedStage:
    return SeedStage[str(value)]


def _germinated(state: SlotState, e: Fact) -> SlotState:
    if state.stage is not SeedStage.DORMANT:
        raise ReplayError(f"a seed germinated in slot {state.slot_id} at {state.stage.name}")
    data = e.data
    return replace(
        _cleared(state),
        seed_id=e.seed_id,
        blueprint_id=str(data["blueprint_id"]),
        init_seed=data.get("init_seed"),
        blend_target=real(data.get("alpha_target", 1.0)) or 0.0,
        blend_steps=int(data.get("blend_tempo_epochs", DEFAULT_BLENDING_TOTAL_STEPS)),
        blend_curve=str(data.get("alpha_curve", "LINEAR")),
        outcome=None,
    )


def _stage_changed(state: SlotState, e: Fact) -> SlotState:
    source, dest = _stage(e.data["from_stage"]), _stage(e.data["to_stage"])
    slot_id = state.slot_id
    if source is not state.stage:
        raise ReplayError(
            f"{source.name} -> {dest.name} in slot {slot_id}, but the log has "
            f"the slot at {state.stage.name}: out of order"
        )
    if not is_legal(source, dest):
        raise ReplayError(
            f"illegal move {source.name} -> {dest.name} in slot {slot_id} "
            "(not in the transition table)"
        )
    if dest is SeedStage.GERMINATED and state.blueprint_id is None:
        raise ReplayError(f"slot {slot_id} germinated without a SeedGerminated event")
    if dest is SeedStage.DORMANT:
        return replace(_cleared(state), stage=dest)
    accuracy = real(e.data.get("accuracy"))
    metrics = state.metrics
    controller = state.controller
    pending = state.pending_prune
    if dest is SeedStage.TRAINING:
        metrics = replace(metrics, training_start_accuracy=accuracy)
    elif dest is SeedStage.BLENDING:
        if metrics.blending_start_accuracy is None:
            metrics = replace(metrics, blending_start_accuracy=accuracy)
    elif dest is SeedStage.HOLDING:
        controller = replace(_FULL, curve=controller.curve)
    elif dest is SeedStage.PRUNED:
        # The seed is gone: its numbers are what the move recorded, whatever
        # was measured after its last sample (which no event carries).
        controller = ControllerState()
        pending = None
        initial = metrics.initial_accuracy
        metrics = replace(
            metrics,
            initial_accuracy=accuracy if initial is None else initial,
            accuracy=accuracy,
            grad_ratio=real(e.data.get("grad_ratio")),
            grad_health=None,
            has_vanishing=_flag(e.data.get("has_vanishing")),
            has_exploding=_flag(e.data.get("has_exploding")),
        )
    return replace(
        state,
        stage=dest,
        epochs_in_stage=0,
        metrics=metrics,
        controller=controller,
        pending_prune=pending,
    )


def _gate(state: SlotState, e: Fact) -> SlotState:
    data = e.data
    gate = str(data["gate"])
    passed = bool(data["passed"])
    records = {g.gate: g for g in state.gates}
    old = records.get(gate)
    records[gate] = GateRecord(
        gate=gate,
        target_stage=str(data["target_stage"]),
        attempts=(old.attempts if old else 0) + 1,
        passes=(old.passes if old else 0) + passed,
        last_passed=passed,
        last_score=real(data["score"]) or 0.0,
        last_epoch=e.epoch,
    )
    return replace(state, gates=tuple(sorted(records.values(), key=lambda g: g.gate)))


def _alpha_target(state: SlotState, e: Fact) -> SlotState:
    if state.stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
        raise ReplayError(f"an alpha target for slot {state.slot_id} at {state.stage.name}")
    data = e.data
    mode = AlphaMode[str(data["mode"])]
    start = real(data["alpha_start"]) or 0.0
    target = real(data["target"]) or 0.0
    controller = ControllerState(
        alpha=start if mode is not AlphaMode.HOLD else target,
        alpha_start=start,
        alpha_target=target,
        mode=mode.name,
        curve=AlphaCurve[str(data["curve"])].name,
        steepness=real(data.get("steepness", DEFAULT_STEEPNESS)) or 0.0,
        steps_total=int(data["steps"]),
        steps_done=0,
    )
    pending = state.pending_prune
    if data.get("prune_ramp"):
        reason = data.get("reason") or "scheduled_prune"
        pending = (str(reason), str(data.get("initiator", "policy")))
    return replace(state, controller=controller, pending_prune=pending)


def _fossilized(state: SlotState, e: Fact) -> SlotState:
    return replace(state, fossil_digest=e.data.get("param_digest"), outcome="fossilized")


def _pruned(state: SlotState, e: Fact) -> SlotState:
    return replace(
        state,
        outcome=f"pruned: {e.data['reason']}",
        metrics=replace(state.metrics, counterfactual=real(e.data.get("counterfactual"))),
    )


def _sampled(state: SlotState, e: Fact) -> SlotState:
    data = e.data
    accuracy = real(data.get("accuracy"))
    metrics = state.metrics
    initial = metrics.initial_accuracy
    return replace(
        state,
        metrics=replace(
            metrics,
            initial_accuracy=accuracy if initial is None else initial,
            accuracy=accuracy,
            counterfactual=real(data.get("counterfactual")),
            grad_ratio=real(data.get("grad_norm")),
            grad_health=real(data.get("grad_health")),
            has_vanishing=_flag(data.get("has_vanishing")),
            has_exploding=_flag(data.get("has_exploding")),
        ),
    )


_EFFECTS = {
    "SeedGerminated": _germinated,
    "SeedStageChanged": _stage_changed,
    "SeedGateEvaluated": _gate,
    "AlphaTargetSet": _alpha_target,
    "SeedFossilized": _fossilized,
    "SeedPruned": _pruned,
    "SeedTelemetrySampled": _sampled,
}


#: The event types that change a slot; a slot stream's other events leave it as it is.
SLOT_EVENT_TYPES = frozenset(_EFFECTS)


def evolve(state: SlotState, event: Fact) -> SlotState:
    """The slot after `event`; an event with no effect on a slot returns it unchanged.

    An event that cannot happen to the slot as it is (a move from another
    stage, an alpha target outside BLENDING and HOLDING) raises `ReplayError`.
    """
    effect = _EFFECTS.get(event.event_type)
    if effect is None:
        return state
    return effect(state, event)


def evolve_all(state: SlotState, events: Iterable[Fact]) -> SlotState:
    for event in events:
        state = evolve(state, event)
    return state


def tick(state: SlotState, epoch: int) -> SlotState:
    """The slot's clock moved to `epoch`: one tick per epoch that passed.

    Ticking is what lets a fold rebuild what the log does not spell out (the
    epoch counters and the alpha ramp) from the recorded epoch numbers alone.
    """
    ticks = epoch - state.epoch
    if ticks < 0:
        raise ReplayError(
            f"epoch {epoch} after epoch {state.epoch} of slot {state.slot_id}: out of order"
        )
    if ticks == 0:
        return state
    if state.stage is SeedStage.DORMANT:
        return replace(state, epoch=epoch)
    controller = state.controller
    if state.stage is SeedStage.BLENDING:
        controller = controller.stepped(ticks)
    return replace(
        state,
        epoch=epoch,
        epochs_in_stage=state.epochs_in_stage + ticks,
        epochs_total=state.epochs_total + ticks,
        controller=controller,
    )


def measured(state: SlotState, **values: float | bool | None) -> SlotState:
    """The slot with numbers the runtime measured; the first accuracy is the seed's baseline."""
    unknown = set(values) - set(MEASURED)
    if unknown:
        raise TypeError(f"not a measured number: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = values
    metrics = replace(state.metrics, **changes)
    if metrics.initial_accuracy is None and metrics.accuracy is not None:
        metrics = replace(metrics, initial_accuracy=metrics.accuracy)
    return replace(state, metrics=metrics)


def uses_measurements(event: Fact) -> bool:
    """Whether `event` reads or writes what a telemetry sample writes (see the module doc)."""
    if event.event_type == "SeedPruned":
        return True
    return event.event_type == "SeedStageChanged" and event.data.get("to_stage") == "PRUNED"


def discards_seed(event: Fact) -> bool:
    """Whether `event` throws away the seed's measurements and gate history."""
    if event.event_type == "SeedGerminated":
        return True
    return event.event_type == "SeedStageChanged" and event.data.get("to_stage") == "DORMANT"


__all__ = [
    "MEASURED",
    "SLOT_EVENT_TYPES",
    "ControllerState",
    "Fact",
    "GateRecord",
    "SeedMetricsState",
    "SlotState",
    "discards_seed",
    "dormant",
    "evolve",
    "evolve_all",
    "fact",
    "from_legacy_checkpoint",
    "measured",
    "real",
    "tick",
    "uses_measurements",
]
