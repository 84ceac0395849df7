from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kasmina.alpha import (
    DEFAULT_BLENDING_TOTAL_STEPS,
    DEFAULT_STEEPNESS,
    MIN_STEEPNESS,
    AlphaController,
    AlphaCurve,
    AlphaMode,
    AlphaScheduleError,
    ease,
)
from kasmina.errors import KasminaError

POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def sigmoid_by_tanh(k: float, t: float) -> float:
    """The renormalised sigmoid rewritten with sigma(x) = (1 + tanh(x/2)) / 2."""
    return (math.tanh(k * (t - 0.5) / 2) + math.tanh(k / 4)) / (2 * math.tanh(k / 4))


def test_enum_values_and_constants() -> None:
    assert {c.name: c.value for c in AlphaCurve} == {"LINEAR": 1, "COSINE": 2, "SIGMOID": 3}
    assert {m.name: m.value for m in AlphaMode} == {"HOLD": 0, "UP": 1, "DOWN": 2}
    assert DEFAULT_STEEPNESS == 12.0
    assert MIN_STEEPNESS == 0.1
    assert DEFAULT_BLENDING_TOTAL_STEPS == 5


def test_schedule_error_is_a_kasmina_error() -> None:
    assert issubclass(AlphaScheduleError, KasminaError)


