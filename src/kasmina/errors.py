"""kasmina's error hierarchy.

Callers catch these and never a driver's own exceptions: the ledger translates
sqlite3, psycopg and SQLAlchemy errors at its boundary. Each message is one line
that names what was wrong, because the CLI prints it as is.
"""

from __future__ import annotations


class KasminaError(Exception):
    """Base of every error kasmina raises on purpose."""


class InvalidTransition(KasminaError):
    """A stage move outside the transition table; nothing was recorded."""

    def __init__(self, slot_id: str, from_stage: str, to_stage: str) -> None:
        self.slot_id = slot_id
        self.from_stage = from_stage
        self.to_stage = to_stage
        super().__init__(f"illegal stage move {from_stage} -> {to_stage} in slot {slot_id!r}")


class SlotError(KasminaError):
    """A slot command that cannot be carried out in the slot's present state."""


class EventError(KasminaError):
    """An event that cannot be recorded or read as given."""


class UnknownEventType(EventError):
    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(f"unknown event type {event_type!r}")


class PayloadInvalid(EventError):
    """A payload failed validation against its model."""


class LedgerError(KasminaError):
    """A problem with the store itself."""


class BadDatabaseURL(LedgerError):
    pass


class DatabaseUnavailable(LedgerError):
    """The database could not be reached or opened."""


class DatabaseLocked(DatabaseUnavailable):
    """Other writers kept the database locked past every retry; nothing was written."""


class LedgerNotFound(DatabaseUnavailable):
    """A read named a SQLite file that does not exist; reads never create one."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"no ledger at {path} (`kasmina db upgrade` creates one)")


class ReadOnlyLedger(LedgerError):
    """A write to a ledger opened read-only (its file or folder is not writable)."""


class WouldLoseData(LedgerError):
    """A downgrade refused because it would drop recorded data (see ``--discard-data``)."""


class SchemaMismatch(LedgerError):
    """The database's schema revision is not the one this code writes."""


class ConcurrencyError(LedgerError):
    """Another writer appended to the stream first (optimistic concurrency)."""

    def __init__(self, run_id: str, stream_id: str, expected_version: int, actual: int) -> None:
        self.run_id = run_id
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual
        super().__init__(
            f"stream {stream_id!r} of run {run_id!r} is at version {actual}, so an event "
            f"written as its version {expected_version} does not follow it: another writer "
            "appended first (read the stream again, then retry)"
        )


class DuplicateEvent(LedgerError):
    """An event id already used by another event: a retry must repeat the event exactly.

    Skipping such an event silently would lose it while reporting success, so
    only an exact repeat (every hashed field the caller chose) is a no-op.
    """

    def __init__(self, event_id: str, reason: str) -> None:
        self.event_id = event_id
        super().__init__(f"event id {event_id!r} {reason}; nothing from this batch was appended")


class RunNotFound(LedgerError):
    def __init__(self, run_id: str, detail: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(detail or f"no run with id {run_id!r}")


class AmbiguousRun(LedgerError):
    """A run reference (`Ledger.resolve_run`) that names more than one run."""

    def __init__(self, ref: str, candidates: list[str]) -> None:
        self.ref = ref
        self.candidates = candidates
        super().__init__(f"{ref!r} names {len(candidates)} runs: {'; '.join(candidates)}")


class ReadOnlyViolation(LedgerError):
    """A write attempted through the read-only SQL path."""


class QueryError(LedgerError):
    """A read-only query that the database rejected."""


class RunExists(LedgerError):
    """`Ledger.start_run` with the id of a run already in the ledger."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"a run with id {run_id!r} already exists in this ledger: start the new run "
            "under another run_id, or none for a fresh one"
        )


class RunClosed(LedgerError):
    """An append to a run that already has its `RunFinished` seal."""

    def __init__(self, run_id: str, status: str | None = None) -> None:
        self.run_id = run_id
        how = "finished and sealed" if status is None else f"sealed already ({status})"
        super().__init__(f"run {run_id!r} is {how}; it takes no more events")


class RunHeld(LedgerError):
    """Closing a run (`kasmina runs close`) that a live process still writes."""

    def __init__(self, run_id: str, holder: str) -> None:
        self.run_id = run_id
        self.holder = holder
        super().__init__(
            f"run {run_id!r} is still being written by {holder}: "
            "stop it first, or let it finish the run"
        )


class FollowTimeout(LedgerError, TimeoutError):
    """No new event of the followed run arrived within the allowed wait."""


class ReportError(KasminaError):
    """A report asked for something the ledger does not hold, such as an unrecorded metric."""


class ReplayError(KasminaError):
    """A run cannot be folded or re-executed; `position` names the event at fault."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.position = position
        where = f"position {position}: " if position is not None else ""
        super().__init__(f"{where}{message}")


class UnverifiedRun(ReplayError):
    """The run's hash chain does not verify, so its fold is refused (see ``--trust``)."""


class NotReexecutable(ReplayError):
    """The run lacks what re-execution needs (an unknown host, a missing config...)."""


class SigningError(KasminaError):
    """A signing key, public key or anchor file that cannot be used; the message names it."""


__all__ = [
    "AmbiguousRun",
    "BadDatabaseURL",
    "ConcurrencyError",
    "DatabaseLocked",
    "DatabaseUnavailable",
    "DuplicateEvent",
    "EventError",
    "InvalidTransition",
    "KasminaError",
    "LedgerError",
    "LedgerNotFound",
    "NotReexecutable",
    "PayloadInvalid",
    "QueryError",
    "ReadOnlyLedger",
    "ReadOnlyViolation",
    "ReplayError",
    "ReportError",
    "RunClosed",
    "RunHeld",
    "RunExists",
    "RunNotFound",
    "SchemaMismatch",
    "SigningError",
    "SlotError",
    "UnknownEventType",
    "UnverifiedRun",
    "WouldLoseData",
]
