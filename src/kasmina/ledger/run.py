"""A run handle: the writer's side of one run in the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from kasmina.events import NewEvent, Payload, make_event

if TYPE_CHECKING:
    from kasmina.ledger.core import Ledger


def new_run_id() -> str:
    return uuid.uuid4().hex


class Recorder:
    """Records events of one run into the ledger.

    The runtime talks to a recorder, not to the ledger, so that a background
    writer can take this one's place without the runtime changing. With
    ``buffer_size`` 0 (the default) every `emit` is its own transaction and a
    failure raises at once, so a lifecycle move whose record fails does not
    happen. With a buffer, events are kept in order in memory and appended as
    one batch when the buffer fills or on `flush` (the runtime flushes at the
    end of each epoch); a failure then raises from that call.
    """

    def __init__(self, ledger: Ledger, run_id: str, *, buffer_size: int = 0) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.buffer_size = buffer_size
        self._pending: list[NewEvent] = []

    def event(
        self,
        payload: Payload,
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> NewEvent:
        return make_event(
            payload, run_id=self.run_id, stream_id=stream_id, epoch=epoch, seed_id=seed_id
        )

    def emit(
        self,
        payload: Payload,
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        event = make_event(
            payload, run_id=self.run_id, stream_id=stream_id, epoch=epoch, seed_id=seed_id
        )
        if not self.buffer_size:
            self.ledger.append([event])
            return
        pending = self._pending
        pending.append(event)
        if len(pending) >= self.buffer_size:
            self.flush()

    def emit_many(
        self,
        payloads: Sequence[Payload],
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        """Record several events of one stream together (all or nothing when unbuffered)."""
        self._take(
            [self.event(p, stream_id=stream_id, epoch=epoch, seed_id=seed_id) for p in payloads]
        )

    def _take(self, events: list[NewEvent]) -> None:
        if not self.buffer_size:
            self.ledger.append(events)
            return
        self._pending.extend(events)
        if len(self._pending) >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        """Append everything buffered, in emit order, as one batch."""
        if self._pending:
            batch, self._pending = self._pending, []
            self.ledger.append(batch)

    @property
    def pending(self) -> int:
        return len(self._pending)


class Run:
    def __init__(self, ledger: Ledger, run_id: str, *, buffer_size: int = 0) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.recorder = Recorder(ledger, run_id, buffer_size=buffer_size)
        self.finished = False

    def finish(self, status: Literal["completed", "failed", "aborted"] = "completed") -> str:
        """Seal the run with `RunFinished`; returns the seal event's hash."""
        self.recorder.flush()
        digest = self.ledger.finish_run(self.run_id, status)
        self.finished = True
        return digest

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.finished:
            self.finish("completed" if exc_type is None else "failed")
