"""Policies without torch: HeuristicPolicy's choices, the actions' arguments, and decisions
read back into the actions they record."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from kasmina.errors import ReplayError
from kasmina.events import PolicyDecided, load_payload
from kasmina.policy import (
    ACTIONS,
    DEFAULT_BLUEPRINTS,
    Action,
    Advance,
    Fossilize,
    Germinate,
    HeuristicPolicy,
    Observation,
    Prune,
    RecordedPolicy,
    SetAlphaTarget,
    Wait,
    action_of,
    policy_name,
)
from kasmina.slot_state import SeedMetricsState, SlotState
from kasmina.stages import SeedStage


def slot(
    slot_id: str,
    stage: SeedStage = SeedStage.DORMANT,
    *,
    counterfactual: float | None = None,
    seed_id: str | None = None,
) -> SlotState:
    live = stage is not SeedStage.DORMANT
    return SlotState(
        slot_id,
        stage=stage,
        seed_id=seed_id if seed_id is not None else (f"seed-{slot_id}" if live else None),
        blueprint_id="mlp" if live else None,
        metrics=SeedMetricsState(counterfactual=counterfactual),
    )


def seen(epoch: int, *slots: SlotState, topology: str = "tabular") -> Observation:
    return Observation(
        epoch=epoch,
        slots={s.slot_id: s for s in slots},
        metrics={"val_accuracy": 50.0},
        topologies={s.slot_id: topology for s in slots},
    )


class TestPlanting:
    def test_plants_in_dormant_slots_only_every_germinate_every_epochs(self) -> None:
        policy = HeuristicPolicy(["mlp"], germinate_every=3)
        by_epoch = {
            epoch: policy.decide(seen(epoch, slot("a"), slot("b", SeedStage.TRAINING)))
            for epoch in range(7)
        }
        planted = {epoch: actions for epoch, actions in by_epoch.items() if actions}
        assert sorted(planted) == [0, 3, 6]
        for actions in planted.values():
            assert [(type(a), a.slot_id) for a in actions] == [(Germinate, "a")]

    def test_blueprints_come_from_the_list_and_seed_ids_are_fresh(self) -> None:
        policy = HeuristicPolicy(["mlp", "norm"], alpha_target=0.5, tempo=2)
        plants = [g for e in range(60) for g in policy.decide(seen(e, slot("a"), slot("b")))]
        assert all(isinstance(g, Germinate) for g in plants)
        germinations = [g for g in plants if isinstance(g, Germinate)]
        assert {g.blueprint for g in germinations} == {"mlp", "norm"}
        assert len({g.seed_id for g in germinations}) == len(germinations) == 120
        assert {(g.alpha_target, g.tempo) for g in germinations} == {(0.5, 2)}
        assert all(g.init_seed is not None and 0 <= g.init_seed < 2**31 for g in germinations)

    def test_without_a_list_the_slots_topology_picks_the_blueprint(self) -> None:
        policy = HeuristicPolicy()
        observation = Observation(
            epoch=0,
            slots={"t": slot("t"), "c": slot("c")},
            metrics={},
            topologies={"t": "tabular", "c": "cnn"},
        )
        chosen = {a.slot_id: a for a in policy.decide(observation)}
        assert isinstance(chosen["t"], Germinate) and isinstance(chosen["c"], Germinate)
        assert chosen["t"].blueprint in DEFAULT_BLUEPRINTS["tabular"]
        assert chosen["c"].blueprint in DEFAULT_BLUEPRINTS["cnn"]

    def test_the_same_seed_plants_the_same_seeds(self) -> None:
        def plants(seed: int) -> list[Action]:
            policy = HeuristicPolicy(["mlp", "norm"], seed=seed)
            return [a for e in range(10) for a in policy.decide(seen(e, slot("a"), slot("b")))]

        assert plants(3) == plants(3)
        assert [a.init_seed for a in plants(3) if isinstance(a, Germinate)] != [
            a.init_seed for a in plants(4) if isinstance(a, Germinate)
        ]

    def test_germinate_every_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="germinate_every"):
            HeuristicPolicy(germinate_every=0)


class TestAtHolding:
    def test_prunes_below_the_minimum_and_fossilizes_at_or_above(self) -> None:
        policy = HeuristicPolicy(min_contribution=1.0)
        actions = policy.decide(
            seen(
                5,
                slot("low", SeedStage.HOLDING, counterfactual=0.99),
                slot("even", SeedStage.HOLDING, counterfactual=1.0),
                slot("high", SeedStage.HOLDING, counterfactual=7.5),
            )
        )
        by_slot = {a.slot_id: a for a in actions}
        assert isinstance(by_slot["low"], Prune)
        assert by_slot["low"].reason == "low_contribution_0.99"
        assert isinstance(by_slot["even"], Fossilize) and isinstance(by_slot["high"], Fossilize)
        assert by_slot["high"].reason == "contribution_7.50"

    def test_waits_for_a_counterfactual_and_leaves_other_stages_alone(self) -> None:
        policy = HeuristicPolicy(min_contribution=1.0)
        actions = policy.decide(
            seen(
                5,
                slot("unmeasured", SeedStage.HOLDING),
                slot("blending", SeedStage.BLENDING, counterfactual=-5.0),
                slot("kept", SeedStage.FOSSILIZED, counterfactual=-5.0),
                slot("cooling", SeedStage.EMBARGOED),
            )
        )
        assert actions == []

    def test_a_spent_budget_prunes_even_a_good_seed(self) -> None:
        policy = HeuristicPolicy(min_contribution=1.0, fossil_budget=1)
        actions = policy.decide(
            seen(
                5,
                slot("kept", SeedStage.FOSSILIZED),
                slot("good", SeedStage.HOLDING, counterfactual=9.0),
            )
        )
        assert actions == [Prune("good", reason="fossil_budget_spent")]

    def test_two_holding_slots_in_one_epoch_share_the_budget(self) -> None:
        policy = HeuristicPolicy(min_contribution=1.0, fossil_budget=1)
        actions = policy.decide(
            seen(
                5,
                slot("first", SeedStage.HOLDING, counterfactual=3.0),
                slot("second", SeedStage.HOLDING, counterfactual=4.0),
            )
        )
        assert actions == [
            Fossilize("first", reason="contribution_3.00"),
            Prune("second", reason="fossil_budget_spent"),
        ]

    def test_a_seed_asked_again_after_a_refused_fossilization_is_pruned(self) -> None:
        policy = HeuristicPolicy(min_contribution=1.0)
        holding = slot("a", SeedStage.HOLDING, counterfactual=2.0, seed_id="s7")
        assert policy.decide(seen(5, holding)) == [Fossilize("a", reason="contribution_2.00")]
        # G5 said no: the seed is still HOLDING the epoch after
        assert policy.decide(seen(6, holding)) == [Prune("a", reason="fossilize_gate_failed")]
        # a new seed in the same slot is a new try
        fresh = slot("a", SeedStage.HOLDING, counterfactual=2.0, seed_id="s8")
        assert policy.decide(seen(7, fresh)) == [Fossilize("a", reason="contribution_2.00")]


#: One action of each kind, every field away from its default.
EVERY_ACTION: list[Action] = [
    Wait("a", reason="watching"),
    Germinate(
        "a",
        blueprint="norm",
        seed_id="s-1",
        init_seed=42,
        alpha_target=0.75,
        tempo=3,
        curve="SIGMOID",
        reason="room",
    ),
    SetAlphaTarget("a", target=0.5, steps=2, curve="COSINE", steepness=4.0, reason="ease"),
    Prune("a", steps=3, reason="weak"),
    Fossilize("a", reason="strong"),
    Advance("a", target="BLENDING", reason="ready"),
]


def decided(action: Action, decision_id: str = "e3.0") -> PolicyDecided:
    """What SeedManager records for `action`."""
    return PolicyDecided(
        decision_id=decision_id,
        policy="test",
        action=action.kind,
        slot_id=action.slot_id,
        arguments=action.arguments(),
        reason=action.reason,
    )


class TestDecisions:
    def test_every_action_kind_is_in_the_table(self) -> None:
        assert {type(a) for a in EVERY_ACTION} == set(ACTIONS.values())
        assert all(ACTIONS[type(a).kind] is type(a) for a in EVERY_ACTION)

    @pytest.mark.parametrize("action", EVERY_ACTION, ids=lambda a: a.kind)
    def test_arguments_are_every_field_but_the_slot_and_the_reason(self, action: Action) -> None:
        names = {f.name for f in fields(action)} - {"slot_id", "reason"}
        arguments = action.arguments()
        assert set(arguments) == names
        assert all(arguments[n] == getattr(action, n) for n in names)

    @pytest.mark.parametrize("action", EVERY_ACTION, ids=lambda a: a.kind)
    def test_a_recorded_decision_reads_back_as_its_action(self, action: Action) -> None:
        decision = decided(action)
        stored = load_payload(
            "PolicyDecided", PolicyDecided.schema_version, json.loads(decision.canonical_text())
        )
        assert isinstance(stored, PolicyDecided)
        assert action_of(stored) == action

    def test_an_argument_this_kasmina_does_not_know_is_refused(self) -> None:
        decision = decided(Prune("a")).model_copy(update={"arguments": {"steps": 0, "fade": 1}})
        with pytest.raises(ReplayError, match=r"e3\.0.*\['fade'\]"):
            action_of(decision)

    def test_recorded_policy_replays_by_epoch_and_counts_what_is_left(self) -> None:
        recorded = [
            (0, decided(EVERY_ACTION[1], "e0.0")),
            (0, decided(EVERY_ACTION[0], "e0.1")),
            (4, decided(EVERY_ACTION[4], "e4.0")),
        ]
        policy = RecordedPolicy(recorded, name="heuristic")
        assert policy.name == "heuristic" and policy.left == 3
        assert policy.decide(seen(0, slot("a"))) == [EVERY_ACTION[1], EVERY_ACTION[0]]
        assert policy.decide(seen(1, slot("a"))) == []
        assert policy.left == 1
        assert policy.decide(seen(4, slot("a"))) == [EVERY_ACTION[4]]
        assert policy.decide(seen(4, slot("a"))) == [] and policy.left == 0

    def test_a_policy_is_recorded_under_its_name_or_its_class(self) -> None:
        class Nameless:
            def decide(self, observation: Observation) -> list[Action]:
                return []

        assert policy_name(HeuristicPolicy()) == "heuristic"
        assert policy_name(Nameless()) == "Nameless"
