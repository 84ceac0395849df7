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
