"""Replay end to end: live == folded, snapshots as a pure cache, restore into torch slots.

Runs are recorded by real `SeedSlot`s into real databases. Two kinds of run:
`kasmina.replay.synthetic.synthetic_run`, and `drive` below, which also takes
seeds through BLENDING, HOLDING and FOSSILIZED (it gives seeds the gradient
health that training would measure, which the permissive G2 gate asks for).
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import rawdb
import torch

from kasmina.alpha import AlphaCurve, AlphaMode
from kasmina.errors import ReplayError, UnverifiedRun
from kasmina.events import EpochCompleted
from kasmina.gates import QualityGates
from kasmina.ledger import Ledger, migrate, snapshots
from kasmina.ledger.snapshots import SnapshotWarning
from kasmina.replay import ReplayState, snapshot_run
from kasmina.replay.live import LiveStates, check_live, live_state, restore
from kasmina.replay.synthetic import BLUEPRINTS, CHANNELS, synthetic_run
from kasmina.runtime.blocks import BlockPool
from kasmina.runtime.blueprints import build_blueprint, param_digest
from kasmina.runtime.memory import MemoryGovernor, TTLMemoryCache
from kasmina.runtime.slot import SeedSlot
from kasmina.runtime.telemetry import emit_sample
from kasmina.stages import SeedStage

GATES = QualityGates(permissive=True, min_training_epochs=2, min_blending_epochs=2)
EMBARGO = 2
ALL_STAGES = set(SeedStage) - {SeedStage.UNKNOWN}
LIVE_SEED_STAGES = {
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
}


# -- recording runs -------------------------------------------------------------


class Policy:
    """Random commands covering every move; fade-outs (ramped prunes) only if asked."""

    def __init__(self, rng: random.Random, *, fade_outs: bool) -> None:
        self.rng = rng
        self.fade_outs = fade_outs
        self.planted = 0

    def fade(self, slot: SeedSlot, reason: str) -> None:
        slot.schedule_prune(self.rng.randint(1, 3) if self.fade_outs else 0, reason=reason)

    def act(self, slot: SeedSlot) -> None:
        rng, stage = self.rng, slot.stage
        roll = rng.random()
        if stage is SeedStage.DORMANT and roll < 0.5:
            self.planted += 1
            slot.germinate(
                rng.choice(BLUEPRINTS),
                f"seed-{self.planted}",
                init_seed=rng.randrange(2**31),
                tempo=rng.randint(1, 4),
                curve=rng.choice(list(AlphaCurve)),
                alpha_target=rng.choice((1.0, 1.0, 0.75)),
            )
        elif stage in (SeedStage.GERMINATED, SeedStage.TRAINING) and roll < 0.04:
            slot.prune("impatient", initiator="policy")
        elif stage is SeedStage.BLENDING and slot.controller.mode is AlphaMode.HOLD and roll < 0.3:
            if roll < 0.15:
                slot.set_alpha_target(1.0, rng.randint(0, 3), curve=AlphaCurve.COSINE)
            else:
                self.fade(slot, "fade_out")
        elif stage is SeedStage.HOLDING and roll < 0.6:
            if roll < 0.04:
                assert slot.advance_stage(SeedStage.FOSSILIZED).passed
            elif roll < 0.25:
                slot.set_alpha_target(0.5, rng.randint(1, 3), curve=AlphaCurve.SIGMOID)
            elif roll < 0.4:
                self.fade(slot, "holding_too_long")
            else:
                slot.prune("no_gain", initiator="policy")


@dataclass
class Recorded:
    url: str
    run_id: str
    live: LiveStates
    slots: list[SeedSlot]


def drive(
    ledger: Ledger,
    *,
    epochs: int,
    slots: int = 5,
    seed: int = 0,
    fade_outs: bool = True,
    on_epoch: Callable[[str, int], None] | None = None,
) -> Recorded:
    """Record a run of real slots; the live state of every slot is kept per epoch."""
    rng = random.Random(seed)
    run = ledger.start_run("driven", seed=seed, config={"epochs": epochs}, buffer_size=400)
    recorder = run.recorder
    pool = BlockPool(4 * slots, (2,))
    slot_list = [
        SeedSlot(
            f"s{i}",
            CHANNELS,
            recorder=recorder,
            gates=GATES,
            auto_advance=True,
            embargo_epochs=EMBARGO,
            pool=pool,
            blocks_per_seed=2,
        )
        for i in range(slots)
    ]
    now = [0.0]
    governor = MemoryGovernor(
        recorder,
        gc_period=25,
        caches=[TTLMemoryCache[str, int]("kernels", ttl=3.0, clock=lambda: now[0])],
    )
    policy = Policy(rng, fade_outs=fade_outs)
    live: LiveStates = {}
    epoch = -1
    for _ in range(epochs):
        epoch += rng.choice((1, 1, 1, 2))  # some epochs pass with no record at all
        accuracy = round(50.0 + 40.0 * rng.random(), 4)
        for slot in slot_list:
            if slot.seed is not None and slot.stage is SeedStage.TRAINING:
                # what capture_gradients would measure in real training
                slot.measure(
                    grad_health=round(rng.uniform(0.7, 1.0), 3),
                    has_exploding=False,
                    has_vanishing=False,
                )
            counterfactual = None
            if slot.seed is not None and slot.stage in (SeedStage.BLENDING, SeedStage.HOLDING):
                counterfactual = round(rng.uniform(-1.0, 3.0), 4)
            slot.step_epoch(accuracy=accuracy, counterfactual=counterfactual, epoch=epoch)
            emit_sample(recorder, slot, epoch)
            policy.act(slot)
            if slot.seed_id is not None:
                governor.cache("kernels").put(slot.seed_id, epoch)
        recorder.emit(EpochCompleted(val_accuracy=accuracy), stream_id="run", epoch=epoch)
        now[0] = epoch + 1.0
        governor.periodic_gc(epoch)
        recorder.flush()
        live[epoch] = {s.slot_id: live_state(s) for s in slot_list}
        if on_epoch is not None:
            on_epoch(run.run_id, epoch)
    run.finish()
    return Recorded(ledger.url, run.run_id, live, slot_list)


def stages_seen(live: LiveStates) -> set[SeedStage]:
    return {s.stage for states in live.values() for s in states.values()}


def copy_db(source: str, tmp_path: Path) -> str:
    path = tmp_path / "copy.db"
    shutil.copyfile(source.removeprefix("sqlite:///"), path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """One long synthetic run per module (read-only: tests that write work on a copy)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('synthetic') / 'run.db'}"
    live: LiveStates = {}
    with Ledger.open(url) as ledger:
        run_id = synthetic_run(ledger, epochs=300, slots=8, seed=11, capture=live)
    return Recorded(url, run_id, live, [])


