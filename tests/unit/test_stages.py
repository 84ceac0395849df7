from __future__ import annotations

import pytest

from kasmina.stages import (
    TRANSITIONS,
    SeedStage,
    edges,
    is_active,
    is_failure,
    is_legal,
    is_terminal,
    next_stage,
    parse_stage,
)


def test_esper_integer_values() -> None:
    assert {s.name: s.value for s in SeedStage} == {
        "UNKNOWN": 0,
        "DORMANT": 1,
        "GERMINATED": 2,
        "TRAINING": 3,
        "BLENDING": 4,
        "HOLDING": 6,
        "FOSSILIZED": 7,
        "PRUNED": 8,
        "EMBARGOED": 9,
        "RESETTING": 10,
    }


def test_table_has_fourteen_edges_and_every_stage() -> None:
    assert set(TRANSITIONS) == set(SeedStage)
    assert len(list(edges())) == 14


def test_predicates() -> None:
    assert [s for s in SeedStage if is_terminal(s)] == [SeedStage.FOSSILIZED]
    assert {s for s in SeedStage if is_active(s)} == {
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.HOLDING,
        SeedStage.FOSSILIZED,
    }
    assert {s for s in SeedStage if is_failure(s)} == {
        SeedStage.PRUNED,
        SeedStage.EMBARGOED,
        SeedStage.RESETTING,
    }


@pytest.mark.parametrize(
    ("a", "b", "legal"),
    [
        (SeedStage.HOLDING, SeedStage.BLENDING, True),
        (SeedStage.GERMINATED, SeedStage.PRUNED, True),
        (SeedStage.DORMANT, SeedStage.PRUNED, False),
        (SeedStage.FOSSILIZED, SeedStage.PRUNED, False),
        (SeedStage.PRUNED, SeedStage.DORMANT, False),
    ],
)
def test_specific_moves(a: SeedStage, b: SeedStage, legal: bool) -> None:
    assert is_legal(a, b) is legal


def test_advance_takes_first_non_failure_target() -> None:
    assert next_stage(SeedStage.HOLDING) is SeedStage.FOSSILIZED
    assert next_stage(SeedStage.GERMINATED) is SeedStage.TRAINING
    assert next_stage(SeedStage.FOSSILIZED) is None
    assert next_stage(SeedStage.PRUNED) is None


def test_parse_stage_refuses_retired_and_unknown() -> None:
    assert parse_stage("blending") is SeedStage.BLENDING
    assert parse_stage(6) is SeedStage.HOLDING
    with pytest.raises(ValueError, match="retired"):
        parse_stage(5)
    with pytest.raises(ValueError):
        parse_stage("SHADOWING")


def test_stages_print_as_names() -> None:
    assert str(SeedStage.HOLDING) == "HOLDING" and f"{SeedStage.PRUNED}" == "PRUNED"
