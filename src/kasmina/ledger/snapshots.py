"""The `snapshots` table: folded replay state at a position, kept as a cache.

The ledger stores and hashes snapshot text; what the text means belongs to
`kasmina.replay`. A snapshot is never trusted on its word: its hash is
checked on load, and the fold also checks that the stream heads it recorded
are still the log's heads, so a snapshot of a log since rewritten is ignored.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from kasmina.ledger.heads import event_at
from kasmina.ledger.store import Cursor, Row, Store, hash_text, integer, optional_integer

#: The first schema revision with the table; older databases replay without snapshots.
SNAPSHOTS_REVISION = "0002"


class SnapshotWarning(UserWarning):
    """A snapshot was ignored (corrupt, or no longer matching the log)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    run_id: str
    #: The position of the last event folded into it.
    position: int
    #: The highest epoch among the events folded into it (None if none had one).
    epoch: int | None
    events: int
    #: The hash of the event at `position`.
    event_hash: str
    format: int
    state: str


def snapshot_hash(s: Snapshot) -> str:
    text = f"{s.run_id}\n{s.position}\n{s.epoch}\n{s.events}\n{s.event_hash}\n{s.format}\n"
    return hashlib.sha256((text + s.state).encode("utf-8")).hexdigest()


def has_snapshots(store: Store, revision: str | None) -> bool:
    return revision is not None and revision >= SNAPSHOTS_REVISION


def save(store: Store, snapshot: Snapshot) -> bool:
    """Store a snapshot; False if one is already stored at that position."""
    now = datetime.now(UTC)

    def insert(cur: Cursor) -> Row | None:
        cur.execute(
            store.sql(
                "INSERT INTO snapshots (run_id, position, epoch, events, event_hash, format, "
                "state, hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, position) DO NOTHING RETURNING snapshot_id"
            ),
            (
                snapshot.run_id,
                snapshot.position,
                snapshot.epoch,
                snapshot.events,
                snapshot.event_hash,
                snapshot.format,
                snapshot.state,
                snapshot_hash(snapshot),
                store.recorded_at_param(now, now.isoformat(timespec="microseconds")),
            ),
        )
        return cur.fetchone()

    return store.transact(snapshot.run_id, insert) is not None


def candidates(
    store: Store, run_id: str, *, until_position: int | None, until_epoch: int | None
) -> Iterator[Snapshot]:
    """Intact snapshots usable for a cut, newest first; corrupt ones are skipped with a warning."""
    where = ["run_id = ?"]
    params: list[str | int] = [run_id]
    if until_position is not None:
        where.append("position <= ?")
        params.append(until_position)
    if until_epoch is not None:
        where.append("(epoch IS NULL OR epoch <= ?)")
        params.append(until_epoch)
    rows = store.fetch(
        store.sql(
            "SELECT run_id, position, epoch, events, event_hash, format, state, hash "
            f"FROM snapshots WHERE {' AND '.join(where)} ORDER BY position DESC"
        ),
        params,
    )
    for row in rows:
        snap = Snapshot(
            run_id=str(row[0]),
            position=integer(row[1], "a snapshot's position"),
            epoch=optional_integer(row[2], "a snapshot's epoch"),
            events=integer(row[3], "a snapshot's event count"),
            event_hash=str(row[4]),
            format=integer(row[5], "a snapshot's format"),
            state=str(row[6]),
        )
        if snapshot_hash(snap) != str(row[7]):
            warnings.warn(
                f"snapshot of run {run_id} at position {snap.position} does not match its "
                "hash; ignored",
                SnapshotWarning,
                stacklevel=3,
            )
            continue
        yield snap


def heads_match(
    store: Store, run_id: str, heads: dict[str, tuple[int, str]], *, lean: bool
) -> bool:
    """Whether each stream's recorded (version, hash) is still in the log."""
    for stream, (version, digest) in heads.items():
        row = event_at(store, run_id, stream, version, lean=lean)
        if row is None or hash_text(row[0]) != digest:
            return False
    return True


def delete(store: Store, run_id: str) -> int:
    """Drop every snapshot of a run (they are only a cache); returns how many."""

    def drop(cur: Cursor) -> Row | None:
        cur.execute(store.sql("SELECT COUNT(*) FROM snapshots WHERE run_id = ?"), (run_id,))
        row = cur.fetchone()
        cur.execute(store.sql("DELETE FROM snapshots WHERE run_id = ?"), (run_id,))
        return row

    row = store.transact(run_id, drop)
    return integer(row[0], "a count") if row else 0


__all__ = [
    "SNAPSHOTS_REVISION",
    "Snapshot",
    "SnapshotWarning",
    "candidates",
    "delete",
    "has_snapshots",
    "heads_match",
    "save",
]
