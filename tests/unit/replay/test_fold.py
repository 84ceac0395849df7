"""The fold on small hand-made logs (SQLite): legality, order, chain checks, cuts, ticks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import rawdb
from helpers import sample, stage_change

from kasmina.alpha import AlphaCurve, AlphaMode
from kasmina.errors import ReplayError, RunNotFound, UnverifiedRun
from kasmina.events import (
    AlphaTargetSet,
    EpochCompleted,
    SeedGerminated,
    SeedStageChanged,
    make_event,
    slot_stream,
)
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger, Run
from kasmina.replay.live import live_state
from kasmina.runtime.slot import SeedSlot
from kasmina.runtime.telemetry import emit_sample
from kasmina.slot_state import ControllerState, SlotState
from kasmina.stages import SeedStage

EASY = QualityGates(permissive=True, min_training_epochs=1, min_blending_epochs=0)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database per module, copied per test: migrating costs more than a test."""
    path = tmp_path_factory.mktemp("fold") / "template.db"
    Ledger.open(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def sqlite_url(template: Path, tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Ledger]:
    led = Ledger.open(sqlite_url)
    yield led
    led.close()


@pytest.fixture
def run(ledger: Ledger) -> Run:
    return ledger.start_run("fold", seed=3, config={"lr": 0.1})


def last_position(ledger: Ledger, run_id: str) -> int:
    return max(e.position for e in ledger.read(run_id))


def germinated(slot: str) -> SeedGerminated:
    return SeedGerminated(slot_id=slot, blueprint_id="conv_small", params=8, init_seed=5)


def plant(ledger: Ledger, run_id: str, slot: str = "a", epoch: int = 0) -> None:
    """A legal DORMANT -> GERMINATED appended by hand, as the runtime records it."""
    ledger.append(
        [
            make_event(
                germinated(slot),
                run_id=run_id,
                stream_id=slot_stream(slot),
                epoch=epoch,
                seed_id="s1",
            ),
            stage_change(run_id, slot, SeedStage.DORMANT, SeedStage.GERMINATED, epoch=epoch),
        ]
    )


def healthy(slot: SeedSlot) -> None:
    slot.measure(grad_health=1.0, has_exploding=False)


def blending_slot(
    run: Run, slot_id: str = "a", *, tempo: int = 6, curve: AlphaCurve = AlphaCurve.LINEAR
) -> SeedSlot:
    """A real slot driven to BLENDING at epoch 2 (its ramp starts there), sampled as it goes."""
    slot = SeedSlot(slot_id, 4, recorder=run.recorder, gates=EASY)
    slot.germinate("conv_small", f"seed-{slot_id}", init_seed=3, tempo=tempo, curve=curve)
    slot.step_epoch(accuracy=50.0, epoch=1)
    emit_sample(run.recorder, slot, 1)
    assert slot.advance_stage(SeedStage.TRAINING).passed
    healthy(slot)
    slot.step_epoch(accuracy=51.0, epoch=2)
    emit_sample(run.recorder, slot, 2)
    assert slot.advance_stage(SeedStage.BLENDING).passed
    assert slot.controller.mode is AlphaMode.UP
    return slot


def epoch_done(run: Run, epoch: int) -> None:
    run.recorder.emit(EpochCompleted(val_accuracy=0.5), stream_id="run", epoch=epoch)


class TestIllegalEvents:
    def test_illegal_move_stops_the_fold_naming_its_position(
        self, ledger: Ledger, run: Run
    ) -> None:
        ledger.append([sample(run.run_id, "a", epoch=0)])
        ledger.append([stage_change(run.run_id, "a", SeedStage.DORMANT, SeedStage.BLENDING)])
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError) as info:
            ledger.replay(run.run_id)
        message = str(info.value)
        assert message.startswith(f"position {bad}: ")
        assert "DORMANT -> BLENDING" in message and "illegal" in message
        assert info.value.position == bad
        assert not isinstance(info.value, UnverifiedRun)

    def test_fold_stops_at_the_first_bad_event_but_the_prefix_still_folds(
        self, ledger: Ledger, run: Run
    ) -> None:
        plant(ledger, run.run_id)
        good = last_position(ledger, run.run_id)
        ledger.append([stage_change(run.run_id, "a", SeedStage.GERMINATED, SeedStage.HOLDING)])
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError, match=rf"^position {bad}: .*GERMINATED -> HOLDING"):
            ledger.replay(run.run_id)
        assert ledger.replay(run.run_id, until_position=good)["a"].stage is SeedStage.GERMINATED

    def test_from_stage_not_matching_the_current_stage_is_out_of_order(
        self, ledger: Ledger, run: Run
    ) -> None:
        plant(ledger, run.run_id)
        # a legal edge of the table, but the slot is at GERMINATED, not TRAINING
        ledger.append([stage_change(run.run_id, "a", SeedStage.TRAINING, SeedStage.BLENDING)])
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError) as info:
            ledger.replay(run.run_id)
        assert str(info.value).startswith(f"position {bad}: ")
        assert "out of order" in str(info.value) and "GERMINATED" in str(info.value)

    def test_the_same_move_twice_is_out_of_order(self, ledger: Ledger, run: Run) -> None:
        plant(ledger, run.run_id)
        move = stage_change(run.run_id, "a", SeedStage.GERMINATED, SeedStage.TRAINING)
        again = stage_change(run.run_id, "a", SeedStage.GERMINATED, SeedStage.TRAINING)
        ledger.append([move])
        ledger.append([again])
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError, match=rf"^position {bad}: .*out of order"):
            ledger.replay(run.run_id)

    def test_epoch_going_backwards_in_a_slot_stream_is_out_of_order(
        self, ledger: Ledger, run: Run
    ) -> None:
        ledger.append([sample(run.run_id, "a", epoch=5)])
        ledger.append([sample(run.run_id, "a", epoch=3)])
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError) as info:
            ledger.replay(run.run_id)
        assert str(info.value).startswith(f"position {bad}: ")
        assert "epoch 3 after epoch 5" in str(info.value)

    def test_epochs_going_backwards_across_streams_are_fine(self, ledger: Ledger, run: Run) -> None:
        ledger.append([sample(run.run_id, "a", epoch=5)])
        ledger.append([sample(run.run_id, "b", epoch=3)])
        state = ledger.replay(run.run_id)
        assert state.run.events == 3

    def test_germination_without_its_seed_germinated_event_is_refused(
        self, ledger: Ledger, run: Run
    ) -> None:
        ledger.append([stage_change(run.run_id, "a", SeedStage.DORMANT, SeedStage.GERMINATED)])
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError, match=rf"^position {bad}: .*without a SeedGerminated"):
            ledger.replay(run.run_id)

    def test_a_second_seed_germinated_in_an_occupied_slot_is_refused(
        self, ledger: Ledger, run: Run
    ) -> None:
        plant(ledger, run.run_id)
        ledger.append(
            [
                make_event(
                    germinated("a"), run_id=run.run_id, stream_id=slot_stream("a"), seed_id="s2"
                )
            ]
        )
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError, match=rf"^position {bad}: .*GERMINATED"):
            ledger.replay(run.run_id)

    def test_an_alpha_target_outside_blending_or_holding_is_refused(
        self, ledger: Ledger, run: Run
    ) -> None:
        plant(ledger, run.run_id)
        target = AlphaTargetSet(
            slot_id="a",
            alpha_start=0.0,
            target=1.0,
            steps=3,
            curve="LINEAR",
            steepness=12.0,
            mode="UP",
        )
        ledger.append([make_event(target, run_id=run.run_id, stream_id=slot_stream("a"))])
        bad = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError, match=rf"^position {bad}: .*alpha target"):
            ledger.replay(run.run_id)


