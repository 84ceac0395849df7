"""Random commands against several slots; the ledger must agree with the live slots.

Every accepted move is an edge of the table, every refused command (one of
the slot's own refusals in `REFUSALS`; a ledger error or any other fails the
test) appends no row of any type, and folding the recorded `SeedStageChanged`
events through the table gives each slot's live stage. Over 5,000 commands
per run (100 examples of up to 100 steps; the count is asserted).
"""

from __future__ import annotations

import shutil
import tempfile

import rawdb
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kasmina.alpha import AlphaScheduleError
from kasmina.errors import InvalidTransition, SlotError
from kasmina.events import SeedStageChanged
from kasmina.gates import NoGate, QualityGates
from kasmina.ledger import Ledger
from kasmina.runtime.slot import SeedSlot
from kasmina.stages import SeedStage, is_legal

SLOTS = 3
GATES = QualityGates(permissive=True, min_training_epochs=0, min_blending_epochs=0)
slot_index = st.integers(0, SLOTS - 1)
STEPS: list[int] = []
#: What a slot command raises when it refuses; nothing else counts as a refusal.
REFUSALS = (InvalidTransition, SlotError, NoGate, AlphaScheduleError)


class SlotCommands(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="kasmina-stateful-")
        self.url = f"sqlite:///{self.folder}/l.db"
        self.ledger = Ledger.open(self.url)
        self.run = self.ledger.start_run("stateful", seed=0)
        self.slots = [
            SeedSlot(f"r0c{i}", 4, recorder=self.run.recorder, gates=GATES, embargo_epochs=2)
            for i in range(SLOTS)
        ]
        self.folded = {s.slot_id: SeedStage.DORMANT for s in self.slots}
        self.position = 0
        self.seeds = 0
        self.steps = 0

    def teardown(self) -> None:
        STEPS.append(self.steps)
        self.ledger.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _new_events(self) -> list[SeedStageChanged]:
        events = list(self.ledger.read(self.run.run_id, after=self.position))
        if events:
            self.position = events[-1].position
        return [e.payload for e in events if isinstance(e.payload, SeedStageChanged)]

    def _rows(self) -> int:
        """All rows, not only this run's stage changes: a refusal writes nothing anywhere."""
        ((count,),) = rawdb.run(self.url, "SELECT COUNT(*) FROM events")
        return int(count)  # type: ignore[call-overload]

    def _attempt(self, slot: SeedSlot, command: str, *args: object, **kwargs: object) -> None:
        self.steps += 1
        before, rows = slot.stage, self._rows()
        try:
            getattr(slot, command)(*args, **kwargs)
        except REFUSALS:
            assert self._rows() == rows, f"refused {command} recorded events"
            assert slot.stage is before
            return
        for change in self._new_events():
            assert is_legal(change.from_stage, change.to_stage), change
            assert self.folded[change.slot_id] is change.from_stage
            self.folded[change.slot_id] = change.to_stage

    @rule(
        i=slot_index,
        blueprint=st.sampled_from(["conv_small", "norm", "depthwise"]),
        tempo=st.integers(0, 2),
    )
    def germinate(self, i: int, blueprint: str, tempo: int) -> None:
        self.seeds += 1
        self._attempt(self.slots[i], "germinate", blueprint, f"s{self.seeds}", tempo=tempo)
        slot = self.slots[i]
        if slot.seed is not None:  # measured and healthy unless `measure` says otherwise
            slot.measure(grad_health=1.0, has_exploding=False, counterfactual=1.0)

    @rule(i=slot_index, stage=st.sampled_from(list(SeedStage)))
    def advance(self, i: int, stage: SeedStage) -> None:
        self._attempt(self.slots[i], "advance_stage", stage)

    @rule(i=slot_index)
    def advance_default(self, i: int) -> None:
        self._attempt(self.slots[i], "advance_stage")

    @rule(i=slot_index)
    def prune(self, i: int) -> None:
        self._attempt(self.slots[i], "prune", "random")

    @rule(i=slot_index, steps=st.integers(0, 3))
    def schedule_prune(self, i: int, steps: int) -> None:
        self._attempt(self.slots[i], "schedule_prune", steps)

    @rule(i=slot_index, goal=st.sampled_from([0.5, 1.0]), steps=st.integers(0, 2))
    def set_alpha_target(self, i: int, goal: float, steps: int) -> None:
        self._attempt(self.slots[i], "set_alpha_target", goal, steps)

    @rule(i=slot_index)
    def step(self, i: int) -> None:
        self._attempt(self.slots[i], "step_epoch")

    @rule(i=slot_index, value=st.floats(-0.5, 1.5))
    def force_alpha(self, i: int, value: float) -> None:
        """Alpha forced for an evaluation: clamped into [0, 1]; it records and keeps nothing."""
        self.steps += 1
        slot = self.slots[i]
        before, rows = slot.state, self._rows()
        with slot.force_alpha(value):
            assert slot.alpha == min(1.0, max(0.0, value))
            self.ledger_fold_equals_live_stages()
        assert slot.state == before and slot.alpha == before.alpha
        assert self._rows() == rows, "force_alpha recorded events"

    @precondition(lambda self: any(s.seed is not None for s in self.slots))
    @rule(i=slot_index, health=st.sampled_from([None, 0.2, 1.0]), exploding=st.booleans())
    def measure(self, i: int, health: float | None, exploding: bool) -> None:
        # refused (and recording nothing) for a slot without a seed
        self._attempt(self.slots[i], "measure", grad_health=health, has_exploding=exploding)

    @invariant()
    def ledger_fold_equals_live_stages(self) -> None:
        assert {s.slot_id: s.stage for s in self.slots} == self.folded
        for slot in self.slots:
            assert 0.0 <= slot.alpha <= 1.0


SlotCommands.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSlotCommands = SlotCommands.TestCase


def test_the_machine_ran_at_least_5000_commands() -> None:
    if not STEPS:
        TestSlotCommands().runTest()
    assert sum(STEPS) >= 5000, sum(STEPS)
