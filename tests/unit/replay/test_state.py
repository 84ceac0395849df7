"""The fold's output types: exact JSON round trips, and DORMANT for a slot the log never named."""

from __future__ import annotations

import json
import math
from dataclasses import fields, is_dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kasmina.canonical import canonical_json
from kasmina.run_state import CacheEvictions, ReplayState, RunState
from kasmina.slot_state import ControllerState, GateRecord, SeedMetricsState, SlotState
from kasmina.stages import SeedStage

AWKWARD = (math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e300, 0.1, -2.5)


def _same(a: Any, b: Any, where: str = "") -> None:
    """Exact equality: floats bit for bit in value and sign (any NaN equals any NaN)."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, float) and isinstance(b, float), f"{where}: {a!r} vs {b!r}"
        if math.isnan(a):
            assert math.isnan(b), f"{where}: {a!r} vs {b!r}"
        else:
            assert a == b and math.copysign(1.0, a) == math.copysign(1.0, b), (
                f"{where}: {a!r} vs {b!r}"
            )
        return
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if is_dataclass(a):
        for f in fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _through_text(data: dict[str, Any]) -> dict[str, Any]:
    """What a snapshot does: canonical text, stored, parsed back."""
    parsed = json.loads(canonical_json(data))
    assert isinstance(parsed, dict)
    return parsed


def awkward_slot(x: float, y: float, z: float) -> SlotState:
    return SlotState(
        slot_id="r0c1",
        stage=SeedStage.BLENDING,
        epoch=17,
        seed_id="seed-Ω",
        blueprint_id="conv_small",
        init_seed=2**40 + 3,
        blend_target=0.75,
        blend_steps=4,
        blend_curve="SIGMOID",
        controller=ControllerState(
            alpha=0.3183098861837907,
            alpha_start=-0.0,
            alpha_target=0.75,
            mode="UP",
            curve="SIGMOID",
            steepness=12.0,
            steps_total=4,
            steps_done=1,
        ),
        epochs_in_stage=3,
        epochs_total=11,
        pending_prune=("fade_out", "policy"),
        metrics=SeedMetricsState(
            initial_accuracy=x,
            training_start_accuracy=y,
            blending_start_accuracy=z,
            accuracy=math.nan,
            counterfactual=-0.0,
            grad_ratio=math.inf,
            grad_health=-math.inf,
            has_vanishing=False,
            has_exploding=None,
        ),
        gates=(
            GateRecord("G1", "TRAINING", 1, 1, True, 1.0, 2),
            GateRecord("G2", "BLENDING", 3, 1, True, -0.0, None),
        ),
        fossil_digest="ab" * 32,
        outcome="pruned: no gain",
    )


class TestSlotStateJson:
    def test_awkward_floats_round_trip_exactly(self) -> None:
        for x in AWKWARD:
            state = awkward_slot(x, -x, x * 3)
            back = SlotState.from_json(state.to_json())
            _same(back, state)
            _same(SlotState.from_json(_through_text(state.to_json())), state)

    def test_nan_inf_and_negative_zero_are_explicit_strings_not_null(self) -> None:
        data = awkward_slot(-0.0, math.inf, -math.inf).to_json()
        metrics = data["metrics"]
        assert isinstance(metrics, dict)
        assert metrics["accuracy"] == "NaN"
        assert metrics["initial_accuracy"] == "-0.0"
        assert metrics["training_start_accuracy"] == "Infinity"
        assert metrics["blending_start_accuracy"] == "-Infinity"
        back = SlotState.from_json(data).metrics
        assert math.isnan(back.accuracy)  # type: ignore[arg-type]
        assert back.initial_accuracy == 0.0
        assert math.copysign(1.0, back.initial_accuracy) < 0  # type: ignore[arg-type]

    def test_equality_survives_the_round_trip_with_nan_metrics(self) -> None:
        state = awkward_slot(1.5, 2.5, 3.5)
        assert SlotState.from_json(_through_text(state.to_json())) == state

    def test_a_fresh_slot_round_trips(self) -> None:
        state = SlotState("s0")
        assert SlotState.from_json(_through_text(state.to_json())) == state
        assert state.stage is SeedStage.DORMANT and state.alpha == 0.0

    @given(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=11, max_size=11),
        st.booleans(),
        st.integers(min_value=0, max_value=2**62),
    )
    def test_any_floats_round_trip(self, values: list[float], flag: bool, seed: int) -> None:
        state = SlotState(
            slot_id="p",
            stage=SeedStage.HOLDING,
            epoch=seed % 1000,
            init_seed=seed,
            blend_target=values[0],
            controller=ControllerState(
                alpha=values[1], alpha_start=values[2], alpha_target=values[3], steepness=values[4]
            ),
            metrics=SeedMetricsState(
                initial_accuracy=values[5],
                accuracy=values[6],
                counterfactual=values[7],
                grad_ratio=values[8],
                grad_health=values[9],
                has_vanishing=flag,
                has_exploding=not flag,
            ),
            gates=(GateRecord("G3", "HOLDING", 2, 1, flag, values[10], seed % 7),),
        )
        data = state.to_json()
        _same(SlotState.from_json(data), state)
        _same(SlotState.from_json(_through_text(data)), state)
        assert canonical_json(SlotState.from_json(data).to_json()) == canonical_json(data)


def awkward_run() -> RunState:
    """A run state holding what a fold produces: payload values in their stored (canonical) form."""
    return RunState(
        run_id="run-1",
        name="digits",
        seed=7,
        config={"lr": 0.1, "huge": 10**300, "neg": "-0.0", "nested": [[1, None], {"a": "x"}]},
        started={"name": "digits", "seed": 7, "host": None},
        status="completed",
        epoch=41,
        last_epoch={"val_accuracy": "NaN", "val_loss": "Infinity", "param_digests": {}},
        caches={
            "kernels": CacheEvictions(
                evicted=9, passes=3, by_reason={"ttl": 7, "capacity": 2}, size=4
            ),
            "empty": CacheEvictions(),
        },
        blocks_released=5,
        samples_dropped=12,
        events=1234,
        position=98765,
    )


class TestReplayStateJson:
    def test_round_trip_is_exact(self) -> None:
        slots = {s.slot_id: s for s in (awkward_slot(-0.0, math.inf, 1.0), SlotState("a0"))}
        state = ReplayState(slots, awkward_run())
        back = ReplayState.from_json(_through_text(state.to_json()))
        assert back == state
        _same(back.run, state.run)
        for slot_id in state:
            _same(back[slot_id], state[slot_id])
        assert canonical_json(back.to_json()) == canonical_json(state.to_json())

    def test_run_state_round_trips_alone(self) -> None:
        run = awkward_run()
        assert RunState.from_json(_through_text(run.to_json())) == run
        assert RunState.from_json(RunState("r").to_json()) == RunState("r")

    def test_mapping_view_is_sorted_by_slot_id(self) -> None:
        state = ReplayState({k: SlotState(k) for k in ("b", "a", "c")}, RunState("r"))
        assert list(state) == ["a", "b", "c"]
        assert len(state) == 3 and state["b"] == SlotState("b")
        assert state.position == 0


class TestUnknownSlot:
    def test_unknown_slot_is_dormant_at_the_runs_epoch(self) -> None:
        known = SlotState("a", SeedStage.TRAINING, epoch=9)
        state = ReplayState({"a": known}, RunState("r", epoch=9))
        unknown = state.slot("never-named")
        assert unknown == SlotState("never-named", SeedStage.DORMANT, epoch=9)
        assert unknown.seed_id is None and unknown.alpha == 0.0
        assert "never-named" not in state

    def test_known_slot_is_returned_as_is(self) -> None:
        known = SlotState("a", SeedStage.TRAINING, epoch=4, seed_id="s")
        state = ReplayState({"a": known}, RunState("r", epoch=9))
        assert state.slot("a") is known

    def test_unknown_slot_before_any_epoch_is_at_epoch_zero(self) -> None:
        state = ReplayState({}, RunState("r"))
        assert state.slot("x") == SlotState("x", SeedStage.DORMANT, epoch=0)
