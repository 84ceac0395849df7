"""Folded state meets torch: restoring `SeedSlot`s from the log, and checking live slots.

Restore rebuilds each live seed from its blueprint and recorded init seed, so
its weights are bit-identical to the seed's weights *at germination*. Trained
weights are not in the log (only their SHA-256 digests are); load a
checkpoint's ``state_dict`` on top for those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields, replace

from kasmina.alpha import AlphaCurve
from kasmina.errors import ReplayError
from kasmina.ledger import Ledger
from kasmina.replay.engine import replay_run
from kasmina.replay.state import ControllerState, SeedMetricsState, SlotState
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage

#: Live slot states captured at the end of each epoch: {epoch: {slot_id: state}}.
LiveStates = dict[int, dict[str, SlotState]]


def comparable(state: SlotState) -> SlotState:
    """The state without what only the log keeps (gate history, outcome, fossil digest)."""
    return replace(state, gates=(), fossil_digest=None, outcome=None)


def live_state(slot: SeedSlot) -> SlotState:
    """A live slot's state in the fold's terms (see `comparable`)."""
    m = slot.metrics
    pending = slot._pending_prune
    return SlotState(
        slot_id=slot.slot_id,
        stage=slot.stage,
        epoch=slot.epoch,
        seed_id=slot.seed_id,
        blueprint_id=slot.blueprint_id,
        init_seed=slot.init_seed,
        blend_target=slot.blend_target,
        blend_steps=slot.blend_steps,
        blend_curve=slot.blend_curve.name,
        controller=ControllerState.of(slot.controller),
        epochs_in_stage=m.epochs_in_stage,
        epochs_total=m.epochs_total,
        pending_prune=(pending[0], pending[1]) if pending else None,
        metrics=SeedMetricsState(**{f.name: getattr(m, f.name) for f in fields(SeedMetricsState)}),
    )


def _differences(live: SlotState, folded: SlotState) -> list[str]:
    a, b = asdict(comparable(live)), asdict(comparable(folded))
    return [f"{k}: live {a[k]!r}, folded {b[k]!r}" for k in a if a[k] != b[k]]


def check_live(ledger: Ledger, run_id: str, live: LiveStates) -> int:
    """Compare live slot states per epoch with the fold up to that epoch; raise on any difference.

    Returns the number of epochs checked. One fold per epoch, so this is for
    demos and tests, not for long runs.
    """
    for epoch, slots in sorted(live.items()):
        folded = replay_run(ledger, run_id, until_epoch=epoch)
        for slot_id, state in sorted(slots.items()):
            diffs = _differences(state, folded.slot(slot_id))
            if diffs:
                raise ReplayError(
                    f"the fold of run {run_id} differs from the live slot {slot_id} at the end "
                    f"of epoch {epoch}: " + "; ".join(diffs)
                )
    return len(live)


def restore_slot(slot: SeedSlot, state: SlotState) -> None:
    """Put one slot into a folded state (through its checkpoint path, so both agree)."""
    if state.slot_id != slot.slot_id:
        raise ReplayError(f"state of slot {state.slot_id!r} given to slot {slot.slot_id!r}")
    metrics = asdict(state.metrics)
    metrics["epochs_in_stage"] = state.epochs_in_stage
    metrics["epochs_total"] = state.epochs_total
    controller = state.controller.controller()
    slot.set_extra_state(
        {
            "stage": state.stage.name,
            "seed_id": state.seed_id,
            "blueprint_id": state.blueprint_id,
            "init_seed": state.init_seed,
            "blend": [state.blend_target, state.blend_steps, _curve(state.blend_curve)],
            "controller": controller.to_dict(),
            "metrics": metrics,
            "isolate": _isolated(state.stage, slot),
            "embargo": state.epochs_in_stage if state.stage is SeedStage.EMBARGOED else 0,
            "pending_prune": list(state.pending_prune) if state.pending_prune else None,
            "epoch": state.epoch,
        }
    )


def _curve(name: str) -> int:
    return int(AlphaCurve[name])


def _isolated(stage: SeedStage, slot: SeedSlot) -> bool:
    """Where `SeedSlot` detaches the seed's input: TRAINING always, blending on a CNN."""
    if stage is SeedStage.TRAINING:
        return True
    return stage in (SeedStage.BLENDING, SeedStage.HOLDING) and slot.topology == "cnn"


def restore(
    slots: Iterable[SeedSlot] | Mapping[str, SeedSlot],
    ledger: Ledger,
    run_id: str,
    until_epoch: int | None = None,
    *,
    trust: bool = False,
) -> dict[str, SlotState]:
    """Put `slots` into the state the log gives them at `until_epoch` (default: the end).

    Stage, alpha controller, counters and recorded metrics are set; a live
    seed is rebuilt from its blueprint and init seed. Nothing is recorded.
    A slot the log never names is reset to DORMANT. Returns the states used.
    """
    folded = replay_run(ledger, run_id, until_epoch=until_epoch, trust=trust)
    targets = list(slots.values()) if isinstance(slots, Mapping) else list(slots)
    used: dict[str, SlotState] = {}
    for slot in targets:
        state = folded.slot(slot.slot_id)
        restore_slot(slot, state)
        used[slot.slot_id] = state
    return used


__all__ = ["LiveStates", "check_live", "comparable", "live_state", "restore", "restore_slot"]