@pytest.fixture(scope="module")
def driven(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """One long run through every stage, fade-outs included (read-only, like `synthetic`)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('driven') / 'run.db'}"
    with Ledger.open(url) as ledger:
        return drive(ledger, epochs=200, slots=5, seed=4)


@pytest.fixture(params=["synthetic", "driven"])
def recorded(request: pytest.FixtureRequest) -> Recorded:
    return request.getfixturevalue(str(request.param))  # type: ignore[no-any-return]


@pytest.fixture
def ledger_copy(recorded: Recorded, tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(copy_db(recorded.url, tmp_path)) as ledger:
        yield ledger


def positions(ledger: Ledger, run_id: str) -> list[int]:
    return [int(r[0]) for r in ledger.raw_rows(run_id)]  # type: ignore[call-overload]


def snapshot_rows(url: str, run_id: str) -> list[tuple[int, int | None]]:
    rows = rawdb.run(
        url, "SELECT position, epoch FROM snapshots WHERE run_id = ? ORDER BY position", (run_id,)
    )
    return [(int(p), None if e is None else int(e)) for p, e in rows]  # type: ignore[call-overload]


def fold_both_ways(
    ledger: Ledger, run_id: str, **cut: int | None
) -> tuple[ReplayState, ReplayState]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SnapshotWarning)  # an intact snapshot warns nothing
        cached = ledger.replay(run_id, **cut)  # type: ignore[arg-type]
    return cached, ledger.replay(run_id, snapshots=False, **cut)  # type: ignore[arg-type]


# -- live == folded ---------------------------------------------------------------


class TestLiveEqualsFolded:
    def test_synthetic_run_live_equals_folded_at_every_epoch(self, ledger: Ledger) -> None:
        live: LiveStates = {}
        run_id = synthetic_run(ledger, epochs=30, slots=4, seed=5, capture=live)
        assert check_live(ledger, run_id, live) == 30
        assert ledger.replay(run_id).run.status == "completed"

    def test_every_stage_live_equals_folded_at_every_epoch(self, ledger: Ledger) -> None:
        rec = drive(ledger, epochs=45, slots=4, seed=3, fade_outs=False)
        assert stages_seen(rec.live) == ALL_STAGES
        ramping = [
            s
            for states in rec.live.values()
            for s in states.values()
            if s.controller.mode != "HOLD"
        ]
        assert any(0.0 < s.alpha < 1.0 for s in ramping)
        assert {s.controller.mode for s in ramping} == {"UP", "DOWN"}
        assert check_live(ledger, rec.run_id, rec.live) == 45
        # epochs skipped by the run have no live state; the fold there equals the epoch before
        final = ledger.replay(rec.run_id)
        last = max(rec.live)
        for slot_id, state in rec.live[last].items():
            assert final.slot(slot_id) == state

    def test_live_equals_folded_through_fade_out_prunes(self, driven: Recorded) -> None:
        with Ledger.open(driven.url) as ledger:
            scheduled = [
                e
                for e in ledger.read(driven.run_id)
                if e.event_type == "SeedPruned" and e.payload.scheduled
            ]  # type: ignore[attr-defined]
            assert scheduled, "the run should complete some fade-outs"
            assert stages_seen(driven.live) == ALL_STAGES
            assert check_live(ledger, driven.run_id, driven.live) == len(driven.live)

    def test_check_live_reports_the_first_difference(self, synthetic: Recorded) -> None:
        live = {e: dict(states) for e, states in synthetic.live.items() if e < 12}
        with Ledger.open(synthetic.url) as ledger:
            assert check_live(ledger, synthetic.run_id, live) == 12
            off = live[7]["s2"]
            live[7]["s2"] = replace(off, epochs_total=off.epochs_total + 1)
            with pytest.raises(ReplayError, match="slot s2 at the end of epoch 7: epochs_total"):
                check_live(ledger, synthetic.run_id, live)

    def test_synthetic_run_visits_every_stage(self, synthetic: Recorded) -> None:
        """Its docstring: seeds "keep cycling through every stage"."""
        assert stages_seen(synthetic.live) == ALL_STAGES

    def test_run_level_state_counts_memory_events(self, driven: Recorded) -> None:
        with Ledger.open(driven.url) as ledger:
            state = ledger.replay(driven.run_id)
            _, rows = ledger.sql(
                f"SELECT reason, SUM(evicted), COUNT(*) FROM gc_evictions "
                f"WHERE run_id = '{driven.run_id}' AND cache = 'kernels' "
                "GROUP BY reason"
            )
            by_reason = {str(r[0]): int(r[1]) for r in rows}  # type: ignore[call-overload]
            released = sum(
                e.payload.blocks
                for e in ledger.read(driven.run_id)  # type: ignore[attr-defined]
                if e.event_type == "MemoryReleased"
            )
        kernels = state.run.caches["kernels"]
        assert by_reason and dict(kernels.by_reason) == by_reason
        assert kernels.evicted == sum(by_reason.values())
        assert released > 0 and state.run.blocks_released == released
        assert state.run.status == "completed" and state.run.epoch == max(driven.live)
        assert state.run.last_epoch["val_accuracy"] is not None


# -- snapshots ----------------------------------------------------------------------


class TestSnapshots:
    def test_snapshots_do_not_change_the_fold_at_random_points(
        self, recorded: Recorded, ledger_copy: Ledger
    ) -> None:
        run_id = recorded.run_id
        all_positions = positions(ledger_copy, run_id)
        saved = snapshot_run(ledger_copy, run_id, every=len(all_positions) // 15)
        assert saved >= 15 and len(snapshot_rows(ledger_copy.url, run_id)) == saved
        rng = random.Random(run_id)
        last_epoch = max(recorded.live)
        epochs = [rng.randint(0, last_epoch) for _ in range(30)] + [0, last_epoch, -1]
        points = [rng.choice(all_positions) for _ in range(30)]
        points += [all_positions[0], all_positions[-1]]
        points += [p for p, _ in snapshot_rows(ledger_copy.url, run_id)[:3]]
        for epoch in epochs:
            cached, plain = fold_both_ways(ledger_copy, run_id, until_epoch=epoch)
            assert cached == plain, f"until_epoch={epoch}"
        for position in points:
            cached, plain = fold_both_ways(ledger_copy, run_id, until_position=position)
            assert cached == plain, f"until_position={position}"
            assert cached.position == position
        cached, plain = fold_both_ways(ledger_copy, run_id)
        assert cached == plain and cached.run.status == "completed"

    def test_a_snapshot_after_every_event_changes_nothing(self, sqlite_url: str) -> None:
        """Snapshots between a batch's events too (SeedGerminated | its stage change...)."""
        with Ledger.open(sqlite_url) as ledger:
            rec = drive(ledger, epochs=15, slots=3, seed=2)
            run_id = rec.run_id
            all_positions = positions(ledger, run_id)
            assert snapshot_run(ledger, run_id, every=1) == len(all_positions)
            types = [e.event_type for e in ledger.read(run_id)]
            assert {"SeedGerminated", "AlphaTargetSet", "SeedPruned"} <= set(types)
            for position in all_positions:
                cached, plain = fold_both_ways(ledger, run_id, until_position=position)
                assert cached == plain, position
            for epoch in sorted(rec.live):
                cached, plain = fold_both_ways(ledger, run_id, until_epoch=epoch)
                assert cached == plain, epoch

    def test_fold_resumes_from_the_newest_snapshot_at_or_before_the_cut(
        self, synthetic: Recorded, tmp_path: Path
    ) -> None:
        """A snapshot re-stored with a marker (and a matching hash) shows where folds start."""
        url = copy_db(synthetic.url, tmp_path)
        run_id = synthetic.run_id
        with Ledger.open(url) as ledger:
            snapshot_run(ledger, run_id, every=400)
            rows = snapshot_rows(url, run_id)
            assert len(rows) >= 5
            _, (chosen, epoch), (after, next_epoch) = rows[1:4]
            assert epoch is not None and next_epoch is not None and next_epoch > epoch
            (text,) = rawdb.run(
                url,
                "SELECT state FROM snapshots WHERE run_id = ? AND position = ?",
                (run_id, chosen),
            )[0]
            body = json.loads(str(text))
            assert body["state"]["run"]["name"] == "synthetic"
            body["state"]["run"]["name"] = "marked"
            old = next(
                s
                for s in snapshots.candidates(
                    ledger.store, run_id, until_position=chosen, until_epoch=None
                )
            )
            rawdb.run(url, "DELETE FROM snapshots WHERE position = ?", (chosen,))
            assert snapshots.save(ledger.store, replace(old, state=json.dumps(body)))

            def name(**cut: int) -> str | None:
                return ledger.replay(run_id, **cut).run.name  # type: ignore[arg-type]

            assert name(until_position=chosen) == "marked"
            assert name(until_position=after - 1) == "marked"
            assert name(until_epoch=epoch) == "marked"
            assert name(until_position=chosen - 1) == "synthetic"
            assert name(until_position=after) == "synthetic"
            assert name() == "synthetic"
            assert ledger.replay(run_id, until_position=chosen, snapshots=False).run.name == (
                "synthetic"
            )

    def test_corrupted_snapshot_is_ignored_with_a_warning(
        self, recorded: Recorded, ledger_copy: Ledger
    ) -> None:
        run_id, url = recorded.run_id, ledger_copy.url
        snapshot_run(ledger_copy, run_id, every=300)
        rows = snapshot_rows(url, run_id)
        target = rows[len(rows) // 2][0]
        cut = target + 5
        (text,) = rawdb.run(url, "SELECT state FROM snapshots WHERE position = ?", (target,))[0]
        body = json.loads(str(text))
        body["state"]["run"]["events"] += 1000  # what a corrupted cache would claim
        rawdb.run(
            url, "UPDATE snapshots SET state = ? WHERE position = ?", (json.dumps(body), target)
        )
        with pytest.warns(SnapshotWarning, match=rf"position {target} does not match its hash"):
            cached = ledger_copy.replay(run_id, until_position=cut)
        plain = ledger_copy.replay(run_id, until_position=cut, snapshots=False)
        assert cached == plain
        # every snapshot corrupted: still the same fold, one warning each
        rawdb.run(url, "UPDATE snapshots SET state = replace(state, '\"run\":', '\"run\" :')")
        with pytest.warns(SnapshotWarning) as caught:
            assert ledger_copy.replay(run_id) == ledger_copy.replay(run_id, snapshots=False)
        assert len([w for w in caught if "does not match its hash" in str(w.message)]) == len(rows)

    def test_unreadable_snapshot_with_a_valid_hash_is_ignored_with_a_warning(
        self, synthetic: Recorded, tmp_path: Path
    ) -> None:
        url = copy_db(synthetic.url, tmp_path)
        with Ledger.open(url) as ledger:
            snapshot_run(ledger, synthetic.run_id)
            (snap,) = snapshots.candidates(
                ledger.store, synthetic.run_id, until_position=None, until_epoch=None
            )
            rawdb.run(url, "DELETE FROM snapshots")
            snapshots.save(ledger.store, replace(snap, state='{"state": {}}'))
            with pytest.warns(SnapshotWarning, match="unreadable"):
                cached = ledger.replay(synthetic.run_id)
            assert cached == ledger.replay(synthetic.run_id, snapshots=False)

    @pytest.mark.parametrize("change", ["truncated", "rehashed"])
    def test_snapshot_whose_heads_no_longer_match_the_log_is_ignored(
        self, synthetic: Recorded, tmp_path: Path, change: str
    ) -> None:
        url = copy_db(synthetic.url, tmp_path)
        run_id = synthetic.run_id
        with Ledger.open(url) as ledger:
            assert snapshot_run(ledger, run_id) == 1  # one snapshot, at the run's end
            last = positions(ledger, run_id)[-1]
            rawdb.drop_triggers(url)
            if change == "truncated":  # the tail (RunFinished) is gone
                rawdb.run(url, "DELETE FROM events WHERE position = ?", (last,))
            else:  # the head's stored hash is not what the snapshot saw
                rawdb.run(url, "UPDATE events SET hash = ? WHERE position = ?", ("f" * 64, last))
            trust = change == "rehashed"
            with pytest.warns(SnapshotWarning, match="no longer matches the log"):
                cached = ledger.replay(run_id, trust=trust)
            plain = ledger.replay(run_id, trust=trust, snapshots=False)
            assert cached == plain
            assert cached.run.status == ("open" if change == "truncated" else "completed")
            if change == "rehashed":  # and the fold that ignores it refuses the run
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SnapshotWarning)
                    with pytest.raises(UnverifiedRun, match=rf"^position {last}: "):
                        ledger.replay(run_id)

    def test_a_snapshot_keeps_the_state_it_verified_and_verify_still_finds_the_edit(
        self, synthetic: Recorded, tmp_path: Path
    ) -> None:
        """A snapshot fold checks the chain after the snapshot, not before (documented).

        An edit before the snapshot that leaves the hashes alone cannot change
        what the fold returns (the snapshot was taken by a verified fold); the
        full check (`verify`, or a fold without snapshots) names the edit.
        """
        url = copy_db(synthetic.url, tmp_path)
        run_id = synthetic.run_id
        with Ledger.open(url) as ledger:
            snapshot_run(ledger, run_id)
            honest = ledger.replay(run_id, snapshots=False)
            early = next(e for e in ledger.read(run_id) if e.event_type == "SeedTelemetrySampled")
            rawdb.drop_triggers(url)
            rawdb.run(
                url,
                "UPDATE events SET payload = replace(payload, '\"accuracy\":', "
                "'\"accuracy\":1') WHERE position = ?",
                (early.position,),
            )
            assert not ledger.verify(run_id).ok
            with pytest.raises(UnverifiedRun, match=rf"^position {early.position}: "):
                ledger.replay(run_id, snapshots=False)
            assert ledger.replay(run_id) == honest

    def test_replay_with_snapshot_every_stores_snapshots_and_changes_nothing(
        self, synthetic: Recorded, tmp_path: Path
    ) -> None:
        url = copy_db(synthetic.url, tmp_path)
        run_id = synthetic.run_id
        with Ledger.open(url) as ledger:
            plain = ledger.replay(run_id, snapshots=False)
            assert ledger.replay(run_id, trust=True, snapshot_every=100) == plain
            assert snapshot_rows(url, run_id) == []  # only verified folds are cached
            assert ledger.replay(run_id, snapshot_every=500) == plain
            stored = snapshot_rows(url, run_id)
            assert len(stored) == plain.run.events // 500
            assert ledger.replay(run_id) == plain
            middle = stored[len(stored) // 2][1]
            assert middle is not None
            assert ledger.replay(run_id, until_epoch=middle) == ledger.replay(
                run_id, until_epoch=middle, snapshots=False
            )
            with pytest.raises(ReplayError, match="at least 1"):
                ledger.replay(run_id, snapshot_every=0)

    def test_snapshot_of_a_growing_run_stays_valid(self, sqlite_url: str) -> None:
        taken: list[int] = []
        with Ledger.open(sqlite_url) as ledger:

            def snap(run_id: str, epoch: int) -> None:
                if epoch in (4, 9, 15):
                    snapshot_run(ledger, run_id)
                    taken.append(epoch)

            rec = drive(ledger, epochs=25, slots=3, seed=8, on_epoch=snap)
            assert taken == [4, 9, 15] and len(snapshot_rows(sqlite_url, rec.run_id)) == 3
            for epoch in (4, 6, 9, 12, 15, max(rec.live)):
                cached, plain = fold_both_ways(ledger, rec.run_id, until_epoch=epoch)
                assert cached == plain, epoch
            cached, plain = fold_both_ways(ledger, rec.run_id)
            assert cached == plain and cached.run.status == "completed"

    def test_snapshot_round_trip_on_postgres(self, pg_url: str) -> None:
        with Ledger.open(pg_url) as ledger:
            assert ledger.dialect == "postgresql"
            rec = drive(ledger, epochs=30, slots=3, seed=6)
            run_id = rec.run_id
            assert snapshot_run(ledger, run_id, every=60) >= 3
            rows = snapshot_rows(pg_url, run_id)
            rng = random.Random(7)
            all_positions = positions(ledger, run_id)
            for epoch in [rng.randint(0, max(rec.live)) for _ in range(6)]:
                cached, plain = fold_both_ways(ledger, run_id, until_epoch=epoch)
                assert cached == plain, epoch
            for position in [rng.choice(all_positions) for _ in range(6)] + [rows[0][0]]:
                cached, plain = fold_both_ways(ledger, run_id, until_position=position)
                assert cached == plain, position
            target = rows[-1][0]
            rawdb.run(
                pg_url,
                "UPDATE snapshots SET state = replace(state, '\"run\":', "
                "'\"run\" :') WHERE position = ?",
                (target,),
            )
            with pytest.warns(SnapshotWarning, match=rf"position {target} does not match"):
                cached = ledger.replay(run_id)
            assert cached == ledger.replay(run_id, snapshots=False)

    def test_a_database_without_the_snapshots_table_folds_without_them(
        self, synthetic: Recorded, tmp_path: Path
    ) -> None:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        with Ledger.open(url) as ledger:
            ledger.new_run_format = 1  # as every run was written before format 2
            run_id = synthetic_run(ledger, epochs=150, slots=8, seed=11)
            expected = ledger.replay(run_id, until_epoch=100)
        migrate.downgrade(url, "0001")
        with Ledger.open(url) as ledger:
            assert ledger.revision == "0001"
            assert ledger.replay(run_id, until_epoch=100) == expected
            with pytest.raises(ReplayError, match="db upgrade"):
                ledger.replay(run_id, snapshot_every=10)
            with pytest.raises(ReplayError, match="db upgrade"):
                snapshot_run(ledger, run_id)


# -- restore ------------------------------------------------------------------------


def fresh_slots(n: int, **kwargs: object) -> list[SeedSlot]:
    return [
        SeedSlot(
            f"s{i}",
            CHANNELS,
            gates=GATES,
            auto_advance=True,  # type: ignore[arg-type]
            embargo_epochs=EMBARGO,
            **kwargs,
        )
        for i in range(n)
    ]


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bit_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype and torch.equal(wa[key], wb[key]), key
    assert param_digest(a) == param_digest(b)


class TestRestore:
    def test_restore_puts_slots_into_the_folded_state(self, driven: Recorded) -> None:
        with Ledger.open(driven.url) as ledger:
            observer = ledger.start_run("observer", seed=0)
            epochs = sorted(driven.live)
            checked: Counter[SeedStage] = Counter()
            for epoch in epochs[:: len(epochs) // 12] + [epochs[-1]]:
                slots = fresh_slots(5, recorder=observer.recorder)
                stray = SeedSlot("zz", CHANNELS)
                stray.germinate("conv_small", "stray", init_seed=1)
                used = restore([*slots, stray], ledger, driven.run_id, until_epoch=epoch)
                folded = ledger.replay(driven.run_id, until_epoch=epoch)
                assert set(used) == {s.slot_id for s in slots} | {"zz"}
                for slot in slots:
                    state = folded.slot(slot.slot_id)
                    assert used[slot.slot_id] == state
                    assert live_state(slot) == state
                    assert slot.stage is state.stage and slot.alpha == state.alpha
                    checked[state.stage] += 1
                    if state.stage in LIVE_SEED_STAGES:
                        assert slot.seed is not None and state.blueprint_id is not None
                        assert state.init_seed is not None
                        fresh = build_blueprint(
                            state.blueprint_id, CHANNELS, "cnn", state.init_seed
                        )
                        assert_bit_identical(slot.seed, fresh)
                    else:
                        assert slot.seed is None
                assert stray.stage is SeedStage.DORMANT and stray.seed is None
                assert live_state(stray) == folded.slot("zz")
            assert set(checked) >= {
                SeedStage.TRAINING,
                SeedStage.BLENDING,
                SeedStage.HOLDING,
                SeedStage.FOSSILIZED,
            }
            assert [e.event_type for e in ledger.read(observer.run_id)] == ["RunStarted"]

    def test_rebuilt_weights_depend_on_the_init_seed(self) -> None:
        a = build_blueprint("conv_light", CHANNELS, "cnn", 1)
        b = build_blueprint("conv_light", CHANNELS, "cnn", 2)
        assert param_digest(a) != param_digest(b)
        assert_bit_identical(a, build_blueprint("conv_light", CHANNELS, "cnn", 1))

    def test_restored_slots_equal_the_live_slots(self, sqlite_url: str) -> None:
        """Seeds here never train, so the live seeds still hold their germination weights."""
        with Ledger.open(sqlite_url) as ledger:
            rec = drive(ledger, epochs=40, slots=4, seed=3, fade_outs=False)
            slots = fresh_slots(4)
            restore(slots, ledger, rec.run_id)
        probe = torch.randn(2, CHANNELS, 6, 6, generator=torch.Generator().manual_seed(0))
        assert any(s.seed is not None for s in rec.slots)
        for restored, live in zip(slots, rec.slots, strict=True):
            assert restored.get_extra_state() == live.get_extra_state()
            assert restored.isolate_gradients == live.isolate_gradients
            if live.seed is None:
                assert restored.seed is None
                continue
            assert restored.seed is not None
            assert_bit_identical(restored.seed, live.seed)
            assert [p.requires_grad for p in restored.seed.parameters()] == [
                p.requires_grad for p in live.seed.parameters()
            ]
            with torch.no_grad():
                assert torch.equal(restored(probe), live(probe))

    def test_a_restored_slot_carries_on_like_the_live_one(self, sqlite_url: str) -> None:
        with Ledger.open(sqlite_url) as ledger:
            run = ledger.start_run("carry-on", seed=0)
            live = fresh_slots(2, recorder=run.recorder)
            for slot in live:
                slot.germinate(
                    "conv_light",
                    f"seed-{slot.slot_id}",
                    init_seed=9,
                    tempo=5,
                    curve=AlphaCurve.COSINE,
                )
            for epoch in range(1, 6):
                for slot in live:
                    if slot.seed is not None:  # what capture_gradients would measure
                        slot.measure(grad_health=1.0, has_exploding=False)
                    slot.step_epoch(accuracy=60.0 + epoch, epoch=epoch)
                    emit_sample(run.recorder, slot, epoch)
                if epoch == 3:
                    live[0].prune("early")
                run.recorder.emit(EpochCompleted(), stream_id="run", epoch=epoch)
            assert live[0].stage is SeedStage.EMBARGOED
            assert live[1].stage is SeedStage.BLENDING and live[1].controller.mode is AlphaMode.UP
            restored = fresh_slots(2)
            used = restore({s.slot_id: s for s in restored}, ledger, run.run_id, until_epoch=5)
            assert set(used) == {"s0", "s1"} and used["s0"].stage is SeedStage.EMBARGOED
            for epoch in range(6, 14):
                for a, b in zip(live, restored, strict=True):
                    a.step_epoch(accuracy=70.0, epoch=epoch)
                    b.step_epoch(accuracy=70.0, epoch=epoch)
                    assert (a.stage, a.alpha, a.metrics) == (b.stage, b.alpha, b.metrics), epoch
                    assert a.state == b.state, epoch
            assert live[0].stage is SeedStage.DORMANT and live[1].stage is SeedStage.HOLDING
