"""Checkpoints of a slot: its lifecycle state as `nn.Module` extra state.

A mixin of `SeedSlot`, kept apart because it is a second concept: how a slot
is written down and read back, not how it behaves. `state_dict()` carries the
stage, ids, alpha controller and metrics; `load_state_dict` rebuilds a live
seed from its blueprint and recorded init seed *before* torch loads the
children, so the seed's trained weights then load into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, cast

from kasmina.alpha import AlphaController, AlphaCurve
from kasmina.events import Initiator
from kasmina.lifecycle import LIFECYCLE
from kasmina.runtime.blueprints import build_blueprint
from kasmina.runtime.metrics import SeedMetrics
from kasmina.stages import SeedStage

if TYPE_CHECKING:
    from kasmina.runtime.slot import SeedSlot

_LIVE_SEED_STAGES = (
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
)


class SlotCheckpoint:
    def get_extra_state(self) -> dict[str, object]:
        slot = cast("SeedSlot", self)
        return {
            "stage": slot.stage.name,
            "seed_id": slot.seed_id,
            "blueprint_id": slot.blueprint_id,
            "init_seed": slot.init_seed,
            "blend": [slot.blend_target, slot.blend_steps, int(slot.blend_curve)],
            "controller": slot.controller.to_dict(),
            "metrics": asdict(slot.metrics),
            "isolate": slot.isolate_gradients,
            "embargo": slot._embargo,
            "pending_prune": list(slot._pending_prune) if slot._pending_prune else None,
            "epoch": slot.epoch,
        }

    def set_extra_state(self, state: Mapping[str, object]) -> None:
        """Restore the slot; a live seed is rebuilt first so its weights can load next."""
        slot = cast("SeedSlot", self)
        slot._restore_frozen()
        slot._clear_seed_state()
        stage = SeedStage[str(state["stage"])]
        seed_id, blueprint_id = state["seed_id"], state["blueprint_id"]
        init_seed = state["init_seed"]
        slot.seed_id = seed_id if isinstance(seed_id, str) else None
        slot.blueprint_id = blueprint_id if isinstance(blueprint_id, str) else None
        slot.init_seed = init_seed if isinstance(init_seed, int) else None
        blend = state["blend"]
        assert isinstance(blend, list)
        slot.blend_target, slot.blend_steps = float(blend[0]), int(blend[1])
        slot.blend_curve = AlphaCurve(int(blend[2]))
        controller = state["controller"]
        assert isinstance(controller, dict)
        slot.controller = AlphaController.from_dict(controller)
        metrics = state["metrics"]
        assert isinstance(metrics, dict)
        slot.metrics = SeedMetrics(**{f.name: metrics[f.name] for f in fields(SeedMetrics)})
        slot.isolate_gradients = bool(state["isolate"])
        slot._embargo = int(state["embargo"])  # type: ignore[call-overload]
        pending = state["pending_prune"]
        slot._pending_prune = (
            (str(pending[0]), cast(Initiator, pending[1])) if isinstance(pending, list) else None
        )
        slot.epoch = int(state["epoch"])  # type: ignore[call-overload]
        if stage in _LIVE_SEED_STAGES and slot.blueprint_id and slot.init_seed is not None:
            slot.seed = build_blueprint(
                slot.blueprint_id, slot.channels, slot.topology, slot.init_seed
            ).to(device=slot._device)
        LIFECYCLE.restore(slot._staged, stage)
        slot._sync_freeze()


__all__ = ["SlotCheckpoint"]
