"""Quality gates are pure functions of seed facts, with DOMAIN's defaults and tags."""

from __future__ import annotations

import pytest

from kasmina.gates import GATE_FOR_TARGET, NoGate, QualityGates, SeedFacts
from kasmina.stages import SeedStage

STRICT = QualityGates()
PERMISSIVE = QualityGates(permissive=True)
T, B = SeedStage.TRAINING, SeedStage.BLENDING


def test_gate_is_chosen_by_target() -> None:
    assert GATE_FOR_TARGET == {
        SeedStage.GERMINATED: "G0",
        SeedStage.TRAINING: "G1",
        SeedStage.BLENDING: "G2",
        SeedStage.HOLDING: "G3",
        SeedStage.FOSSILIZED: "G5",
    }
    with pytest.raises(NoGate):
        STRICT.check(SeedStage.PRUNED, SeedFacts(stage=T))


def test_g0_needs_both_ids() -> None:
    assert STRICT.check(SeedStage.GERMINATED, SeedFacts(SeedStage.DORMANT, "s", "b")).passed
    result = STRICT.check(SeedStage.GERMINATED, SeedFacts(SeedStage.DORMANT, None, "b"))
    assert not result.passed and result.checks_failed == ("seed_id_missing",)


def test_g1_needs_germinated() -> None:
    assert STRICT.check(T, SeedFacts(SeedStage.GERMINATED)).passed
    assert not STRICT.check(T, SeedFacts(SeedStage.DORMANT)).passed


def test_g2_strict_checks_improvement_epochs_and_gradient_ratio() -> None:
    good = SeedFacts(T, epochs_in_stage=10, improvement_since_training=2.5, grad_ratio=0.15)
    result = STRICT.check(B, good)
    assert result.passed and result.score == pytest.approx(0.5)
    bad = SeedFacts(T, epochs_in_stage=3, improvement_since_training=0.2, grad_ratio=0.04)
    assert set(STRICT.check(B, bad).checks_failed) == {
        "insufficient_training_3_of_10",
        "improvement_low_0.20",
        "seed_gradient_low_0.04",
    }


def test_unmeasured_is_not_healthy() -> None:
    never = SeedFacts(T, epochs_in_stage=10)
    assert "seed_gradient_never_measured" in STRICT.check(B, never).checks_failed
    assert "improvement_never_measured" in STRICT.check(B, never).checks_failed
    permissive = PERMISSIVE.check(B, never)
    assert not permissive.passed
    assert "gradient_health_never_measured" in permissive.checks_failed


def test_g2_permissive_keeps_only_safety_checks() -> None:
    ok = SeedFacts(
        T, epochs_in_stage=10, grad_health=0.8, has_exploding=False, improvement_since_training=-3.0
    )
    assert PERMISSIVE.check(B, ok).passed
    exploding = SeedFacts(T, epochs_in_stage=10, grad_health=0.9, has_exploding=True)
    assert "exploding_gradients" in PERMISSIVE.check(B, exploding).checks_failed
    weak = SeedFacts(T, epochs_in_stage=10, grad_health=0.5, has_exploding=False)
    assert "gradient_health_low_0.50" in PERMISSIVE.check(B, weak).checks_failed


def test_g3_wants_full_target_reached_in_hold_and_blending_epochs() -> None:
    ready = SeedFacts(B, epochs_in_stage=10, alpha=1.0, alpha_target=1.0, alpha_mode="HOLD")
    assert STRICT.check(SeedStage.HOLDING, ready).passed
    ramping = SeedFacts(B, epochs_in_stage=4, alpha=0.6, alpha_target=1.0, alpha_mode="UP")
    failed = STRICT.check(SeedStage.HOLDING, ramping)
    assert "alpha_not_at_target_0.60_target_1.00_mode_UP" in failed.checks_failed
    assert "insufficient_blending_4_of_10" in failed.checks_failed
    assert failed.score == pytest.approx(0.6)
    short = SeedFacts(B, epochs_in_stage=1, alpha=1.0, alpha_target=1.0, alpha_mode="HOLD")
    assert PERMISSIVE.check(SeedStage.HOLDING, short).passed


def test_g5_needs_counterfactual_health_and_contribution() -> None:
    h, f = SeedStage.HOLDING, SeedStage.FOSSILIZED
    assert STRICT.check(f, SeedFacts(h, counterfactual=None)).checks_failed == (
        "counterfactual_unavailable",
    )
    result = STRICT.check(f, SeedFacts(h, counterfactual=2.0))
    assert result.passed and result.score == pytest.approx(0.2)
    low = STRICT.check(f, SeedFacts(h, counterfactual=0.4))
    assert "contribution_low_0.40_of_1.00" in low.checks_failed and low.score == pytest.approx(0.04)
    assert PERMISSIVE.check(f, SeedFacts(h, counterfactual=-1.0)).passed
    assert not PERMISSIVE.check(f, SeedFacts(h, counterfactual=3.0, healthy=False)).passed
