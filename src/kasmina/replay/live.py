"""Folded state meets torch: restoring `SeedSlot`s from the log, and checking live slots.

Restore rebuilds each live seed from its blueprint and recorded init seed, so
its weights are bit-identical to the seed's weights *at germination*. Trained
weights are not in the log (only their SHA-256 digests are); load a
checkpoint's ``state_dict`` on top for those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict

from kasmina.errors import ReplayError
from kasmina.ledger import Ledger
from kasmina.replay.engine import replay_run
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


__all__ = ["LiveStates", "check_live", "differences", "live_state", "restore", "restore_slot"]
