"""Verification: recompute every hash, walk every chain, check every seal.

A run is read once, in position order, keeping only the last version and
hash of each stream, so memory grows with the number of streams, not events.

A run is checked in the ledger format it was written in (`run_formats`).
Format 1 chains each stream. Format 2 also links every event to the run's
event before it by position, so an event moved between streams or removed
anywhere breaks a hash, and each run's first event to the ledger's run start
before it, so a deleted run breaks the next run's link (`kasmina.jcs`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, astuple, dataclass, field, fields
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import orjson

from kasmina.canonical import (
    GENESIS_HASH,
    Json,
    quote,
)
from kasmina.errors import PayloadInvalid
from kasmina.ids import quoted_uuid
from kasmina.ledger.artifacts import ARTIFACTS_ENV, ArtifactStore, Problem
from kasmina.ledger.formats import row_hash
from kasmina.ledger.rows import RowReader, StoredRun
from kasmina.ledger.store import Row
from kasmina.streams import RUN_STREAM

if TYPE_CHECKING:
    from kasmina.ledger.store import Store

FaultKind = Literal[
    "hash_mismatch",
    "broken_link",
    "broken_run_link",
    "missing_run",
    "wrong_format",
    "version_gap",
    "out_of_order",
    "seal_mismatch",
    "seal_missing_stream",
    "seal_unknown_stream",
    "after_seal",
    "bad_seal",
    "bad_signature",
    "unsigned_seal",
    "unsigned_tail",
    "untrusted_signature",
    "anchor_cut",
    "anchor_mismatch",
    "unsigned_anchor",
    "bad_anchor_signature",
    "bad_position",
    "malformed_row",
    "missing_artifact",
    "bad_artifact",
]


@dataclass(frozen=True, slots=True)
class Fault:
    run_id: str
    stream_id: str
    position: int | None
    version: int | None
    kind: FaultKind
    detail: str

    def __str__(self) -> str:
        where = f"run {self.run_id} stream {self.stream_id}"
        if self.position is not None:
            where += f" position {self.position}"
        if self.version is not None:
            where += f" version {self.version}"
        return f"{self.kind}: {where}: {self.detail}"


@dataclass(frozen=True, slots=True)
class RunCheck:
    run_id: str
    events: int
    streams: int
    sealed: bool
    #: The ledger format the run's hashes are checked in.
    format: int = 1


@dataclass(frozen=True, slots=True)
class VerifyReport:
    runs: list[RunCheck] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    @property
    def events(self) -> int:
        return sum(r.events for r in self.runs)


class SavedArtifact(NamedTuple):
    """A ``CheckpointSaved`` row as the artifact check reads it, each column as stored.

    Only these four: the checker keeps them from a row it hashed from its
    stored columns without rendering it as the view shows it, which would
    cost a query for the stream's previous hash.
    """

    position: object
    stream: object
    version: object
    payload: object

    @classmethod
    def of(cls, row: Row) -> SavedArtifact:
        return cls(row[0], row[3], row[4], row[9])


RowSource = Callable[..., Iterator[Row]]
#: Checks a run's stored rows with a checker made for it, adding its checkpoint rows to the list.
RunChecker = Callable[["ChainChecker", RowReader, StoredRun, list[SavedArtifact]], None]


def verify_runs(
    store: Store,
    run_ids: Iterable[object],
    rows: RowSource,
    artifacts: ArtifactStore | None = None,
    *,
    whole_ledger: bool = False,
    trusted: str | None = None,
    reader: RowReader | None = None,
    check_run: RunChecker | None = None,
) -> VerifyReport:
    """Every run's chains and seal, and every artifact its `CheckpointSaved` events name.

    With `whole_ledger`, also every run the ledger recorded a format for
    but holds no start of (a deleted run). With `trusted`, a public key
    (hex), every seal must be signed by that key. With `reader`, a run
    stored in the lean tables is read as stored instead of from `rows`,
    checked by `check_run` (default `check_sequentially`;
    `kasmina.ledger.verify_jobs` splits a long run between processes).
    """
    checks = check_run or check_sequentially
    report = VerifyReport()
    formats = run_formats(store)
    starts = RunStartChain(store, formats)
    for run_id in run_ids:
        if type(run_id) is not str:
            shown = _shown(run_id)
            detail = f"run_id holds {shown}, not text: its rows belong to no run"
            report.faults.append(Fault(shown, "?", None, None, "malformed_row", detail))
            continue
        form = formats.get(run_id, 1)
        checker = ChainChecker(
            store,
            run_id,
            readable=True,
            form=form,
            link=starts.link(run_id, form),
            trusted=trusted,
        )
        saved: list[SavedArtifact] = []
        stored = reader.stored_run(run_id) if reader is not None else None
        if reader is not None and stored is not None:
            checks(checker, reader, stored, saved)
        else:
            for row in rows(run_id):
                checker.check(row)
                if row[5] == "CheckpointSaved":
                    saved.append(SavedArtifact.of(row))
        report.runs.append(checker.result())
        report.faults.extend(starts.faults(run_id))
        report.faults.extend(checker.faults)
        if trusted is not None and form >= 2 and checker.run_prev is not None:
            report.faults.extend(_tip_faults(store, run_id, checker, trusted))
        report.faults.extend(_check_artifacts(store, run_id, saved, artifacts))
    if whole_ledger:
        report.faults.extend(starts.missing())
    return report


def check_sequentially(
    checker: ChainChecker, reader: RowReader, run: StoredRun, saved: list[SavedArtifact]
) -> None:
    """Check a run's stored rows in this process, in position order."""
    checker.check_stored(run, reader.stored_pages(run), partial(reader.render, run), saved)


