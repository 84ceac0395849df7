"""Reading events' rows in position order, a page at a time, as the ``events`` view shows them.

Since revision 0014 ``events`` is a view over lean tables (``ledger_runs``,
``ledger_streams``, ``ledger_events``, and since 0015 ``ledger_types``). The
view renders the stored ids, hashes and times as the texts of revision 0013
in SQL, which costs more than the rest of a read. The ledger's own reads,
which carry every row through `verify`, `export` and the fold, take the
stored values from the tables instead and render them in Python
(`Store.view_id`, `Store.view_hash`, `Store.view_time`): the same rows,
which a test holds the view to.

A ledger older than 0015 is read through ``events`` (a table before 0014) as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kasmina.canonical import GENESIS_HASH
from kasmina.ledger.errors import translate
from kasmina.ledger.store import COLUMNS, EventRow, Param, Store, integer

#: Rows per query: memory stays constant however long the run.
PAGE_SIZE = 1000

#: What the view shows as ``prev_hash``, as stored: the stream's previous
#: version's hash, or for a format-2 run's own stream the run start before it.
_PREVIOUS = """
    CASE WHEN e.version > 1 THEN
             (SELECT p.hash FROM ledger_events p
              WHERE p.stream_key = e.stream_key AND p.version = e.version - 1)
         WHEN r.format >= 2 AND s.stream_id = 'run' THEN r.start_prev END
"""
#: What `_PREVIOUS` reads from.
_KEYED_FROM = """
    FROM ledger_events e
    JOIN ledger_streams s ON s.stream_key = e.stream_key
    JOIN ledger_runs r ON r.run_key = e.run_key
"""
_PREVIOUS_AT = f"SELECT {_PREVIOUS} {_KEYED_FROM} WHERE e.position = ?"

#: Rows as stored with their keys, which `_Names` names (`RowReader.stored`).
_KEYED_SELECT = """
    SELECT position, event_id, run_key, stream_key, version, type_key, schema_version, epoch,
           seed_id, payload, recorded_at, hash, rank
    FROM ledger_events
"""

#: A run's rows as stored, for a reader that renders only what it needs (`verify`):
#: the type by its key, which `StoredRun.types` names.
_STORED_SELECT = """
    SELECT position, event_id, stream_key, version, type_key, schema_version, epoch,
           seed_id, payload, recorded_at, hash, rank
    FROM ledger_events WHERE run_key = ?
"""


@dataclass(frozen=True)
class StoredRun:
    """One run of the lean tables: its key, its streams' ids by key, and its format."""

    run_id: str
    run_key: int
    #: As stored: a row made by hand may hold other than text (`verify` names it).
    streams: dict[object, object]
    form: int
    #: What a format-2 run's first event links to (the ledger's run start before it).
    start_prev: object = None
    #: Every event type by its key; a key naming none reads as None, which `verify` names.
    types: dict[object, object] = field(default_factory=dict)


#: Not yet looked up (None is looked up and naming nothing).
_UNSEEN = object()


