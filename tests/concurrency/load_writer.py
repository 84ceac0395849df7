"""Child-process code for the concurrency tests (importable by the spawn start method).

A writer owns its streams (``slot/w<writer>s<k>``): nobody else appends to
them, as in a DDP run where each rank writes its own slots. Event ids are
derived from (run, writer, number), so the parent knows every id that was
sent without being told.
"""

from __future__ import annotations

import sqlite3
import uuid
from multiprocessing.synchronize import Barrier
from typing import Any

from kasmina.events import NewEvent, SeedTelemetrySampled, make_event, slot_stream
from kasmina.ledger import Ledger
from kasmina.ledger.sqlite import SQLiteStore
from kasmina.stages import SeedStage

SLOTS_PER_WRITER = 4


def slot_of(writer: int, n: int) -> str:
    return f"w{writer}s{n % SLOTS_PER_WRITER}"


def event_id(run_id: str, writer: int, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kasmina-load/{run_id}/{writer}/{n}"))


def telemetry(run_id: str, writer: int, n: int) -> NewEvent:
    """Event `n` of a writer: a per-epoch sample of one of its slots (~300 bytes of JSON)."""
    slot = slot_of(writer, n)
    epoch = n // SLOTS_PER_WRITER
    return make_event(
        SeedTelemetrySampled(
            slot_id=slot,
            stage=SeedStage.BLENDING,
            alpha=round((epoch % 100) / 100, 4),
            alpha_target=1.0,
            alpha_mode="UP",
            accuracy=71.25 + (n % 17) * 0.01,
            accuracy_delta=0.125 * (n % 9),
            counterfactual=70.5 + (n % 13) * 0.01,
            epochs_in_stage=epoch % 12,
            grad_norm=0.0123456789 * (1 + n % 5),
            grad_health=0.975,
            has_vanishing=False,
            has_exploding=False,
        ),
        run_id=run_id,
        stream_id=slot_stream(slot),
        epoch=epoch,
        seed_id=f"seed-{slot}",
        event_id=event_id(run_id, writer, n),
    )


def write(
    url: str,
    run_id: str,
    writer: int,
    events: int,
    batch: int,
    barrier: Barrier,
    results: Any,
) -> None:
    """Append `events` telemetry events in batches; report (writer, appended, skipped)."""
    with Ledger.open(url) as ledger:
        barrier.wait(120)  # everyone connected: start together
        appended = skipped = 0
        for start in range(0, events, batch):
            stop = min(start + batch, events)
            result = ledger.append([telemetry(run_id, writer, n) for n in range(start, stop)])
            appended += result.appended
            skipped += result.skipped
    results.put((writer, appended, skipped))


class CountingSQLiteStore(SQLiteStore):
    """A SQLite store that counts the busy failures its retries absorbed."""

    busy_seen = 0

    def is_busy(self, exc: BaseException) -> bool:
        busy = super().is_busy(exc)
        if busy:
            self.busy_seen += 1
        return busy


def write_impatiently(
    path: str,
    run_id: str,
    writer: int,
    events: int,
    batch: int,
    barrier: Barrier,
    results: Any,
) -> None:
    """Like `write`, but SQLite gives up waiting for the lock at once (busy timeout 0).

    So every collision with another writer surfaces as SQLITE_BUSY and is
    absorbed by `Store.transact`'s retries; reports (writer, appended, busy).
    """
    store = CountingSQLiteStore(f"sqlite:///{path}", path, busy_timeout_ms=0)
    with Ledger(store) as ledger:
        barrier.wait(120)
        appended = 0
        for start in range(0, events, batch):
            stop = min(start + batch, events)
            result = ledger.append([telemetry(run_id, writer, n) for n in range(start, stop)])
            appended += result.appended
    results.put((writer, appended, store.busy_seen))


def hold_write_lock(path: str) -> sqlite3.Connection:
    """A raw connection holding the database's write lock until it commits."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn
