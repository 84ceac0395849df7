"""Gradient watching of a slot: the seed/host gradient ratio and health that G2 reads.

A mixin of `SeedSlot`, kept apart because it is a second concept: what the
slot measures during training, not how it moves through its lifecycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from torch import nn

from kasmina.errors import SlotError
from kasmina.runtime.isolation import IsolationMonitor, gradient_health

if TYPE_CHECKING:
    from kasmina.runtime.slot import SeedSlot

GRADIENT_EMA_DECAY = 0.9


class SlotGradients:
    def watch_gradients(self, host_parameters: Iterable[nn.Parameter]) -> None:
        """Measure seed/host gradient norms after each backward (for G2)."""
        slot = cast("SeedSlot", self)
        if slot.seed is None:
            raise SlotError(f"slot {slot.slot_id!r} has no seed to watch")
        self._stop_watching()
        slot._monitor = IsolationMonitor(host_parameters, slot.seed.parameters())

    def _stop_watching(self) -> None:
        slot = cast("SeedSlot", self)
        if slot._monitor is not None:
            slot._monitor.close()
            slot._monitor = None

    def capture_gradients(self) -> None:
        """Fold the last backward's gradients into the seed's metrics (EMA of the ratio)."""
        slot = cast("SeedSlot", self)
        monitor = slot._monitor
        if monitor is None or slot.seed is None:
            return
        snap = monitor.snapshot()
        monitor.reset()
        m = slot.metrics
        ratio = snap.normalised_ratio
        m.grad_ratio = (
            ratio
            if m.grad_ratio is None
            else (GRADIENT_EMA_DECAY * m.grad_ratio + (1 - GRADIENT_EMA_DECAY) * ratio)
        )
        health = gradient_health(slot.seed.parameters())
        if health.measured:
            m.grad_health = health.health
            m.has_vanishing = health.has_vanishing
            m.has_exploding = health.has_exploding


__all__ = ["GRADIENT_EMA_DECAY", "SlotGradients"]