@pytest.mark.parametrize("t", POINTS)
def test_linear_is_identity(t: float) -> None:
    assert ease(AlphaCurve.LINEAR, t) == pytest.approx(t, abs=1e-15)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0.0, 0.0),
        (0.25, (1 - math.sqrt(0.5)) / 2),
        (0.5, 0.5),
        (0.75, (1 + math.sqrt(0.5)) / 2),
        (1.0, 1.0),
    ],
)
def test_cosine_values(t: float, expected: float) -> None:
    assert ease(AlphaCurve.COSINE, t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("k", [6.0, 12.0, 24.0])
@pytest.mark.parametrize("t", POINTS)
def test_sigmoid_values(k: float, t: float) -> None:
    expected = sigmoid_by_tanh(k, t)
    assert ease(AlphaCurve.SIGMOID, t, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_sigmoid_known_numbers() -> None:
    # k = 12, t = 1/4: (tanh(-1.5) + tanh(3)) / (2 tanh(3)).
    assert ease(AlphaCurve.SIGMOID, 0.25, 12.0) == pytest.approx(0.0451767, abs=1e-7)
    assert ease(AlphaCurve.SIGMOID, 0.75, 12.0) == pytest.approx(1 - 0.0451767, abs=1e-7)
    assert ease(AlphaCurve.SIGMOID, 0.5, 12.0) == pytest.approx(0.5, abs=1e-15)


def test_default_steepness_is_twelve() -> None:
    assert ease(AlphaCurve.SIGMOID, 0.3) == pytest.approx(sigmoid_by_tanh(12.0, 0.3), rel=1e-12)
    assert ease(AlphaCurve.SIGMOID, 0.3) != pytest.approx(sigmoid_by_tanh(6.0, 0.3), rel=1e-3)


@pytest.mark.parametrize("k", [1e6, 1e300])
def test_sigmoid_huge_steepness_is_a_step_without_overflow(k: float) -> None:
    assert ease(AlphaCurve.SIGMOID, 0.25, k) == 0.0
    assert ease(AlphaCurve.SIGMOID, 0.5, k) == 0.5
    assert ease(AlphaCurve.SIGMOID, 0.75, k) == 1.0
    assert ease(AlphaCurve.SIGMOID, 0.499, k) == 0.0
    assert ease(AlphaCurve.SIGMOID, 0.501, k) == 1.0


@pytest.mark.parametrize("k", [0.01, 0.0, -5.0])
@pytest.mark.parametrize("t", [0.25, 0.5, 0.75])
def test_sigmoid_steepness_below_floor_uses_floor(k: float, t: float) -> None:
    got = ease(AlphaCurve.SIGMOID, t, k)
    assert got == pytest.approx(sigmoid_by_tanh(0.1, t), rel=1e-9)
    assert math.isfinite(got)


def test_floor_differs_from_unfloored_value() -> None:
    floored = sigmoid_by_tanh(0.1, 0.25)
    unfloored = sigmoid_by_tanh(0.01, 0.25)
    assert abs(floored - unfloored) > 1e-5
    assert ease(AlphaCurve.SIGMOID, 0.25, 0.01) == pytest.approx(floored, abs=1e-9)


@pytest.mark.parametrize("curve", list(AlphaCurve))
@pytest.mark.parametrize("k", [MIN_STEEPNESS, 6.0, 12.0, 24.0, 1e6])
def test_endpoints_exact(curve: AlphaCurve, k: float) -> None:
    assert ease(curve, 0.0, k) == 0.0
    assert ease(curve, 1.0, k) == 1.0
    assert ease(curve, -0.5, k) == 0.0
    assert ease(curve, 1.5, k) == 1.0


@given(
    curve=st.sampled_from(list(AlphaCurve)),
    k=st.floats(min_value=0.0, max_value=100.0),
    a=st.floats(min_value=0.0, max_value=1.0),
    b=st.floats(min_value=0.0, max_value=1.0),
)
def test_ease_is_monotone_and_bounded(curve: AlphaCurve, k: float, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    p_lo, p_hi = ease(curve, lo, k), ease(curve, hi, k)
    assert 0.0 <= p_lo <= p_hi <= 1.0


def ramp(ctl: AlphaController) -> tuple[list[float], list[bool]]:
    alphas: list[float] = []
    reached: list[bool] = []
    for _ in range(ctl.steps_total):
        reached.append(ctl.step())
        alphas.append(ctl.alpha)
    return alphas, reached


def test_linear_ramp_up() -> None:
    ctl = AlphaController()
    ctl.retarget(1.0, 4)
    assert ctl.mode == AlphaMode.UP
    assert (ctl.alpha_start, ctl.alpha_target, ctl.steps_total, ctl.steps_done) == (0, 1, 4, 0)
    assert ctl.time_to_target == 4
    alphas, reached = ramp(ctl)
    assert alphas == pytest.approx([0.25, 0.5, 0.75, 1.0], abs=1e-15)
    assert reached == [False, False, False, True]
    assert ctl.mode == AlphaMode.HOLD
    assert ctl.time_to_target == 0


def test_cosine_ramp_up_from_midway() -> None:
    ctl = AlphaController(alpha=0.2)
    ctl.retarget(0.8, 3, curve=AlphaCurve.COSINE)
    alphas, _ = ramp(ctl)
    expected = [0.2 + 0.6 * (1 - math.cos(math.pi * i / 3)) / 2 for i in (1, 2)]
    assert alphas[:2] == pytest.approx(expected, rel=1e-12)
    assert alphas[2] == 0.8


def test_sigmoid_ramp_uses_given_steepness() -> None:
    ctl = AlphaController()
    ctl.retarget(1.0, 4, curve=AlphaCurve.SIGMOID, steepness=24.0)
    assert ctl.steepness == 24.0
    alphas, _ = ramp(ctl)
    expected = [sigmoid_by_tanh(24.0, i / 4) for i in (1, 2, 3)]
    assert alphas[:3] == pytest.approx(expected, rel=1e-12)


def test_ramp_down() -> None:
    ctl = AlphaController(alpha=1.0)
    ctl.retarget(0.0, 5)
    assert ctl.mode == AlphaMode.DOWN
    assert ctl.time_to_target == 5
    ctl.step()
    assert ctl.mode == AlphaMode.DOWN
    assert ctl.time_to_target == 4
    rest, reached = [], []
    for _ in range(4):
        reached.append(ctl.step())
        rest.append(ctl.alpha)
    assert rest == pytest.approx([0.6, 0.4, 0.2, 0.0], abs=1e-15)
    assert reached == [False, False, False, True]
    assert ctl.alpha == 0.0
    assert ctl.mode == AlphaMode.HOLD


@pytest.mark.parametrize(("start", "target"), [(0.3, 0.9), (0.2, 0.9), (0.7, 0.1), (0.9, 0.3)])
@pytest.mark.parametrize("curve", list(AlphaCurve))
def test_last_step_snaps_exactly(start: float, target: float, curve: AlphaCurve) -> None:
    # For these pairs start + (target - start) * 1.0 != target in floats,
    # so only an explicit snap lands exactly.
    assert start + (target - start) * 1.0 != target
    ctl = AlphaController(alpha=start)
    ctl.retarget(target, 3, curve=curve)
    _, reached = ramp(ctl)
    assert reached[-1] is True
    assert ctl.alpha == target


@given(
    start=st.floats(min_value=0.0, max_value=1.0),
    target=st.floats(min_value=0.0, max_value=1.0),
    steps=st.integers(min_value=1, max_value=60),
    curve=st.sampled_from(list(AlphaCurve)),
    k=st.sampled_from([0.01, MIN_STEEPNESS, 1.0, 6.0, 12.0, 24.0, 1e6]),
)
def test_ramp_is_monotone_and_ends_on_target(
    start: float, target: float, steps: int, curve: AlphaCurve, k: float
) -> None:
    ctl = AlphaController()
    ctl.set_alpha(start)
    ctl.retarget(target, steps, curve=curve, steepness=k)
    if target == start:
        assert ctl.mode == AlphaMode.HOLD
        assert ctl.step() is False
        assert ctl.alpha == target
        return
    going_up = target > start
    assert ctl.mode == (AlphaMode.UP if going_up else AlphaMode.DOWN)
    previous = start
    for i in range(1, steps + 1):
        reached = ctl.step()
        assert reached is (i == steps)
        assert min(start, target) <= ctl.alpha <= max(start, target)
        if going_up:
            assert ctl.alpha >= previous
        else:
            assert ctl.alpha <= previous
        assert ctl.time_to_target == (0 if i == steps else steps - i)
        previous = ctl.alpha
    assert ctl.alpha == target
    assert ctl.mode == AlphaMode.HOLD
    assert ctl.step() is False
    assert ctl.alpha == target


@pytest.mark.parametrize(("start", "target", "mode"), [(0.0, 1.0, "UP"), (1.0, 0.0, "DOWN")])
def test_retarget_refused_mid_ramp(start: float, target: float, mode: str) -> None:
    ctl = AlphaController(alpha=start)
    ctl.retarget(target, 4)
    ctl.step()
    before = ctl.to_dict()
    with pytest.raises(AlphaScheduleError, match=f"cannot retarget while ramping {mode}"):
        ctl.retarget(0.5, 2)
    assert ctl.to_dict() == before


def test_retarget_allowed_again_after_reaching() -> None:
    ctl = AlphaController()
    ctl.retarget(1.0, 2)
    ramp(ctl)
    ctl.retarget(0.5, 2)
    assert ctl.mode == AlphaMode.DOWN
    assert (ctl.alpha_start, ctl.alpha_target, ctl.steps_done) == (1.0, 0.5, 0)


def test_zero_steps_jumps_and_holds() -> None:
    ctl = AlphaController(alpha=0.2)
    ctl.retarget(0.7, 0)
    assert ctl.alpha == 0.7
    assert ctl.mode == AlphaMode.HOLD
    assert ctl.steps_total == 0
    assert ctl.time_to_target == 0
    assert ctl.step() is False
    assert ctl.alpha == 0.7


def test_negative_steps_refused() -> None:
    ctl = AlphaController(alpha=0.2)
    with pytest.raises(AlphaScheduleError):
        ctl.retarget(0.7, -1)
    assert ctl.alpha == 0.2
    assert ctl.mode == AlphaMode.HOLD


def test_equal_target_stays_in_hold() -> None:
    ctl = AlphaController(alpha=0.5)
    ctl.retarget(0.5, 3)
    assert ctl.mode == AlphaMode.HOLD
    assert ctl.step() is False
    assert ctl.alpha == 0.5


@pytest.mark.parametrize(("given_target", "clamped"), [(1.5, 1.0), (-0.5, 0.0)])
def test_target_is_clamped(given_target: float, clamped: float) -> None:
    ctl = AlphaController(alpha=0.5)
    ctl.retarget(given_target, 2)
    assert ctl.alpha_target == clamped
    ramp(ctl)
    assert ctl.alpha == clamped


def test_nan_refused() -> None:
    ctl = AlphaController(alpha=0.5)
    with pytest.raises(AlphaScheduleError):
        ctl.retarget(math.nan, 2)
    with pytest.raises(AlphaScheduleError):
        ctl.set_alpha(math.nan)
    assert ctl.alpha == 0.5


def test_step_in_hold_is_a_no_op() -> None:
    ctl = AlphaController(alpha=0.4)
    assert ctl.step() is False
    assert ctl.alpha == 0.4
    assert ctl.steps_done == 0


def test_set_alpha_clamps_and_keeps_mode() -> None:
    ctl = AlphaController()
    ctl.set_alpha(1.7)
    assert ctl.alpha == 1.0
    ctl.set_alpha(-0.2)
    assert ctl.alpha == 0.0
    ctl.retarget(1.0, 4)
    ctl.set_alpha(0.3)
    assert ctl.alpha == 0.3
    assert ctl.mode == AlphaMode.UP


def test_to_dict_shape() -> None:
    ctl = AlphaController(alpha=0.1)
    ctl.retarget(0.9, 5, curve=AlphaCurve.SIGMOID, steepness=6.0)
    ctl.step()
    data = ctl.to_dict()
    assert data["mode"] == 1 and type(data["mode"]) is int
    assert data["curve"] == 3 and type(data["curve"]) is int
    assert {k: data[k] for k in ("alpha_start", "alpha_target", "steepness")} == {
        "alpha_start": 0.1,
        "alpha_target": 0.9,
        "steepness": 6.0,
    }
    assert (data["steps_total"], data["steps_done"]) == (5, 1)


@pytest.mark.parametrize("curve", list(AlphaCurve))
def test_round_trip_mid_ramp_is_exact(curve: AlphaCurve) -> None:
    ctl = AlphaController(alpha=0.3)
    ctl.retarget(0.9, 7, curve=curve, steepness=24.0)
    ctl.step()
    ctl.step()
    restored = AlphaController.from_dict(json.loads(json.dumps(ctl.to_dict())))
    assert restored == ctl
    assert isinstance(restored.mode, AlphaMode) and isinstance(restored.curve, AlphaCurve)
    assert ramp(restored) == ramp(ctl)
    assert restored.alpha == ctl.alpha == 0.9


def test_from_dict_refuses_bad_state() -> None:
    data = AlphaController().to_dict()
    missing = {k: v for k, v in data.items() if k != "steps_done"}
    with pytest.raises(AlphaScheduleError, match="steps_done"):
        AlphaController.from_dict(missing)
    with pytest.raises(AlphaScheduleError):
        AlphaController.from_dict({**data, "curve": 9})


def test_module_does_not_import_torch() -> None:
    code = "import sys, kasmina.alpha; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
