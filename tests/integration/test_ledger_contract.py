"""The ledger contract, written once and run against SQLite and PostgreSQL."""

from __future__ import annotations

import math
import multiprocessing
import tracemalloc
from collections import Counter
from datetime import UTC

import pytest
import rawdb
from helpers import sample, stage_change

from kasmina.canonical import GENESIS_HASH
from kasmina.errors import (
    ConcurrencyError,
    DuplicateEvent,
    LedgerError,
    PayloadInvalid,
    RunClosed,
    RunNotFound,
)
from kasmina.events import (
    EpochCompleted,
    RunFinished,
    RunStarted,
    SeedGerminated,
    SeedStageChanged,
    make_event,
    slot_stream,
)
from kasmina.ledger import Ledger
from kasmina.stages import SeedStage

#: The id a row made by hand carries.
FORGED_ID = "00000000-0000-4000-8000-00000000f0f0"


def _count(url: str) -> int:
    return int(rawdb.run(url, "SELECT COUNT(*) FROM events")[0][0])  # type: ignore[call-overload]


class TestAppendAndRead:
    def test_events_read_back_in_order_with_contiguous_versions(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        ledger.append([sample(run.run_id, "r0c0", n=i) for i in range(5)])
        ledger.append([sample(run.run_id, "r0c1", n=i) for i in range(3)])
        ledger.append([sample(run.run_id, "r0c0", n=9)])
        events = list(ledger.read(run.run_id))
        assert [e.position for e in events] == sorted(e.position for e in events)
        by_stream: dict[str, list[int]] = {}
        for e in events:
            by_stream.setdefault(e.stream_id, []).append(e.version)
        assert by_stream == {"run": [1], "slot/r0c0": list(range(1, 7)), "slot/r0c1": [1, 2, 3]}
        first = next(e for e in events if e.stream_id == "slot/r0c0")
        assert first.prev_hash == GENESIS_HASH
        assert first.payload.accuracy == pytest.approx(50.0)  # type: ignore[attr-defined]

    def test_history_filters_by_seed_and_slot(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        ledger.append(
            [
                stage_change(
                    run.run_id, "r0c0", SeedStage.DORMANT, SeedStage.GERMINATED, seed_id="a"
                ),
                stage_change(
                    run.run_id, "r0c1", SeedStage.DORMANT, SeedStage.GERMINATED, seed_id="b"
                ),
            ]
        )
        assert [e.seed_id for e in ledger.history(run.run_id, seed_id="b")] == ["b"]
        assert [e.slot_id for e in ledger.history(run.run_id, slot_id="r0c0")] == ["r0c0"]
        with pytest.raises(RunNotFound):
            list(ledger.history("no-such-run"))

    def test_read_after_position_resumes_a_tail(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        ledger.append([sample(run.run_id, n=i) for i in range(10)])
        events = list(ledger.read(run.run_id))
        middle = events[4].position
        assert [e.position for e in ledger.read(run.run_id, after=middle)] == [
            e.position for e in events[5:]
        ]

    def test_awkward_values_round_trip_and_verify(self, ledger: Ledger) -> None:
        config = {
            "huge": 1e300,
            "neg_zero": -0.0,
            "tiny": 5e-324,
            "text": 'Ωμέγα 🌱 "q"',
            "nested": [[1, [2.5, None]], {"b": True, "a": "x"}],
            "big_int": 2**70,
        }
        run = ledger.start_run("awkward", seed=3, config=config)
        ledger.append(
            [
                make_event(
                    EpochCompleted(
                        val_accuracy=math.nan,
                        val_loss=math.inf,
                        train_loss=-math.inf,
                        train_accuracy=-0.0,
                        host_grad_norm=1e300,
                    ),
                    run_id=run.run_id,
                    stream_id="run",
                    epoch=1,
                )
            ]
        )
        events = list(ledger.read(run.run_id))
        started = events[0].payload
        assert isinstance(started, RunStarted)
        assert started.config["huge"] == 1e300
        assert started.config["tiny"] == 5e-324
        assert started.config["text"] == config["text"]
        assert started.config["nested"] == [[1, [2.5, None]], {"a": "x", "b": True}]
        # Canonical JSON (RFC 8785) numbers are doubles: a free-form config keeps the text.
        assert started.config["big_int"] == str(2**70)
        epoch = events[1].payload
        assert isinstance(epoch, EpochCompleted)
        assert epoch.val_accuracy is not None and math.isnan(epoch.val_accuracy)
        assert epoch.val_loss == math.inf and epoch.train_loss == -math.inf
        assert epoch.train_accuracy == 0.0 and math.copysign(1, epoch.train_accuracy) < 0
        assert epoch.host_grad_norm == 1e300 and isinstance(epoch.host_grad_norm, float)
        assert ledger.verify(run.run_id).ok


class TestAtomicity:
    def test_batch_with_a_version_clash_appends_nothing(self, ledger: Ledger, db_url: str) -> None:
        run = ledger.start_run("t", seed=1)
        before = _count(db_url)
        batch = [
            sample(run.run_id, n=0),
            sample(run.run_id, n=1),
            sample(run.run_id, n=2, version=7),
        ]
        with pytest.raises(ConcurrencyError):
            ledger.append(batch)
        assert _count(db_url) == before

    def test_batch_with_an_unstorable_payload_appends_nothing(
        self, ledger: Ledger, db_url: str
    ) -> None:
        run = ledger.start_run("t", seed=1)
        before = _count(db_url)
        bad = make_event(
            SeedGerminated(slot_id="r0c0", blueprint_id="nul\x00", params=1),
            run_id=run.run_id,
            stream_id=slot_stream("r0c0"),
        )
        with pytest.raises(PayloadInvalid):
            ledger.append([sample(run.run_id), bad])
        assert _count(db_url) == before

    def test_batch_spanning_two_runs_is_refused(self, ledger: Ledger, db_url: str) -> None:
        a, b = ledger.start_run("a", seed=1), ledger.start_run("b", seed=1)
        before = _count(db_url)
        with pytest.raises(PayloadInvalid, match="one run"):
            ledger.append([sample(a.run_id), sample(b.run_id)])
        assert _count(db_url) == before


class TestConcurrencyAndIdempotency:
    def test_version_clash_raises_with_stream_and_version(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        ledger.append([sample(run.run_id, version=1)])
        with pytest.raises(ConcurrencyError) as info:
            ledger.append([sample(run.run_id, version=1)])
        assert info.value.stream_id == "slot/r0c0"
        assert info.value.expected_version == 1
        assert info.value.actual_version == 1
        assert "slot/r0c0" in str(info.value)

    def test_retried_batch_is_idempotent(self, ledger: Ledger, db_url: str) -> None:
        run = ledger.start_run("t", seed=1)
        batch = [sample(run.run_id, n=i) for i in range(20)]
        first = ledger.append(batch)
        again = ledger.append(batch)
        assert (first.appended, first.skipped) == (20, 0)
        assert (again.appended, again.skipped) == (0, 20)
        assert _count(db_url) == 21
        assert ledger.verify(run.run_id).ok

    def test_retry_of_events_with_explicit_versions_is_a_no_op(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        batch = [sample(run.run_id, n=i, version=i + 1) for i in range(3)]
        ledger.append(batch)
        again = ledger.append(batch)
        assert (again.appended, again.skipped) == (0, 3)
        with pytest.raises(ConcurrencyError):
            ledger.append([sample(run.run_id, version=3)])

    def test_partly_stored_retry_appends_only_the_rest(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        batch = [sample(run.run_id, n=i) for i in range(6)]
        ledger.append(batch[:3])
        result = ledger.append(batch)
        assert (result.appended, result.skipped) == (3, 3)
        versions = [e.version for e in ledger.stream(run.run_id, "slot/r0c0")]
        assert versions == [1, 2, 3, 4, 5, 6]

    def test_two_processes_append_to_one_run(self, ledger: Ledger, db_url: str) -> None:
        run = ledger.start_run("t", seed=1)
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_append_worker, args=(db_url, run.run_id, slot, 40, 25))
            for slot in ("p0", "p1")
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]
        events = list(ledger.read(run.run_id))
        counts = Counter(e.stream_id for e in events)
        assert counts == {"run": 1, "slot/p0": 1000, "slot/p1": 1000}
        assert len({e.event_id for e in events}) == len(events)
        for slot in ("p0", "p1"):
            versions = [e.version for e in ledger.stream(run.run_id, slot_stream(slot))]
            assert versions == list(range(1, 1001))
        assert ledger.verify(run.run_id).ok


def _append_worker(url: str, run_id: str, slot: str, batches: int, size: int) -> None:
    with Ledger.open(url) as led:
        for b in range(batches):
            led.append([sample(run_id, slot, n=b * size + i) for i in range(size)])


class TestRuns:
    def test_finish_seals_every_stream(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=5, config={"lr": 0.1})
        ledger.append([sample(run.run_id, "r0c0"), sample(run.run_id, "r0c1")])
        run.finish()
        last = list(ledger.read(run.run_id))[-1]
        assert isinstance(last.payload, RunFinished)
        assert set(last.payload.seal) == {"run", "slot/r0c0", "slot/r0c1"}
        info = [r for r in ledger.runs() if r.run_id == run.run_id][0]
        assert (info.status, info.events, info.seed, info.name) == ("completed", 4, 5, "t")
        report = ledger.verify(run.run_id)
        assert report.ok and report.runs[0].sealed

    def test_finished_run_takes_no_more_events(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        run.finish()
        with pytest.raises(RunClosed):
            ledger.append([sample(run.run_id)])

    def test_append_to_unknown_run_is_refused(self, ledger: Ledger) -> None:
        with pytest.raises(RunNotFound):
            ledger.append([sample("missing-run")])

    def test_unsealed_run_is_reported_but_not_a_fault(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        ledger.append([sample(run.run_id)])
        report = ledger.verify(run.run_id)
        assert report.ok and not report.runs[0].sealed


class TestStreamingReads:
    def test_reading_many_events_uses_bounded_memory(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        total = 30_000
        for start in range(0, total, 5000):
            ledger.append(
                [sample(run.run_id, f"r{i % 8}", n=i) for i in range(start, start + 5000)]
            )
        tracemalloc.start()
        seen = 0
        for _ in ledger.read(run.run_id):
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seen == total + 1
        # a materialised list of 30k events takes well over 50 MB
        assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


class TestImmutabilityInTheDatabase:
    def test_update_and_delete_are_refused_by_a_raw_connection(
        self, ledger: Ledger, db_url: str
    ) -> None:
        run = ledger.start_run("t", seed=1)
        ledger.append([sample(run.run_id)])
        rawdb.writable_events(db_url)  # through the view too, the tables refuse
        for statement in (
            "UPDATE events SET epoch = 99",
            "DELETE FROM events",
            "UPDATE ledger_events SET epoch = 99",
            "DELETE FROM ledger_events",
            "UPDATE ledger_streams SET stream_id = 'x'",
            "DELETE FROM ledger_streams",
            "UPDATE ledger_runs SET format = 1",
            "DELETE FROM ledger_runs",
        ):
            with pytest.raises(Exception, match="immutable"):
                rawdb.run(db_url, statement)
        assert _count(db_url) == 2
        assert ledger.verify(run.run_id).ok


class TestVerifyFindsTampering:
    @pytest.fixture
    def sealed(self, ledger: Ledger, db_url: str) -> tuple[Ledger, str, str]:
        run = ledger.start_run("t", seed=1)
        ledger.append(
            [
                stage_change(run.run_id, "r0c0", a, b)
                for a, b in [
                    (SeedStage.DORMANT, SeedStage.GERMINATED),
                    (SeedStage.GERMINATED, SeedStage.TRAINING),
                    (SeedStage.TRAINING, SeedStage.BLENDING),
                    (SeedStage.BLENDING, SeedStage.HOLDING),
                ]
            ]
        )
        ledger.append([sample(run.run_id, "r0c1", n=i) for i in range(3)])
        run.finish()
        assert ledger.verify(run.run_id).ok
        rawdb.drop_triggers(db_url)
        return ledger, db_url, run.run_id

    @staticmethod
    def _position(url: str, run_id: str, stream: str, version: int) -> int:
        rows = rawdb.run(
            url,
            "SELECT position FROM events WHERE run_id = ? AND stream_id = ? AND version = ?",
            (run_id, stream, version),
        )
        return int(rows[0][0])  # type: ignore[call-overload]

    def _kinds(self, ledger: Ledger, run_id: str) -> set[str]:
        report = ledger.verify(run_id)
        assert not report.ok
        return {f.kind for f in report.faults}

    def test_edited_payload(self, sealed: tuple[Ledger, str, str]) -> None:
        ledger, url, run_id = sealed
        pos = self._position(url, run_id, "slot/r0c0", 2)
        text = (
            '{"alpha":0.5,"from_stage":"GERMINATED","slot_id":"r0c0","to_stage":"TRAINING",'
            '"trigger":"command"}'
        )
        placeholder = "CAST(? AS jsonb)" if ledger.dialect == "postgresql" else "?"
        rawdb.run(url, f"UPDATE events SET payload = {placeholder} WHERE position = ?", (text, pos))
        assert "hash_mismatch" in self._kinds(ledger, run_id)

    def test_edited_recorded_at(self, sealed: tuple[Ledger, str, str]) -> None:
        ledger, url, run_id = sealed
        pos = self._position(url, run_id, "slot/r0c0", 3)
        rows = rawdb.run(url, "SELECT recorded_at FROM events WHERE position = ?", (pos,))
        value = rows[0][0]
        if isinstance(value, str):  # SQLite keeps the ISO text: ...SS.ffffff+00:00
            micros = (int(value[-12:-6]) + 1) % 1_000_000
            shifted: object = f"{value[:-12]}{micros:06d}{value[-6:]}"
        else:
            shifted = value.replace(microsecond=(value.microsecond + 1) % 1_000_000)
        rawdb.run(url, "UPDATE events SET recorded_at = ? WHERE position = ?", (shifted, pos))
        assert "hash_mismatch" in self._kinds(ledger, run_id)

    def test_deleted_middle_row(self, sealed: tuple[Ledger, str, str]) -> None:
        ledger, url, run_id = sealed
        pos = self._position(url, run_id, "slot/r0c0", 2)
        rawdb.run(url, "DELETE FROM events WHERE position = ?", (pos,))
        assert {"version_gap", "broken_link"} <= self._kinds(ledger, run_id)

    def test_deleted_last_row_of_a_sealed_stream(self, sealed: tuple[Ledger, str, str]) -> None:
        """The seal names the stream's head; format 2's run chain also breaks at the next row."""
        ledger, url, run_id = sealed
        pos = self._position(url, run_id, "slot/r0c1", 3)
        rawdb.run(url, "DELETE FROM events WHERE position = ?", (pos,))
        assert self._kinds(ledger, run_id) == {"seal_mismatch", "hash_mismatch"}

    def test_two_rows_swapped(self, sealed: tuple[Ledger, str, str]) -> None:
        ledger, url, run_id = sealed
        a = self._position(url, run_id, "slot/r0c0", 2)
        b = self._position(url, run_id, "slot/r0c0", 3)
        spare = 1_000_000  # positions are 1 or more (a CHECK on PostgreSQL)
        rawdb.run(url, "UPDATE events SET position = ? WHERE position = ?", (spare, a))
        rawdb.run(url, "UPDATE events SET position = ? WHERE position = ?", (a, b))
        rawdb.run(url, "UPDATE events SET position = ? WHERE position = ?", (b, spare))
        assert {"out_of_order", "broken_link"} <= self._kinds(ledger, run_id)

    def test_inserted_row(self, sealed: tuple[Ledger, str, str]) -> None:
        ledger, url, run_id = sealed
        columns = (
            "event_id, run_id, stream_id, version, event_type, schema_version, epoch, "
            "seed_id, payload, recorded_at, prev_hash, hash"
        )
        pos = self._position(url, run_id, "slot/r0c1", 2)
        rawdb.writable_events(url)
        rawdb.run(
            url,
            f"INSERT INTO events ({columns}) SELECT '{FORGED_ID}', run_id, stream_id, 99, "
            "event_type, schema_version, epoch, seed_id, payload, recorded_at, "
            f"prev_hash, hash FROM events WHERE position = {pos}",
        )
        assert self._kinds(ledger, run_id) & {"broken_link", "version_gap", "after_seal"}


def test_v1_payload_is_upcast_on_read_and_still_verifies(ledger: Ledger, db_url: str) -> None:
    """A row written by an older kasmina (stages as integers, no trigger) reads as v2."""
    from datetime import UTC, datetime

    run = ledger.start_run("t", seed=1)
    payload = rawdb.payload_text(
        rawdb.run_format(db_url, run.run_id),
        {"slot_id": "r0c0", "from_stage": 1, "to_stage": 2, "alpha": 0.0},
    )
    now = datetime.now(UTC)
    stamp = now.isoformat(timespec="microseconds")
    fields = dict(
        event_id=FORGED_ID,
        run_id=run.run_id,
        stream_id="slot/r0c0",
        version=1,
        event_type="SeedStageChanged",
        schema_version=1,
        epoch=0,
        seed_id="s1",
    )
    digest = rawdb.forged_hash(
        rawdb.run_format(db_url, run.run_id),
        prev_hash=GENESIS_HASH,
        run_prev_hash=rawdb.run_tip(db_url, run.run_id),
        **fields,
        payload_text=payload,
        recorded_at=stamp,
    )
    placeholder = "CAST(? AS jsonb)" if ledger.dialect == "postgresql" else "?"
    rawdb.writable_events(db_url)
    rawdb.run(
        db_url,
        "INSERT INTO events (event_id, run_id, stream_id, version, event_type, "
        "schema_version, epoch, seed_id, payload, recorded_at, prev_hash, hash) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, {placeholder}, ?, ?, ?)",
        (
            *fields.values(),
            payload,
            stamp if ledger.dialect == "sqlite" else now,
            GENESIS_HASH,
            digest,
        ),
    )
    [event] = ledger.history(run.run_id, seed_id="s1")
    assert event.schema_version == 1
    assert isinstance(event.payload, SeedStageChanged)
    assert event.payload.from_stage is SeedStage.DORMANT
    assert event.payload.to_stage is SeedStage.GERMINATED
    assert event.payload.trigger == "command"
    assert ledger.verify(run.run_id).ok


def test_schema_not_at_head_refuses_writes(db_url: str) -> None:
    with Ledger.open(db_url) as led:
        run = led.start_run("t", seed=1)
    rawdb.run(db_url, "UPDATE alembic_version SET version_num = 'older'")
    with Ledger.open(db_url) as led:
        with pytest.raises(LedgerError, match="kasmina db upgrade"):
            led.append([sample(run.run_id)])
        assert len(list(led.read(run.run_id))) == 1


def test_an_id_repeated_inside_one_batch_is_refused(ledger: Ledger, db_url: str) -> None:
    run = ledger.start_run("t", seed=1)
    event = sample(run.run_id, n=1)
    with pytest.raises(DuplicateEvent, match=event.event_id):
        ledger.append([event, sample(run.run_id, n=2), event])
    assert _count(db_url) == 1
    assert ledger.verify(run.run_id).ok


def test_times_read_back_in_utc_whatever_the_servers_zone(pg_url: str) -> None:
    """The store's session takes times in UTC; a database set to another zone
    changes neither the instants read back nor what verifies."""
    database = rawdb.run(pg_url, "SELECT current_database()")[0][0]
    rawdb.run(pg_url, f"ALTER DATABASE \"{database}\" SET TimeZone TO 'Asia/Kathmandu'")
    with Ledger.open(pg_url) as ledger:
        run = ledger.start_run("zone", seed=0)
        run.recorder.emit(EpochCompleted(), stream_id="run", epoch=0)
        run.finish()
        events = list(ledger.read(run.run_id))
        assert ledger.verify(run.run_id).ok
    stored = rawdb.run(
        pg_url,
        "SELECT extract(epoch FROM recorded_at) * 1000000 FROM ledger_events ORDER BY position",
    )
    assert [e.recorded_at.tzinfo for e in events] == [UTC] * len(events)
    assert [round(e.recorded_at.timestamp() * 1_000_000) for e in events] == [
        round(float(str(r[0]))) for r in stored
    ]
