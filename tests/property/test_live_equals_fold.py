"""Invariant 10: a live slot's state is `evolve` over what it recorded, and the fold agrees.

Real `SeedSlot`s (both topologies, auto-advancing and not, with and without a
block pool, short embargoes so slots are recycled) record into a real SQLite
ledger file while a seeded random policy sends them commands, legal and
illegal. After *every* command each slot's live ``slot.state`` must equal the
folded state of that slot, exactly (``==``; NaN counts as equal to NaN, see
`same`).

The fold is incremental, so checking after every command stays linear: one
`kasmina.replay.fold.Fold` per run is fed only the rows appended since the
last check (``ledger.raw_rows(run_id, after=position)``, after a recorder
flush). Its hash checker is on, so the chain is verified inline as well.

The clock. A live slot ticks on ``step_epoch`` without recording anything;
the fold knows a clock only from recorded epoch numbers. So time moves like a
training loop: the `epoch` command steps *every* slot to the same new epoch
and then records `EpochCompleted` at that epoch. The state compared is then
what ``ledger.replay(run_id)`` gives at that moment (the fold's slots ticked
to the last epoch the log names, `Fold.max_epoch`), and that epoch must be
the live epoch; a full ``replay_run`` from scratch is compared too, every so
often and at the end.

Measurements. ``measure(...)`` and the accuracy and counterfactual of
``step_epoch`` are not events: they reach the log only in the seed's next
telemetry sample. So a command that measures also emits the sample before
the comparison: `measure` is "measure + sample", and `epoch` is, per slot,
"measure the epoch's gradients + step_epoch(accuracy, counterfactual) +
sample", as a training loop does it (``kasmina.demo``). A slot without a seed
has no samples, so it refuses a measurement; a seed pruned before its next
sample leaves the numbers its PRUNED move recorded, on both sides
(`TestNumbersNoSampleCarries`).

Refusals. A command refused with one of the slot's own errors (`REFUSALS`),
a prune the slot declines (False, for a fossil), and a forced alpha must
leave every slot's state the very same object and append no row of any run;
a failed gate is a recorded verdict (one `SeedGateEvaluated`, no move). Any
other exception fails the test.

Three seeded runs (one with a buffered recorder), each at least 2,000
commands over at least 4 slots and through every stage; the counts are
asserted so the test cannot silently degenerate.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import pytest

from kasmina.alpha import AlphaCurve, AlphaScheduleError
from kasmina.errors import InvalidTransition, SlotError
from kasmina.events import EpochCompleted, SeedPruned, SeedStageChanged
from kasmina.gates import NoGate, QualityGates
from kasmina.ledger import Ledger
from kasmina.replay.engine import replay_run
from kasmina.replay.fold import Fold
from kasmina.runtime.blocks import BlockPool, PoolExhausted
from kasmina.runtime.blueprints import Topology, UnknownBlueprint, blueprint_names
from kasmina.runtime.slot import SeedSlot
from kasmina.runtime.telemetry import emit_sample
from kasmina.slot_state import SlotState
from kasmina.stages import TRANSITIONS, SeedStage, edges, is_failure

#: Gates every seed can pass once it is measured healthy (as in the other slot tests).
EASY = QualityGates(permissive=True, min_training_epochs=0, min_blending_epochs=0)
#: What a slot command raises when it refuses; nothing else counts as a refusal.
REFUSALS = (
    InvalidTransition,
    SlotError,
    NoGate,
    AlphaScheduleError,
    UnknownBlueprint,
    PoolExhausted,
)
ALL_STAGES = frozenset(SeedStage) - {SeedStage.UNKNOWN}
MIN_COMMANDS = 2000
MAX_SLOTS = 10
#: Compare with a full fold from scratch (the public replay path) this often.
FULL_FOLD_EVERY = 400
COMMANDS = (
    ("epoch", 14),
    ("germinate", 12),
    ("advance", 22),
    ("measure", 14),
    ("prune", 3),
    ("schedule_prune", 5),
    ("set_alpha_target", 8),
    ("restep", 4),
    ("past_step", 1),
    ("force_alpha", 2),
)
_SEEDED = ("advance", "advance", "measure", "prune", "schedule_prune", "epoch")
_BLENDED = ("advance", "set_alpha_target", "schedule_prune", "prune", "measure", "epoch")
#: The commands a seed in each stage can take; the others are sent too, less often.
PLAUSIBLE: dict[SeedStage, tuple[str, ...]] = {
    SeedStage.DORMANT: ("germinate", "germinate", "epoch"),
    SeedStage.GERMINATED: _SEEDED,
    SeedStage.TRAINING: _SEEDED,
    SeedStage.BLENDING: _BLENDED,
    SeedStage.HOLDING: _BLENDED,
    SeedStage.FOSSILIZED: ("measure", "restep", "force_alpha", "epoch"),
    SeedStage.PRUNED: ("epoch",),
    SeedStage.EMBARGOED: ("epoch",),
    SeedStage.RESETTING: ("epoch",),
}
ODD_FLOATS = (0.0, -0.0, 1e300, 5e-324, 1.0 / 3.0, math.inf, math.nan)


# -- comparing --------------------------------------------------------------------


def same(a: object, b: object) -> bool:
    """Exact equality, field by field, except that NaN equals NaN (gradients can be NaN)."""
    if is_dataclass(a) and not isinstance(a, type):
        if type(a) is not type(b):
            return False
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def differences(live: SlotState, folded: SlotState) -> list[str]:
    return [
        f"{f.name}: live {getattr(live, f.name)!r}, folded {getattr(folded, f.name)!r}"
        for f in fields(SlotState)
        if not same(getattr(live, f.name), getattr(folded, f.name))
    ]


# -- the driver ---------------------------------------------------------------------


@dataclass(frozen=True)
class SlotSpec:
    topology: Topology
    channels: int
    auto_advance: bool
    embargo_epochs: int
    pooled: bool = False


#: The first slots; every fossilized slot is replaced by a fresh one, up to `MAX_SLOTS`.
SPECS = (
    SlotSpec("cnn", 4, auto_advance=True, embargo_epochs=1),
    SlotSpec("cnn", 4, auto_advance=False, embargo_epochs=0, pooled=True),
    SlotSpec("transformer", 8, auto_advance=True, embargo_epochs=2, pooled=True),
    SlotSpec("transformer", 4, auto_advance=False, embargo_epochs=3),
)


class Driver:
    """Random commands against real slots, with the live/fold comparison after each one."""

    def __init__(self, ledger: Ledger, seed: int, buffer_size: int) -> None:
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.run = ledger.start_run(
            "live-equals-fold", seed=seed, config={"seed": seed}, buffer_size=buffer_size
        )
        self.run_id = self.run.run_id
        self.recorder = self.run.recorder
        # Two pooled slots of two blocks each in three blocks: one of them is refused.
        self.pool = BlockPool(3, (2,))
        self.epoch = 0
        self.slots: list[SeedSlot] = []
        for spec in SPECS:
            self._add_slot(spec)
        self.fold = Fold(ledger.store, self.run_id)
        self.position = 0
        self.planted = 0
        self.commands = 0
        self.outcomes: Counter[str] = Counter()
        self.stages_seen: set[SeedStage] = set()
        self.sync()

    def _add_slot(self, spec: SlotSpec) -> None:
        slot = SeedSlot(
            f"s{len(self.slots)}",
            spec.channels,
            topology=spec.topology,
            recorder=self.recorder,
            gates=EASY,
            embargo_epochs=spec.embargo_epochs,
            auto_advance=spec.auto_advance,
            pool=self.pool if spec.pooled else None,
            blocks_per_seed=2,
        )
        # A slot added mid-run joins the loop's clock (a DORMANT tick records nothing).
        slot.step_epoch(epoch=self.epoch)
        self.slots.append(slot)

    # -- the log side ---------------------------------------------------------------

    def sync(self) -> int:
        """Feed the fold the rows recorded since the last sync; returns how many."""
        self.recorder.flush()
        fed = 0
        for row in self.ledger.raw_rows(self.run_id, after=self.position):
            self.fold.feed(row)
            self.position = row.position
            fed += 1
        return fed

    def new_rows_anywhere(self) -> int:
        """Rows of any run after the last position seen, plus any still in the buffer."""
        return self.recorder.pending + sum(1 for _ in self.ledger.raw_rows(after=self.position))

    def folded(self) -> dict[str, SlotState]:
        """The fold as ``ledger.replay`` would cut it now: every slot at the log's last epoch."""
        if self.fold.max_epoch is not None:
            self.fold.tick_all(self.fold.max_epoch)
        state = self.fold.state()
        return {s.slot_id: state.slot(s.slot_id) for s in self.slots}

    def check(self, what: str) -> None:
        folded = self.folded()
        for slot in self.slots:
            self.stages_seen.add(slot.stage)
            diffs = differences(slot.state, folded[slot.slot_id])
            assert not diffs, (
                f"after command {self.commands} ({what}), slot {slot.slot_id} at epoch "
                f"{self.epoch}: live != fold: " + "; ".join(diffs)
            )
        if self.fold.max_epoch is not None:
            assert self.fold.max_epoch == self.epoch, (self.fold.max_epoch, self.epoch)
        if self.commands % FULL_FOLD_EVERY == 0:
            self.check_full_fold(what)

    def check_full_fold(self, what: str) -> None:
        full = replay_run(self.ledger, self.run_id, use_snapshots=False)
        for slot in self.slots:
            diffs = differences(slot.state, full.slot(slot.slot_id))
            assert not diffs, f"full fold after {what}, slot {slot.slot_id}: " + "; ".join(diffs)

    # -- one command ------------------------------------------------------------------

    def step(self) -> None:
        """Send one random command, then compare every slot with the fold."""
        rng = self.rng
        slot = rng.choice(self.slots)
        names, weights = zip(*COMMANDS, strict=True)
        if rng.random() < 0.6:  # mostly what the slot's stage allows, so seeds get far
            name = rng.choice(PLAUSIBLE[slot.stage])
        else:  # else anything at all, to be refused
            name = rng.choices(names, weights)[0]
        self.commands += 1
        if name == "epoch":
            self.epoch_command()
            self.outcomes["epoch"] += 1
        else:
            self.slot_command(name, slot)
        self.sync()
        self.check(name)
        cycling = [s for s in self.slots if s.stage is not SeedStage.FOSSILIZED]
        if len(cycling) < len(SPECS) and len(self.slots) < MAX_SLOTS:
            # a fossil is forever: a fresh slot (never pooled) takes its place in the loop
            self._add_slot(self.rng.choice((SPECS[0], SPECS[3])))
            self.sync()
            self.check("new slot")

    def slot_command(self, name: str, slot: SeedSlot) -> None:
        states = [s.state for s in self.slots]
        rows = self.new_rows_anywhere()
        before = slot.stage
        try:
            declined = getattr(self, f"do_{name}")(slot) is False
        except REFUSALS as exc:
            self.outcomes[f"{name} refused ({type(exc).__name__})"] += 1
            declined = True
        else:
            if not declined:
                self.outcomes[name] += 1
            else:
                self.outcomes[f"{name} declined"] += 1
        if declined:
            assert all(s.state is old for s, old in zip(self.slots, states, strict=True)), name
            assert self.new_rows_anywhere() == rows, f"refused {name} recorded events"
            assert slot.stage is before

    # -- the commands -------------------------------------------------------------------

    def epoch_command(self) -> None:
        """Measure + step + sample for every slot, then `EpochCompleted`, at a new epoch."""
        rng = self.rng
        self.epoch += rng.choice((1, 1, 1, 1, 2, 3))
        accuracy = round(rng.uniform(40.0, 95.0), 4)
        for slot in self.slots:
            counterfactual = None
            if slot.seed is not None and rng.random() < 0.8:
                counterfactual = round(rng.uniform(-1.0, 3.0), 4)
            if slot.seed is not None:
                self.gradients(slot)  # what capture_gradients measures during the epoch
            slot.step_epoch(accuracy=accuracy, counterfactual=counterfactual, epoch=self.epoch)
            emit_sample(self.recorder, slot, self.epoch)
        self.recorder.emit(EpochCompleted(val_accuracy=accuracy), stream_id="run", epoch=self.epoch)

    def gradients(self, slot: SeedSlot) -> None:
        rng = self.rng
        slot.measure(
            grad_ratio=round(rng.uniform(0.0, 1.0), 4),
            grad_health=round(rng.uniform(0.5, 1.0), 3),
            has_exploding=rng.random() < 0.1,
            has_vanishing=rng.random() < 0.1,
        )

    def do_germinate(self, slot: SeedSlot) -> None:
        rng = self.rng
        names = blueprint_names(slot.topology)
        blueprint = rng.choice(names)
        if rng.random() < 0.05:  # one of the other topology's: UnknownBlueprint
            other: Topology = "transformer" if slot.topology == "cnn" else "cnn"
            blueprint = rng.choice([n for n in blueprint_names(other) if n not in names])
        self.planted += 1
        slot.germinate(
            blueprint,
            f"seed-{self.planted}",
            init_seed=rng.choice((None, rng.randrange(2**31))),
            alpha_target=rng.choice((1.0, 1.0, 1.0, 0.75, 0.5, 0.0, 1.5)),
            tempo=rng.randint(0, 4),
            curve=rng.choice(list(AlphaCurve)),
        )

    def do_advance(self, slot: SeedSlot) -> bool:
        rng = self.rng
        before = slot.stage
        legal = [t for t in TRANSITIONS[before] if not is_failure(t)]
        target = rng.choice([None, *SeedStage, *legal, *legal])
        if target is SeedStage.FOSSILIZED and rng.random() < 0.8:
            target = None  # a fossil is forever: keep the slots cycling for longer
        rows = self.new_rows_anywhere()
        result = slot.advance_stage(target, trigger=rng.choice(("command", "gate")))
        if not result.passed:
            assert slot.stage is before
            assert self.new_rows_anywhere() == rows + 1, "a failed gate is one verdict"
            self.outcomes[f"advance gate {result.gate} failed"] += 1
        return True

    def do_prune(self, slot: SeedSlot) -> bool:
        return slot.prune(self.rng.choice(("no_gain", "random")), initiator="policy")

    def do_schedule_prune(self, slot: SeedSlot) -> bool:
        rng = self.rng
        return slot.schedule_prune(
            rng.randint(-1, 3),
            curve=rng.choice(list(AlphaCurve)),
            steepness=rng.choice((12.0, 4.0)),
            reason="fade_out",
        )

    def do_set_alpha_target(self, slot: SeedSlot) -> None:
        rng = self.rng
        slot.set_alpha_target(
            rng.choice((1.0, 1.0, 0.5, 0.25, 0.0, 1.25)),
            rng.randint(0, 3),
            curve=rng.choice(list(AlphaCurve)),
        )

    def do_measure(self, slot: SeedSlot) -> None:
        """Measure + sample: any subset of the measured numbers, awkward floats included."""
        rng = self.rng
        values: dict[str, float | bool | None] = {}
        if rng.random() < 0.5:
            values["accuracy"] = rng.choice((round(rng.uniform(40.0, 95.0), 4), *ODD_FLOATS))
        if rng.random() < 0.3:
            values["counterfactual"] = round(rng.uniform(-1.0, 3.0), 4)
        if rng.random() < 0.8:
            values["grad_health"] = rng.choice((round(rng.uniform(0.5, 1.0), 3), None, math.nan))
            values["has_exploding"] = rng.random() < 0.1
            values["has_vanishing"] = rng.choice((False, True, None))
        if rng.random() < 0.5:
            values["grad_ratio"] = rng.choice((round(rng.uniform(0.0, 1.0), 4), *ODD_FLOATS))
        slot.measure(**values)
        emit_sample(self.recorder, slot, self.epoch)

    def do_restep(self, slot: SeedSlot) -> None:
        """step_epoch at the current epoch: no tick, only numbers measured (+ sample)."""
        rng = self.rng
        slot.step_epoch(
            accuracy=round(rng.uniform(40.0, 95.0), 4),
            counterfactual=rng.choice((None, round(rng.uniform(-1.0, 3.0), 4))),
            epoch=self.epoch,
        )
        emit_sample(self.recorder, slot, self.epoch)

    def do_past_step(self, slot: SeedSlot) -> None:
        """A step into the past: always refused (SlotError)."""
        slot.step_epoch(accuracy=50.0, epoch=self.epoch - 1)
        raise AssertionError(f"slot {slot.slot_id} stepped back to epoch {self.epoch - 1}")

    def do_force_alpha(self, slot: SeedSlot) -> bool:
        """A forced alpha changes no state and records nothing; nested is refused."""
        value = self.rng.random()
        with slot.force_alpha(value):
            assert slot.alpha == value
            if self.rng.random() < 0.3:
                with slot.force_alpha(0.0):
                    raise AssertionError("a nested force_alpha was accepted")
        return False


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(f"sqlite:///{tmp_path / 'x.db'}") as led:
        yield led


