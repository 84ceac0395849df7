"""Policies: who decides what happens to each slot, and the actions they can take.

A policy looks at an `Observation` (every slot's state and the epoch's
metrics) and returns actions, DOMAIN's WAIT, GERMINATE, SET_ALPHA_TARGET,
PRUNE, FOSSILIZE and ADVANCE. It never touches a slot: `SeedManager` records
each action as a `PolicyDecided` event and carries it out, so any run, an RL
policy's included, can be re-executed from its recorded decisions alone
(`RecordedPolicy`). This module is torch-free.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Protocol, TypeAlias

from kasmina.alpha import DEFAULT_BLENDING_TOTAL_STEPS
from kasmina.canonical import Json
from kasmina.errors import ReplayError
from kasmina.events import PolicyAction, PolicyDecided
from kasmina.slot_state import SlotState
from kasmina.stages import SeedStage


@dataclass(frozen=True)
class _Action:
    kind: ClassVar[PolicyAction]
    slot_id: str

    def arguments(self) -> dict[str, Json]:
        """What `PolicyDecided.arguments` records: every field but the slot and the reason."""
        data: dict[str, Json] = asdict(self)
        data.pop("slot_id")
        data.pop("reason", None)
        return data


@dataclass(frozen=True)
class Wait(_Action):
    """Leave the slot as it is (recorded, so an RL policy's choice to wait is seen)."""

    kind: ClassVar[PolicyAction] = "WAIT"
    reason: str = ""


@dataclass(frozen=True)
class Germinate(_Action):
    """Plant a seed of `blueprint` in an empty slot.

    Without a `seed_id` the seed is named ``<slot>-<decision id>``; without an
    `init_seed` the slot derives one from the seed id, so a run still replays.
    """

    kind: ClassVar[PolicyAction] = "GERMINATE"
    blueprint: str = ""
    seed_id: str | None = None
    init_seed: int | None = None
    alpha_target: float = 1.0
    tempo: int = DEFAULT_BLENDING_TOTAL_STEPS
    curve: str = "LINEAR"
    reason: str = ""


@dataclass(frozen=True)
class SetAlphaTarget(_Action):
    """Ramp alpha to `target` over `steps` epochs (BLENDING or HOLDING only)."""

    kind: ClassVar[PolicyAction] = "SET_ALPHA_TARGET"
    target: float = 1.0
    steps: int = DEFAULT_BLENDING_TOTAL_STEPS
    curve: str = "LINEAR"
    steepness: float = 12.0
    reason: str = ""


@dataclass(frozen=True)
class Prune(_Action):
    """Remove the seed: at once, or after fading alpha to 0 over `steps` epochs."""

    kind: ClassVar[PolicyAction] = "PRUNE"
    steps: int = 0
    reason: str = "policy"


@dataclass(frozen=True)
class Fossilize(_Action):
    """Keep the seed for good, if gate G5 agrees."""

    kind: ClassVar[PolicyAction] = "FOSSILIZE"
    reason: str = ""


@dataclass(frozen=True)
class Advance(_Action):
    """Ask the gates for the next stage (or `target`, a stage name)."""

    kind: ClassVar[PolicyAction] = "ADVANCE"
    target: str | None = None
    reason: str = ""


Action: TypeAlias = Wait | Germinate | SetAlphaTarget | Prune | Fossilize | Advance
ACTIONS: Mapping[str, type[Action]] = {
    cls.kind: cls for cls in (Wait, Germinate, SetAlphaTarget, Prune, Fossilize, Advance)
}


def action_of(decision: PolicyDecided) -> Action:
    """The action a recorded decision stands for, to apply it again."""
    cls = ACTIONS[decision.action]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(decision.arguments) - names)
    if unknown:
        raise ReplayError(
            f"decision {decision.decision_id} ({decision.action}) has arguments this "
            f"kasmina does not know: {unknown}"
        )
    values: dict[str, Any] = dict(decision.arguments)
    if "reason" in names:
        values["reason"] = decision.reason
    return cls(slot_id=decision.slot_id, **values)


@dataclass(frozen=True)
class Observation:
    """What a policy sees at the end of an epoch."""

    epoch: int
    #: Every slot's state, by slot id (`kasmina.slot_state.SlotState`).
    slots: Mapping[str, SlotState]
    #: The epoch's metrics: those passed to `end_epoch` and those `evaluate` returned.
    metrics: Mapping[str, float]
    #: Each slot's topology (``cnn``, ``transformer``, ``tabular``), to pick blueprints.
    topologies: Mapping[str, str] = field(default_factory=dict)


class Policy(Protocol):
    """Decides the actions of an epoch. An optional ``name`` attribute is recorded."""

    def decide(self, observation: Observation) -> Sequence[Action]: ...