def run_formats(store: Store) -> dict[str, int]:
    """The ledger format of every run written in format 2 or later; any other run is format 1."""
    if not store.has_table("ledger_runs"):
        return {}  # a ledger older than format 2
    found = {}
    for run_id, form in store.fetch("SELECT run_id, format FROM ledger_runs"):
        if type(run_id) is str and type(form) is int:
            found[run_id] = form
    return found


def run_format(store: Store, run_id: str) -> int:
    if not store.has_table("ledger_runs"):
        return 1
    rows = store.fetch("SELECT format FROM ledger_runs WHERE run_id = ?", (run_id,))
    return rows[0][0] if rows and type(rows[0][0]) is int else 1


class RunStartChain:
    """The ledger's run starts in position order: the chain each format-2 run's first event
    continues, and the runs the ledger recorded but no longer holds."""

    def __init__(self, store: Store, formats: dict[str, int]) -> None:
        self.formats = formats
        rows = store.fetch(
            "SELECT run_id, hash FROM events WHERE event_type = 'RunStarted' ORDER BY position"
        )
        #: run id -> the hash of the run start before its first one (GENESIS_HASH for none).
        self._before: dict[str, str] = {}
        #: run id -> the format-2 run that started earlier than this format-1 one.
        self._after_format_2: dict[str, str] = {}
        #: Every run start's hash, in position order: the chain an anchor covers.
        self.hashes: list[str] = []
        previous, newer = GENESIS_HASH, None
        for run_id, digest in rows:
            if type(run_id) is not str:
                continue
            if run_id not in self._before:
                self._before[run_id] = previous
                if formats.get(run_id, 1) >= 2:
                    newer = run_id
                elif newer is not None:
                    self._after_format_2[run_id] = newer
            previous = str(digest)
            self.hashes.append(previous)

    def link(self, run_id: str, form: int) -> str | None:
        """What the run's first event must link to; None for a format-1 run (no link)."""
        return self._before.get(run_id, GENESIS_HASH) if form >= 2 else None

    def faults(self, run_id: str) -> list[Fault]:
        newer = self._after_format_2.get(run_id)
        if newer is None:
            return []
        detail = (
            f"the run is hashed as format 1 but starts after format-2 run {newer}: "
            "its ledger format was removed, or it was rewritten"
        )
        return [Fault(run_id, RUN_STREAM, None, None, "wrong_format", detail)]

    def missing(self) -> list[Fault]:
        return [
            Fault(
                run_id,
                RUN_STREAM,
                None,
                None,
                "missing_run",
                f"the ledger recorded this run (format {form}) but holds no start of it: "
                "the run, or its RunStarted, was deleted",
            )
            for run_id, form in sorted(self.formats.items())
            if run_id not in self._before
        ]


