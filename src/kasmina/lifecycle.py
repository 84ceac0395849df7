"""The lifecycle machine: the one place a stage moves and `SeedStageChanged` is built.

One `transitions` machine, built from `kasmina.stages.TRANSITIONS`, is shared
by every slot (``add_model``), so ten thousand slots cost ten thousand small
state objects, not ten thousand machines. `auto_transitions` is off: the only
triggers are the table's edges.

A move and its record succeed or fail together. `transitions` does not undo a
state change when an ``after`` callback raises, so the record is written in
``before_state_change``: if the recorder refuses the batch, the exception
propagates before the state is touched and the stage stays where it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from transitions import EventData, Machine, State

from kasmina.errors import InvalidTransition
from kasmina.events import Payload, SeedStageChanged, Trigger
from kasmina.recording import Recorder
from kasmina.stages import SeedStage, edges, is_legal

if TYPE_CHECKING:
    from transitions.core import TransitionConfigDict

STATE_ATTRIBUTE = "state"


class Staged:
    """A slot's position in the shared machine; `state` is a stage name."""

    __slots__ = ("slot_id", "state", "__weakref__")

    def __init__(self, slot_id: str) -> None:
        self.slot_id = slot_id
        self.state = SeedStage.DORMANT.name

    @property
    def stage(self) -> SeedStage:
        return SeedStage[self.state]


@dataclass(frozen=True, slots=True)
class MoveContext:
    """The slot's numbers at the moment of a move, as the record keeps them."""

    alpha: float = 0.0
    accuracy: float | None = None
    accuracy_delta: float = 0.0
    epochs_in_stage: int = 0
    grad_ratio: float = 0.0
    has_vanishing: bool = False
    has_exploding: bool = False
    alpha_curve: str = "LINEAR"
    epoch: int | None = None
    seed_id: str | None = None
    env_id: int = -1
    #: The policy decision behind the move, if any (`kasmina.events.PolicyDecided`).
    decision_id: str | None = None


def trigger_name(stage: SeedStage) -> str:
    return f"to_{stage.name.lower()}"


class SharedMachine(Machine):
    """A machine made to be shared by many models.

    Stock `add_model` binds a dozen convenience partials onto every model and
    scans the model list for duplicates, so joining grows with the number of
    slots. Here triggers are fired through ``machine.events``, joining only
    sets the state, and membership is a set lookup.
    """

    def __init__(
        self,
        *,
        states: list[str],
        transitions: list[TransitionConfigDict],
        initial: str,
        before_state_change: Callable[[EventData], None],
    ) -> None:
        self._member_ids: set[int] = set()
        super().__init__(
            model=None,
            states=states,
            transitions=transitions,
            initial=initial,
            auto_transitions=False,
            send_event=True,
            model_attribute=STATE_ATTRIBUTE,
            before_state_change=[before_state_change],
        )

    def add_model(self, model: object, initial: str | Enum | State | None = None) -> None:
        for mod in model if isinstance(model, list) else [model]:
            if id(mod) in self._member_ids:
                continue
            start = initial if initial is not None else self.initial
            assert start is not None
            self.set_state(start, model=mod)
            self.models.append(mod)
            self._member_ids.add(id(mod))

    def remove_model(self, model: object) -> None:
        for mod in model if isinstance(model, list) else [model]:
            if id(mod) in self._member_ids:
                self._member_ids.discard(id(mod))
                self.models.remove(mod)


class Lifecycle:
    """The shared machine. Use `join` for each slot, then `move`."""

    def __init__(self) -> None:
        self.machine = SharedMachine(
            states=[stage.name for stage in SeedStage],
            transitions=[
                {"trigger": trigger_name(dst), "source": src.name, "dest": dst.name}
                for src, dst in edges()
            ],
            initial=SeedStage.DORMANT.name,
            before_state_change=self._record,
        )

    def join(self, model: Staged, stage: SeedStage = SeedStage.DORMANT) -> None:
        self.machine.add_model(model, initial=stage.name)

    def leave(self, model: Staged) -> None:
        self.machine.remove_model(model)

    def restore(self, model: Staged, stage: SeedStage) -> None:
        """Put a model at a stage without a move: for checkpoints and replay only."""
        self.machine.set_state(stage.name, model=model)

    def move(
        self,
        model: Staged,
        to: SeedStage,
        *,
        trigger: Trigger,
        context: MoveContext,
        emitter: Recorder | None,
        before: Sequence[Payload] = (),
        after: Sequence[Payload] = (),
        on_moved: Callable[[], None] | None = None,
    ) -> SeedStageChanged:
        """Make a legal move and record it, with `before`/`after` events, in one batch.

        An illegal move raises `InvalidTransition` and records nothing. If the
        emitter raises, the stage does not move and `on_moved` is not called.
        """
        source = model.stage
        if not is_legal(source, to):
            raise InvalidTransition(model.slot_id, source.name, to.name)
        change = SeedStageChanged(
            slot_id=model.slot_id,
            env_id=context.env_id,
            from_stage=source,
            to_stage=to,
            trigger=trigger,
            alpha=context.alpha,
            accuracy=context.accuracy,
            accuracy_delta=context.accuracy_delta,
            epochs_in_stage=context.epochs_in_stage,
            grad_ratio=context.grad_ratio,
            has_vanishing=context.has_vanishing,
            has_exploding=context.has_exploding,
            alpha_curve=context.alpha_curve,
            decision_id=context.decision_id,
        )
        batch = (*before, change, *after)
        self.machine.events[trigger_name(to)].trigger(
            model, batch=batch, emitter=emitter, context=context
        )
        if on_moved is not None:
            on_moved()
        return change

    @staticmethod
    def _record(event: EventData) -> None:
        emitter: Recorder | None = event.kwargs["emitter"]
        if emitter is None:
            return
        model = event.model
        assert isinstance(model, Staged)
        context: MoveContext = event.kwargs["context"]
        emitter.emit_many(
            event.kwargs["batch"],
            stream_id=f"slot/{model.slot_id}",
            epoch=context.epoch,
            seed_id=context.seed_id,
        )


#: The machine every slot of the process joins.
LIFECYCLE = Lifecycle()

__all__ = [
    "LIFECYCLE",
    "Lifecycle",
    "MoveContext",
    "SharedMachine",
    "Staged",
    "trigger_name",
]
