"""`Recorder`: what everything that records events talks to.

The slot, the lifecycle, the memory governor and the telemetry helpers record
through this protocol and never know what is behind it: the ledger's own
synchronous recorder (`kasmina.ledger.run.LedgerRecorder`), the background
pipeline (`kasmina.runtime.pipeline.RecorderPipeline`), or a user's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kasmina.events import Payload


class Recorder(Protocol):
    """Takes payloads for one run's streams; `flush` returns once they are stored."""

    def emit(
        self,
        payload: Payload,
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None: ...

    def emit_many(
        self,
        payloads: Sequence[Payload],
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        """Record `payloads` in order as one batch: all of them or, raising, none."""

    def flush(self) -> None: ...


__all__ = ["Recorder"]
