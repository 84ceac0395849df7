"""Quality gates G0..G5: pure functions of a seed's facts.

A gate is chosen by the *target* stage of a forward move, and the move happens
only if it passes. Gates never touch a slot or a ledger: they read a frozen
`SeedFacts` and return a `GateResult`, so they are trivially testable and the
same verdict can be recomputed from the log.

Every check leaves a tag with its numbers (``insufficient_training_3_of_10``),
so the audit trail says why, not just whether.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from kasmina.errors import KasminaError
from kasmina.stages import SeedStage

DEFAULT_MIN_TRAINING_IMPROVEMENT = 0.5
DEFAULT_MIN_BLENDING_EPOCHS = 10
DEFAULT_GRADIENT_RATIO_THRESHOLD = 0.10
DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING = 0.7
DEFAULT_MIN_FOSSILIZE_CONTRIBUTION = 1.0
ALPHA_TOLERANCE = 1e-6

GATE_FOR_TARGET: dict[SeedStage, str] = {
    SeedStage.GERMINATED: "G0",
    SeedStage.TRAINING: "G1",
    SeedStage.BLENDING: "G2",
    SeedStage.HOLDING: "G3",
    SeedStage.FOSSILIZED: "G5",
}


class NoGate(KasminaError):
    def __init__(self, target: SeedStage) -> None:
        super().__init__(f"no quality gate guards a move to {target.name}")


@dataclass(frozen=True, slots=True)
class SeedFacts:
    """What the gates may look at; None means "never measured"."""

    stage: SeedStage
    seed_id: str | None = None
    blueprint_id: str | None = None
    epochs_in_stage: int = 0
    improvement_since_training: float | None = None
    grad_ratio: float | None = None
    grad_health: float | None = None
    has_exploding: bool | None = None
    alpha: float = 0.0
    alpha_target: float = 0.0
    alpha_mode: str = "HOLD"
    counterfactual: float | None = None
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    passed: bool
    score: float
    checks_passed: tuple[str, ...]
    checks_failed: tuple[str, ...]
    message: str
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


class _Checks:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, ok: bool, good: str, bad: str) -> None:
        (self.passed if ok else self.failed).append(good if ok else bad)

    def result(self, gate: str, score: float) -> GateResult:
        passed = not self.failed
        message = "passed" if passed else "failed: " + ", ".join(self.failed)
        return GateResult(
            gate,
            passed,
            max(0.0, min(1.0, score)),
            tuple(self.passed),
            tuple(self.failed),
            f"{gate} {message}",
        )


def _ratio_score(value: float | None, scale: float) -> float:
    if value is None or value <= 0:
        return 0.0
    return min(1.0, value / scale)


@dataclass(frozen=True, slots=True)
class QualityGates:
    """Gate thresholds and mode; strict by default, permissive for RL training."""

    permissive: bool = False
    min_training_improvement: float = DEFAULT_MIN_TRAINING_IMPROVEMENT
    min_training_epochs: int = DEFAULT_MIN_BLENDING_EPOCHS
    min_blending_epochs: int = DEFAULT_MIN_BLENDING_EPOCHS
    gradient_ratio_threshold: float = DEFAULT_GRADIENT_RATIO_THRESHOLD
    min_gradient_health: float = DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING
    min_fossilize_contribution: float = DEFAULT_MIN_FOSSILIZE_CONTRIBUTION

    def check(self, target: SeedStage, facts: SeedFacts) -> GateResult:
        gate = GATE_FOR_TARGET.get(target)
        if gate is None:
            raise NoGate(target)
        return {
            "G0": self._g0,
            "G1": self._g1,
            "G2": self._g2,
            "G3": self._g3,
            "G5": self._g5,
        }[gate](facts)

    def _g0(self, facts: SeedFacts) -> GateResult:
        c = _Checks()
        c.check(bool(facts.seed_id), "seed_id_present", "seed_id_missing")
        c.check(bool(facts.blueprint_id), "blueprint_id_present", "blueprint_id_missing")
        return c.result("G0", 1.0 if not c.failed else 0.0)

    def _g1(self, facts: SeedFacts) -> GateResult:
        c = _Checks()
        ok = facts.stage is SeedStage.GERMINATED
        c.check(ok, "stage_germinated", f"stage_not_germinated_{facts.stage.name}")
        return c.result("G1", 1.0 if ok else 0.0)

    def _g2(self, facts: SeedFacts) -> GateResult:
        c = _Checks()
        epochs, need = facts.epochs_in_stage, self.min_training_epochs
        c.check(
            epochs >= need,
            f"training_epochs_{epochs}_of_{need}",
            f"insufficient_training_{epochs}_of_{need}",
        )
        if self.permissive:
            health = facts.grad_health
            c.check(
                health is not None, "gradient_health_measured", "gradient_health_never_measured"
            )
            c.check(
                facts.has_exploding is False,
                "no_exploding_gradients",
                "exploding_gradients" if facts.has_exploding else "gradients_never_measured",
            )
            if health is not None:
                c.check(
                    health >= self.min_gradient_health,
                    f"gradient_health_{health:.2f}",
                    f"gradient_health_low_{health:.2f}",
                )
        else:
            gain = facts.improvement_since_training
            if gain is None:
                c.check(False, "", "improvement_never_measured")
            else:
                c.check(
                    gain >= self.min_training_improvement,
                    f"improvement_{gain:.2f}",
                    f"improvement_low_{gain:.2f}",
                )
            ratio = facts.grad_ratio
            if ratio is None:
                c.check(False, "", "seed_gradient_never_measured")
            else:
                c.check(
                    ratio >= self.gradient_ratio_threshold,
                    f"seed_gradient_{ratio:.2f}",
                    f"seed_gradient_low_{ratio:.2f}",
                )
        return c.result("G2", _ratio_score(facts.improvement_since_training, 5.0))

    def _g3(self, facts: SeedFacts) -> GateResult:
        c = _Checks()
        full = abs(facts.alpha_target - 1.0) <= ALPHA_TOLERANCE
        c.check(full, "alpha_target_full", f"alpha_target_not_full_{facts.alpha_target:.2f}")
        reached = facts.alpha_mode == "HOLD" and (
            abs(facts.alpha - facts.alpha_target) <= ALPHA_TOLERANCE
        )
        c.check(
            reached,
            "alpha_at_target",
            f"alpha_not_at_target_{facts.alpha:.2f}_target_{facts.alpha_target:.2f}"
            f"_mode_{facts.alpha_mode}",
        )
        if not self.permissive:
            epochs, need = facts.epochs_in_stage, self.min_blending_epochs
            c.check(
                epochs >= need,
                f"blending_epochs_{epochs}_of_{need}",
                f"insufficient_blending_{epochs}_of_{need}",
            )
        return c.result("G3", facts.alpha)

    def _g5(self, facts: SeedFacts) -> GateResult:
        c = _Checks()
        value = facts.counterfactual
        if value is None:
            c.check(False, "", "counterfactual_unavailable")
            return c.result("G5", 0.0)
        c.check(True, "counterfactual_available", "")
        c.check(facts.healthy, "seed_healthy", "seed_unhealthy")
        if not self.permissive:
            need = self.min_fossilize_contribution
            c.check(
                value >= need,
                f"contribution_{value:.2f}",
                f"contribution_low_{value:.2f}_of_{need:.2f}",
            )
        return c.result("G5", _ratio_score(value, 10.0))


__all__ = [
    "DEFAULT_GRADIENT_RATIO_THRESHOLD",
    "DEFAULT_MIN_BLENDING_EPOCHS",
    "DEFAULT_MIN_FOSSILIZE_CONTRIBUTION",
    "DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING",
    "DEFAULT_MIN_TRAINING_IMPROVEMENT",
    "GATE_FOR_TARGET",
    "GateResult",
    "NoGate",
    "QualityGates",
    "SeedFacts",
]
