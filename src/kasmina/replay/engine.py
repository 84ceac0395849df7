"""Driving a fold: where to start (a snapshot), where to stop (a cut), what to save.

A cut is an epoch or a position. The state "at epoch E" is the state after
the last event recorded for epoch E or earlier, in log order, with every
slot's clock advanced to E (its end-of-epoch ticks). The state "at position
P" is the state right after event P, with no ticks beyond what was recorded.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from kasmina.canonical import canonical_json
from kasmina.errors import ReplayError
from kasmina.ledger import snapshots
from kasmina.ledger.attempts import Attempts
from kasmina.ledger.snapshots import Snapshot, SnapshotWarning
from kasmina.ledger.verify import ChainChecker
from kasmina.replay.fold import Fold
from kasmina.replay.lineage import parent_of, verified_parent
from kasmina.run_state import ReplayState, RunState

if TYPE_CHECKING:
    from kasmina.ledger import Ledger

#: Bumped whenever the folded state's JSON changes shape; older snapshots are ignored.
SNAPSHOT_FORMAT = 1

Progress = Callable[[int], None]


def _encode(fold: Fold) -> Snapshot:
    checker = fold.checker
    assert checker is not None, "snapshots are only taken from verified folds"
    body = {
        "state": fold.state().to_json(),
        "heads": {k: [v, h] for k, (v, h) in sorted(checker.heads.items())},
        "sealed": checker.sealed,
    }
    return Snapshot(
        run_id=fold.run_id,
        position=fold.position,
        epoch=fold.max_epoch,
        events=fold.events,
        event_hash=fold.last_hash,
        format=SNAPSHOT_FORMAT,
        state=canonical_json(body),
    )


def _decode(ledger: Ledger, snap: Snapshot, trust: bool) -> Fold | None:
    """A fold resumed from a snapshot, or None (with a warning) if it does not fit the log."""
    if snap.format != SNAPSHOT_FORMAT:
        return None
    store = ledger.store
    try:
        body = json.loads(snap.state)
        heads = {str(k): (int(v[0]), str(v[1])) for k, v in body["heads"].items()}
        state = ReplayState.from_json(body["state"])
    except (KeyError, TypeError, ValueError) as exc:
        warnings.warn(
            f"snapshot of run {snap.run_id} at position {snap.position} is unreadable "
            f"({exc!r}); ignored",
            SnapshotWarning,
            stacklevel=4,
        )
        return None
    if not snapshots.heads_match(store, snap.run_id, heads, lean=ledger.lean):
        warnings.warn(
            f"snapshot of run {snap.run_id} at position {snap.position} no longer matches "
            "the log's hash chain; ignored",
            SnapshotWarning,
            stacklevel=4,
        )
        return None
    checker = ChainChecker(
        store,
        snap.run_id,
        heads=heads,
        sealed=bool(body["sealed"]),
        count=snap.events,
        run_prev=snap.event_hash,
    )
    fold = Fold(
        store,
        snap.run_id,
        trust=trust,
        start=state,
        checker=checker,
        max_epoch=snap.epoch,
    )
    fold.last_hash = snap.event_hash
    return fold


def _start(
    ledger: Ledger,
    run_id: str,
    *,
    until_epoch: int | None,
    until_position: int | None,
    trust: bool,
    use_snapshots: bool,
    attempts: Attempts,
) -> Fold:
    store = ledger.store
    if use_snapshots and snapshots.has_snapshots(store, ledger.revision):
        for snap in snapshots.candidates(
            store, run_id, until_position=until_position, until_epoch=until_epoch
        ):
            if attempts.superseded(snap.position):
                continue  # taken while the abandoned attempt ran: its state is not the run's
            fold = _decode(ledger, snap, trust)
            if fold is not None:
                return fold
    inherited = _inherited(ledger, run_id, until_epoch, trust)
    if inherited is not None:
        return Fold(store, run_id, trust=trust, start=inherited, max_epoch=inherited.run.epoch)
    return Fold(store, run_id, trust=trust)


def _inherited(
    ledger: Ledger, run_id: str, until_epoch: int | None, trust: bool
) -> ReplayState | None:
    """A fork's state at its start: its parent's slots at the fork's epoch; None if no fork."""
    forked = parent_of(ledger, run_id)
    if forked is None:
        return None
    started_at, parent = forked
    if until_epoch is not None and until_epoch < parent.epoch:
        raise ReplayError(
            f"run {run_id} starts from run {parent.run_id} at epoch {parent.epoch}, so its "
            f"state at epoch {until_epoch} is that run's: replay {parent.run_id} instead"
        )
    verified_parent(ledger, run_id, started_at, parent)
    state = replay_run(ledger, parent.run_id, until_epoch=parent.epoch, trust=trust)
    return ReplayState(state.slots, RunState(run_id, epoch=parent.epoch))


