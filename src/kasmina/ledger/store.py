"""What the ledger needs from a database, written once; one subclass per backend.

The ledger's logic (hash chain, versions, idempotency, verification) lives in
`kasmina.ledger.core` and speaks only to this interface, so "how does Postgres
append?" has a one-file answer and both backends provably behave alike (the
contract suite runs against each).
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from functools import cached_property
from typing import ClassVar, NamedTuple, Protocol, TypeAlias, TypeVar

from kasmina.canonical import Json
from kasmina.errors import DatabaseLocked, LedgerError
from kasmina.ledger.errors import redact

Param: TypeAlias = "str | int | float | bytes | None | datetime | list[str] | list[bytes]"
Row: TypeAlias = tuple[object, ...]
T = TypeVar("T")


def integer(value: object, what: str) -> int:
    """`value` read from the database as an integer, or one line naming `what` it should be.

    Drivers give ints for integer columns and aggregates; a ``bool`` or text
    in such a column only comes from a row made by hand.
    """
    if type(value) is int:
        return value
    raise LedgerError(f"the database holds {value!r} as {what}, not an integer")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(when: datetime) -> int:
    """Microseconds since 1970 (UTC): how SQLite's ``ledger_events`` keeps a time, exactly."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def hash_text(raw: object) -> str:
    """A hash as ``ledger_events`` holds it as the hex the chain links.

    32 bytes; a hash an older ledger held in another form is kept as text on
    SQLite and as NUL-led UTF-8 on PostgreSQL (revision 0014).
    """
    if isinstance(raw, bytes):
        return raw.hex() if len(raw) == 32 else raw.lstrip(b"\0").decode(errors="replace")
    return str(raw)


def optional_integer(value: object, what: str) -> int | None:
    return None if value is None else integer(value, what)


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Param] = ..., /) -> object: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Param]], /) -> object: ...
    @property
    def rowcount(self) -> int: ...
    def fetchall(self) -> list[Row]: ...
    def fetchone(self) -> Row | None: ...


class EventRow(NamedTuple):
    """One row of `events` as read, its columns by name in the ledger's order.

    The annotations are what kasmina writes; a row made by hand (SQLite keeps
    any value in any column) may hold something else, so the readers that
    need a type check it (`integer`, `kasmina.ledger.verify`). Here rather
    than in `kasmina.ledger.schema`, which imports SQLAlchemy: the stores must not.
    """

    position: int
    event_id: str
    run_id: str
    stream_id: str
    version: int
    event_type: str
    schema_version: int
    epoch: int | None
    seed_id: str | None
    payload: object
    recorded_at: object
    prev_hash: str
    hash: str
    rank: int | None


#: Columns of the `events` view in the order the ledger reads them.
COLUMNS: tuple[str, ...] = EventRow._fields
#: The columns of ``ledger_events`` an append writes, in the order of its rows
#: (revision 0015): the run, stream and type by key, and no ``prev_hash``.
INSERT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "run_key",
    "stream_key",
    "version",
    "type_key",
    "schema_version",
    "epoch",
    "seed_id",
    "payload",
    "recorded_at",
    "hash",
    "rank",
)


