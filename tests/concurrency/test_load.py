"""Load: many OS processes append to ONE run; nothing is lost, duplicated or reordered.

8 processes x 10,000 events into one PostgreSQL run and 4 x 5,000 into one
SQLite run. Each process owns its streams (4 slots), as a DDP rank owns its
slots, and appends ~300-byte telemetry samples 100 at a time: the event
pipeline flushes every 0.25 s, and a rank samples far fewer than its
1,000-event batch limit in that time, so real batches are tens to hundreds
of events; 100 gives 800 (PostgreSQL) and 200 (SQLite) transactions racing
for the run's write lock. While the writers work, the test tails the run by
position (``position > last seen``, every 10 ms) and checks the tail missed
nothing: what PostgreSQL's per-run advisory lock, and SQLite's single
writer, exist to guarantee.

Run with ``-s`` to see the throughput.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections import Counter, defaultdict

import pytest
from load_writer import SLOTS_PER_WRITER, event_id, write

from kasmina.events import RunFinished
from kasmina.ledger import Ledger

BATCH = 100
pytestmark = pytest.mark.slow


TAIL = "SELECT position, event_id FROM events WHERE run_id = ? AND position > ? ORDER BY position"


def _load(url: str, writers: int, events: int) -> None:
    with Ledger.open(url) as ledger:
        run_id = ledger.start_run("load", seed=0).run_id
        seen: list[tuple[int, str]] = []  # (position, event_id) in the order the tail met them

        def poll() -> None:
            """Read what committed past the last position seen, as a tailing reader does."""
            after = seen[-1][0] if seen else 0
            seen.extend((int(r[0]), str(r[1])) for r in ledger.store.fetch(TAIL, (run_id, after)))

        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(writers + 1)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=write, args=(url, run_id, w, events, BATCH, barrier, results))
            for w in range(writers)
        ]
        for p in procs:
            p.start()
        try:
            barrier.wait(120)
            started = time.monotonic()
            reports = []
            while len(reports) < writers:
                poll()
                try:
                    reports.append(results.get(timeout=0.01))
                except queue.Empty:
                    crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                    assert not crashed, f"a writer died: exit codes {crashed}"
                    assert time.monotonic() - started < 600, "writers still busy after 600 s"
            elapsed = time.monotonic() - started
        finally:
            for p in procs:
                p.join(60)
                if p.is_alive():
                    p.kill()
        assert [p.exitcode for p in procs] == [0] * writers
        total = writers * events
        assert sorted(reports) == [(w, events, 0) for w in range(writers)]
        print(
            f"\n{ledger.dialect}: {writers} processes x {events:,} events, {BATCH} per append: "
            f"{elapsed:.1f} s, {total / elapsed:,.0f} events/s"
        )

        # (position, event_id, stream_id, version) of every row, in read order
        stored = [(int(r[0]), str(r[1]), str(r[3]), int(r[4])) for r in ledger.raw_rows(run_id)]
        samples = [r for r in stored if r[2] != "run"]
        sent = {event_id(run_id, w, n) for w in range(writers) for n in range(events)}
        ids = Counter(r[1] for r in samples)
        assert len(samples) == total, "lost or duplicated events"
        assert set(ids) == sent and max(ids.values()) == 1
        positions = [r[0] for r in stored]
        assert all(a < b for a, b in zip(positions, positions[1:], strict=False))
        versions: defaultdict[str, list[int]] = defaultdict(list)
        for r in samples:
            versions[r[2]].append(r[3])
        assert len(versions) == writers * SLOTS_PER_WRITER
        for stream, got in versions.items():
            assert got == list(range(1, events // SLOTS_PER_WRITER + 1)), stream
        poll()
        missed = {r[1] for r in stored} - {i for _, i in seen}
        assert not missed, f"a tail by position skipped {len(missed)} events"
        assert len(seen) == len(stored)
        assert ledger.verify(run_id).ok

        ledger.finish_run(run_id, "completed")
        last = list(ledger.read(run_id, after=positions[-1]))
        assert len(last) == 1 and isinstance(last[0].payload, RunFinished)
        assert set(last[0].payload.seal) == {"run", *versions}
        report = ledger.verify(run_id)
        assert report.ok and report.runs[0].sealed


@pytest.mark.postgres
def test_eight_processes_append_to_one_postgres_run(pg_url: str) -> None:
    _load(pg_url, writers=8, events=10_000)


def test_four_processes_append_to_one_sqlite_run(sqlite_url: str) -> None:
    _load(sqlite_url, writers=4, events=5_000)
