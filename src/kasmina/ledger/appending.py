"""Appending a batch: prepared outside the write lock, chained and inserted inside it.

Appends do the expensive per-event work (the payload's canonical text) before
taking the write lock, then, inside one transaction: skip events already
stored exactly as given (a retried batch is a no-op; an id stored with other
content is refused), take each stream's head (remembered from the last append
while the run's tip is unchanged, else read), assign or check versions, chain
the hashes and insert everything at once. Any error inside rolls the whole
batch back.

A mixin of `kasmina.ledger.core.Ledger`, kept apart because it is the hot path
and the one place the hash chain is extended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from kasmina.canonical import GENESIS_HASH, quote
from kasmina.errors import (
    ConcurrencyError,
    DuplicateEvent,
    PayloadInvalid,
    RunClosed,
    RunNotFound,
    SchemaMismatch,
)
from kasmina.events import RUN_STREAM, NewEvent, RunFinished, RunStarted
from kasmina.ids import uuid_bytes
from kasmina.ledger import formats, migrate
from kasmina.ledger.errors import UPGRADE_HINT, redact, translate
from kasmina.ledger.formats import LEDGER_FORMAT, row_hash
from kasmina.ledger.heads import Known, KnownHeads
from kasmina.ledger.store import (
    COLUMNS,
    Cursor,
    EventRow,
    Param,
    Store,
    hash_text,
    integer,
)

if TYPE_CHECKING:
    from kasmina.signing import SigningKey

_HEAD = (
    "SELECT e.version, e.hash, t.event_type FROM ledger_events e "
    "JOIN ledger_types t ON t.type_key = e.type_key WHERE e.stream_key = ? "
    "ORDER BY e.version DESC LIMIT 1"
)
_TIP = "SELECT position, hash FROM ledger_events WHERE run_key = ? ORDER BY position DESC LIMIT 1"
_RUN = "SELECT run_key, format FROM ledger_runs WHERE run_id = ?"
_STREAM = "SELECT stream_key FROM ledger_streams WHERE run_key = ? AND stream_id = ?"
_NEW_STREAM = "INSERT INTO ledger_streams (run_key, stream_id) VALUES (?, ?) RETURNING stream_key"
_TYPE = "SELECT type_key FROM ledger_types WHERE event_type = ?"
#: A writer beside this one may be adding the same type: its key is then read after.
_NEW_TYPE = (
    "INSERT INTO ledger_types (event_type) VALUES (?) "
    "ON CONFLICT (event_type) DO NOTHING RETURNING type_key"
)
#: The ledger's last run start, which a new run's first event links to (format 2).
_LAST_START = (
    "SELECT hash FROM events WHERE event_type = 'RunStarted' ORDER BY position DESC LIMIT 1"
)
_NEW_RUN = "INSERT INTO ledger_runs (run_id, format, start_prev) VALUES (?, ?, ?) RETURNING run_key"
_TIP_ROW = (
    "INSERT INTO run_tips (run_id, position, hash, public_key, signature) VALUES (?, ?, ?, ?, ?)"
)
_SIGNED_AT = (
    "SELECT signature FROM run_tips WHERE run_id = ? AND position = ? AND hash = ? "
    "AND public_key = ?"
)
#: `Appending.signer` has not looked at ``KASMINA_SIGNING_KEY`` yet.
_UNREAD = object()
#: Run and stream keys remembered per ledger (they never change); cleared whole when full.
_MAX_KEYS = 4096
#: Ids looked up per statement, within SQLite's limit on parameters.
_IDS_PER_LOOKUP = 10_000
#: Their own stream holds a run's start and its seal; anywhere else they would forge one.
_RUN_ONLY = frozenset({RunStarted, RunFinished})


@dataclass(frozen=True, slots=True)
class AppendResult:
    appended: int
    skipped: int
    #: stream id -> (version, hash) of its last event after the append.
    heads: Mapping[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prepared:
    event: NewEvent
    #: The event id's 16 bytes (`kasmina.ids.uuid_bytes`).
    uuid: bytes
    #: None: made while the rows stream out (`Store.streams_rows`), or in the run's format.
    payload_text: str | None
    #: The ledger format `payload_text` is written in.
    form: int = LEDGER_FORMAT


@dataclass(frozen=True, slots=True)
class RunKeys:
    """A run's key and format, and its streams' keys: what rows store instead of names."""

    run_key: int
    form: int
    streams: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Staged:
    """What an attempt learned, remembered only once its transaction commits."""

    known: Known | None = None
    keys: RunKeys | None = None
    #: Event types' keys this attempt read or made.
    types: dict[str, int] = field(default_factory=dict)


def payload_text(item: Prepared, form: int) -> str:
    """The payload's text in the run's ledger format, made now unless prepared in it."""
    if item.payload_text is not None and item.form == form:
        return item.payload_text
    return formats.payload_text(item.event.payload, form)


class Appending:
    """`Ledger.append` and what it needs; the ledger opens the store and reads its revision."""

    _store: Store
    url: str
    revision: str | None
    #: The ledger format a run starts in, and keeps. 1 only to reproduce a ledger
    #: an older kasmina wrote (tests and benchmarks do); format 1 proves less.
    new_run_format: int = LEDGER_FORMAT
    #: Signs each append's run tip and each seal; None takes ``KASMINA_SIGNING_KEY``.
    signing_key: SigningKey | None = None

    def _init_appending(self, store: Store) -> None:
        self._head = store.sql(_HEAD)
        self._tip_sql = store.sql(_TIP)
        self._run_sql = store.sql(_RUN)
        self._stream_sql = store.sql(_STREAM)
        self._new_stream_sql = store.sql(_NEW_STREAM)
        self._type_sql = store.sql(_TYPE)
        self._new_type_sql = store.sql(_NEW_TYPE)
        #: event type -> its key, as committed (a key never changes).
        self._types: dict[str, int] = {}
        self._last_start_sql = store.sql(_LAST_START)
        self._new_run_sql = store.sql(_NEW_RUN)
        self._known = KnownHeads()
        #: run id -> its keys, as committed; a rolled-back attempt's never get here.
        self._keys: dict[str, RunKeys] = {}
        self._tip_row_sql = store.sql(_TIP_ROW)
        self._signed_at_sql = store.sql(_SIGNED_AT)
        #: run id -> the last tip this ledger signed; a stale entry only costs a lookup.
        self._signed_tips: dict[str, tuple[int, str]] = {}
        self._configured: object = _UNREAD

    def _require_head(self) -> None:
        """Refuse to write a database at another schema revision than this kasmina's."""
        if self.revision != migrate.HEAD_REVISION:
            raise SchemaMismatch(
                f"{redact(self.url)} is at schema revision {self.revision or 'none'}, "
                f"this kasmina writes {migrate.HEAD_REVISION}; {UPGRADE_HINT}"
            )

    def append(self, batch: Sequence[NewEvent]) -> AppendResult:
        """Append a batch atomically: all of it or none of it.

        Events already stored under their ``event_id`` are skipped, so a batch
        retried after an unknown outcome never duplicates; but only when each
        repeats the stored event exactly (every hashed field the caller
        chose), else `DuplicateEvent`, as for one id twice in the batch. An
        event carrying ``version`` must take exactly that version of its
        stream, else `ConcurrencyError`; without one it takes the next.
        """
        if not batch:
            return AppendResult(0, 0)
        run_id = batch[0].run_id
        lazy = self._store.streams_rows
        uuids = []
        for event in batch:
            if not isinstance(event, NewEvent):
                raise PayloadInvalid(
                    f"append takes events built by make_event, got {type(event).__name__}"
                )
            uuid = uuid_bytes(event.event_id)
            if uuid is None:
                raise PayloadInvalid(
                    f"event id {event.event_id!r} is not a UUID in lowercase 8-4-4-4-12 form"
                )
            uuids.append(uuid)
            if event.run_id != run_id:
                raise PayloadInvalid(
                    f"a batch belongs to one run; got {run_id!r} and {event.run_id!r}"
                )
            if type(event.payload) in _RUN_ONLY and event.stream_id != RUN_STREAM:
                raise PayloadInvalid(
                    f"{event.event_type} belongs in the {RUN_STREAM!r} stream, "
                    f"not {event.stream_id!r}"
                )
        form = self.new_run_format if isinstance(batch[0].payload, RunStarted) else None
        keys = self._keys.get(run_id)
        form = form if keys is None else keys.form
        if lazy or form is None:  # made in the lock, as the rows stream out or in the run's format
            prepared = [
                Prepared(event, uuid, None) for event, uuid in zip(batch, uuids, strict=True)
            ]
        else:  # the text's work outside the lock, where the run's format is known
            prepared = [
                Prepared(event, uuid, formats.payload_text(event.payload, form), form)
                for event, uuid in zip(batch, uuids, strict=True)
            ]
        self._require_head()
        took = self._store.hold_run(run_id)
        staged = Staged()

        def attempt(look_up_ids: bool) -> Callable[[Cursor], AppendResult]:
            return lambda cur: self._append_locked(
                cur, run_id, prepared, look_up_ids=look_up_ids, staged=staged
            )

        with translate(self.url):
            try:
                result = self._append_transaction(run_id, attempt)
            except BaseException:
                self._known.forget(run_id)
                if took:  # a refused first append makes no writer: nothing stays held
                    self._store.release_run(run_id)
                raise
        self._promote(run_id, staged)
        if type(batch[-1].payload) is RunFinished:  # an import's copy of a sealed run
            self._store.release_run(run_id)
        return result

    def _append_transaction(
        self, run_id: str, attempt: Callable[[bool], Callable[[Cursor], AppendResult]]
    ) -> AppendResult:
        # Each attempt is one transaction, run again whole while the database is busy.
        try:
            return self._store.transact(run_id, attempt(False))
        except ConcurrencyError:
            pass  # perhaps a retry whose events took those versions already
        except Exception as exc:
            if not self._store.is_duplicate_event_id(exc):
                raise
        # Possibly a retry: do it again, skipping the ids already stored.
        return self._store.transact(run_id, attempt(True))

    def _promote(self, run_id: str, staged: Staged) -> None:
        if staged.known is None:
            self._known.forget(run_id)
        else:
            self._known.promote(staged.known)
        if staged.keys is not None:
            if len(self._keys) >= _MAX_KEYS:
                self._keys.clear()
            self._keys[run_id] = staged.keys
        if len(self._types) + len(staged.types) > _MAX_KEYS:
            self._types.clear()
        self._types.update(staged.types)

    def _append_locked(
        self,
        cur: Cursor,
        run_id: str,
        prepared: Sequence[Prepared],
        *,
        look_up_ids: bool,
        staged: Staged,
    ) -> AppendResult:
        """Chain and insert a batch inside a write transaction.

        Looking up which ids are stored costs a round trip and an index probe
        per event, so the first attempt skips it and lets the unique index on
        ``event_id`` say whether this is a retry (the caller then rolls back
        and comes here again with ``look_up_ids``, which reads the stored
        events of those ids to tell a retry from a reused id). The heads this
        batch leaves, and the run's and streams' keys, are put in ``staged``,
        for the caller to remember once the transaction has committed
        (`kasmina.ledger.heads`): a key made by a transaction that rolls back
        names no row.
        """
        staged.types.clear()  # what a rolled-back attempt made names no row
        ids = [p.event.event_id for p in prepared]
        uuids = [p.uuid for p in prepared]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            for event_id in ids:
                if event_id in seen:
                    raise DuplicateEvent(event_id, "appears more than once in the batch")
                seen.add(event_id)
        keys = self._run_keys(cur, run_id)
        if look_up_ids:
            stored = self._stored(cur, uuids)
            stored_form = keys.form if stored and keys is not None else LEDGER_FORMAT
            fresh = [item for item in prepared if not self._repeats(item, stored, stored_form)]
        else:
            fresh = list(prepared)  # the common case: nothing to skip
        heads: dict[str, tuple[int, str]] = {}
        tip = None if keys is None else self._tip(cur, keys.run_key)
        known = self._known.at(run_id, None if tip is None else tip[0])
        if keys is not None and RUN_STREAM in known:  # a remembered run is never a finished one
            heads[RUN_STREAM] = known[RUN_STREAM]
        elif keys is not None and (run_head := self._read_head(cur, keys, RUN_STREAM)):
            if run_head[2] == "RunFinished":
                raise RunClosed(run_id)
            heads[RUN_STREAM] = (run_head[0], run_head[1])
        else:
            first = fresh[0].event if fresh else None
            if first is None or not isinstance(first.payload, RunStarted):
                raise RunNotFound(run_id)
            keys, link = self._start_run(cur, run_id, self.new_run_format)
            heads[RUN_STREAM] = (0, link)
        run_prev = heads[RUN_STREAM][1] if tip is None else tip[1]
        # Every head is read before the rows start: PostgreSQL's COPY holds the connection.
        for item in fresh:
            stream = item.event.stream_id
            if stream not in heads and stream not in known:
                found = self._read_head(cur, keys, stream)
                heads[stream] = (found[0], found[1]) if found else (0, GENESIS_HASH)
            if stream not in keys.streams:
                self._stream_key(cur, keys, stream, make=True)
        types = self._type_keys(cur, fresh, staged.types)
        last = None
        if fresh:  # the store takes every row or raises, so all of `fresh` is written
            rows = self._chained_rows(run_id, keys, fresh, heads, known, run_prev, types)
            last = self._store.insert_events(cur, rows)
        before = tip
        if last is None:
            tip = self._tip(cur, keys.run_key)
        else:  # the batch's last row: where the store put it, and the hash it was given
            tip = (last, heads[fresh[-1].event.stream_id][1])
        if fresh and keys.form >= 2 and tip is not None:
            self._sign_tip(cur, run_id, before, tip)
        closed = any(isinstance(item.event.payload, RunFinished) for item in fresh)
        staged.known = None if closed or tip is None else Known(run_id, tip[0], {**known, **heads})
        staged.keys = keys
        return AppendResult(len(fresh), len(prepared) - len(fresh), heads)

    def signer(self) -> SigningKey | None:
        """The key that signs run tips and seals: `signing_key`, else ``KASMINA_SIGNING_KEY``'s
        (read once per ledger), else none."""
        if self.signing_key is not None:
            return self.signing_key
        if self._configured is _UNREAD:
            from kasmina import signing  # cryptography loads only where a key is configured

            self._configured = signing.configured_key()
        return cast("SigningKey | None", self._configured)

    def _sign_tip(
        self, cur: Cursor, run_id: str, before: tuple[int, str] | None, tip: tuple[int, str]
    ) -> None:
        """Sign the run's last event in the transaction that wrote it, when a key is set.

        In format 2 that signature covers every event before it, so the key
        only signs where it signed the run's end before this append too (or
        the run starts here): what someone without the key appended in
        between stays an unsigned tail, which ``verify --public-key`` names,
        rather than being signed over.
        """
        key = self.signer()
        if key is None:
            return
        from kasmina.signing import tip_message, verify_signature

        if before is not None and self._signed_tips.get(run_id) != before:
            cur.execute(self._signed_at_sql, (run_id, before[0], before[1], key.public_hex))
            row = cur.fetchone()
            message = tip_message(run_id, before[0], before[1])
            if row is None or not verify_signature(key.public_hex, message, str(row[0])):
                return
        signature = key.sign(tip_message(run_id, tip[0], tip[1]))
        cur.execute(self._tip_row_sql, (run_id, tip[0], tip[1], key.public_hex, signature))
        if len(self._signed_tips) >= _MAX_KEYS:
            self._signed_tips.clear()
        self._signed_tips[run_id] = tip

    def _run_keys(self, cur: Cursor, run_id: str) -> RunKeys | None:
        """The run's keys and format, remembered or read; None: no such run.

        A copy, so that the streams an attempt adds reach the memory only
        when it commits (`Staged`)."""
        keys = self._keys.get(run_id)
        if keys is None:
            cur.execute(self._run_sql, (run_id,))
            row = cur.fetchone()
            if row is None:
                return None
            keys = RunKeys(integer(row[0], "a run key"), integer(row[1], "a ledger format"))
        return RunKeys(keys.run_key, keys.form, dict(keys.streams))

    def _stream_key(
        self, cur: Cursor, keys: RunKeys, stream: str, *, make: bool = False
    ) -> int | None:
        """The stream's key, remembered or read; with `make`, made for a new stream,
        else None for one not stored yet."""
        key = keys.streams.get(stream)
        if key is None:
            cur.execute(self._stream_sql, (keys.run_key, stream))
            row = cur.fetchone()
            if row is None:
                if not make:
                    return None
                cur.execute(self._new_stream_sql, (keys.run_key, stream))
                row = cur.fetchone()
            key = keys.streams[stream] = integer(row[0] if row else None, "a stream key")
        return key

    def _type_keys(
        self, cur: Cursor, fresh: Sequence[Prepared], staged: dict[str, int]
    ) -> Mapping[str, int]:
        """Every event type of the batch by key, read or made; those not known yet
        go to `staged`, remembered once the transaction commits."""
        known = self._types
        for item in fresh:
            name = item.event.payload.__class__.__name__
            if name in known or name in staged:
                continue
            cur.execute(self._type_sql, (name,))
            row = cur.fetchone()
            if row is None:
                cur.execute(self._new_type_sql, (name,))
                row = cur.fetchone()
                if row is None:  # another writer's, committed while this one waited
                    cur.execute(self._type_sql, (name,))
                    row = cur.fetchone()
            staged[name] = integer(row[0] if row else None, "a type key")
        return {**known, **staged} if staged else known

    def _start_run(self, cur: Cursor, run_id: str, form: int) -> tuple[RunKeys, str]:
        """Record a new run and its format; its keys, and the hash its first event links to.

        In format 2 that is the ledger's last run start, so run starts are
        taken one at a time: two runs starting at once would otherwise both
        link to the same one. Format 1 links to nothing (the genesis hash).
        """
        link = GENESIS_HASH
        if form >= 2:
            self._store.lock_run_starts(cur)
            cur.execute(self._last_start_sql)
            row = cur.fetchone()
            link = GENESIS_HASH if row is None else str(row[0])
        start_prev = bytes.fromhex(link) if form >= 2 else None
        cur.execute(self._new_run_sql, (run_id, form, start_prev))
        row = cur.fetchone()
        return RunKeys(integer(row[0] if row else None, "a run key"), form), link

    def _chained_rows(
        self,
        run_id: str,
        keys: RunKeys,
        fresh: Sequence[Prepared],
        heads: dict[str, tuple[int, str]],
        known: Mapping[str, tuple[int, str]],
        run_prev: str,
        types: Mapping[str, int],
    ) -> Iterator[tuple[Param, ...]]:
        """The batch's rows, each chained to the one before it in its stream, made as consumed.

        In format 2 each also links to the run's event before it (`run_prev`
        for the first). A generator, so that a store which streams rows to a
        server (COPY) has the server inserting the first rows while the later
        ones are hashed; `heads` ends holding each stream's last (version, hash).
        """
        now = datetime.now(UTC)
        recorded_at = now.isoformat(timespec="microseconds")
        store = self._store
        recorded_param = store.recorded_at_param(now, recorded_at)
        form, run_key, stream_keys = keys.form, keys.run_key, keys.streams
        # Names are JSON-quoted once per batch rather than once per event; an event id
        # needs no escaping, as `append` held it to the 8-4-4-4-12 hex form.
        quoted: dict[str, str] = {}
        quoted_run, quoted_at = quote(run_id), quote(recorded_at)
        for item in fresh:
            event = item.event
            stream = event.stream_id
            head = heads.get(stream) or known[stream]
            version = head[0] + 1
            if event.version is not None and event.version != version:
                raise ConcurrencyError(run_id, stream, event.version, head[0])
            kind = type(event.payload)
            event_type, epoch, seed = kind.__name__, event.epoch, event.seed_id
            for name in (stream, event_type, seed):
                if name is not None and name not in quoted:
                    quoted[name] = quote(name)
            text = payload_text(item, form)
            epoch_text = "null" if epoch is None else str(int(epoch))
            seed_text = "null" if seed is None else quoted[seed]
            digest = run_prev = row_hash(
                form, f'"{event.event_id}"', quoted_run, quoted[stream], version,
                quoted[event_type], kind.schema_version, epoch_text, seed_text, text,
                quoted_at, head[1], run_prev, event.rank,
            )  # fmt: skip
            heads[stream] = (version, digest)
            yield (
                item.uuid,
                run_key,
                stream_keys[stream],
                version,
                types[event_type],
                kind.schema_version,
                epoch,
                event.seed_id,
                text,
                recorded_param,
                bytes.fromhex(digest),
                event.rank,
            )

    def _read_head(self, cur: Cursor, keys: RunKeys, stream: str) -> tuple[int, str, str] | None:
        """The stream's last version, hash and event type; None for a stream not stored yet."""
        key = self._stream_key(cur, keys, stream)
        if key is None:
            return None
        cur.execute(self._head, (key,))
        row = cur.fetchone()
        if row is None:
            return None
        return integer(row[0], "a version"), hash_text(row[1]), str(row[2])

    def _tip(self, cur: Cursor, run_key: int) -> tuple[int, str] | None:
        """The run's last stored event: its position (unchanged means nothing was
        appended since) and its hash (the next event's run link, in format 2)."""
        cur.execute(self._tip_sql, (run_key,))
        row = cur.fetchone()
        return None if row is None else (integer(row[0], "a position"), hash_text(row[1]))

    def _stored(self, cur: Cursor, uuids: Sequence[bytes]) -> dict[str, EventRow]:
        """The events stored under any of these ids, found by the index on their bytes."""
        found: dict[str, EventRow] = {}
        for start in range(0, len(uuids), _IDS_PER_LOOKUP):
            condition, params = self._store.ids_filter(list(uuids[start : start + _IDS_PER_LOOKUP]))
            cur.execute(
                f"SELECT {', '.join(COLUMNS)} FROM events WHERE position IN "
                f"(SELECT position FROM ledger_events WHERE {condition})",
                params,
            )
            for row in map(EventRow._make, cur.fetchall()):
                found[str(row.event_id)] = row
        return found

    def _repeats(self, item: Prepared, stored: Mapping[str, EventRow], form: int) -> bool:
        """Whether the event is stored already as given; one stored otherwise is refused."""
        event = item.event
        found = stored.get(event.event_id)
        if found is None:
            return False
        given = {
            "run": (event.run_id, found.run_id),
            "stream": (event.stream_id, found.stream_id),
            "event type": (event.event_type, found.event_type),
            "schema version": (event.schema_version, found.schema_version),
            "epoch": (None if event.epoch is None else int(event.epoch), found.epoch),
            "seed id": (event.seed_id, found.seed_id),
            "rank": (event.rank, found.rank),
            "version": (event.version, found.version if event.version is not None else None),
        }
        differ = [name for name, (mine, theirs) in given.items() if mine != theirs]
        if payload_text(item, form) != self._store.payload_text(found.payload, form):
            differ.append("payload")
        if differ:
            raise DuplicateEvent(
                event.event_id, f"is stored already with other content ({', '.join(differ)})"
            )
        return True
