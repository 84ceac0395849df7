"""Carrying out a policy's action on a slot, recorded as a `PolicyDecided` decision.

The decision heads the batch of its first effect, and every effect carries
its id (`SeedSlot.deciding`), so a decision is never recorded without the
effects it had. An action the lifecycle will not carry out is recorded on
its own, with ``accepted`` false and the reason.
"""

from __future__ import annotations

from kasmina.alpha import AlphaCurve, AlphaScheduleError
from kasmina.errors import InvalidTransition, KasminaError, SlotError
from kasmina.events import PolicyDecided, slot_stream
from kasmina.policy import Action, Advance, Fossilize, Germinate, Prune, SetAlphaTarget, Wait
from kasmina.runtime.blocks import BlockPoolError
from kasmina.runtime.blueprints import BlueprintError, UnknownBlueprint
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage, parse_stage

#: What the lifecycle raises when it will not carry out an action; recorded as a refusal.
REFUSALS: tuple[type[KasminaError], ...] = (
    InvalidTransition,
    SlotError,
    AlphaScheduleError,
    BlueprintError,
    UnknownBlueprint,
    BlockPoolError,
)


def decide(slot: SeedSlot, action: Action, decision_id: str, policy: str) -> PolicyDecided:
    """Record `action` as decision `decision_id` of `policy` and carry it out on `slot`.

    Returns the decision as recorded: accepted, or refused with the reason.
    """
    decision = PolicyDecided(
        decision_id=decision_id,
        policy=policy,
        action=action.kind,
        slot_id=slot.slot_id,
        arguments=action.arguments(),
        reason=action.reason,
    )
    if isinstance(action, Wait):
        _record(slot, decision)
        return decision
    with slot.deciding(decision) as pending:
        try:
            done = _carry_out(slot, action, decision_id)
        except REFUSALS as exc:
            if pending.recorded:
                raise
            return _refuse(slot, decision, str(exc))
        if not done and not pending.recorded:
            return _refuse(slot, decision, "a fossilized seed is kept for good; it is never pruned")
        return pending.payload


def _refuse(slot: SeedSlot, decision: PolicyDecided, why: str) -> PolicyDecided:
    refused = decision.model_copy(update={"accepted": False, "refusal": why})
    _record(slot, refused)
    return refused


def _record(slot: SeedSlot, decision: PolicyDecided) -> None:
    if slot.recorder is not None:
        slot.recorder.emit(
            decision, stream_id=slot_stream(slot.slot_id), epoch=slot.epoch, seed_id=slot.seed_id
        )


def _carry_out(slot: SeedSlot, action: Action, decision_id: str) -> bool:
    """Run the slot's command for `action`; False when the slot declined without raising."""
    if isinstance(action, Germinate):
        slot.germinate(
            action.blueprint,
            action.seed_id or f"{slot.slot_id}-{decision_id}",
            init_seed=action.init_seed,
            alpha_target=action.alpha_target,
            tempo=action.tempo,
            curve=_curve(action.curve),
        )
    elif isinstance(action, SetAlphaTarget):
        slot.set_alpha_target(
            action.target,
            action.steps,
            curve=_curve(action.curve),
            steepness=action.steepness,
            initiator="policy",
        )
    elif isinstance(action, Prune):
        if action.steps > 0:
            return slot.schedule_prune(action.steps, reason=action.reason, initiator="policy")
        return slot.prune(action.reason, initiator="policy")
    elif isinstance(action, Fossilize):
        slot.advance_stage(SeedStage.FOSSILIZED)
    elif isinstance(action, Advance):
        slot.advance_stage(_stage(action.target) if action.target else None)
    return True


def _stage(name: str) -> SeedStage:
    try:
        return parse_stage(name)
    except ValueError as exc:
        raise SlotError(f"cannot advance to {name!r}: {exc}") from None


def _curve(name: str) -> AlphaCurve:
    try:
        return AlphaCurve[name]
    except KeyError:
        raise SlotError(
            f"unknown alpha curve {name!r}; choose one of {[c.name for c in AlphaCurve]}"
        ) from None


__all__ = ["REFUSALS", "decide"]
