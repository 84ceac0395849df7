"""Where a run goes on from: its checkpoints, and the run it was forked from.

A resumed run goes on from its own last checkpoint; a fork (`kasmina run
--fork RUN@EPOCH`) starts from its parent's checkpoint at that epoch, and its
`RunStarted` names the parent (`RunParent`). A fork's log holds only its own
events: its state at the start is the parent's state at the fork's epoch,
folded from the parent's log (which may itself be a fork). Torch-free: this
is what the fold and the CLI read; putting weights back is `kasmina.replay.live`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kasmina.errors import ReplayError
from kasmina.events import RUN_STREAM, CheckpointSaved, RunParent, RunStarted, StoredEvent
from kasmina.ledger.attempts import Attempts

if TYPE_CHECKING:
    from kasmina.ledger import Ledger

__all__ = [
    "checkpoint_at",
    "live_checkpoints",
    "parent_checkpoint",
    "parent_of",
    "parse_fork",
    "verified_parent",
]

_FORK = re.compile(r"(?P<run>[^@\s]+)@(?P<epoch>[0-9]{1,18})")


def parse_fork(spec: str) -> tuple[str, int]:
    """``RUN@EPOCH`` as (run, epoch), or one error line."""
    found = _FORK.fullmatch(spec)
    if found is None:
        raise ReplayError(f"a fork point is written RUN@EPOCH (e.g. my-run@12), got {spec!r}")
    return found["run"], int(found["epoch"])


def live_checkpoints(
    ledger: Ledger, run_id: str, attempts: Attempts | None = None
) -> list[StoredEvent]:
    """The run's `CheckpointSaved` events in log order, less those a resume superseded."""
    if attempts is None:
        attempts = ledger.attempts(run_id)
    return [
        e
        for e in ledger.of_type(run_id, "CheckpointSaved")
        if isinstance(e.payload, CheckpointSaved) and not attempts.superseded(e.position)
    ]


def checkpoint_at(ledger: Ledger, run_id: str, epoch: int | None = None) -> StoredEvent | None:
    """The run's last live checkpoint taken at or before `epoch` (any epoch when None)."""
    found = None
    for e in live_checkpoints(ledger, run_id):
        payload = e.payload
        assert isinstance(payload, CheckpointSaved)
        if epoch is None or payload.epoch <= epoch:
            found = e
    return found


def parent_of(ledger: Ledger, run_id: str) -> tuple[int, RunParent] | None:
    """A fork's `RunStarted` position and parent; None for a run that is not a fork.

    Every fold asks this, so it is one indexed lookup of the run's `RunStarted`.
    """
    for e in ledger.of_type(run_id, "RunStarted"):
        if e.stream_id == RUN_STREAM and isinstance(e.payload, RunStarted):
            parent = e.payload.parent
            return None if parent is None else (e.position, parent)
    return None


def parent_checkpoint(ledger: Ledger, parent: RunParent) -> StoredEvent:
    """The parent's live checkpoint a fork starts from, as its `RunStarted` recorded it."""
    where = f"the fork point {parent.run_id}@{parent.epoch}"
    for e in live_checkpoints(ledger, parent.run_id):
        payload = e.payload
        assert isinstance(payload, CheckpointSaved)
        if e.position == parent.position:
            if (payload.epoch, payload.digest) != (parent.epoch, parent.checkpoint):
                raise ReplayError(
                    f"{where} names the checkpoint at position {e.position}, which is of "
                    f"epoch {payload.epoch} with digest {payload.digest}"
                )
            return e
    raise ReplayError(f"{where} names no live checkpoint at position {parent.position}")


def verified_parent(ledger: Ledger, run_id: str, started_at: int, parent: RunParent) -> None:
    """Check that a fork's parent is where its `RunStarted` says, or raise `ReplayError`.

    The parent must exist, hold a live checkpoint at exactly the recorded
    position, epoch and digest, and come before the fork in the log; the last
    makes a chain of parents finite, so a forged cycle cannot loop a fold.
    """
    where = f"run {run_id} is a fork of {parent.run_id} at epoch {parent.epoch}"
    if parent.position >= started_at:
        raise ReplayError(f"{where}, but its parent's position {parent.position} is not earlier")
    if not ledger.run_exists(parent.run_id):
        raise ReplayError(f"{where}, and that run is not in this ledger")
    try:
        parent_checkpoint(ledger, parent)
    except ReplayError as exc:
        raise ReplayError(f"{where}, but {exc}") from None
