"""Folded state meets torch: restoring `SeedSlot`s from the log, and checking live slots.

Restore rebuilds each live seed from its blueprint and recorded init seed, so
its weights are bit-identical to the seed's weights *at germination*. Trained
weights are not in the log (only their SHA-256 digests are): a run's
checkpoints hold them, and `restore_checkpoint` puts one back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict

from torch.nn import Module
from torch.optim import Optimizer

from kasmina.errors import KasminaError, ReplayError
from kasmina.events import CheckpointSaved, StoredEvent
from kasmina.ledger import Ledger
from kasmina.replay.engine import replay_run
from kasmina.replay.lineage import checkpoint_at
from kasmina.runtime.slot import SeedSlot
from kasmina.slot_state import SlotState

#: Live slot states captured at the end of each epoch: {epoch: {slot_id: state}}.
LiveStates = dict[int, dict[str, SlotState]]


def live_state(slot: SeedSlot) -> SlotState:
    """A live slot's state: the same value the fold computes from what it recorded."""
    return slot.state


def differences(live: SlotState, folded: SlotState) -> list[str]:
    """Each field where a live slot's state and the folded one differ, both values shown."""
    a, b = asdict(live), asdict(folded)
    return [f"{k}: live {a[k]!r}, folded {b[k]!r}" for k in a if a[k] != b[k]]


def check_live(ledger: Ledger, run_id: str, live: LiveStates) -> int:
    """Compare live slot states per epoch with the fold up to that epoch; raise on any difference.

    Returns the number of epochs checked. One fold per epoch, so this is for
    demos and tests, not for long runs.
    """
    for epoch, slots in sorted(live.items()):
        folded = replay_run(ledger, run_id, until_epoch=epoch)
        for slot_id, state in sorted(slots.items()):
            diffs = differences(state, folded.slot(slot_id))
            if diffs:
                raise ReplayError(
                    f"the fold of run {run_id} differs from the live slot {slot_id} at the end "
                    f"of epoch {epoch}: " + "; ".join(diffs)
                )
    return len(live)


def restore_slot(slot: SeedSlot, state: SlotState) -> None:
    """Put one slot into a folded state (the path a checkpoint takes too, so both agree)."""
    slot.restore(state)


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


def restore_checkpoint(
    model: Module,
    ledger: Ledger,
    run_id: str,
    optimizer: Optimizer | None = None,
    *,
    until_epoch: int | None = None,
    **stateful: object,
) -> int:
    """Put a run's trained state back: its last checkpoint at or before `until_epoch`.

    The fold alone gives a seed's weights at germination; the checkpoint
    (`ctx.checkpoint`, recorded as `CheckpointSaved`) gives the weights, the
    optimizer and the generators as training left them. Every `SeedSlot` of
    `model` is checked against the fold at the checkpoint's epoch. Returns
    that epoch, which is `until_epoch` itself only when a checkpoint was
    taken then. The optimizer and the objects named as in `ctx.checkpoint`
    are put back when given; the random generators always are.
    """
    saved = checkpoint_at(ledger, run_id, until_epoch)
    if saved is None:
        upto = "" if until_epoch is None else f" at or before epoch {until_epoch}"
        raise ReplayError(f"run {run_id} has no checkpoint{upto}")
    return put_back(model, optimizer, stateful, ledger, run_id, saved, partial=True)


def put_back(
    model: Module,
    optimizer: Optimizer | None,
    stateful: Mapping[str, object],
    ledger: Ledger,
    run_id: str,
    saved: StoredEvent,
    *,
    partial: bool = False,
) -> int:
    """Load `saved`, a `CheckpointSaved` of `run_id`, and check it against the log."""
    from kasmina.checkpoints import restore as load

    payload = saved.payload
    assert isinstance(payload, CheckpointSaved)
    where = f"the checkpoint of run {run_id} at epoch {payload.epoch}"
    try:
        data = ledger.require_artifacts().get(payload.digest)
        load(data, model, optimizer, stateful=stateful, partial=partial)
    except KasminaError as exc:
        raise ReplayError(f"{where} cannot be put back: {exc}") from None
    folded = replay_run(ledger, run_id, until_epoch=payload.epoch)
    for slot in (m for m in model.modules() if isinstance(m, SeedSlot)):
        diffs = differences(slot.state, folded.slot(slot.slot_id))
        if diffs:
            raise ReplayError(
                f"{where} does not match the log for slot {slot.slot_id} "
                f"({'; '.join(diffs)}); take ctx.checkpoint after the epoch's last event "
                "(after SeedManager.end_epoch)"
            )
    return payload.epoch


__all__ = [
    "LiveStates",
    "check_live",
    "differences",
    "live_state",
    "put_back",
    "restore",
    "restore_checkpoint",
    "restore_slot",
]
