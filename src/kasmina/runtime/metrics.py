"""A seed's running numbers, which the gates read and the records carry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SeedMetrics:
    """Per-seed numbers; None means never measured (which gates treat as unhealthy)."""

    epochs_in_stage: int = 0
    epochs_total: int = 0
    initial_accuracy: float | None = None
    training_start_accuracy: float | None = None
    blending_start_accuracy: float | None = None
    accuracy: float | None = None
    counterfactual: float | None = None
    grad_ratio: float | None = None
    grad_health: float | None = None
    has_vanishing: bool | None = None
    has_exploding: bool | None = None

    def observe_accuracy(self, accuracy: float) -> None:
        self.accuracy = accuracy
        if self.initial_accuracy is None:
            self.initial_accuracy = accuracy

    @staticmethod
    def _delta(now: float | None, then: float | None) -> float | None:
        return None if now is None or then is None else now - then

    @property
    def accuracy_delta(self) -> float:
        return self._delta(self.accuracy, self.initial_accuracy) or 0.0

    @property
    def improvement_since_training(self) -> float | None:
        return self._delta(self.accuracy, self.training_start_accuracy)

    @property
    def blending_delta(self) -> float | None:
        return self._delta(self.accuracy, self.blending_start_accuracy)


__all__ = ["SeedMetrics"]
