"""Alpha ramps commanded by a policy: new targets, and prunes that fade out first.

A mixin of `SeedSlot`. Both commands only start from a resting controller
(HOLD), and any target below full strength taken from HOLDING first moves the
slot back to BLENDING, because HOLDING means alpha is 1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from kasmina.alpha import (
    DEFAULT_BLENDING_TOTAL_STEPS,
    AlphaController,
    AlphaCurve,
    AlphaMode,
    AlphaScheduleError,
)
from kasmina.errors import InvalidTransition, SlotError
from kasmina.events import AlphaTargetSet, Initiator
from kasmina.stages import SeedStage

if TYPE_CHECKING:
    from kasmina.runtime.slot import SeedSlot


class SlotRamps:
    def schedule_prune(
        self,
        steps: int = 3,
        *,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        steepness: float = 12.0,
        reason: str = "scheduled_prune",
        initiator: Initiator = "policy",
    ) -> bool:
        """Ramp alpha down to 0, then prune; at once if alpha is 0 or steps <= 0."""
        slot = cast("SeedSlot", self)
        if (
            slot.controller.alpha == 0.0
            or steps <= 0
            or slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING)
        ):
            return slot.prune(reason, initiator)
        if slot.stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
            raise InvalidTransition(slot.slot_id, slot.stage.name, SeedStage.PRUNED.name)
        ramp = slot._retargeted(0.0, steps, curve, steepness)
        payload = slot._target_payload(ramp, initiator=initiator, prune_ramp=True, reason=reason)

        def start() -> None:
            slot.controller = ramp
            slot._pending_prune = (reason, initiator)
            slot._sync_freeze()

        slot._retarget_move(payload, start)
        return True

    def set_alpha_target(
        self,
        target: float,
        steps: int = DEFAULT_BLENDING_TOTAL_STEPS,
        *,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        steepness: float = 12.0,
        initiator: Initiator = "policy",
    ) -> None:
        """A new alpha target from BLENDING or HOLDING (use schedule_prune for 0)."""
        slot = cast("SeedSlot", self)
        if slot.stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
            raise SlotError(f"alpha targets are set in BLENDING or HOLDING, not {slot.stage.name}")
        if not 0.0 < target <= 1.0:
            raise SlotError(f"alpha target must lie in (0, 1], got {target}")
        ramp = slot._retargeted(target, steps, curve, steepness)
        payload = slot._target_payload(ramp, initiator=initiator, prune_ramp=False)

        def start() -> None:
            slot.controller = ramp
            slot._sync_freeze()

        slot._retarget_move(payload, start)

    def _retargeted(
        self, target: float, steps: int, curve: AlphaCurve, steepness: float
    ) -> AlphaController:
        slot = cast("SeedSlot", self)
        if slot.controller.mode is not AlphaMode.HOLD:
            raise AlphaScheduleError(
                f"slot {slot.slot_id!r} is ramping {slot.controller.mode.name}; "
                "wait until alpha reaches its target"
            )
        ramp = AlphaController.from_dict(slot.controller.to_dict())
        ramp.retarget(target, steps, curve, steepness)
        return ramp

    def _retarget_move(self, payload: AlphaTargetSet, start: Callable[[], None]) -> None:
        """HOLDING means full strength, so any new target first goes back to BLENDING."""
        slot = cast("SeedSlot", self)
        if slot.stage is SeedStage.HOLDING and payload.target < 1.0:
            slot._move(SeedStage.BLENDING, "command", after=[payload], on_moved=start)
        else:
            slot._emit([payload])
            start()


__all__ = ["SlotRamps"]
