"""The recorder pipeline: emit returns at once, a writer thread makes events durable.

Two classes of event travel it. *Facts* (every type but `SeedTelemetrySampled`)
are never dropped: when their queue is full, `emit` blocks until the writer
catches up, and raises after a timeout rather than discard anything. *Samples*
go to a bounded deque; when it is full the oldest is dropped in O(1) and the
drop is counted, and the next batch carries an `EventsDropped` with the exact
count. Every emit takes a sequence number and the writer merges both queues by
it, so a stream's versions follow emit order.

The training thread pays for a tuple and a deque append; the envelope (event
id and all) is built on the writer thread. A writer failure is kept and raised
on the next `emit` or `flush`, together with the number of events that were
not stored; nothing is ever lost silently.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from kasmina.errors import KasminaError, PayloadInvalid
from kasmina.events import (
    EVENT_TYPES,
    RUN_STREAM,
    EventsDropped,
    NewEvent,
    Payload,
    make_event,
    rank_stream,
)
from kasmina.ledger.run import StreamRoutes

if TYPE_CHECKING:
    from kasmina.ledger import Ledger

_Item = tuple[int, Payload, str, int | None, str | None]
_Drops = tuple[int, int | None, int | None]


class PipelineError(KasminaError):
    """The writer failed, or a fact could not be queued in time."""


@dataclass(frozen=True, slots=True)
class PipelineStats:
    facts_emitted: int
    samples_emitted: int
    samples_dropped: int
    stored: int
    batches: int
    queued: int


class RecorderPipeline:
    """A recorder whose appends happen on a background writer thread."""

    def __init__(
        self,
        ledger: Ledger,
        run_id: str,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.25,
        fact_capacity: int = 100_000,
        sample_capacity: int = 10_000,
        emit_timeout: float = 60.0,
        rank: int | None = None,
        writers: Mapping[str, int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        #: This process's rank in a distributed run (see `kasmina.ledger.run.StreamRoutes`).
        self.rank = rank
        self.routes = StreamRoutes(run_id, rank, dict(writers or {}))
        #: Rank 0 counts its drops in `run`; another rank, which may not write it, in its own.
        self._drops_stream = RUN_STREAM if not rank else rank_stream("drops", rank)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.fact_capacity = fact_capacity
        self.emit_timeout = emit_timeout
        self._facts: deque[_Item] = deque()
        self._samples: deque[_Item] = deque(maxlen=sample_capacity)
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._stored_seq = 0
        self._cond = threading.Condition()
        self._closing = False
        self._flush_wanted = False
        self._error: BaseException | None = None
        self.unstored: list[NewEvent] = []
        self._dropped = 0
        self._dropped_total = 0
        self._dropped_epochs: tuple[int | None, int | None] = (None, None)
        self._facts_emitted = 0
        self._samples_emitted = 0
        self._stored = 0
        self._batches = 0
        self._thread = threading.Thread(
            target=self._write_loop, name=f"kasmina-writer-{run_id[:8]}", daemon=True
        )
        self._thread.start()

    # -- the training thread's side -------------------------------------------

    def emit(
        self,
        payload: Payload,
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        """Queue one event; returns at once unless the fact queue is full."""
        if self._error is not None:
            self._raise_failure()
        kind = type(payload)
        if kind.__name__ not in EVENT_TYPES:
            raise PayloadInvalid(f"cannot record {kind.__name__}: not an event payload")
        stream_id = self.routes.route(stream_id)  # a stream it may not write raises here
        with self._cond:
            seq = next(self._seq)
            item = (seq, payload, stream_id, epoch, seed_id)
            if kind.droppable:
                samples = self._samples
                self._samples_emitted += 1
                if len(samples) == samples.maxlen:
                    self._count_drop(samples[0][3])
                samples.append(item)
            else:
                self._facts_emitted += 1
                if len(self._facts) >= self.fact_capacity:
                    self._wait_for_room()
                self._facts.append(item)
            self._last_seq = seq
            if len(self._facts) + len(self._samples) >= self.batch_size:
                self._cond.notify()

    def emit_many(
        self,
        payloads: Sequence[Payload],
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        """Queue events that belong together; they reach the ledger in one batch."""
        with self._cond:  # keep the writer from splitting them across two batches
            for payload in payloads:
                self.emit(payload, stream_id=stream_id, epoch=epoch, seed_id=seed_id)

    def _count_drop(self, epoch: int | None) -> None:
        first, _ = self._dropped_epochs
        self._dropped += 1
        self._dropped_total += 1
        self._dropped_epochs = (epoch if self._dropped == 1 else first, epoch)

    def _wait_for_room(self) -> None:
        """Backpressure: called with the lock held; waits for the writer to drain."""
        deadline = time.monotonic() + self.emit_timeout
        self._cond.notify_all()
        while len(self._facts) >= self.fact_capacity and self._error is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._facts_emitted -= 1
                raise PipelineError(
                    f"fact queue full ({self.fact_capacity} events) for "
                    f"{self.emit_timeout:.0f} s: the ledger is not keeping up; "
                    "this event was not queued and nothing was dropped"
                )
            self._cond.wait(left)
        if self._error is not None:
            self._facts_emitted -= 1
            self._raise_failure()

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything emitted before this call is durable (or raise)."""
        target = self._last_seq
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_wanted = True
            self._cond.notify_all()
            while self._stored_seq < target and self._error is None:
                if not self._thread.is_alive():
                    raise PipelineError("the writer thread is not running")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PipelineError(f"flush timed out after {timeout} s")
                self._cond.wait(left if left is not None else 0.5)
        if self._error is not None:
            self._raise_failure()

    def close(self) -> None:
        """Flush, then stop the writer. Raises if anything could not be stored."""
        try:
            if self._thread.is_alive():
                self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
        if self._error is not None:
            self._raise_failure()

    def __enter__(self) -> RecorderPipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _raise_failure(self) -> None:
        error = self._error
        raise PipelineError(
            f"the writer failed ({type(error).__name__}: {error}); "
            f"{len(self.unstored)} emitted event(s) were not stored (see .unstored)"
        ) from error

    def stats(self) -> PipelineStats:
        return PipelineStats(
            facts_emitted=self._facts_emitted,
            samples_emitted=self._samples_emitted,
            samples_dropped=self._dropped_total,
            stored=self._stored,
            batches=self._batches,
            queued=len(self._facts) + len(self._samples),
        )

    # -- the writer thread ------------------------------------------------------

    def _take_batch(self, limit: int) -> tuple[list[_Item], _Drops]:
        """Up to `limit` items from both queues, merged back into emit order (lock held)."""
        facts, samples = self._facts, self._samples
        out: list[_Item] = []
        while len(out) < limit and (facts or samples):
            if not samples or (facts and facts[0][0] < samples[0][0]):
                out.append(facts.popleft())
            else:
                out.append(samples.popleft())
        drops = (self._dropped, *self._dropped_epochs)
        self._dropped = 0
        return out, drops

    def _envelopes(self, items: list[_Item], drops: _Drops) -> list[NewEvent]:
        events = [
            make_event(p, run_id=self.run_id, stream_id=s, epoch=e, seed_id=sid, rank=self.rank)
            for _, p, s, e, sid in items
        ]
        dropped, first, last = drops
        if dropped:
            events.append(
                make_event(
                    EventsDropped(count=dropped, first_epoch=first, last_epoch=last),
                    run_id=self.run_id,
                    stream_id=self._drops_stream,
                    epoch=last,
                    rank=self.rank,
                )
            )
        return events

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while (
                    not self._closing
                    and not self._flush_wanted
                    and len(self._facts) + len(self._samples) < self.batch_size
                ):
                    if not self._cond.wait(self.flush_interval):
                        break
                if self._closing and not (self._facts or self._samples or self._dropped):
                    return
                self._flush_wanted = False
                items, drops = self._take_batch(self.batch_size)
                self._cond.notify_all()  # room for blocked fact emitters
            if not items and not drops[0]:
                continue
            events = self._envelopes(items, drops)
            try:
                self.ledger.append(events)
            except BaseException as exc:  # kept and raised on the training thread
                with self._cond:
                    rest, drops = self._take_batch(len(self._facts) + len(self._samples))
                    self.unstored = events + self._envelopes(rest, drops)
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._stored += len(events)
                self._batches += 1
                if items:
                    self._stored_seq = max(self._stored_seq, items[-1][0])
                if not self._facts and not self._samples:
                    self._stored_seq = max(self._stored_seq, self._last_seq)
                self._cond.notify_all()


__all__ = ["PipelineError", "PipelineStats", "RecorderPipeline"]
