"""Seed stages and the legal moves between them.

The transition table below is the single source of truth for lifecycle rules:
the `transitions` machine, the replay fold, the SQL views' checks and the docs
are all derived from it, so a rule changed here changes everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import IntEnum


class SeedStage(IntEnum):
    """Stages keep esper's integer values; value 5 (SHADOWING) is retired."""

    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    HOLDING = 6
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10

    def __str__(self) -> str:
        return self.name


#: Legal moves, in esper-lite's order: "advance" takes the first allowed
#: stage that is not a failure stage, so the order is part of the rule.
TRANSITIONS: Mapping[SeedStage, tuple[SeedStage, ...]] = {
    SeedStage.UNKNOWN: (SeedStage.DORMANT,),
    SeedStage.DORMANT: (SeedStage.GERMINATED,),
    SeedStage.GERMINATED: (SeedStage.TRAINING, SeedStage.PRUNED),
    SeedStage.TRAINING: (SeedStage.BLENDING, SeedStage.PRUNED),
    SeedStage.BLENDING: (SeedStage.HOLDING, SeedStage.PRUNED),
    SeedStage.HOLDING: (SeedStage.FOSSILIZED, SeedStage.BLENDING, SeedStage.PRUNED),
    SeedStage.FOSSILIZED: (),
    SeedStage.PRUNED: (SeedStage.EMBARGOED,),
    SeedStage.EMBARGOED: (SeedStage.RESETTING,),
    SeedStage.RESETTING: (SeedStage.DORMANT,),
}

TERMINAL_STAGES: frozenset[SeedStage] = frozenset({SeedStage.FOSSILIZED})
ACTIVE_STAGES: frozenset[SeedStage] = frozenset(
    {SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED}
)
FAILURE_STAGES: frozenset[SeedStage] = frozenset(
    {SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING}
)
RETIRED_VALUES: frozenset[int] = frozenset({5})


def is_terminal(stage: SeedStage) -> bool:
    return stage in TERMINAL_STAGES


def is_active(stage: SeedStage) -> bool:
    """Active stages take part in the forward pass."""
    return stage in ACTIVE_STAGES


def is_failure(stage: SeedStage) -> bool:
    return stage in FAILURE_STAGES


def is_legal(from_stage: SeedStage, to_stage: SeedStage) -> bool:
    return to_stage in TRANSITIONS[from_stage]


def next_stage(stage: SeedStage) -> SeedStage | None:
    """The stage a plain "advance" goes to: the first allowed non-failure one."""
    for candidate in TRANSITIONS[stage]:
        if not is_failure(candidate):
            return candidate
    return None


def edges() -> Iterator[tuple[SeedStage, SeedStage]]:
    """Every legal (from, to) pair, in table order."""
    for source, targets in TRANSITIONS.items():
        for target in targets:
            yield source, target


_BY_NAME: dict[str, SeedStage] = {stage.name: stage for stage in SeedStage}


def parse_stage(value: str | int) -> SeedStage:
    """Read a stage from its name (how payloads store it) or its esper value.

    Retired and unknown values are refused rather than mapped to a neighbour.
    """
    if isinstance(value, str):
        stage = _BY_NAME.get(value)  # every stored payload's stage passes here: one lookup
        if stage is not None:
            return stage
        try:
            return SeedStage[value.upper()]
        except KeyError:
            raise ValueError(f"unknown seed stage name {value!r}") from None
    if value in RETIRED_VALUES:
        raise ValueError(f"seed stage value {value} is retired (was SHADOWING)")
    try:
        return SeedStage(value)
    except ValueError:
        raise ValueError(f"unknown seed stage value {value!r}") from None


__all__ = [
    "ACTIVE_STAGES",
    "FAILURE_STAGES",
    "TERMINAL_STAGES",
    "TRANSITIONS",
    "SeedStage",
    "edges",
    "is_active",
    "is_failure",
    "is_legal",
    "is_terminal",
    "next_stage",
    "parse_stage",
]
