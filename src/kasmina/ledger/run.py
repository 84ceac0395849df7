"""A run handle: the writer's side of one run in the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from kasmina.events import NewEvent, Payload, make_event

if TYPE_CHECKING:
    from kasmina.ledger.core import AppendResult, Ledger


def new_run_id() -> str:
    return uuid.uuid4().hex


class Recorder:
    """Records events of one run straight into the ledger, one transaction each.

    The runtime talks to a recorder, not to the ledger, so that a buffered
    background writer can take this one's place without the runtime changing.
    """

    def __init__(self, ledger: Ledger, run_id: str) -> None:
        self.ledger = ledger
        self.run_id = run_id

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
        self.ledger.append([self.event(payload, stream_id=stream_id, epoch=epoch, seed_id=seed_id)])

    def emit_batch(self, events: Sequence[NewEvent]) -> AppendResult:
        return self.ledger.append(events)

    def flush(self) -> None:
        """Nothing is buffered here; kept so every recorder can be flushed alike."""


class Run:
    def __init__(self, ledger: Ledger, run_id: str) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.recorder = Recorder(ledger, run_id)
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