class TestChain:
    def tamper(self, url: str, position: int) -> None:
        rawdb.drop_triggers(url)
        rawdb.run(
            url,
            "UPDATE events SET payload = replace(payload, '\"accuracy\":51,', "
            "'\"accuracy\":99.5,') WHERE position = ?",
            (position,),
        )

    def test_tampered_row_is_refused_naming_its_position_and_trust_folds_it(
        self, ledger: Ledger, run: Run, sqlite_url: str
    ) -> None:
        slot = blending_slot(run)
        emit_sample(run.recorder, slot, 2)
        target = last_position(ledger, run.run_id)
        epoch_done(run, 2)
        self.tamper(sqlite_url, target)
        assert '"accuracy":99.5' in str(
            rawdb.run(sqlite_url, "SELECT payload FROM events WHERE position = ?", (target,))[0][0]
        )
        with pytest.raises(UnverifiedRun) as info:
            ledger.replay(run.run_id)
        assert str(info.value).startswith(f"position {target}: ")
        assert "hash_mismatch" in str(info.value)
        assert info.value.position == target
        trusted = ledger.replay(run.run_id, trust=True)
        assert trusted["a"].metrics.accuracy == 99.5
        assert trusted["a"].stage is SeedStage.BLENDING
        assert not ledger.verify(run.run_id).ok

    def test_a_cut_before_the_tampered_row_still_folds(
        self, ledger: Ledger, run: Run, sqlite_url: str
    ) -> None:
        slot = blending_slot(run)
        before = last_position(ledger, run.run_id)
        emit_sample(run.recorder, slot, 2)
        self.tamper(sqlite_url, last_position(ledger, run.run_id))
        assert ledger.replay(run.run_id, until_position=before)["a"].stage is SeedStage.BLENDING
        with pytest.raises(UnverifiedRun):
            ledger.replay(run.run_id, until_position=before + 1)

    def test_trust_still_checks_legality(self, ledger: Ledger, run: Run, sqlite_url: str) -> None:
        plant(ledger, run.run_id)
        bad = last_position(ledger, run.run_id)
        rawdb.drop_triggers(sqlite_url)
        rawdb.run(
            sqlite_url,
            "UPDATE events SET payload = replace(payload, "
            '\'"to_stage":"GERMINATED"\', \'"to_stage":"SHADOWING"\') '
            "WHERE position = ?",
            (bad,),
        )
        with pytest.raises(UnverifiedRun, match=rf"^position {bad}: "):
            ledger.replay(run.run_id)
        with pytest.raises(ReplayError, match=rf"^position {bad}: .*malformed") as info:
            ledger.replay(run.run_id, trust=True)
        assert not isinstance(info.value, UnverifiedRun)

    def test_deleted_row_breaks_the_chain_at_the_next_one(
        self, ledger: Ledger, run: Run, sqlite_url: str
    ) -> None:
        ledger.append([sample(run.run_id, "a", epoch=e) for e in range(3)])
        rows = [e.position for e in ledger.read(run.run_id, stream_id=slot_stream("a"))]
        rawdb.drop_triggers(sqlite_url)
        rawdb.run(sqlite_url, "DELETE FROM events WHERE position = ?", (rows[1],))
        with pytest.raises(UnverifiedRun, match=rf"^position {rows[2]}: "):
            ledger.replay(run.run_id)
        assert ledger.replay(run.run_id, trust=True).run.events == 3