def _check_artifacts(
    store: Store, run_id: str, saved: list[SavedArtifact], artifacts: ArtifactStore | None
) -> list[Fault]:
    """A fault for each recorded checkpoint whose file is missing or is not what was recorded."""
    faults = []
    for row in saved:
        position = row.position if type(row.position) is int else None
        version = row.version if type(row.version) is int else None
        stream = _text(row.stream)
        try:
            payload = store.payload_value(row.payload)
        except (TypeError, ValueError):
            continue  # the chain check has named this row already
        if not isinstance(payload, dict) or not isinstance(payload.get("digest"), str):
            continue
        digest = str(payload["digest"])
        size, path = payload.get("bytes"), payload.get("path")
        if artifacts is None:
            problem: Problem | None = Problem(
                True,
                f"artifact {digest} cannot be checked: no artifact store is configured "
                f"(--artifacts DIR or {ARTIFACTS_ENV})",
            )
        else:
            problem = artifacts.problem(
                digest,
                size if type(size) is int else None,
                path if isinstance(path, str) else None,
            )
        if problem is not None:
            kind: FaultKind = "missing_artifact" if problem.missing else "bad_artifact"
            faults.append(Fault(run_id, stream, position, version, kind, problem.detail))
    return faults


class ChainChecker:
    """Checks one run's rows, fed in position order; the one implementation of `verify`.

    It keeps only the last version and hash of each stream, so memory grows
    with the number of streams, not events. Replay feeds it the rows it folds
    and resumes it from a snapshot through `heads`.
    """

    __slots__ = (
        "last_position",
        "link",
        "trusted",
        "_payload_text",
        "_recorded_at_text",
        "_quoted",
        "_readable",
        "_parsed_time",
        "count",
        "faults",
        "form",
        "heads",
        "run_id",
        "run_prev",
        "sealed",
        "store",
    )

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        heads: dict[str, tuple[int, str]] | None = None,
        sealed: bool = False,
        count: int = 0,
        readable: bool = False,
        form: int | None = None,
        link: str | None = None,
        run_prev: str | None = None,
        trusted: str | None = None,
    ) -> None:
        """`form` None: the run's own, looked up. `link`: what a format-2 run's first
        event must link to (the ledger's run start before it); None trusts the
        link it stores, for a reader of one run. `run_prev`: the hash of the
        run's last event before the rows to come, when resuming from a snapshot."""
        self.store = store
        self.run_id = run_id
        self.form = run_format(store, run_id) if form is None else form
        self.link = link
        self.trusted = trusted
        #: Format 2: the hash of the run's last event checked (None before the first).
        self.run_prev = run_prev
        #: The position of the run's last event checked.
        self.last_position: int | None = None
        self.heads: dict[str, tuple[int, str]] = dict(heads or {})
        self.sealed = sealed
        self.count = count
        self.faults: list[Fault] = []
        self._payload_text = store.payload_text
        self._recorded_at_text = store.recorded_at_text
        #: JSON literals of the strings that repeat (run, streams, types, seeds).
        self._quoted: dict[str | None, str] = {None: "null"}
        #: With `readable`, a row whose hash matches must also parse (payload,
        #: time), so that what verifies can be read. Replay leaves it off: it
        #: parses every payload as it folds.
        self._readable: Callable[[object, object], bool] | None = self._parses if readable else None
        #: The last time that parsed: a batch's events share one.
        self._parsed_time: object = None

    def _parses(self, payload: object, recorded_at: object) -> bool:
        try:
            if recorded_at != self._parsed_time:
                self.store.recorded_at_value(recorded_at)
                self._parsed_time = recorded_at
            if type(payload) is str:
                # Only whether it is a JSON object: orjson says so in a fraction of the
                # time; what it refuses (a lone surrogate escape) the reader decides.
                try:
                    return type(orjson.loads(payload)) is dict
                except orjson.JSONDecodeError:
                    pass
            return isinstance(self.store.payload_value(payload), dict)
        except (TypeError, ValueError):
            return False

    def _fault(
        self, stream: str, position: int | None, version: int | None, kind: FaultKind, detail: str
    ) -> None:
        self.faults.append(Fault(self.run_id, stream, position, version, kind, detail))

    def check(self, row: Row) -> bool:
        """Check one row (14 columns, the ledger's order); True when it added no fault.

        The common case (the next version of its stream, linked, well typed,
        not a seal) takes a lean path; anything else, and any row whose hash
        does not match, goes through `_check_fully`, which names each fault.
        """
        (position, event_id, run_id, stream, version, event_type, schema_version, epoch,
         seed_id, payload, recorded_at, prev_hash, stored_hash,
         rank) = cast(tuple[Any, ...], row)  # fmt: skip
        head = self.heads.get(stream)
        last_version, last_hash = head if head is not None else (0, self._origin(stream, row))
        if (
            self.sealed
            or position < 1
            or type(version) is not int
            or version != last_version + 1
            or prev_hash != last_hash
            or event_type == "RunFinished"
            or type(schema_version) is not int
            or not (epoch is None or type(epoch) is int)
            or not (rank is None or type(rank) is int)
        ):
            return self._check_fully(row)
        try:
            quoted = self._quoted
            q_run = quoted.get(run_id) or self._quote(run_id)
            q_stream = quoted.get(stream) or self._quote(stream)
            q_type = quoted.get(event_type) or self._quote(event_type)
            q_seed = quoted.get(seed_id) or self._quote(seed_id)
            epoch_text = "null" if epoch is None else str(epoch)
            q_time = quote(self._recorded_at_text(recorded_at))
            digest = row_hash(
                self.form, quote(event_id), q_run, q_stream, version, q_type, schema_version,
                epoch_text, q_seed, self._payload_text(payload, self.form), q_time, prev_hash,
                prev_hash if self.run_prev is None else self.run_prev, rank,
            )  # fmt: skip
        except (TypeError, ValueError):  # a column of the wrong type: named by the full check
            return self._check_fully(row)
        if digest != stored_hash:
            return self._check_fully(row)
        if self._readable is not None and not self._readable(payload, recorded_at):
            return self._check_fully(row)
        self.count += 1
        self.heads[stream] = (version, stored_hash)
        self.run_prev, self.last_position = stored_hash, position
        return True

    def check_stored(
        self,
        run: StoredRun,
        pages: Iterable[list[tuple[Any, ...]]],
        render: Callable[[tuple[Any, ...]], Row | None],
        saved: list[SavedArtifact],
    ) -> None:
        """Check a run's rows as stored (`RowReader.stored_pages`), adding its
        ``CheckpointSaved`` rows to `saved`: `check` without rendering every row.

        The common row (as in `check`) is hashed from its stored columns, its
        stream's previous hash taken from `heads`; any other is rendered as
        the view shows it and goes through `check`, so the faults are the same.
        """
        store, heads, quoted, form = self.store, self.heads, self._quoted, self.form
        view_id: Callable[[object], Any] = store.view_id
        view_hash, view_time = store.view_hash, store.view_time
        payload_text, time_text = store.payload_text, store.recorded_at_text
        readable = self._readable
        q_run = quote(run.run_id)
        streams, types = run.streams, run.types
        last_time: object = object()
        shown_time: object = None
        q_time = ""
        # The checker's state in locals, written back before a row goes the long way.
        count, run_prev, last_position, sealed = 0, self.run_prev, self.last_position, self.sealed
        try:
            for page in pages:
                for stored in page:
                    (position, event_id, stream_key, version, type_key, schema_version, epoch,
                     seed_id, payload, recorded_at, digest, rank) = stored  # fmt: skip
                    stream: Any = streams.get(stream_key)
                    event_type: Any = types.get(type_key)
                    head = heads.get(stream) if type(stream) is str else None
                    if head is not None:
                        last_version, last_hash = head
                    elif form < 2 or stream != RUN_STREAM:
                        last_version, last_hash = 0, GENESIS_HASH
                    else:
                        last_version, last_hash = -1, ""  # the run's start link: rendered
                    if not (
                        type(stream) is not str
                        or sealed
                        or position < 1
                        or type(version) is not int
                        or version != last_version + 1
                        or event_type == "RunFinished"
                        or type(schema_version) is not int
                        or not (epoch is None or type(epoch) is int)
                        or not (rank is None or type(rank) is int)
                    ):
                        try:
                            if recorded_at != last_time:
                                shown_time = view_time(recorded_at)
                                q_time = quote(time_text(shown_time))
                                last_time = recorded_at
                            stored_hash: Any = view_hash(digest)
                            q_id = (
                                quoted_uuid(event_id)
                                if type(event_id) is bytes and len(event_id) == 16
                                else quote(view_id(event_id))
                            )
                            digest_text: str | None = row_hash(
                                form, q_id, q_run,
                                quoted.get(stream) or self._quote(stream), version,
                                quoted.get(event_type) or self._quote(event_type), schema_version,
                                "null" if epoch is None else str(epoch),
                                quoted.get(seed_id) or self._quote(seed_id),
                                payload_text(payload, form),
                                q_time, last_hash, last_hash if run_prev is None else run_prev,
                                rank,
                            )  # fmt: skip
                        except (TypeError, ValueError):
                            digest_text = None
                        if digest_text == stored_hash and (
                            readable is None or readable(payload, shown_time)
                        ):
                            count += 1
                            heads[stream] = (version, stored_hash)
                            run_prev = stored_hash
                            last_position = position
                            if event_type == "CheckpointSaved":
                                saved.append(SavedArtifact(position, stream, version, payload))
                            continue
                    self.count += count
                    self.run_prev, self.last_position, count = run_prev, last_position, 0
                    self._check_rendered(render(stored), saved)
                    run_prev, last_position, sealed = self.run_prev, self.last_position, self.sealed
        finally:
            self.count += count
            self.run_prev, self.last_position = run_prev, last_position

    def _check_rendered(self, row: Row | None, saved: list[SavedArtifact]) -> None:
        if row is not None:  # None: a row the view leaves out, as `verify` of the view does
            self.check(row)
            if row[5] == "CheckpointSaved":
                saved.append(SavedArtifact.of(row))

    def _origin(self, stream: str, row: Row) -> str:
        """What the first event of `stream` links to: nothing, but for a format-2 run's
        own stream, whose first event links to the ledger's run start before it."""
        if self.form < 2 or stream != RUN_STREAM:
            return GENESIS_HASH
        if self.link is not None:
            return self.link
        return row[11] if type(row[11]) is str else GENESIS_HASH

    def _quote(self, text: str) -> str:
        literal = self._quoted[text] = quote(text)
        return literal

    def _check_fully(self, row: Row) -> bool:
        found = len(self.faults)
        self.count += 1
        position = row[0] if type(row[0]) is int else None
        stream = _text(row[3])
        version = row[4] if type(row[4]) is int else None
        if self.sealed:
            self._fault(
                stream,
                position,
                version,
                "after_seal",
                f"{_text(row[5])} recorded after the run's RunFinished seal",
            )
        if position is not None and position < 1:
            self._fault(
                stream,
                position,
                version,
                "bad_position",
                "the database numbers events from 1: a row below that was placed by hand",
            )
            # Outside the chain: the rows after it are checked as if it were not there.
            heads, sealed, run_prev = dict(self.heads), self.sealed, self.run_prev
            self._check_columns(row, stream, position, version, found)
            self.heads, self.sealed, self.run_prev = heads, sealed, run_prev
            return False
        return self._check_columns(row, stream, position, version, found)

    def _check_columns(
        self, row: Row, stream: str, position: int | None, version: int | None, found: int
    ) -> bool:
        problems = malformed_columns(row, self.store)
        if problems:
            self._fault(stream, position, version, "malformed_row", "; ".join(problems))
            self._step_over(row, stream, version)
            return False
        return self._check_chain(row, found)

    def _step_over(self, row: Row, stream: str, version: int | None) -> None:
        """Take a malformed row as its stream's next, so the rows after it are still checked."""
        if type(row[12]) is str:
            last_version = self.heads.get(stream, (0, GENESIS_HASH))[0]
            self.heads[stream] = (last_version + 1 if version is None else version, row[12])
            self.run_prev = row[12]
        if row[5] == "RunFinished":
            self.sealed = True

    def _check_chain(self, row: Row, found: int) -> bool:
        """Versions, link, hash and seal of a row whose every column is well formed."""
        position = cast(int, row[0])
        stream = cast(str, row[3])
        version = cast(int, row[4])
        event_type = cast(str, row[5])
        prev_hash = cast(str, row[11])
        stored_hash = cast(str, row[12])
        head = self.heads.get(stream)
        last_version, last_hash = head if head is not None else (0, self._origin(stream, row))
        if version <= last_version:
            self._fault(
                stream, position, version, "out_of_order", f"version {version} after {last_version}"
            )
        elif version != last_version + 1:
            self._fault(
                stream,
                position,
                version,
                "version_gap",
                f"versions {last_version + 1}..{version - 1} are missing",
            )
        if prev_hash != last_hash and head is None and self.form >= 2 and stream == RUN_STREAM:
            self._fault(
                stream,
                position,
                version,
                "broken_run_link",
                f"the run's start links to {prev_hash[:12]}…, but the ledger's run start "
                f"before it is {last_hash[:12]}…: a run before it was deleted, or this run moved",
            )
        elif prev_hash != last_hash:
            self._fault(
                stream,
                position,
                version,
                "broken_link",
                "prev_hash does not match the previous event's hash",
            )
        store = self.store
        epoch, seed = cast("int | None", row[7]), cast("str | None", row[8])
        try:
            text = store.payload_text(row[9], self.form)
        except ValueError as exc:  # a number past any double: no event kasmina hashed held one
            self._fault(stream, position, version, "malformed_row", f"payload: {exc}")
            text = ""
        digest = row_hash(
            self.form, quote(cast(str, row[1])), quote(cast(str, row[2])), quote(stream),
            version, quote(event_type), cast(int, row[6]),
            "null" if epoch is None else str(epoch), "null" if seed is None else quote(seed),
            text, quote(store.recorded_at_text(row[10])),
            prev_hash, prev_hash if self.run_prev is None else self.run_prev,
            cast("int | None", row[13]),
        )  # fmt: skip
        detail = (
            "the row's content, or the run's event before it by position, does not "
            "match its hash: an event edited, moved, inserted or removed"
            if self.form >= 2
            else "the row's content does not match its hash"
        )
        if digest != stored_hash:
            self._fault(stream, position, version, "hash_mismatch", detail)
        if event_type == "RunFinished":
            self.faults.extend(
                _check_seal(
                    self.run_id, stream, position, version, row, store, self.heads, self.trusted
                )
            )
            self.sealed = True
        self.heads[stream] = (version, stored_hash)
        self.run_prev, self.last_position = stored_hash, position
        return len(self.faults) == found

    def result(self) -> RunCheck:
        return RunCheck(self.run_id, self.count, len(self.heads), self.sealed, self.form)


