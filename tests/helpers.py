"""Small builders shared by the tests."""

from __future__ import annotations

import signal
import uuid

from kasmina.events import NewEvent, SeedStageChanged, SeedTelemetrySampled, make_event, slot_stream
from kasmina.ledger import Ledger
from kasmina.stages import SeedStage


def sample(
    run_id: str,
    slot: str = "r0c0",
    *,
    epoch: int = 0,
    n: int = 0,
    version: int | None = None,
    event_id: str | None = None,
) -> NewEvent:
    return make_event(
        SeedTelemetrySampled(
            slot_id=slot,
            stage=SeedStage.TRAINING,
            alpha=0.25,
            accuracy=50.0 + n * 1e-3,
            epochs_in_stage=n % 7,
        ),
        run_id=run_id,
        stream_id=slot_stream(slot),
        epoch=epoch,
        seed_id=f"seed-{slot}",
        version=version,
        event_id=event_id,
    )


def stage_change(
    run_id: str, slot: str, a: SeedStage, b: SeedStage, *, epoch: int = 0, seed_id: str = "s1"
) -> NewEvent:
    return make_event(
        SeedStageChanged(slot_id=slot, from_stage=a, to_stage=b, trigger="command", alpha=0.0),
        run_id=run_id,
        stream_id=slot_stream(slot),
        epoch=epoch,
        seed_id=seed_id,
    )


def copy_run(source: Ledger, target: Ledger, run_id: str, new_id: str) -> None:
    """Append a recorded run's events to another ledger under `new_id`.

    Payloads and versions are kept, and the event ids are derived from the old
    ones and the new run id, so two copies of one run are alike in everything
    but their clocks.
    """
    target.append(
        [
            make_event(
                e.payload,
                run_id=new_id,
                stream_id=e.stream_id,
                epoch=e.epoch,
                seed_id=e.seed_id,
                version=e.version,
                event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{new_id}/{e.event_id}")),
            )
            for e in source.read(run_id)
        ]
    )


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts: SIGINT as a terminal delivers it.

    A shell without job control starts a background job with SIGINT ignored,
    and a child inherits that; a suite run that way would otherwise test a
    process that cannot be interrupted at all.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
