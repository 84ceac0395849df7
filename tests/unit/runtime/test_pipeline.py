"""The recorder pipeline: facts never lost, samples dropped exactly, failures surfaced."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kasmina.errors import PayloadInvalid
from kasmina.events import (
    EpochCompleted,
    EventsDropped,
    NewEvent,
    SeedTelemetrySampled,
    slot_stream,
)
from kasmina.ledger import AppendResult, Ledger
from kasmina.runtime.pipeline import PipelineError, RecorderPipeline
from kasmina.stages import SeedStage


class GatedLedger(Ledger):
    """A real ledger whose appends wait until the test opens the gate."""

    gate: threading.Event
    entered: threading.Event

    def append(self, batch: Sequence[NewEvent]) -> AppendResult:
        self.entered.set()
        self.gate.wait(30)
        return super().append(batch)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[GatedLedger]:
    ledger = GatedLedger.open(f"sqlite:///{tmp_path / 'p.db'}")
    assert isinstance(ledger, GatedLedger)
    ledger.gate, ledger.entered = threading.Event(), threading.Event()
    ledger.gate.set()
    yield ledger
    ledger.gate.set()
    ledger.close()


def fact(n: int) -> EpochCompleted:
    return EpochCompleted(val_accuracy=float(n))


def sample(n: int) -> SeedTelemetrySampled:
    return SeedTelemetrySampled(
        slot_id="r0c0", stage=SeedStage.TRAINING, alpha=0.0, accuracy=float(n)
    )


def stored(ledger: Ledger, run_id: str, event_type: str) -> list[float]:
    return [
        e.payload.val_accuracy
        if event_type == "EpochCompleted"  # type: ignore[attr-defined]
        else e.payload.accuracy  # type: ignore[attr-defined]
        for e in ledger.read(run_id)
        if e.event_type == event_type
    ]


def test_emit_order_is_stream_order(gated: GatedLedger) -> None:
    run = gated.start_run("p", seed=0)
    with RecorderPipeline(gated, run.run_id, batch_size=7) as pipe:
        for n in range(50):
            pipe.emit(sample(n) if n % 3 else fact(n), stream_id="run", epoch=n)
    events = [e for e in gated.read(run.run_id) if e.stream_id == "run"][1:]
    assert [e.epoch for e in events] == list(range(50))
    assert [e.version for e in events] == list(range(2, 52))
    assert pipe.stats().stored == 50 and pipe.stats().samples_dropped == 0


def test_full_fact_queue_blocks_and_loses_nothing(gated: GatedLedger) -> None:
    run = gated.start_run("p", seed=0)
    gated.gate.clear()
    pipe = RecorderPipeline(gated, run.run_id, batch_size=5, fact_capacity=10, flush_interval=0.01)
    done = threading.Event()

    def produce() -> None:
        for n in range(200):
            pipe.emit(fact(n), stream_id="run", epoch=n)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert gated.entered.wait(10)  # the writer holds a batch and waits on the gate
    assert not done.wait(0.3), "emit must block while the fact queue is full"
    assert pipe.stats().queued <= 10
    gated.gate.set()
    producer.join(30)
    assert done.is_set()
    pipe.close()
    assert stored(gated, run.run_id, "EpochCompleted") == [float(n) for n in range(200)]


def test_fact_emit_times_out_with_an_error_rather_than_dropping(gated: GatedLedger) -> None:
    run = gated.start_run("p", seed=0)
    gated.gate.clear()
    pipe = RecorderPipeline(
        gated, run.run_id, batch_size=1, fact_capacity=1, emit_timeout=0.2, flush_interval=0.01
    )
    pipe.emit(fact(0), stream_id="run")
    assert gated.entered.wait(10)
    pipe.emit(fact(1), stream_id="run")  # fills the queue again
    with pytest.raises(PipelineError, match="not keeping up"):
        pipe.emit(fact(2), stream_id="run")
    gated.gate.set()
    pipe.close()
    assert stored(gated, run.run_id, "EpochCompleted") == [0.0, 1.0]
    assert pipe.stats().facts_emitted == 2


def test_samples_overflow_with_an_exact_drop_count(gated: GatedLedger) -> None:
    run = gated.start_run("p", seed=0)
    gated.gate.clear()
    pipe = RecorderPipeline(gated, run.run_id, batch_size=3, sample_capacity=5, flush_interval=0.01)
    pipe.emit(sample(-1), stream_id=slot_stream("r0c0"), epoch=0)
    assert gated.entered.wait(10)
    emitted = 1
    for n in range(100):
        pipe.emit(sample(n), stream_id=slot_stream("r0c0"), epoch=n)
        emitted += 1
    gated.gate.set()
    pipe.close()
    kept = stored(gated, run.run_id, "SeedTelemetrySampled")
    drops = [e.payload for e in gated.read(run.run_id) if isinstance(e.payload, EventsDropped)]
    recorded = sum(d.count for d in drops)
    assert recorded > 0
    assert emitted - len(kept) == recorded == pipe.stats().samples_dropped
    assert kept[-5:] == [95.0, 96.0, 97.0, 98.0, 99.0]  # the newest survive
    assert drops[0].first_epoch is not None and drops[-1].last_epoch is not None


def test_writer_failure_surfaces_and_accounts_for_every_event(gated: GatedLedger) -> None:
    run = gated.start_run("p", seed=0)
    pipe = RecorderPipeline(gated, run.run_id, batch_size=10, flush_interval=0.01)
    for n in range(25):
        pipe.emit(fact(n), stream_id="run", epoch=n)
    pipe.flush()
    with Ledger.open(gated.url) as other:  # another writer seals the run under our feet
        other.finish_run(run.run_id, "aborted")
    for n in range(25, 40):
        pipe.emit(fact(n), stream_id="run", epoch=n)
    with pytest.raises(PipelineError, match="not stored"):
        pipe.flush()
    with pytest.raises(PipelineError):
        pipe.emit(fact(99), stream_id="run")
    saved = stored(gated, run.run_id, "EpochCompleted")
    lost = [e.payload.val_accuracy for e in pipe.unstored]  # type: ignore[attr-defined]
    assert sorted(saved + lost) == [float(n) for n in range(40)]
    with pytest.raises(PipelineError):
        pipe.close()


def test_only_payloads_can_be_emitted(gated: GatedLedger) -> None:
    run = gated.start_run("p", seed=0)
    with RecorderPipeline(gated, run.run_id) as pipe, pytest.raises(PayloadInvalid):
        pipe.emit("not a payload", stream_id="run")  # type: ignore[arg-type]
