"""Tailing a run: every event as it commits, each once, in position order.

`follow` polls the ledger with keyset reads (``position > last seen``) and
stops by itself after the run's `RunFinished`, which is always the run's last
event (a finished run refuses appends).

Why resuming from the last seen position never skips an event: a reader that
has seen position ``p`` of a run would miss an event only if that event
committed *later* with a position *below* ``p``. Neither backend allows it:

- PostgreSQL: every append to a run (and `RunFinished`) takes a
  transaction-scoped advisory lock keyed by the run and holds it until
  commit, so the next append to that run is handed its positions only after
  the previous one is committed and visible. Within a run, positions are
  granted in commit order. (Across runs they are not, which is why a tail is
  per run.)
- SQLite: write transactions are serialised (``BEGIN IMMEDIATE``), so
  positions are in commit order in the whole database.

Reads are plain autocommit statements, so each poll sees everything committed
before it started.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

from kasmina.errors import FollowTimeout
from kasmina.events import RUN_STREAM, StoredEvent
from kasmina.ledger.errors import translate
from kasmina.ledger.store import Store, integer


class Followed(Protocol):
    """What following needs of the ledger; `kasmina.ledger.Ledger` is one."""

    @property
    def url(self) -> str: ...

    @property
    def store(self) -> Store: ...

    def require_run(self, run_id: str) -> None: ...

    def read(self, run_id: str | None = None, *, after: int = 0) -> Iterator[StoredEvent]: ...


FINISHED = "RunFinished"


def follow(
    ledger: Followed,
    run_id: str,
    *,
    after: int = 0,
    poll_interval: float = 0.05,
    max_interval: float = 1.0,
    timeout: float | None = None,
    wait_for_run: bool = False,
) -> Iterator[StoredEvent]:
    """Yield every event of `run_id` with position > `after`, in position order, each once.

    Returns after yielding the run's `RunFinished` event (at once, yielding
    nothing, when `after` is already at or past it). Between polls that find
    nothing it sleeps, starting at `poll_interval` seconds and backing off by
    half each time up to `max_interval`; any new event resets the wait.

    The run must exist when `follow` is called (else `RunNotFound`, raised by
    the call itself, not by the first ``next``), unless `wait_for_run` is set,
    in which case it also waits for the run's `RunStarted`. `timeout` bounds
    how long one wait for the next event may last (``None``: for ever); past
    it, `FollowTimeout` is raised.

    Positions are granted in commit order within a run (see the module
    docstring), so resuming from the last position seen never skips an event
    committed later, with any number of concurrent writers. The ledger
    connection is used only between yields; do not append through the same
    `Ledger` from another thread while following.
    """
    if poll_interval <= 0 or max_interval < poll_interval:
        raise ValueError("need 0 < poll_interval <= max_interval")
    if not wait_for_run:
        ledger.require_run(run_id)
    finished = _finished_at(ledger, run_id)
    if finished is not None and finished <= after:
        return iter(())
    return _tail(ledger, run_id, after, poll_interval, max_interval, timeout)


def _finished_at(ledger: Followed, run_id: str) -> int | None:
    """The position of the run's `RunFinished`, or None while the run is open."""
    with translate(ledger.url):
        rows = ledger.store.fetch(
            "SELECT position FROM events WHERE event_type = ? AND run_id = ? AND stream_id = ?",
            (FINISHED, run_id, RUN_STREAM),
        )
    return integer(rows[0][0], "a position") if rows else None


def _tail(
    ledger: Followed,
    run_id: str,
    after: int,
    poll_interval: float,
    max_interval: float,
    timeout: float | None,
) -> Iterator[StoredEvent]:
    last = after
    delay = poll_interval
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = False
        for event in ledger.read(run_id, after=last):
            found = True
            last = event.position
            yield event
            if event.event_type == FINISHED:
                return
        if found:
            delay = poll_interval
            deadline = None if timeout is None else time.monotonic() + timeout
            continue  # poll again at once: more may have committed meanwhile
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FollowTimeout(
                    f"run {run_id!r}: no new event after position {last} in {timeout:g} s"
                )
            time.sleep(min(delay, left))
        else:
            time.sleep(delay)
        delay = min(max_interval, delay * 1.5)


__all__ = ["FollowTimeout", "follow"]
