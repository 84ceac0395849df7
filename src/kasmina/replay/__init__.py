"""Replay: a run's state at any epoch from its log, and proof that the run reproduces.

Two kinds of replay, both from the ledger alone. The *fold* (`replay`) reads
the events and rebuilds every slot's state; it needs no torch. *Restore*
(`restore`, in `kasmina.replay.live`) puts torch `SeedSlot`s into a folded
state, and *re-execution* (`reexecute`, in `kasmina.replay.reexecution`)
trains a recorded run again, taking every decision from the log, and compares
the events. Those two import torch when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kasmina.ledger.core import use_fold
from kasmina.replay.engine import Progress, replay_run, snapshot_run
from kasmina.run_state import CacheEvictions, ReplayState, RunState
from kasmina.slot_state import ControllerState, GateRecord, SeedMetricsState, SlotState

if TYPE_CHECKING:
    from kasmina.ledger import Ledger


def replay(
    ledger: Ledger,
    run_id: str,
    until_epoch: int | None = None,
    until_position: int | None = None,
    *,
    trust: bool = False,
    snapshots: bool = True,
    snapshot_every: int | None = None,
    progress: Progress | None = None,
) -> ReplayState:
    """Fold a run into ``{slot_id: SlotState}`` (plus ``.run``) at an epoch, a position or its end.

    The hash chain of every folded event is checked on the way; a fault stops
    the fold with `UnverifiedRun` naming the position, unless ``trust``. An
    illegal or out-of-order event stops it with `ReplayError` naming the
    position. Snapshots, when present, only shorten the work: the result is
    the same with ``snapshots=False``. With ``snapshot_every`` the fold stores
    a snapshot every that many events as it goes.
    """
    return replay_run(
        ledger,
        run_id,
        until_epoch=until_epoch,
        until_position=until_position,
        trust=trust,
        use_snapshots=snapshots,
        snapshot_every=snapshot_every,
        progress=progress,
    )


use_fold(replay)

#: Names that need torch, and the submodule that holds each: imported on first use.
_LAZY = {
    "restore": "kasmina.replay.live",
    "live_state": "kasmina.replay.live",
    "check_live": "kasmina.replay.live",
    "restore_checkpoint": "kasmina.replay.live",
    "reexecute": "kasmina.replay.reexecution",
    "Reexecution": "kasmina.replay.reexecution",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kasmina.replay' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CacheEvictions",
    "ControllerState",
    "GateRecord",
    "ReplayState",
    "RunState",
    "SeedMetricsState",
    "SlotState",
    "replay",
    "snapshot_run",
]