def _require_snapshot_table(ledger: Ledger) -> None:
    if not snapshots.has_snapshots(ledger.store, ledger.revision):
        raise ReplayError(
            f"this database (schema {ledger.revision}) has no snapshots table; "
            "run `kasmina db upgrade`"
        )


def _fold_rows(
    ledger: Ledger,
    fold: Fold,
    attempts: Attempts,
    *,
    until_epoch: int | None,
    until_position: int | None,
    snapshot_every: int | None,
    progress: Progress | None,
) -> tuple[bool, int]:
    """Feed the run's rows after the fold's position up to the cut, saving snapshots.

    Returns whether the run went past the cut epoch, and how many snapshots were stored.
    """
    next_save = fold.events + snapshot_every if snapshot_every else None
    feed = fold.feed
    saved = 0
    for row in ledger.raw_rows(fold.run_id, after=fold.position, until=until_position):
        if attempts and attempts.superseded(row.position):
            fold.pass_over(row)
            continue
        epoch = row.epoch
        try:
            if until_epoch is not None and epoch is not None and epoch > until_epoch:
                return True, saved
            feed(row)
        except (TypeError, ValueError) as exc:  # a row made by hand, folded with --trust
            raise ReplayError(f"a malformed event ({exc})", row.position) from None
        if progress is not None and fold.events % 4096 == 0:
            progress(fold.events)
        if next_save is not None and fold.events >= next_save:
            saved += snapshots.save(ledger.store, _encode(fold))
            next_save = fold.events + (snapshot_every or 0)
    return False, saved


def replay_run(
    ledger: Ledger,
    run_id: str,
    *,
    until_epoch: int | None = None,
    until_position: int | None = None,
    trust: bool = False,
    use_snapshots: bool = True,
    snapshot_every: int | None = None,
    progress: Progress | None = None,
) -> ReplayState:
    """Fold a run to a cut; see `kasmina.replay.replay` for the contract."""
    if until_epoch is not None and until_position is not None:
        raise ReplayError("give an epoch or a position to replay to, not both")
    if snapshot_every is not None and snapshot_every < 1:
        raise ReplayError(f"snapshot_every must be at least 1, got {snapshot_every}")
    ledger.require_run(run_id)
    attempts = ledger.attempts(run_id)
    fold = _start(
        ledger,
        run_id,
        until_epoch=until_epoch,
        until_position=until_position,
        trust=trust,
        use_snapshots=use_snapshots,
        attempts=attempts,
    )
    if snapshot_every is not None and not trust:
        _require_snapshot_table(ledger)
    beyond, _ = _fold_rows(
        ledger,
        fold,
        attempts,
        until_epoch=until_epoch,
        until_position=until_position,
        snapshot_every=None if trust else snapshot_every,
        progress=progress,
    )
    if fold.events == 0:
        raise ReplayError(f"run {run_id} has no events before the cut")
    if progress is not None:
        progress(fold.events)
    if until_position is None:
        # The cut epoch if the run went past it; else the last epoch the run reached.
        last = until_epoch if beyond else fold.max_epoch
        if last is not None:
            fold.tick_all(last)
    return fold.state()


def snapshot_run(ledger: Ledger, run_id: str, *, every: int | None = None) -> int:
    """Fold a whole run (verified) and store snapshots every `every` events and at its end.

    Returns how many new snapshots were stored. Snapshots are a cache: any
    may be deleted, and a fold without them gives the same state.
    """
    ledger.require_run(run_id)
    _require_snapshot_table(ledger)
    attempts = ledger.attempts(run_id)
    fold = _start(
        ledger,
        run_id,
        until_epoch=None,
        until_position=None,
        trust=False,
        use_snapshots=True,
        attempts=attempts,
    )
    _, saved = _fold_rows(
        ledger,
        fold,
        attempts,
        until_epoch=None,
        until_position=None,
        snapshot_every=every,
        progress=None,
    )
    if fold.events:
        saved += snapshots.save(ledger.store, _encode(fold))
    return saved


__all__ = ["SNAPSHOT_FORMAT", "Progress", "replay_run", "snapshot_run"]