class TestCuts:
    def test_both_cuts_at_once_is_an_error(self, ledger: Ledger, run: Run) -> None:
        epoch_done(run, 0)
        with pytest.raises(ReplayError, match="not both"):
            ledger.replay(run.run_id, until_epoch=0, until_position=10**9)

    def test_unknown_run(self, ledger: Ledger) -> None:
        with pytest.raises(RunNotFound):
            ledger.replay("no-such-run")

    def test_cut_before_the_run_began_is_an_error(self, ledger: Ledger, run: Run) -> None:
        first = last_position(ledger, run.run_id)
        with pytest.raises(ReplayError, match="no events before the cut"):
            ledger.replay(run.run_id, until_position=first - 1)

    def test_run_started_only(self, ledger: Ledger, run: Run) -> None:
        state = ledger.replay(run.run_id)
        assert dict(state) == {}
        assert state.run.run_id == run.run_id
        assert state.run.name == "fold" and state.run.seed == 3
        assert state.run.config == {"lr": 0.1}
        assert state.run.started["name"] == "fold"
        assert state.run.status == "open"
        assert state.run.epoch is None
        assert state.run.events == 1
        assert state.position == last_position(ledger, run.run_id)
        assert state.slot("b1") == SlotState("b1")
        run.finish()
        finished = ledger.replay(run.run_id)
        assert finished.run.status == "completed" and finished.run.events == 2

    def test_other_runs_events_are_not_folded(self, ledger: Ledger, run: Run) -> None:
        other = ledger.start_run("other", seed=4)
        plant(ledger, other.run_id, "a")
        ledger.append([sample(run.run_id, "z", epoch=1)])
        plant(ledger, other.run_id, "b")
        state = ledger.replay(run.run_id)
        assert list(state) == ["z"] and state.run.events == 2
        assert set(ledger.replay(other.run_id)) == {"a", "b"}

    def test_until_position_gives_the_state_right_after_each_event(
        self, ledger: Ledger, run: Run
    ) -> None:
        slot = blending_slot(run)
        slot.step_epoch(accuracy=52.0, epoch=3)
        slot.prune("enough")
        events = list(ledger.read(run.run_id))
        moves = [e for e in events if isinstance(e.payload, SeedStageChanged)]
        assert [m.payload.to_stage.name for m in moves] == [  # type: ignore[attr-defined]
            "GERMINATED",
            "TRAINING",
            "BLENDING",
            "PRUNED",
        ]
        for count, event in enumerate(events, start=1):
            state = ledger.replay(run.run_id, until_position=event.position)
            assert state.position == event.position
            assert state.run.events == count
        for move in moves:
            state = ledger.replay(run.run_id, until_position=move.position)
            assert state["a"].stage is move.payload.to_stage  # type: ignore[attr-defined]
            assert state["a"].epoch == move.epoch

    def test_until_epoch_equals_the_live_slot_at_the_end_of_each_epoch(
        self, ledger: Ledger, run: Run
    ) -> None:
        slot = SeedSlot("a", 4, recorder=run.recorder, gates=EASY, embargo_epochs=2)
        live: dict[int, SlotState] = {}
        slot.germinate("norm", "seed-a", init_seed=11, tempo=3, curve=AlphaCurve.COSINE)
        plan = {1: SeedStage.TRAINING, 3: SeedStage.BLENDING, 7: SeedStage.HOLDING}
        for epoch in range(14):
            if slot.seed is not None:
                healthy(slot)
            slot.step_epoch(accuracy=50.0 + epoch, epoch=epoch)
            emit_sample(run.recorder, slot, epoch)
            if epoch in plan:
                assert slot.advance_stage(plan[epoch]).passed
            if epoch == 8:
                slot.prune("done")
            epoch_done(run, epoch)
            live[epoch] = live_state(slot)
        assert slot.stage is SeedStage.DORMANT  # pruned, embargoed, reset
        seen = set()
        for epoch, expected in live.items():
            folded = ledger.replay(run.run_id, until_epoch=epoch)
            assert folded.slot("a") == expected, epoch
            assert folded.run.epoch == epoch
            seen.add(expected.stage)
        assert seen >= {
            SeedStage.TRAINING,
            SeedStage.BLENDING,
            SeedStage.HOLDING,
            SeedStage.PRUNED,
            SeedStage.EMBARGOED,
            SeedStage.RESETTING,
        }

    def test_until_epoch_past_the_end_stops_at_the_last_epoch(
        self, ledger: Ledger, run: Run
    ) -> None:
        blending_slot(run)
        epoch_done(run, 2)
        assert ledger.replay(run.run_id, until_epoch=50) == ledger.replay(run.run_id)
        assert ledger.replay(run.run_id, until_epoch=50).run.epoch == 2


