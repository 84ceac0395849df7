"""The heads of a run's streams, remembered between appends and trusted only while current.

Chaining an event needs its stream's last version and hash. Reading them is
an index probe per stream per batch, and a run of a hundred slots appends a
hundred streams at a time, so that probe was the largest cost of a batched
append. A writer appending to its own run again and again already knows
them: they are what its previous append left.

Knowing is not trusting, since another process may append to the run in
between. So the heads are kept with the run's *tip*, its largest stored
position, read inside the write transaction (one index probe per batch):
events are never updated or deleted, so an unchanged tip means no event of
the run was stored since, and every remembered head is still the head. Any
other tip and the memory is dropped and the heads read again.

Heads are promoted only after the transaction commits; a batch that rolls
back leaves the memory as it was, or drops it. A finished run is not
remembered at all: its next append must find `RunFinished` and refuse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kasmina.ledger.store import Row, Store

#: Each stream of a run (one ``?``) with its last version and hash as stored
#: (`kasmina.ledger.store.hash_text` reads it): what a seal and an anchor record.
#: Asked of the tables, one index probe per stream: through the `events` view
#: PostgreSQL planned the correlated maximum as a scan per row.
STREAM_HEADS = (
    "SELECT s.stream_id, e.version, e.hash FROM ledger_runs r "
    "JOIN ledger_streams s ON s.run_key = r.run_key "
    "JOIN ledger_events e ON e.stream_key = s.stream_key AND e.version = "
    "(SELECT MAX(m.version) FROM ledger_events m WHERE m.stream_key = s.stream_key) "
    "WHERE r.run_id = ? ORDER BY s.stream_id"
)
#: The same of a ledger before revision 0014, which kasmina still reads.
STREAM_HEADS_0013 = (
    "SELECT e.stream_id, e.version, e.hash FROM events e WHERE e.run_id = ? AND e.version = "
    "(SELECT MAX(m.version) FROM events m WHERE m.run_id = e.run_id "
    "AND m.stream_id = e.stream_id) ORDER BY e.stream_id"
)

#: One event of a stream (stream id, version, run id: three ``?``): its hash as stored,
#: payload and event type. By keys, as `STREAM_HEADS`: through the `events` view SQLite
#: reaches the run's events by its (run, position) index and reads them all.
EVENT_AT = (
    "SELECT e.hash, e.payload, t.event_type FROM ledger_runs r "
    "JOIN ledger_streams s ON s.run_key = r.run_key AND s.stream_id = ? "
    "JOIN ledger_events e ON e.stream_key = s.stream_key AND e.version = ? "
    "AND e.run_key = r.run_key "
    "JOIN ledger_types t ON t.type_key = e.type_key WHERE r.run_id = ?"
)
EVENT_AT_VIEW = (
    "SELECT hash, payload, event_type FROM events WHERE stream_id = ? AND version = ? "
    "AND run_id = ?"
)


def event_at(store: Store, run_id: str, stream: str, version: int, *, lean: bool) -> Row | None:
    """The `EVENT_AT` row of that event, or None: what the `events` view holds.

    The keys are asked first; only where they find nothing (no such event,
    a ledger before revision 0014, or a hand-made row filed under another
    run's stream) is the view asked, so the answer is always the view's.
    """
    params = (stream, version, run_id)
    rows = store.fetch(EVENT_AT, params) if lean else []
    if not rows:
        rows = store.fetch(EVENT_AT_VIEW, params)
    return rows[0] if rows else None


#: Runs remembered per ledger: a process writes few runs at once.
MAX_RUNS = 16

Heads = dict[str, tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Known:
    """What an append learned: the run's tip after it, and the heads then."""

    run_id: str
    tip: int
    heads: Heads


class KnownHeads:
    """Per run: the tip the heads were taken at, and stream -> (version, hash)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, Known] = OrderedDict()
        self._lock = threading.Lock()

    def at(self, run_id: str, tip: int | None) -> Heads:
        """The remembered heads if the run's tip is still ``tip``, else none."""
        with self._lock:
            known = self._runs.get(run_id)
        if known is None or tip is None or known.tip != tip:
            return {}
        return known.heads

    def promote(self, known: Known) -> None:
        """Remember heads that are now committed."""
        with self._lock:
            self._runs[known.run_id] = known
            self._runs.move_to_end(known.run_id)
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