_TEXT_COLUMNS = ((1, "event_id"), (2, "run_id"), (3, "stream_id"), (5, "event_type"),
                 (11, "prev_hash"), (12, "hash"))  # fmt: skip
_INTEGER_COLUMNS = ((4, "version"), (6, "schema_version"))
_NULLABLE = ((7, "epoch", int), (8, "seed_id", str), (13, "rank", int))


def malformed_columns(row: Row, store: Store) -> list[str]:
    """What is wrong with each column that holds what kasmina never writes there.

    SQLite stores any value in any column (``version = 'abc'``), and a row
    placed by hand may hold text that is no JSON or no time; each is named,
    so that `verify` reports it instead of failing on it.
    """
    problems: list[str] = []
    for index, name in _TEXT_COLUMNS:
        if type(row[index]) is not str:
            problems.append(f"{name} holds {_shown(row[index])}, not text")
    for index, name in _INTEGER_COLUMNS:
        if type(row[index]) is not int:
            problems.append(f"{name} holds {_shown(row[index])}, not an integer")
    for index, name, kind in _NULLABLE:
        if row[index] is not None and type(row[index]) is not kind:
            wanted = "an integer" if kind is int else "text"
            problems.append(f"{name} holds {_shown(row[index])}, not {wanted} or NULL")
    try:
        payload = store.payload_value(row[9])
    except (TypeError, ValueError):
        problems.append(f"payload holds {_shown(row[9])}, not JSON")
    else:
        if not isinstance(payload, dict):
            problems.append(f"payload holds {_shown(row[9])}, not a JSON object")
    try:
        store.recorded_at_value(row[10])
        if type(store.recorded_at_text(row[10])) is not str:
            raise TypeError
    except (TypeError, ValueError):
        problems.append(f"recorded_at holds {_shown(row[10])}, not an ISO 8601 time")
    return problems


