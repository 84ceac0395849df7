"""Tailing a run with `follow` while several processes append to it.

The contract under test: a reader that resumes from the last position it saw
gets every event of the run exactly once, in position order, and stops by
itself at `RunFinished`, however the writers' commits interleave. On
PostgreSQL that rests on the per-run advisory lock (positions within a run
are granted in commit order); on SQLite on serialised writes.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import pytest
import rawdb
from helpers import sample

from kasmina.errors import RunNotFound
from kasmina.events import StoredEvent
from kasmina.ledger import Ledger
from kasmina.ledger.tail import FollowTimeout, follow

WRITERS = 4
BATCHES = 30
BIG_BATCH = 1500  # more than one read page (1000 rows), so one poll spans pages
WAIT = 120.0  # a bound on waits that should end much sooner, never a timing device


def batch_sizes(writer: int) -> list[int]:
    sizes = [(b * 7 + writer * 5) % 29 + 1 for b in range(BATCHES)]
    if writer == 0:
        sizes[BATCHES // 2] = BIG_BATCH
    return sizes


def _writer(url: str, run_id: str, writer: int, go: ProcessEvent) -> None:
    """Append this writer's batches to its own two streams once `go` is set."""
    with Ledger.open(url) as led:
        if not go.wait(WAIT):
            raise TimeoutError("never released")
        n = 0
        for size in batch_sizes(writer):
            batch = []
            for i in range(size):
                batch.append(sample(run_id, f"w{writer}{'ab'[i % 2]}", epoch=n, n=n))
                n += 1
            led.append(batch)


class Tail(threading.Thread):
    """A reader following one run on its own connection, recording what it got."""

    def __init__(self, url: str, run_id: str, **options: Any) -> None:
        super().__init__(daemon=True)
        self.url, self.run_id, self.options = url, run_id, options
        self.events: list[StoredEvent] = []
        self.error: BaseException | None = None
        self.returned = False
        self.done = False
        self._changed = threading.Condition()

    def run(self) -> None:
        try:
            with Ledger.open(self.url) as led:
                for event in follow(led, self.run_id, timeout=WAIT, **self.options):
                    with self._changed:
                        self.events.append(event)
                        self._changed.notify_all()
            self.returned = True
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            with self._changed:
                self.done = True
                self._changed.notify_all()

    def wait_for(self, count: int) -> bool:
        """Block until this tail has `count` events (False if it ended or the bound passed)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.events) >= count or self.done, WAIT)
            return len(self.events) >= count

    def wait_past(self, position: int) -> list[tuple[int, str]]:
        """Block until this tail has reached `position`; what it has got by then."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.done or bool(self.events and self.events[-1].position >= position),
                WAIT,
            )
            return [(e.position, e.event_id) for e in self.events]


def _stored(url: str, run_id: str) -> list[tuple[int, str]]:
    rows = rawdb.run(
        url, "SELECT position, event_id FROM events WHERE run_id = ? ORDER BY position", (run_id,)
    )
    return [(int(p), str(e)) for p, e in rows]  # type: ignore[call-overload]


def test_tails_see_every_event_once_in_order_while_processes_append(db_url: str) -> None:
    with Ledger.open(db_url) as led:
        run_id = led.start_run("tail", seed=1).run_id
        other = led.start_run("other", seed=2).run_id  # a second run, written alongside
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(db_url, run_id if w else other, w, go))
        for w in range(WRITERS + 1)
    ]
    # Writer 0 writes the other run: its commits interleave with this run's positions.
    for p in procs:
        p.start()
    live = [Tail(db_url, run_id), Tail(db_url, run_id, poll_interval=0.001, max_interval=0.005)]
    for tail in live:
        tail.start()
    for tail in live:
        assert tail.wait_for(1), tail.error  # following: it has read RunStarted
    go.set()
    chaser = Tail(db_url, run_id)  # starts from 0 while the writers are appending
    chaser.start()
    for p in procs:
        p.join(WAIT)
    assert [p.exitcode for p in procs] == [0] * len(procs)

    written = _stored(db_url, run_id)
    assert len(written) == 1 + sum(sum(batch_sizes(w)) for w in range(1, WRITERS + 1))
    for tail in live:
        # Everything written so far reached the tail before the run finished ...
        assert tail.wait_past(written[-1][0]) == written, tail.error
        assert not tail.done

    with Ledger.open(db_url) as led:
        led.finish_run(run_id, "completed")
    expected = _stored(db_url, run_id)
    assert len(expected) == len(written) + 1

    for tail in [*live, chaser]:
        tail.join(WAIT)
        # ... and it stopped by itself at RunFinished, with nothing missed or repeated.
        assert not tail.is_alive() and tail.error is None and tail.returned, tail.error
        got = [(e.position, e.event_id) for e in tail.events]
        positions = [p for p, _ in got]
        assert all(a < b for a, b in zip(positions, positions[1:], strict=False))
        assert len({e for _, e in got}) == len(got)
        assert got == expected
        assert {e.run_id for e in tail.events} == {run_id}
        assert tail.events[-1].event_type == "RunFinished"


class TestFollow:
    def test_resumes_after_a_position_and_ends_at_run_finished(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        ledger.append([sample(run.run_id, n=i) for i in range(5)])
        run.finish()
        events = list(ledger.read(run.run_id))
        assert [e.position for e in follow(ledger, run.run_id)] == [e.position for e in events]
        middle = events[3].position
        resumed = list(follow(ledger, run.run_id, after=middle))
        assert [e.event_id for e in resumed] == [e.event_id for e in events[4:]]
        assert list(follow(ledger, run.run_id, after=events[-1].position)) == []

    def test_unknown_run_raises_at_the_call(self, ledger: Ledger) -> None:
        with pytest.raises(RunNotFound, match="no-such-run"):
            follow(ledger, "no-such-run")

    def test_waits_for_a_run_that_starts_later(self, db_url: str) -> None:
        with Ledger.open(db_url) as led:  # the ledger exists (a new SQLite file is migrated)
            tail = Tail(db_url, "later", wait_for_run=True, poll_interval=0.001, max_interval=0.01)
            tail.start()
            run = led.start_run("t", seed=1, run_id="later")
            assert tail.wait_for(1), tail.error
            led.append([sample(run.run_id, n=i) for i in range(3)])
            run.finish()
            expected = [e.event_id for e in led.read("later")]
        tail.join(WAIT)
        assert tail.returned and [e.event_id for e in tail.events] == expected

    def test_gives_up_after_the_timeout_without_new_events(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        events = follow(ledger, run.run_id, timeout=0.05, poll_interval=0.01)
        assert next(events).event_type == "RunStarted"
        with pytest.raises(FollowTimeout, match=run.run_id):
            next(events)

    def test_rejects_a_bad_poll_interval(self, ledger: Ledger) -> None:
        run = ledger.start_run("t", seed=1)
        with pytest.raises(ValueError):
            follow(ledger, run.run_id, poll_interval=0)
