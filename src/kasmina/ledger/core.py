"""The Ledger: open, runs, read, verify over any `Store`; appends: `kasmina.ledger.appending`."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from kasmina.canonical import GENESIS_HASH, Json
from kasmina.errors import (
    BadDatabaseURL,
    ConcurrencyError,
    DatabaseUnavailable,
    KasminaError,
    LedgerError,
    LedgerNotFound,
    PayloadInvalid,
    QueryError,
    RunClosed,
    RunExists,
    RunNotFound,
    SchemaMismatch,
)
from kasmina.events import (
    RUN_STREAM,
    RunFinished,
    RunResumed,
    RunStarted,
    StoredEvent,
    make_event,
    slot_stream,
)
from kasmina.ids import uuid_bytes
from kasmina.ledger import migrate
from kasmina.ledger.appending import Appending, AppendResult, Prepared, Staged
from kasmina.ledger.artifacts import ARTIFACTS_ENV, ArtifactError, ArtifactStore, artifact_store
from kasmina.ledger.attempts import Attempts
from kasmina.ledger.errors import UPGRADE_HINT, redact, translate
from kasmina.ledger.heads import STREAM_HEADS, event_at
from kasmina.ledger.readonly import DEFAULT_TIMEOUT_S, check_timeout
from kasmina.ledger.refs import resolve_run
from kasmina.ledger.rows import PAGE_SIZE, RowReader
from kasmina.ledger.run import Run, new_run_id
from kasmina.ledger.sqlparams import bind, has_statement
from kasmina.ledger.store import (
    Cursor,
    EventRow,
    Row,
    Store,
    hash_text,
    integer,
    optional_integer,
)
from kasmina.versions import package_version

if TYPE_CHECKING:
    from kasmina.ledger.verify import VerifyReport
    from kasmina.run_state import ReplayState

DEFAULT_URL = "sqlite:///kasmina.db"


#: The fold behind `Ledger.replay`. The fold is a layer above the ledger, so it
#: plugs itself in (`use_fold`) when imported, which `Ledger.replay` does by
#: name on first use: the ledger reaches it without importing it.
_FOLD: list[Callable[..., ReplayState]] = []


def use_fold(fold: Callable[..., ReplayState]) -> None:
    _FOLD[:] = [fold]


RANK_REVISION = "0005"
LEAN_REVISION = "0015"
#: The runs that hold events, from the runs' table: one probe per run, not a scan.
_RUN_IDS = (
    "SELECT r.run_id FROM ledger_runs r WHERE EXISTS "
    "(SELECT 1 FROM ledger_events e WHERE e.run_key = r.run_key) ORDER BY r.run_id"
)
_RUN_IDS_0013 = "SELECT DISTINCT run_id FROM events ORDER BY run_id"
_TYPES = "SELECT event_type FROM ledger_types ORDER BY event_type"
_TYPES_0013 = "SELECT DISTINCT event_type FROM events ORDER BY event_type"


def _optional_float(value: object, what: str) -> float | None:
    """A REAL (SQLite) or numeric (PostgreSQL) value, or one line naming `what` it should be."""
    if value is None:
        return None
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    raise LedgerError(f"the database holds {value!r} as {what}, not a number")


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    name: str | None
    seed: int | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    events: int
    #: With `Ledger.runs(summary=True)`: epochs recorded, and the last ``val_accuracy``.
    epochs: int | None = None
    final_val_accuracy: float | None = None


def open_store(url: str, synchronous: Literal["NORMAL", "FULL"], *, create: bool) -> Store:
    """The store behind `url`; a SQLite file that does not exist is made only if `create`."""
    from kasmina.ledger.urls import checked_backend, parse_url, plain_sqlite_path

    path = plain_sqlite_path(url)
    parsed = parse_url(url) if path is None else None
    backend = "sqlite" if parsed is None else checked_backend(parsed, url)
    if backend == "sqlite":
        from kasmina.ledger.sqlite import SQLiteStore

        path = path if parsed is None else parsed.database
        if not path or path == ":memory:":
            raise BadDatabaseURL(
                f"bad database URL {redact(url)!r}: the ledger needs a file (sqlite:///PATH)"
            )
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise DatabaseUnavailable(f"cannot open {url}: folder {folder} does not exist")
        if not os.path.lexists(path):
            if not create:
                raise LedgerNotFound(path)
            migrate.upgrade(url)  # built aside and linked into place: whole, or not at all
        with translate(url):
            holds = migrate.sqlite_holds(path)
            if holds == "other":
                raise SchemaMismatch(
                    f"{redact(url)} is not a kasmina ledger: it holds other tables, and kasmina "
                    "writes its schema only into a new or empty file (or by `kasmina db upgrade`)"
                )
            if holds == "empty" and not create:
                raise SchemaMismatch(f"{redact(url)} is empty: it holds no kasmina ledger")
            return SQLiteStore(url, path, synchronous=synchronous)
    assert parsed is not None  # `checked_backend` let only SQLite and PostgreSQL by
    from kasmina.ledger.postgres import PostgresStore

    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with translate(url):
        return PostgresStore(url, conninfo)


class Ledger(Appending):
    """An immutable, hash-chained event log in SQLite or PostgreSQL."""

    def __init__(self, store: Store, *, artifacts: str | os.PathLike[str] | None = None) -> None:
        self._store = store
        self.url = store.url
        #: Where this ledger's checkpoints are kept (see `kasmina.ledger.artifacts`).
        self.artifacts: ArtifactStore | None = artifact_store(store.url, artifacts)
        self.revision = store.schema_revision()
        self._init_appending(store)
        ranked = self.revision is not None and self.revision >= RANK_REVISION
        #: Whether events are stored in the lean tables of revision 0015 (else read
        #: through ``events``, a table or, at revision 0014, a view, as it is).
        self.lean = self.revision is not None and self.revision >= LEAN_REVISION
        self._rows = RowReader(store, lean=self.lean, ranked=ranked)

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str = DEFAULT_URL,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        create: bool = True,
        artifacts: str | os.PathLike[str] | None = None,
    ) -> Ledger:
        """Open a ledger; a SQLite file that does not exist is created, at the schema head.

        With ``create=False`` (how every reading command opens) a missing
        file is `LedgerNotFound` instead, so a typo never leaves an empty
        ledger behind. Creating is the default because the first thing a
        program does with a new ledger is write to it. A file kasmina cannot
        write (read-only media) is opened for reading only. Any other
        database must be at the code's schema head before kasmina writes to
        it (``kasmina db upgrade``); reading an older one is allowed.
        `artifacts` is the artifact store's folder (default: ``KASMINA_ARTIFACTS``,
        else beside a SQLite file).
        """
        store = open_store(url, synchronous, create=create)
        try:
            with translate(url):
                if (
                    create
                    and not store.read_only
                    and store.dialect == "sqlite"
                    and not store.has_events_table()
                ):
                    with store.first_open():
                        if not store.has_events_table():
                            migrate.upgrade(url)
                if not store.has_events_table():
                    raise SchemaMismatch(f"{redact(url)} has no kasmina schema; {UPGRADE_HINT}")
                return cls(store, artifacts=artifacts)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self._store.close()  # lets go of the runs it held as their writer

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self._store.dialect

    @property
    def store(self) -> Store:
        """The backend, for kasmina's own readers (replay); not a user API."""
        return self._store

    # -- runs --------------------------------------------------------------

    def start_run(
        self,
        name: str,
        seed: int,
        config: Mapping[str, Json] | None = None,
        *,
        run_id: str | None = None,
        buffer_size: int = 0,
        host: str | None = None,
        dataset: str | None = None,
        dataset_digest: str | None = None,
        world_size: int = 1,
        slot_writers: Mapping[str, int] | None = None,
        program: Mapping[str, Json] | None = None,
    ) -> Run[Ledger]:
        """Begin a run: appends `RunStarted` with what produced it.

        Besides the config and seed, that is the versions, and (when torch is
        already imported; the ledger never imports it) torch's thread count
        and deterministic-algorithms flag: what re-executing the run needs.
        A run of several processes names its world size and which rank writes
        each slot; this process is then rank 0 (see `kasmina.runtime.distributed`).
        `program` holds what `kasmina run` records of the program (its
        ``entry_point``, ``argv``, ``code`` and ``environment``).
        """
        rid = run_id or new_run_id()
        torch = sys.modules.get("torch")
        payload = RunStarted(
            name=name,
            seed=seed,
            config=dict(config or {}),
            kasmina_version=package_version("kasmina") or "unknown",
            python_version=platform.python_version(),
            torch_version=package_version("torch"),
            platform=f"{sys.platform}-{platform.machine()}",
            num_threads=None if torch is None else int(torch.get_num_threads()),
            deterministic=(
                None if torch is None else bool(torch.are_deterministic_algorithms_enabled())
            ),
            dataset=dataset,
            dataset_digest=dataset_digest,
            host=host,
            world_size=world_size,
            slot_writers=dict(slot_writers or {}),
        )
        if program:
            payload = RunStarted.model_validate({**payload.model_dump(), **program})
        rank = None if world_size == 1 else 0
        try:
            self.append(
                [make_event(payload, run_id=rid, stream_id=RUN_STREAM, version=1, rank=rank)]
            )
        except (RunClosed, ConcurrencyError):
            if self.run_exists(rid):  # the id is taken: say that, not what the append saw
                raise RunExists(rid) from None
            raise
        return Run(self, rid, buffer_size=buffer_size, rank=rank, writers=payload.slot_writers)

    def finish_run(
        self,
        run_id: str,
        status: Literal["completed", "failed", "aborted"],
        *,
        rank: int | None = None,
    ) -> str:
        """Append `RunFinished`, sealing the last hash of every stream; returns its hash.

        The seal is taken inside the same transaction as the append, so no
        event can slip in between the seal and the end of the run. A call
        retried after its reply was lost finds the run sealed with the same
        status and returns that seal's hash; another status is `RunClosed`.
        """
        from kasmina import signing  # cryptography loads only where a run is sealed

        self._require_head()
        key = self.signer()

        def seal_and_append(cur: Cursor) -> str:
            keys = self._run_keys(cur, run_id)
            head = None if keys is None else self._read_head(cur, keys, RUN_STREAM)
            if keys is None or head is None:
                raise RunNotFound(run_id)
            if head[2] == "RunFinished":
                cur.execute(  # where `_read_head` found it: the view would read the run
                    self._store.sql(
                        "SELECT payload FROM ledger_events WHERE stream_key = ? AND version = ?"
                    ),
                    (keys.streams[RUN_STREAM], head[0]),
                )
                row = cur.fetchone()
                stored = None if row is None else self._store.payload_value(row[0])
                if isinstance(stored, dict) and stored.get("status") == status:
                    return head[1]
                raise RunClosed(run_id)
            seal = {
                str(stream): hash_text(digest) for stream, _, digest in self._heads(cur, run_id)
            }
            event = make_event(
                RunFinished(
                    status=status, seal=seal, signature=signing.sign_seal(key, run_id, status, seal)
                ),
                run_id=run_id,
                stream_id=RUN_STREAM,
                rank=rank,
            )
            prepared = [Prepared(event, uuid_bytes(event.event_id) or b"", None)]
            result = self._append_locked(cur, run_id, prepared, look_up_ids=True, staged=Staged())
            return result.heads[RUN_STREAM][1]

        self._known.forget(run_id)
        with translate(self.url):  # one transaction, run again whole while the database is busy
            digest = self._store.transact(run_id, seal_and_append)
            self._store.release_run(run_id)
        return digest

    def close_run(self, run_id: str, status: Literal["failed", "aborted"]) -> str:
        """Seal an open run whose writer is gone, as `finish_run` would (``kasmina runs
        close``); returns the seal's hash.

        Refused with `RunHeld` while any process writing the run is alive
        (`kasmina.ledger.writers`), and with `RunClosed` for a sealed run.
        """
        if status not in ("failed", "aborted"):
            raise KasminaError(f"a closed run's status is failed or aborted, not {status!r}")
        self.require_run(run_id)
        with translate(self.url), self._store.run_alone(run_id):
            found = self._store.fetch("SELECT status FROM runs WHERE run_id = ?", (run_id,))
            if found and found[0][0] != "open":
                raise RunClosed(run_id, str(found[0][0]))
            started = self.of_type(run_id, "RunStarted")
            world = started[0].payload if started else None
            rank = 0 if isinstance(world, RunStarted) and world.world_size > 1 else None
            return self.finish_run(run_id, status, rank=rank)

    def _heads(self, cur: Cursor, run_id: str) -> list[Row]:
        cur.execute(self._store.sql(STREAM_HEADS), (run_id,))
        return cur.fetchall()

    def runs(self, *, summary: bool = False) -> list[RunInfo]:
        """Every run, by start time. `summary` adds epochs and the final validation
        accuracy (from the ``run_summary`` view), which cost a look at each run's events."""
        extra = ", epochs, final_val_accuracy FROM run_summary" if summary else " FROM runs"
        with translate(self.url):
            rows = self._store.fetch(
                "SELECT run_id, name, seed, started_at, finished_at, status, events"
                f"{extra} ORDER BY started_at, run_id"
            )
        return [
            RunInfo(
                run_id=str(r[0]),
                name=None if r[1] is None else str(r[1]),
                seed=optional_integer(r[2], "a run's seed"),
                started_at=self._store.recorded_at_value(r[3]),
                finished_at=None if r[4] is None else self._store.recorded_at_value(r[4]),
                status=str(r[5]),
                events=integer(r[6], "a run's event count"),
                epochs=optional_integer(r[7], "a run's epochs") if summary else None,
                final_val_accuracy=(
                    _optional_float(r[8], "a run's final accuracy") if summary else None
                ),
            )
            for r in rows
        ]

    def run_exists(self, run_id: str) -> bool:
        """Whether the ``events`` view holds the run's first ``run`` event (`event_at`)."""
        with translate(self.url):
            return event_at(self._store, run_id, RUN_STREAM, 1, lean=self.lean) is not None

    def views(self) -> set[str]:
        """The views this database has: an older revision lacks the newer ones."""
        if self.dialect == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'view'"
        else:
            query = (
                "SELECT table_name FROM information_schema.views "
                "WHERE table_schema = current_schema()"
            )
        with translate(self.url):
            return {str(row[0]) for row in self._store.fetch(query)}

    def resolve_run(self, ref: str) -> str:
        """The id of the run `ref` names: an id, a unique id prefix (4+ characters), a
        unique name, ``latest`` or ``latest~N`` (see `kasmina.ledger.refs`)."""
        return resolve_run(ref, self.run_exists, self.runs)

    def require_run(self, run_id: str) -> None:
        if not self.run_exists(run_id):
            raise RunNotFound(run_id)

    # -- reading -----------------------------------------------------------

    def raw_rows(
        self,
        run_id: str | None = None,
        *,
        after: int | None = None,
        until: int | None = None,
        stream_id: str | None = None,
        seed_id: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[EventRow]:
        """Rows as the `events` view shows them, in position order, a page at a time
        (see `RowReader.stored`)."""
        rows = self._rows.stored(
            run_id,
            after=after,
            until=until,
            stream_id=stream_id,
            seed_id=seed_id,
            page_size=page_size,
        )
        return map(self._rows.view_row, rows)

    def _to_event(self, row: tuple[Any, ...]) -> StoredEvent:
        """A row of `RowReader.stored` as an event: only what an event holds is rendered."""
        try:
            return self._decoded(row)
        except (TypeError, ValueError, RecursionError) as exc:
            # Only a row made by hand gets here (appends store nothing else); `verify`
            # names it as a fault, every other reader in one line.
            raise LedgerError(
                f"the event at position {row[0]!r} is malformed ({exc}); "
                "`kasmina verify` names what is wrong"
            ) from None

    def _decoded(self, row: tuple[Any, ...]) -> StoredEvent:
        (position, event_id, run_id, stream_id, version, event_type, schema_version, epoch,
         seed_id, payload, recorded_at, previous, digest, rank) = row  # fmt: skip
        store = self._store
        data = store.payload_value(payload)
        if type(data) is not dict:
            raise PayloadInvalid(f"event at position {position} has a non-object payload")
        return StoredEvent(
            position,
            str(store.view_id(event_id)),
            str(run_id),
            str(stream_id),
            integer(version, "a version"),
            str(event_type),
            integer(schema_version, "a schema version"),
            optional_integer(epoch, "an epoch"),
            None if seed_id is None else str(seed_id),
            store.recorded_at_value(recorded_at),
            GENESIS_HASH if previous is None else str(store.view_hash(previous)),
            str(store.view_hash(digest)),
            optional_integer(rank, "a rank"),
            data,
        )

    def read(
        self,
        run_id: str | None = None,
        *,
        after: int = 0,
        stream_id: str | None = None,
        seed_id: str | None = None,
        types: Sequence[str] = (),
        skip_types: Sequence[str] = (),
    ) -> Iterator[StoredEvent]:
        """Events in position order, streamed; ``after`` resumes from a position.

        `types` keeps only events of those types, `skip_types` leaves those out.
        """
        rows = self._rows.stored(
            run_id,
            after=after,
            stream_id=stream_id,
            seed_id=seed_id,
            types=types,
            skip_types=skip_types,
        )
        return map(self._to_event, rows)

    def follow(
        self,
        run_id: str,
        *,
        after: int = 0,
        timeout: float | None = None,
        wait_for_run: bool = False,
    ) -> Iterator[StoredEvent]:
        """Tail a live run until its `RunFinished` (see `kasmina.ledger.tail.follow`)."""
        from kasmina.ledger.tail import follow

        return follow(self, run_id, after=after, timeout=timeout, wait_for_run=wait_for_run)

    def stream(self, run_id: str, stream_id: str) -> Iterator[StoredEvent]:
        return self.read(run_id, stream_id=stream_id)

    def require_artifacts(self) -> ArtifactStore:
        """The artifact store, or `ArtifactError` saying how to name one."""
        if self.artifacts is None:
            raise ArtifactError(
                "this ledger has no folder beside it for checkpoints: name one with "
                f"--artifacts DIR or {ARTIFACTS_ENV}"
            )
        return self.artifacts

    def of_type(self, run_id: str, event_type: str) -> list[StoredEvent]:
        """The run's events of one type, in position order (one indexed query)."""
        with translate(self.url):
            rows = self._rows.stored(run_id, types=(event_type,))
            return [self._to_event(row) for row in rows]

    def attempts(self, run_id: str) -> Attempts:
        """The run's attempts: which of its events a resumed run superseded."""
        return Attempts.of(
            (e.position, e.payload)
            for e in self.of_type(run_id, "RunResumed")
            if isinstance(e.payload, RunResumed)
        )

    def history(
        self,
        run_id: str,
        seed_id: str | None = None,
        slot_id: str | None = None,
        *,
        types: Sequence[str] = (),
        skip_types: Sequence[str] = (),
        since_epoch: int | None = None,
    ) -> Iterator[StoredEvent]:
        """The audit timeline of a run, a seed or a slot, oldest first.

        `since_epoch` starts at the run's first event of that epoch or later:
        the run-level events after it (its seal) stay, those before go.
        """
        self.require_run(run_id)
        stream = slot_stream(slot_id) if slot_id is not None else None
        after = 0
        if since_epoch is not None:
            with translate(self.url):
                first = self._store.fetch(
                    "SELECT position FROM events WHERE run_id = ? AND epoch >= ? "
                    "ORDER BY position LIMIT 1",
                    (run_id, since_epoch),
                )
            if not first:
                return iter(())
            after = integer(first[0][0], "a position") - 1
        return self.read(
            run_id,
            after=after,
            stream_id=stream,
            seed_id=seed_id,
            types=types,
            skip_types=skip_types,
        )

    def run_ids(self) -> list[str]:
        with translate(self.url):
            rows = self._store.fetch(_RUN_IDS if self.lean else _RUN_IDS_0013)
        return [str(r[0]) for r in rows]

    def event_types(self) -> list[str]:
        """Every event type this ledger has recorded, sorted, a user's own types included.

        What this process has registered but never recorded is not here;
        `kasmina.events.EVENT_TYPES` has those.
        """
        with translate(self.url):
            rows = self._store.fetch(_TYPES if self.lean else _TYPES_0013)
        return [str(r[0]) for r in rows]

    # -- checking and querying ---------------------------------------------

    def verify(
        self, run_id: str | None = None, *, trusted: str | None = None, jobs: int | None = None
    ) -> VerifyReport:
        """Check hash chains, versions and seals of every row; every fault is listed.

        `trusted` pins a public key (hex): every seal must then be signed by it.
        `jobs`: processes to split a long run between (`kasmina.ledger.verify_jobs`);
        None, one per CPU while each gets 100,000 events; 1, this process only.

        The run ids are taken as stored, not as text: on SQLite a hand-made
        row may hold a blob there, which no run would ever read.
        """
        if run_id is not None:
            self.require_run(run_id)
            targets: Iterable[object] = [run_id]
        else:
            with translate(self.url):
                rows = self._store.fetch(_RUN_IDS if self.lean else _RUN_IDS_0013)
            targets = [r[0] for r in rows]
        with translate(self.url):
            from kasmina.ledger.verify import verify_runs  # what only verify needs, on first use
            from kasmina.ledger.verify_jobs import in_jobs

            return verify_runs(
                self._store,
                targets,
                self.raw_rows,
                self.artifacts,
                whole_ledger=run_id is None,
                trusted=trusted,
                reader=self._rows,
                check_run=in_jobs(jobs),
            )

    def replay(
        self,
        run_id: str,
        until_epoch: int | None = None,
        until_position: int | None = None,
        *,
        trust: bool = False,
        snapshots: bool = True,
        snapshot_every: int | None = None,
    ) -> ReplayState:
        """The run's state at a cut, folded from its events (see `kasmina.replay.replay`)."""
        if not _FOLD:  # the fold plugs itself in when imported (it imports the ledger)
            importlib.import_module("kasmina.replay")
        if not _FOLD:
            raise KasminaError("Ledger.replay needs the fold: import kasmina.replay")
        return _FOLD[0](
            self,
            run_id,
            until_epoch,
            until_position,
            trust=trust,
            snapshots=snapshots,
            snapshot_every=snapshot_every,
        )

    def frame(
        self,
        source: str,
        *,
        run: str | None = None,
        params: Mapping[str, object] | None = None,
        engine: Literal["pandas", "polars"] = "pandas",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Any:
        """A view (by name) or a read-only query as a pandas or polars DataFrame.

        `run` (any run reference) keeps a view's rows of that run, and is
        ``:run`` in a query; `params` fill the query's other ``:name``
        placeholders (`kasmina.ledger.sqlparams`). Needs ``kasmina[frames]``.
        """
        from kasmina.frames import frame

        return frame(self, source, run=run, params=params, engine=engine, timeout_s=timeout_s)

    def sql(
        self,
        query: str,
        *,
        params: Mapping[str, object] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> tuple[list[str], Iterator[Row]]:
        """Run one user query on a read-only connection, cut after `timeout_s` seconds.

        Whoever connects, nothing can be written through it (DESIGN §3.9;
        docs/security.md says how each backend makes sure). `params` fill the
        query's ``:name`` placeholders, as ``kasmina sql --param`` does
        (`kasmina.ledger.sqlparams`): a number as a number, else as text.
        """
        if not has_statement(query, self.dialect):
            raise LedgerError("empty SQL query")
        check_timeout(timeout_s)
        # Bound even without values, so that a :name left unfilled is named.
        query = bind(query, {k: str(v) for k, v in (params or {}).items()}, self.dialect)
        with translate(self.url, self._unknown_table):
            columns, rows = self._store.readonly_query(query, timeout_s)

        def translated() -> Iterator[Row]:
            with translate(self.url, self._unknown_table):
                yield from rows

        return columns, translated()

    def _unknown_table(self, line: str) -> QueryError:
        """A user's query named a table or view this ledger lacks: say which it has."""
        return QueryError(f"{line}; this ledger's views: {', '.join(sorted(self.views()))}")


__all__ = ["DEFAULT_URL", "AppendResult", "Ledger", "Run", "RunInfo", "use_fold"]
