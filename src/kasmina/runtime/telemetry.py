"""The per-epoch telemetry sample of a slot: the one droppable kind of event."""

from __future__ import annotations

from typing import cast

from kasmina.events import AlphaMode, SeedTelemetrySampled, slot_stream
from kasmina.recording import Recorder
from kasmina.runtime.slot import SeedSlot


def telemetry_sample(slot: SeedSlot) -> SeedTelemetrySampled | None:
    """The slot's numbers now, or None while it holds no seed.

    Values are recorded unrounded, so a fold reads back exactly what the
    live seed had (see `kasmina.replay.SeedMetricsState`).
    """
    if slot.seed is None:
        return None
    m = slot.metrics
    return SeedTelemetrySampled(
        slot_id=slot.slot_id,
        stage=slot.stage,
        alpha=slot.alpha,
        alpha_target=slot.state.controller.alpha_target,
        alpha_mode=cast(AlphaMode, slot.state.controller.mode),
        accuracy=m.accuracy,
        accuracy_delta=m.accuracy_delta,
        counterfactual=m.counterfactual,
        epochs_in_stage=slot.state.epochs_in_stage,
        grad_norm=m.grad_ratio,
        grad_health=m.grad_health,
        has_vanishing=m.has_vanishing,
        has_exploding=m.has_exploding,
    )


def emit_sample(recorder: Recorder, slot: SeedSlot, epoch: int) -> None:
    sample = telemetry_sample(slot)
    if sample is not None:
        recorder.emit_many(
            [sample], stream_id=slot_stream(slot.slot_id), epoch=epoch, seed_id=slot.seed_id
        )


__all__ = ["emit_sample", "telemetry_sample"]