def _text(value: object) -> str:
    """A text column as it is, anything else as `_shown` names it."""
    return value if type(value) is str else _shown(value)


def _shown(value: object) -> str:
    """A stored value as a fault names it: its literal, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_seal(
    run_id: str,
    stream: str,
    position: int,
    version: int,
    row: Row,
    store: Store,
    heads: dict[str, tuple[int, str]],
    trusted: str | None,
) -> list[Fault]:
    payload = store.payload_value(row[9])
    seal = payload.get("seal") if isinstance(payload, dict) else None
    if not isinstance(seal, dict) or not isinstance(payload, dict):
        return [Fault(run_id, stream, position, version, "bad_seal", "RunFinished has no seal")]
    faults: list[Fault] = []
    problem = _signature_problem(run_id, payload, seal, trusted)
    if problem is not None:
        faults.append(Fault(run_id, stream, position, version, *problem))
    for sealed_stream, sealed_hash in sorted(seal.items()):
        head = heads.get(sealed_stream)
        if head is None:
            faults.append(
                Fault(
                    run_id,
                    sealed_stream,
                    None,
                    None,
                    "seal_missing_stream",
                    "the seal names a stream with no events (deleted?)",
                )
            )
        elif head[1] != sealed_hash:
            faults.append(
                Fault(
                    run_id,
                    sealed_stream,
                    None,
                    None,
                    "seal_mismatch",
                    f"sealed head {str(sealed_hash)[:12]}… but the stream ends at "
                    f"version {head[0]} ({head[1][:12]}…): events truncated or altered",
                )
            )
    for live_stream in sorted(set(heads) - set(seal)):
        faults.append(
            Fault(
                run_id,
                live_stream,
                None,
                None,
                "seal_unknown_stream",
                "stream has events before the seal but is not in it",
            )
        )
    return faults


def _tip_faults(store: Store, run_id: str, checker: ChainChecker, trusted: str) -> list[Fault]:
    """A fault unless the pinned key signed the run's last event (`kasmina.signing.tip_message`).

    In format 2 that one signature covers every event before it too, so
    whatever was appended by someone without the key is an unsigned tail.
    """
    from kasmina.signing import tip_message, verify_signature

    last, digest = checker.last_position, checker.run_prev
    if last is None or digest is None:
        return []
    signed: int | None = None
    signed_hash = None
    if store.has_table("run_tips"):
        rows = store.fetch(
            "SELECT position, hash, signature FROM run_tips WHERE run_id = ? AND public_key = ? "
            "ORDER BY position DESC",
            (run_id, trusted),
        )
        for position, tip_hash, signature in rows:
            if type(position) is not int or not isinstance(signature, str):
                continue
            if verify_signature(trusted, tip_message(run_id, position, str(tip_hash)), signature):
                signed, signed_hash = position, tip_hash
                break
    if signed == last and signed_hash == digest:
        return []
    if signed is None:
        detail = f"no event of the run is signed by the pinned key {trusted[:12]}…"
    else:
        detail = (
            f"the events after position {signed}, the last one the pinned key signed, "
            "were appended without the key"
        )
    return [Fault(run_id, RUN_STREAM, last, None, "unsigned_tail", detail)]


_SEAL_FAULTS: dict[str, FaultKind] = {
    "unsigned": "unsigned_seal",
    "bad": "bad_signature",
    "untrusted": "untrusted_signature",
}


def _signature_problem(
    run_id: str, payload: dict[str, Json], seal: dict[str, Json], trusted: str | None
) -> tuple[FaultKind, str] | None:
    """What is wrong with the seal's signature, given the key the verifier pins (if any)."""
    signature = payload.get("signature")
    if signature is None and trusted is None:
        return None  # nothing to check, and no need to load cryptography to say so
    from kasmina.signing import seal_message, signature_problem

    signed = None
    if signature is not None:
        public = signature.get("public_key") if isinstance(signature, dict) else None
        value = signature.get("value") if isinstance(signature, dict) else None
        status = payload.get("status")
        if not (isinstance(public, str) and isinstance(value, str) and isinstance(status, str)):
            return "bad_signature", "the seal's signature is malformed"
        try:
            message = seal_message(run_id, status, {str(k): str(v) for k, v in seal.items()})
        except PayloadInvalid:
            return "bad_signature", "the seal cannot be written as canonical JSON"
        signed = (public, value)
    problem = signature_problem("the seal", signed, lambda: message, trusted)
    return None if problem is None else (_SEAL_FAULTS[problem[0]], problem[1])


def report_json(report: VerifyReport) -> str:
    """The report as one JSON document: the verdict, each run checked, each fault."""
    return json.dumps(
        {
            "ok": report.ok,
            "events": report.events,
            "runs": [asdict(r) for r in report.runs],
            "faults": [asdict(f) for f in report.faults],
        },
        indent=2,
    )


def report_lines(report: VerifyReport) -> Iterator[str]:
    """Each run checked, then each fault, as one JSON object a line, each with the
    fields `report_json` gives it; ``record`` tells them apart (``kind`` is a fault's)."""
    for check in report.runs:
        yield json.dumps({"record": "run", **asdict(check)})
    for fault in report.faults:
        yield json.dumps({"record": "fault", **asdict(fault)})


#: The columns of `fault_values`: a fault's fields, as `report_json` gives them.
FAULT_FIELDS = tuple(f.name for f in fields(Fault))


def fault_values(fault: Fault) -> tuple[object, ...]:
    return astuple(fault)