class TestTicks:
    def test_alpha_ramp_and_epochs_in_stage_advance_by_elapsed_epochs(
        self, ledger: Ledger, run: Run
    ) -> None:
        slot = blending_slot(run, tempo=6, curve=AlphaCurve.COSINE)
        epoch_done(run, 2)
        at_blend = ledger.replay(run.run_id, until_epoch=2)["a"]
        assert at_blend.controller.steps_done == 0 and at_blend.epochs_in_stage == 0
        slot.step_epoch(epoch=5)  # three epochs in one step; the slot records nothing
        epoch_done(run, 5)  # only the run stream says the time has come
        folded = ledger.replay(run.run_id, until_epoch=5)["a"]
        assert folded.controller == ControllerState.of(slot.controller)
        assert folded.controller.steps_done == 3
        assert 0.0 < folded.alpha < 1.0
        assert folded.epochs_in_stage == slot.state.epochs_in_stage == 3
        assert folded.epochs_total == slot.state.epochs_total
        assert folded.epoch == 5
        assert folded == live_state(slot)
        assert ledger.replay(run.run_id)["a"] == folded

    def test_a_position_cut_adds_no_ticks_beyond_what_was_recorded(
        self, ledger: Ledger, run: Run
    ) -> None:
        blending_slot(run, tempo=6)
        epoch_done(run, 5)
        at = ledger.replay(run.run_id, until_position=last_position(ledger, run.run_id))
        assert at["a"].epoch == 2 and at["a"].controller.steps_done == 0
        assert at.run.epoch == 5

    def test_the_ramp_lands_exactly_on_its_target_after_a_long_gap(
        self, ledger: Ledger, run: Run
    ) -> None:
        slot = blending_slot(run, tempo=4, curve=AlphaCurve.SIGMOID)
        slot.step_epoch(accuracy=60.0, epoch=40)
        emit_sample(run.recorder, slot, 40)
        folded = ledger.replay(run.run_id)["a"]
        assert folded.controller.alpha == 1.0 and folded.controller.mode == "HOLD"
        assert folded.controller == ControllerState.of(slot.controller)
        assert folded.epochs_in_stage == 38 and folded.stage is SeedStage.BLENDING
        assert folded.metrics.accuracy == 60.0

    def test_ticks_of_one_slot_do_not_move_another(self, ledger: Ledger, run: Run) -> None:
        a = blending_slot(run, "a", tempo=6)
        b = blending_slot(run, "b", tempo=6)
        a.step_epoch(epoch=4)
        emit_sample(run.recorder, a, 4)
        at = ledger.replay(run.run_id, until_position=last_position(ledger, run.run_id))
        assert at["a"].controller.steps_done == 2 and at["b"].controller.steps_done == 0
        b.step_epoch(epoch=4)
        assert ledger.replay(run.run_id, until_epoch=4)["b"].controller == ControllerState.of(
            b.controller
        )

    def test_a_new_alpha_target_from_holding_ramps_from_where_it_was(
        self, ledger: Ledger, run: Run
    ) -> None:
        slot = blending_slot(run, tempo=2)
        slot.step_epoch(epoch=4)
        assert slot.advance_stage(SeedStage.HOLDING).passed
        slot.set_alpha_target(0.5, 4, curve=AlphaCurve.SIGMOID)  # back to BLENDING
        assert slot.stage is SeedStage.BLENDING
        slot.step_epoch(epoch=6)
        epoch_done(run, 6)
        folded = ledger.replay(run.run_id)["a"]
        assert folded.stage is SeedStage.BLENDING
        assert folded.controller == ControllerState.of(slot.controller)
        assert folded.controller.mode == "DOWN" and folded.controller.steps_done == 2
        assert folded == live_state(slot)

    def test_a_scheduled_prune_completing_inside_step_epoch_matches_the_live_slot(
        self, ledger: Ledger, run: Run
    ) -> None:
        """Invariant 6: the fold equals the live slot at the end of every epoch.

        The fade-out reaches alpha 0 inside `step_epoch`, which first takes that
        epoch's accuracy and counterfactual and then prunes the seed; the epoch's
        telemetry sample is then skipped (the slot holds no seed any more), so
        the fold must read those numbers from the prune's own records.
        """
        slot = blending_slot(run, tempo=1)
        for epoch in (3, 4):
            slot.step_epoch(accuracy=50.0 + epoch, counterfactual=0.5 + epoch, epoch=epoch)
            emit_sample(run.recorder, slot, epoch)
            epoch_done(run, epoch)
        assert slot.controller.alpha == 1.0
        assert slot.schedule_prune(1, reason="fade_out")
        slot.step_epoch(accuracy=77.0, counterfactual=-0.25, epoch=5)
        emit_sample(run.recorder, slot, 5)  # records nothing: the seed is gone
        epoch_done(run, 5)
        assert slot.stage is SeedStage.PRUNED
        folded = ledger.replay(run.run_id, until_epoch=5)["a"]
        assert folded.stage is SeedStage.PRUNED and folded.pending_prune is None
        assert folded == live_state(slot)