@pytest.mark.parametrize(("seed", "buffer_size"), [(1, 0), (2, 0), (4, 16)])
def test_live_state_equals_fold_after_every_command(
    ledger: Ledger, seed: int, buffer_size: int
) -> None:
    driver = Driver(ledger, seed, buffer_size)
    while driver.commands < MIN_COMMANDS:
        driver.step()
    driver.run.finish()
    driver.sync()
    driver.check("finish")
    driver.check_full_fold("finish")
    assert ledger.verify(driver.run_id).ok
    outcomes = driver.outcomes

    assert driver.commands >= MIN_COMMANDS
    assert len(driver.slots) >= 3
    assert driver.stages_seen >= ALL_STAGES, sorted(ALL_STAGES - driver.stages_seen)
    events = list(ledger.read(driver.run_id))
    moves = Counter(
        (e.payload.from_stage, e.payload.to_stage)
        for e in events
        if isinstance(e.payload, SeedStageChanged)
    )
    # every edge of the table was taken, most of them many times
    assert set(moves) == set(edges()) - {(SeedStage.UNKNOWN, SeedStage.DORMANT)}, moves
    recycled = moves[SeedStage.RESETTING, SeedStage.DORMANT]
    assert recycled >= 10, moves
    assert outcomes["germinate"] > recycled, outcomes  # recycled slots germinated again
    faded = [e for e in events if isinstance(e.payload, SeedPruned) and e.payload.scheduled]
    assert len(faded) >= 3, "fade-outs that ended in step_epoch"
    refused = sum(n for k, n in outcomes.items() if "refused" in k)
    failed_gates = sum(n for k, n in outcomes.items() if "gate" in k)
    assert refused >= 100 and failed_gates >= 5, outcomes


