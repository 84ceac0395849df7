"""A run handle: the writer's side of one run in the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Generic, Literal, Protocol, TypeVar

from kasmina.errors import PayloadInvalid
from kasmina.events import NewEvent, Payload, make_event, rank_stream, stream_writer
from kasmina.ledger.appending import AppendResult

Status = Literal["completed", "failed", "aborted"]


class Writes(Protocol):
    """What a run's writer needs of the ledger; `kasmina.ledger.Ledger` is one.

    A protocol rather than the class, so this module sits below the ledger
    that creates runs instead of in a circle with it.
    """

    def append(self, batch: Sequence[NewEvent]) -> AppendResult: ...

    def finish_run(self, run_id: str, status: Status, *, rank: int | None = None) -> str: ...


L = TypeVar("L", bound=Writes)


def new_run_id() -> str:
    return uuid.uuid4().hex


class StreamRoutes:
    """Where a recorder of a distributed run writes each stream it is asked for.

    A shared stream (`run`, a slot's) is refused unless this rank is its
    writer, and a process-local stream is renamed with `rank_stream`, so that
    every stream has exactly one writer. Without a rank, every stream is
    written as asked.
    """

    def __init__(self, run_id: str, rank: int | None, writers: Mapping[str, int]) -> None:
        self.run_id = run_id
        self.rank = rank
        self.writers = writers
        self._routes: dict[str, str] = {}

    def route(self, stream_id: str) -> str:
        rank = self.rank
        if rank is None:
            return stream_id
        routed = self._routes.get(stream_id)
        if routed is not None:
            return routed
        writer = stream_writer(stream_id, self.writers)
        if writer is None:
            routed = rank_stream(stream_id, rank)
        elif writer == rank:
            routed = stream_id
        else:
            raise PayloadInvalid(
                f"rank {rank} may not write stream {stream_id!r} of run {self.run_id}: "
                f"its writer is rank {writer} (a stream has exactly one writer)"
            )
        self._routes[stream_id] = routed
        return routed

    def writes(self, stream_id: str) -> bool:
        writer = stream_writer(stream_id, self.writers) if self.rank is not None else None
        return writer is None or writer == self.rank


class LedgerRecorder:
    """Records events of one run into the ledger.

    The runtime talks to a recorder, not to the ledger, so that a background
    writer can take this one's place without the runtime changing. With
    ``buffer_size`` 0 (the default) every `emit` is its own transaction and a
    failure raises at once, so a lifecycle move whose record fails does not
    happen. With a buffer, events are kept in order in memory and appended as
    one batch when the buffer fills or on `flush` (the runtime flushes at the
    end of each epoch); a failure then raises from that call.

    In a distributed run the recorder has a ``rank``: every event carries it,
    a shared stream (`run`, a slot's) is refused unless this rank is its
    writer, and a process-local stream is renamed with `rank_stream`, so that
    every stream has exactly one writer.
    """

    def __init__(
        self,
        ledger: Writes,
        run_id: str,
        *,
        buffer_size: int = 0,
        rank: int | None = None,
        writers: Mapping[str, int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.buffer_size = buffer_size
        self.rank = rank
        self.writers = dict(writers or {})
        self.routes = StreamRoutes(run_id, rank, self.writers)
        self._pending: list[NewEvent] = []
        #: Version and hash of the last event this recorder stored, per stream.
        self.heads: dict[str, tuple[int, str]] = {}

    def _route(self, stream_id: str) -> str:
        return self.routes.route(stream_id)

    def writes(self, stream_id: str) -> bool:
        """Whether this recorder may record to a stream (shared streams have one writer)."""
        return self.routes.writes(stream_id)

    def event(
        self,
        payload: Payload,
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> NewEvent:
        return make_event(
            payload,
            run_id=self.run_id,
            stream_id=self._route(stream_id),
            epoch=epoch,
            seed_id=seed_id,
            rank=self.rank,
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
            payload,
            run_id=self.run_id,
            stream_id=self._route(stream_id),
            epoch=epoch,
            seed_id=seed_id,
            rank=self.rank,
        )
        if not self.buffer_size:
            self._append([event])
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
            self._append(events)
            return
        self._pending.extend(events)
        if len(self._pending) >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        """Append everything buffered, in emit order, as one batch."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._append(batch)

    def _append(self, batch: list[NewEvent]) -> None:
        self.heads.update(self.ledger.append(batch).heads)

    @property
    def pending(self) -> int:
        return len(self._pending)


class Run(Generic[L]):
    """One run being written: its recorder, and `finish` to seal it.

    Generic in the ledger it writes to, so that ``run.ledger`` keeps its type
    (`Ledger.start_run` returns a ``Run[Ledger]``).
    """

    def __init__(
        self,
        ledger: L,
        run_id: str,
        *,
        buffer_size: int = 0,
        rank: int | None = None,
        writers: Mapping[str, int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.rank = rank
        self.recorder = LedgerRecorder(
            ledger, run_id, buffer_size=buffer_size, rank=rank, writers=writers
        )
        self.finished = False

    def finish(self, status: Status = "completed") -> str:
        """Seal the run with `RunFinished`; returns the seal event's hash.

        In a distributed run only rank 0 seals, after every rank has flushed
        (`kasmina.runtime.distributed.DistributedRun.finish` does both).
        """
        self.recorder.flush()
        digest = self.ledger.finish_run(self.run_id, status, rank=self.rank)
        self.finished = True
        return digest

    def __enter__(self) -> Run[L]:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.finished:
            self.finish("completed" if exc_type is None else "failed")