class _Names:
    """What one read's run, stream and type keys name, each looked up once.

    The names never change once written (the tables are immutable), so a
    read asks for each key once rather than joining three tables per row:
    a stream's key brings every stream of its run, a type's every type.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs: dict[object, tuple[object, object, object] | None] = {}
        self.streams: dict[object, object] = {}
        self.types: dict[object, object] = {}

    def _fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with translate(self.store.url):
            return self.store.fetch(sql, params)

    def run(self, key: object) -> tuple[object, object, object] | None:
        """(run_id, format, start_prev) of the run `key`, None if there is none."""
        for run_key, run_id, form, start_prev in self._fetch(
            "SELECT run_key, run_id, format, start_prev FROM ledger_runs WHERE run_key = ?", [key]
        ):
            self.runs[run_key] = (run_id, form, start_prev)
        return self.runs.setdefault(key, None)

    def stream(self, key: object) -> object:
        """The stream id of `key`, None if there is none."""
        for stream_key, stream_id in self._fetch(
            "SELECT stream_key, stream_id FROM ledger_streams WHERE run_key IN "
            "(SELECT run_key FROM ledger_streams WHERE stream_key = ?)",
            [key],
        ):
            self.streams[stream_key] = stream_id
        return self.streams.setdefault(key, None)

    def type(self, key: object) -> object:
        """The event type of `key`, None if there is none."""
        for type_key, event_type in self._fetch(
            "SELECT type_key, event_type FROM ledger_types", []
        ):
            self.types[type_key] = event_type
        return self.types.setdefault(key, None)


@dataclass(frozen=True)
class RowReader:
    """Pages of rows from one store; `lean` and `ranked` say what its schema holds."""

    store: Store
    lean: bool
    ranked: bool

    def view_row(self, stored: tuple[Any, ...]) -> EventRow:
        """A row of `stored` as the view shows it: its id, time and hashes rendered."""
        store = self.store
        (position, event_id, run_id, stream_id, version, event_type, schema_version, epoch,
         seed_id, payload, recorded_at, previous, digest, rank) = stored  # fmt: skip
        return EventRow._make(
            (
                position,
                store.view_id(event_id),
                run_id,
                stream_id,
                version,
                event_type,
                schema_version,
                epoch,
                seed_id,
                payload,
                store.view_time(recorded_at),
                GENESIS_HASH if previous is None else store.view_hash(previous),
                store.view_hash(digest),
                rank,
            )
        )

    def stored(
        self,
        run_id: str | None,
        *,
        after: int | None = None,
        until: int | None = None,
        stream_id: str | None = None,
        seed_id: str | None = None,
        types: Sequence[str] = (),
        skip_types: Sequence[str] = (),
        page_size: int = PAGE_SIZE,
    ) -> Iterator[tuple[Any, ...]]:
        """`EventRow`'s fields in position order, the id, time and hashes as stored
        (``prev_hash`` None at a chain's start), for a reader that renders only what
        it needs (`Ledger.read`); after < position <= until, filtered by what is given
        (keyset paging).

        Without `after` every row is read, also one below position 1, which
        only a hand-made row can hold and `verify` must see. A lean row's keys
        are named from `_Names`, looked up once per read rather than joined per
        row, and a row whose key names nothing is left out, as the view's joins
        leave it out.
        """
        where: list[str] = []
        params: list[Param] = []
        if until is not None:
            where.append("position <= ?")
            params.append(until)
        if self.lean:
            if run_id is not None:
                where.append("run_key = (SELECT run_key FROM ledger_runs WHERE run_id = ?)")
                params.append(run_id)
            if stream_id is not None:
                where.append(
                    "stream_key IN (SELECT s.stream_key FROM ledger_streams s JOIN ledger_runs r "
                    "ON r.run_key = s.run_key WHERE s.stream_id = ?"
                    + (" AND r.run_id = ?)" if run_id is not None else ")")
                )
                params += [stream_id, run_id] if run_id is not None else [stream_id]
        else:
            for column, value in (("run_id", run_id), ("stream_id", stream_id)):
                if value is not None:
                    where.append(f"{column} = ?")
                    params.append(value)
        if seed_id is not None:
            where.append("seed_id = ?")
            params.append(seed_id)
        for names, test in ((types, "IN"), (skip_types, "NOT IN")):
            if names:
                listed = f"({', '.join('?' * len(names))})"
                keys = f"(SELECT type_key FROM ledger_types WHERE event_type IN {listed})"
                where.append(
                    f"type_key {test} {keys}" if self.lean else f"event_type {test} {listed}"
                )
                params += names
        tail = f"{''.join(f' AND {w}' for w in where)} ORDER BY position LIMIT ?"
        if self.lean:
            first_sql = f"{_KEYED_SELECT} WHERE TRUE{tail}"
            after_sql = f"{_KEYED_SELECT} WHERE position > ?{tail}"
        else:
            columns = ", ".join(COLUMNS if self.ranked else (*COLUMNS[:-1], "NULL AS rank"))
            first_sql = f"SELECT {columns} FROM events WHERE TRUE{tail}"
            after_sql = f"SELECT {columns} FROM events WHERE position > ?{tail}"
        if after is None:
            sql, args = first_sql, [*params, page_size]
        else:
            sql, args = after_sql, [after, *params, page_size]
        named = _Names(self.store)
        seen: dict[object, tuple[int, object]] = {}
        while True:
            with translate(self.store.url):
                page = self.store.fetch(sql, args)
            if self.lean:
                yield from self._named(page, named, seen)
            else:
                yield from page
            if len(page) < page_size:
                return
            sql, args = after_sql, [integer(page[-1][0], "a position"), *params, page_size]

    def _named(
        self, page: list[tuple[Any, ...]], named: _Names, seen: dict[object, tuple[int, object]]
    ) -> Iterator[tuple[Any, ...]]:
        """A page of `_KEYED_SELECT` as `stored` gives it: keys named, previous hash found."""
        runs, streams, types = named.runs, named.streams, named.types
        for (
            position, event_id, run_key, stream_key, version, type_key, schema_version, epoch,
            seed_id, payload, recorded_at, digest, rank,
        ) in page:  # fmt: skip
            run: Any = runs.get(run_key, _UNSEEN)
            if run is _UNSEEN:
                run = named.run(run_key)
            stream_id = streams.get(stream_key, _UNSEEN)
            if stream_id is _UNSEEN:
                stream_id = named.stream(stream_key)
            event_type = types.get(type_key, _UNSEEN)
            if event_type is _UNSEEN:
                event_type = named.type(type_key)
            if run is None or stream_id is None or event_type is None:
                continue
            run_id, form, start_prev = run
            yield (
                position, event_id, run_id, stream_id, version, event_type, schema_version,
                epoch, seed_id, payload, recorded_at,
                self._previous(
                    seen, position, stream_key, stream_id, version, form, start_prev, digest
                ),
                digest, rank,
            )  # fmt: skip

    def _previous(
        self,
        seen: dict[object, tuple[int, object]],
        position: object,
        stream_key: object,
        stream_id: object,
        version: object,
        form: object,
        start_prev: object,
        digest: object,
    ) -> object:
        """What the row's ``prev_hash`` is as stored (`_PREVIOUS`), None at a chain's
        start. `seen` holds each stream's last row read (version, stored hash), by
        its key, so that the stream's previous hash is mostly at hand; this row
        (its `digest`) becomes its stream's last."""
        if type(version) is not int or type(form) is not int:
            return self._previous_at(position)
        last = seen.get(stream_key)
        seen[stream_key] = (version, digest)
        if version > 1:
            if last is not None and last[0] == version - 1:
                return last[1]
            return self._previous_at(position)
        return start_prev if form >= 2 and stream_id == "run" else None

    def stored_run(self, run_id: str) -> StoredRun | None:
        """The run's keys, for `stored_pages`; None where rows are not stored lean."""
        if not self.lean:
            return None
        with translate(self.store.url):
            found = self.store.fetch(
                "SELECT run_key, format, start_prev FROM ledger_runs WHERE run_id = ?", [run_id]
            )
            if not found:
                return None
            run_key, form, start_prev = found[0]
            if type(run_key) is not int or type(form) is not int:
                return None
            streams = self.store.fetch(
                "SELECT stream_key, stream_id FROM ledger_streams WHERE run_key = ?", [run_key]
            )
            types = self.store.fetch("SELECT type_key, event_type FROM ledger_types")
        return StoredRun(
            run_id,
            run_key,
            {key: stream for key, stream in streams},
            form,
            start_prev,
            {key: name for key, name in types},
        )

    def stored_pages(
        self,
        run: StoredRun,
        *,
        after: int | None = None,
        until: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The run's rows as stored (`_STORED_SELECT`'s columns), in position order,
        after < position <= until; `render` turns one into the row the view shows."""
        tail = ("" if until is None else " AND position <= ?") + " ORDER BY position LIMIT ?"
        bound: list[Param] = [] if until is None else [until]
        more = f"{_STORED_SELECT} AND position > ?{tail}"
        sql, args = (
            (f"{_STORED_SELECT}{tail}", [run.run_key, *bound, page_size])
            if after is None
            else (more, [run.run_key, after, *bound, page_size])
        )
        while True:
            with translate(self.store.url):
                page = self.store.fetch(sql, args)
            yield page
            if len(page) < page_size:
                return
            sql, args = more, [run.run_key, integer(page[-1][0], "a position"), *bound, page_size]

    def render(self, run: StoredRun, stored: tuple[Any, ...]) -> EventRow | None:
        """One stored row as the view shows it; None for a row of a stream the run
        does not hold, which the view's join leaves out too."""
        (position, event_id, stream_key, version, type_key, schema_version, epoch,
         seed_id, payload, recorded_at, digest, rank) = stored  # fmt: skip
        stream_id = run.streams.get(stream_key)
        if stream_id is None:
            return None
        previous = self._previous(
            {}, position, stream_key, stream_id, version, run.form, run.start_prev, digest
        )
        return self.view_row(
            (
                position, event_id, run.run_id, stream_id, version, run.types.get(type_key),
                schema_version, epoch, seed_id, payload, recorded_at, previous, digest, rank,
            )
        )  # fmt: skip

    def _previous_at(self, position: object) -> object:
        with translate(self.store.url):
            rows = self.store.fetch(_PREVIOUS_AT, [position])  # type: ignore[list-item]
        return rows[0][0] if rows else None
