"""The writer's rank: carried by every event of a distributed run, hashed, one per stream."""

from __future__ import annotations

import pytest
import rawdb

from kasmina.errors import PayloadInvalid
from kasmina.events import CacheEvicted, RunStarted, SeedTelemetrySampled, memory_stream
from kasmina.ledger import Ledger, Run
from kasmina.stages import SeedStage


def _sample(slot: str) -> SeedTelemetrySampled:
    return SeedTelemetrySampled(slot_id=slot, stage=SeedStage.TRAINING, alpha=0.0, accuracy=1.0)


def _evicted() -> CacheEvicted:
    return CacheEvicted(cache="kernels", evicted=1, reason="ttl", size_before=1, size_after=0)


@pytest.fixture
def shared(ledger: Ledger) -> tuple[Run, Run]:
    """Rank 0's and rank 1's handles on one run of world size 2; rank 1 writes slot b."""
    zero = ledger.start_run(
        "ranks", seed=1, world_size=2, slot_writers={"a": 0, "b": 1}, buffer_size=0
    )
    one = Run(ledger, zero.run_id, rank=1, writers={"a": 0, "b": 1})
    return zero, one


def test_a_run_of_one_process_has_no_rank(ledger: Ledger) -> None:
    run = ledger.start_run("solo", seed=1)
    run.recorder.emit(_sample("a"), stream_id="slot/a", epoch=0)
    run.finish()
    events = list(ledger.read(run.run_id))
    assert {e.rank for e in events} == {None}
    started = events[0].payload
    assert isinstance(started, RunStarted)
    assert (started.world_size, started.slot_writers) == (1, {})


def test_each_rank_writes_its_streams_and_events_carry_the_rank(
    ledger: Ledger, shared: tuple[Run, Run]
) -> None:
    zero, one = shared
    zero.recorder.emit(_sample("a"), stream_id="slot/a", epoch=0)
    one.recorder.emit(_sample("b"), stream_id="slot/b", epoch=0)
    for run in (zero, one):
        run.recorder.emit(_evicted(), stream_id=memory_stream("kernels"), epoch=0)
    zero.finish()
    streams = {(e.stream_id, e.rank) for e in ledger.read(zero.run_id)}
    assert streams == {
        ("run", 0),
        ("slot/a", 0),
        ("slot/b", 1),
        ("memory/kernels@0", 0),
        ("memory/kernels@1", 1),
    }
    assert ledger.verify(zero.run_id).ok
    _, rows = ledger.sql(
        f"SELECT rank, COUNT(*) FROM events WHERE run_id = '{zero.run_id}' "
        "GROUP BY rank ORDER BY rank"
    )
    assert [tuple(r) for r in rows] == [(0, 4), (1, 2)]


@pytest.mark.parametrize(("rank", "stream"), [(1, "run"), (1, "slot/a"), (0, "slot/b")])
def test_a_rank_may_not_write_another_rank_stream(
    ledger: Ledger, shared: tuple[Run, Run], rank: int, stream: str
) -> None:
    run = shared[rank]
    with pytest.raises(PayloadInvalid, match=f"rank {rank} may not write stream '{stream}'"):
        run.recorder.emit(_sample("a"), stream_id=stream, epoch=0)
    assert not run.recorder.writes(stream)
    assert [e.event_type for e in ledger.read(run.run_id)] == ["RunStarted"]


def test_an_edited_rank_breaks_the_chain(
    ledger: Ledger, db_url: str, shared: tuple[Run, Run]
) -> None:
    zero, one = shared
    one.recorder.emit(_sample("b"), stream_id="slot/b", epoch=0)
    zero.finish()
    assert ledger.verify(zero.run_id).ok
    rawdb.drop_triggers(db_url)
    rawdb.run(
        db_url,
        "UPDATE events SET rank = 0 WHERE run_id = ? AND stream_id = 'slot/b'",
        (zero.run_id,),
    )
    report = ledger.verify(zero.run_id)
    assert [f.kind for f in report.faults] == ["hash_mismatch"]