class Store(ABC):
    """A connection to one database, used under a lock by one `Ledger`."""

    dialect: ClassVar[str]
    #: Whether `insert_events` sends rows to a server as they are made, so that
    #: the payloads' canonical texts are best made then, overlapping the
    #: server's work, rather than before the transaction.
    streams_rows: ClassVar[bool] = False
    #: Where the payload's canonical text goes in an INSERT.
    payload_placeholder: ClassVar[str] = "?"
    #: How long `transact` keeps retrying a busy database, in seconds, all attempts together.
    busy_retry_s: float = 30.0
    #: The first pause between attempts; it doubles each time, up to `busy_max_delay_s`.
    busy_first_delay_s: float = 0.02
    busy_max_delay_s: float = 1.0
    #: Ends the `DatabaseLocked` message: what to do about it on this backend.
    busy_hint: ClassVar[str] = ""
    #: Whether this connection only reads (a SQLite file on media kasmina cannot write).
    read_only: bool = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.RLock()

    @abstractmethod
    def sql(self, text: str) -> str:
        """Adapt SQL written with ``?`` placeholders to the driver's style."""

    @abstractmethod
    def ids_filter(self, uuids: list[bytes]) -> tuple[str, list[Param]]:
        """A condition on ``ledger_events`` matching the rows whose id is one of `uuids`
        (each id's 16 bytes), and its parameters."""

    # How the ``events`` view of revision 0014 shows a stored value (`kasmina.ledger.rows`
    # renders rows with these rather than through the view, which is slower).

    @abstractmethod
    def view_id(self, raw: object) -> object:
        """An event id as stored (16 bytes, or an older ledger's text) as the view shows it."""

    def view_hash(self, raw: object) -> object:
        """A hash as stored (32 bytes, or an older ledger's text) as the view shows it."""
        return hash_text(raw)

    def view_time(self, raw: object) -> object:
        """A ``recorded_at`` as stored as the view shows it."""
        return raw

    @abstractmethod
    def is_duplicate_event_id(self, exc: BaseException) -> bool:
        """Whether a driver error is the unique index on ``event_id`` refusing a row."""

    @abstractmethod
    def write(self, run_id: str) -> AbstractContextManager[Cursor]:
        """One write transaction; appends to one run are serialised by it."""

    @cached_property
    def _insert_sql(self) -> str:
        values = ", ".join(
            self.payload_placeholder if column == "payload" else "?" for column in INSERT_COLUMNS
        )
        return self.sql(
            f"INSERT INTO ledger_events ({', '.join(INSERT_COLUMNS)}) VALUES ({values})"
        )

    def insert_events(self, cur: Cursor, rows: Iterable[Sequence[Param]]) -> int | None:
        """Insert chained rows (`INSERT_COLUMNS` order) inside the write transaction; the
        last one's position where the driver tells it without a query, else None."""
        cur.executemany(self._insert_sql, rows)
        return None

    def lock_run_starts(self, cur: Cursor) -> None:
        """Hold run starts, ledger-wide, until this write transaction ends.

        Run starts are chained in position order, so the next one must see the
        last one committed. A SQLite write transaction holds the whole file
        already; PostgreSQL takes an advisory lock.
        """
        return None

    def is_busy(self, exc: BaseException) -> bool:
        """Whether a driver error means another writer held the database: worth a retry."""
        return False

    def transact(self, run_id: str, work: Callable[[Cursor], T]) -> T:
        """Run `work` in one write transaction, from the start again while the database is busy.

        Each attempt is a whole transaction (`write`), so a retry redoes every
        read and check as well as the inserts. Between attempts it sleeps with
        capped exponential backoff and jitter, outside the store's lock; once
        `busy_retry_s` seconds have passed it gives up with `DatabaseLocked`
        (the last attempt may have waited up to one driver busy timeout more).
        """

        def attempt() -> T:
            with self.write(run_id) as cur:
                return work(cur)

        return self.retry_busy(attempt)

    def retry_busy(self, work: Callable[[], T]) -> T:
        """Call `work` until the database is not busy, with the backoff `transact` describes."""
        started = time.monotonic()
        delay = self.busy_first_delay_s
        attempts = 0
        while True:
            attempts += 1
            try:
                return work()
            except Exception as exc:
                if not self.is_busy(exc):
                    raise
                waited = time.monotonic() - started
                left = self.busy_retry_s - waited
                if left <= 0:
                    raise DatabaseLocked(
                        f"database {redact(self.url)} stayed locked by other writers for "
                        f"{waited:.1f} s ({attempts} attempts){self.busy_hint}"
                    ) from exc
                time.sleep(min(left, delay / 2 + random.uniform(0, delay / 2)))
                delay = min(delay * 2, self.busy_max_delay_s)

    def first_open(self) -> AbstractContextManager[None]:
        """Held while a new database is migrated on first open (only SQLite does that)."""
        return nullcontext()

    @abstractmethod
    def fetch(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        """Run a read outside any write transaction and return every row."""

    @abstractmethod
    def schema_revision(self) -> str | None: ...

    @abstractmethod
    def has_table(self, name: str) -> bool: ...

    def has_events_table(self) -> bool:
        return self.has_table("events")

    @abstractmethod
    def hold_run(self, run_id: str) -> bool:
        """Share the run's writer hold while this store writes it (`kasmina.ledger.writers`);
        True when this call took it (it was not held here before)."""

    @abstractmethod
    def release_run(self, run_id: str) -> None: ...

    @abstractmethod
    def run_alone(self, run_id: str) -> AbstractContextManager[None]:
        """Hold the run alone for a block; `RunHeld` while a writer holds it."""

    @abstractmethod
    def opener(self) -> Callable[[], Store]:
        """How another process opens the same database: a picklable call (`verify` jobs)."""

    @abstractmethod
    def payload_value(self, raw: object) -> Json:
        """The stored payload as a JSON value."""

    @abstractmethod
    def payload_text(self, raw: object, form: int = 1) -> str:
        """The text a stored payload was hashed as, in ledger format `form`, rebuilt
        where the store reformats it."""

    @abstractmethod
    def recorded_at_param(self, when: datetime, text: str) -> Param: ...

    @abstractmethod
    def recorded_at_value(self, raw: object) -> datetime: ...

    def recorded_at_text(self, raw: object) -> str:
        """The timestamp exactly as it was hashed (UTC, microseconds, ISO 8601)."""
        return self.recorded_at_value(raw).isoformat(timespec="microseconds")

    @abstractmethod
    def readonly_query(self, sql: str, timeout_s: float) -> tuple[list[str], Iterator[Row]]:
        """A user query on a connection that cannot write, cut after `timeout_s` seconds.

        One statement, and a plain query; Ctrl-C (KeyboardInterrupt) stops it
        in the database too. The rows' iterator holds the connection until it
        is exhausted or closed.
        """

    @abstractmethod
    def close(self) -> None: ...