def policy_name(policy: object) -> str:
    name = getattr(policy, "name", None)
    return name if isinstance(name, str) and name else type(policy).__name__


#: The blueprint a `HeuristicPolicy` plants when given none, per topology.
DEFAULT_BLUEPRINTS: Mapping[str, tuple[str, ...]] = {
    "cnn": ("conv_small",),
    "transformer": ("mlp",),
    "tabular": ("mlp",),
}


class HeuristicPolicy:
    """Plant in empty slots, let the gates carry the seed, then keep what helps.

    At HOLDING a seed whose counterfactual contribution (accuracy points lost
    without it) reaches `min_contribution` is fossilized, while the
    `fossil_budget` lasts; any other is pruned, and its slot cools down and
    is planted again. A fossilization G5 refuses is pruned the epoch after.
    Blueprints, init seeds and seed ids come from its own random stream
    (`seed`), so a run is the same every time.
    """

    name = "heuristic"

    def __init__(
        self,
        blueprints: Sequence[str] | None = None,
        *,
        germinate_every: int = 1,
        alpha_target: float = 1.0,
        tempo: int = DEFAULT_BLENDING_TOTAL_STEPS,
        min_contribution: float = 1.0,
        fossil_budget: int | None = None,
        seed: int = 0,
    ) -> None:
        if germinate_every < 1:
            raise ValueError(f"germinate_every must be at least 1, got {germinate_every}")
        self.blueprints = tuple(blueprints) if blueprints else None
        self.germinate_every = germinate_every
        self.alpha_target = alpha_target
        self.tempo = tempo
        self.min_contribution = min_contribution
        self.fossil_budget = fossil_budget
        self.rng = random.Random(seed)
        self.planted = 0
        self._tried: set[str] = set()

    def decide(self, observation: Observation) -> list[Action]:
        actions: list[Action] = []
        kept = sum(s.stage is SeedStage.FOSSILIZED for s in observation.slots.values())
        for slot_id, state in observation.slots.items():
            if state.stage is SeedStage.DORMANT:
                if observation.epoch % self.germinate_every == 0:
                    actions.append(self._plant(slot_id, observation.topologies.get(slot_id)))
                continue
            contribution = state.metrics.counterfactual
            if state.stage is not SeedStage.HOLDING or contribution is None:
                continue
            seed_id = state.seed_id or ""
            if self.fossil_budget is not None and kept >= self.fossil_budget:
                actions.append(Prune(slot_id, reason="fossil_budget_spent"))
            elif contribution < self.min_contribution:
                actions.append(Prune(slot_id, reason=f"low_contribution_{contribution:.2f}"))
            elif seed_id in self._tried:
                actions.append(Prune(slot_id, reason="fossilize_gate_failed"))
            else:
                self._tried.add(seed_id)
                kept += 1
                actions.append(Fossilize(slot_id, reason=f"contribution_{contribution:.2f}"))
        return actions

    def state_dict(self) -> dict[str, Any]:
        """Its random stream and what it has done so far, for a checkpoint."""
        return {"rng": self.rng.getstate(), "planted": self.planted, "tried": sorted(self._tried)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.planted = int(state["planted"])
        self._tried = {str(s) for s in state["tried"]}

    def _plant(self, slot_id: str, topology: str | None) -> Germinate:
        choices = self.blueprints or DEFAULT_BLUEPRINTS.get(topology or "cnn", ("conv_small",))
        self.planted += 1
        blueprint = self.rng.choice(choices)
        return Germinate(
            slot_id,
            blueprint=blueprint,
            seed_id=f"seed-{self.planted}",
            init_seed=self.rng.randrange(2**31),
            alpha_target=self.alpha_target,
            tempo=self.tempo,
        )


class RecordedPolicy:
    """Re-applies the decisions a run recorded, epoch by epoch, whatever made them."""

    def __init__(self, decisions: Sequence[tuple[int, PolicyDecided]], name: str) -> None:
        self.name = name
        self._by_epoch: dict[int, list[PolicyDecided]] = {}
        for epoch, decision in decisions:
            self._by_epoch.setdefault(epoch, []).append(decision)

    def decide(self, observation: Observation) -> list[Action]:
        return [action_of(d) for d in self._by_epoch.pop(observation.epoch, [])]

    @property
    def left(self) -> int:
        """Decisions not yet asked for (a re-run that ended early leaves some)."""
        return sum(len(v) for v in self._by_epoch.values())


__all__ = [
    "ACTIONS",
    "DEFAULT_BLUEPRINTS",
    "Action",
    "Advance",
    "Fossilize",
    "Germinate",
    "HeuristicPolicy",
    "Observation",
    "Policy",
    "Prune",
    "RecordedPolicy",
    "SetAlphaTarget",
    "Wait",
    "action_of",
    "policy_name",
]