# -- numbers no sample carries ---------------------------------------------------


def _blending(slot: SeedSlot, *, tempo: int = 1) -> SeedSlot:
    """The slot's seed measured healthy and blended in to alpha 1.0 at epoch 1."""
    recorder = slot.recorder
    assert recorder is not None
    slot.germinate("conv_small", "s1", init_seed=1, tempo=tempo)
    slot.measure(grad_health=1.0, has_exploding=False)
    emit_sample(recorder, slot, 0)
    assert slot.advance_stage(SeedStage.TRAINING).passed
    assert slot.advance_stage(SeedStage.BLENDING).passed
    slot.step_epoch(epoch=1)
    emit_sample(recorder, slot, 1)
    assert slot.alpha == 1.0
    return slot


def _fold_differences(ledger: Ledger, run_id: str, slot: SeedSlot) -> list[str]:
    return differences(slot.state, ledger.replay(run_id, snapshots=False).slot(slot.slot_id))


class TestNumbersNoSampleCarries:
    """Numbers measured after a seed's last sample, when the seed is pruned before the next.

    No event carries them, so the PRUNED move sets the seed's numbers to what
    it recorded (live and folded alike), and a slot without a seed refuses a
    measurement. Each case once left the live state holding a number the fold
    could not know, until the DORMANT move cleared it.
    """

    def test_gradients_of_the_epoch_whose_step_ends_a_fade_out(self, ledger: Ledger) -> None:
        run = ledger.start_run("gap", seed=0)
        slot = _blending(SeedSlot("a", 4, recorder=run.recorder, gates=EASY))
        assert slot.schedule_prune(1)
        slot.measure(grad_ratio=0.5, grad_health=0.9)  # capture_gradients during epoch 2
        slot.step_epoch(epoch=2)  # the fade ends at alpha 0: pruned, no seed, no sample
        emit_sample(run.recorder, slot, 2)
        assert slot.stage is SeedStage.PRUNED
        assert _fold_differences(ledger, run.run_id, slot) == []

    def test_first_accuracy_given_to_the_step_that_ends_a_fade_out(self, ledger: Ledger) -> None:
        run = ledger.start_run("gap", seed=0)
        slot = _blending(SeedSlot("a", 4, recorder=run.recorder, gates=EASY))
        assert slot.schedule_prune(1)
        slot.step_epoch(epoch=2, accuracy=70.0)
        assert slot.stage is SeedStage.PRUNED
        assert _fold_differences(ledger, run.run_id, slot) == []

    def test_gradients_measured_just_before_a_prune(self, ledger: Ledger) -> None:
        run = ledger.start_run("gap", seed=0)
        slot = _blending(SeedSlot("a", 4, recorder=run.recorder, gates=EASY))
        slot.measure(grad_ratio=0.5)
        assert slot.prune("no_gain")
        assert _fold_differences(ledger, run.run_id, slot) == []

    @pytest.mark.parametrize("stage", [SeedStage.DORMANT, SeedStage.PRUNED])
    def test_a_slot_without_a_seed_refuses_a_measurement(
        self, ledger: Ledger, stage: SeedStage
    ) -> None:
        run = ledger.start_run("gap", seed=0)
        slot = SeedSlot("a", 4, recorder=run.recorder, gates=EASY)
        if stage is SeedStage.PRUNED:
            slot.germinate("conv_small", "s1", init_seed=1)
            assert slot.prune("no_gain")
        before = slot.state
        with pytest.raises(SlotError, match="no seed to measure"):
            slot.measure(grad_health=0.5)
        assert slot.state is before
        assert _fold_differences(ledger, run.run_id, slot) == []
