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
#: What `_PREVIOUS` reads from; the rows' own reads also name the type.
_KEYED_FROM = """
    FROM ledger_events e
    JOIN ledger_streams s ON s.stream_key = e.stream_key
    JOIN ledger_runs r ON r.run_key = e.run_key
"""
_FROM = f"""{_KEYED_FROM}    JOIN ledger_types t ON t.type_key = e.type_key
"""
#: The columns of `EventRow` as stored (the id, time and hashes untouched), then
#: what `_rendered` needs to find ``prev_hash`` without a look-up per row.
_LEAN_SELECT = f"""
    SELECT e.position, e.event_id, r.run_id, s.stream_id, e.version, t.event_type,
           e.schema_version, e.epoch, e.seed_id, e.payload, e.recorded_at, e.hash, e.rank,
           e.stream_key, r.format, r.start_prev
    {_FROM}
"""
_PREVIOUS_AT = f"SELECT {_PREVIOUS} {_KEYED_FROM} WHERE e.position = ?"

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


@dataclass(frozen=True)
class RowReader:
    """Pages of rows from one store; `lean` and `ranked` say what its schema holds."""

    store: Store
    lean: bool
    ranked: bool

    def pages(
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
    ) -> Iterator[EventRow]:
        """Rows after < position <= until, filtered by what is given (keyset paging).

        Without `after` every row is read, also one below position 1, which
        only a hand-made row can hold and `verify` must see.
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
            # The page's positions from the tables' indexes first: PostgreSQL
            # otherwise sorts the whole run for every page.
            pick = f"SELECT position FROM ledger_events WHERE {{}}{tail}"
            first_sql = f"{_LEAN_SELECT} WHERE e.position IN ({pick.format('TRUE')}) ORDER BY 1"
            after_sql = (
                f"{_LEAN_SELECT} WHERE e.position IN ({pick.format('position > ?')}) ORDER BY 1"
            )
        else:
            columns = ", ".join(COLUMNS if self.ranked else (*COLUMNS[:-1], "NULL AS rank"))
            first_sql = f"SELECT {columns} FROM events WHERE TRUE{tail}"
            after_sql = f"SELECT {columns} FROM events WHERE position > ?{tail}"
        if after is None:
            sql, args = first_sql, [*params, page_size]
        else:
            sql, args = after_sql, [after, *params, page_size]
        seen: dict[object, tuple[int, object]] = {}
        while True:
            with translate(self.store.url):
                page = self.store.fetch(sql, args)
            if self.lean:
                yield from self._rendered(page, seen)
            else:
                yield from map(EventRow._make, page)
            if len(page) < page_size:
                return
            sql, args = after_sql, [integer(page[-1][0], "a position"), *params, page_size]

    def _rendered(
        self, page: list[tuple[object, ...]], seen: dict[object, tuple[int, object]]
    ) -> Iterator[EventRow]:
        """Rows as the view shows them. `seen`: each stream's last row read, by its key
        (version, stored hash), so that a stream's previous hash is mostly at hand."""
        store = self.store
        view_id, view_time, view_hash = store.view_id, store.view_time, store.view_hash
        for (
            position, event_id, run_id, stream_id, version, event_type, schema_version, epoch,
            seed_id, payload, recorded_at, digest, rank, stream_key, form, start_prev,
        ) in page:  # fmt: skip
            if type(version) is not int or type(form) is not int:
                previous = self._previous_at(position)
            elif version > 1:
                last = seen.get(stream_key)
                if last is not None and last[0] == version - 1:
                    previous = last[1]
                else:
                    previous = self._previous_at(position)
            else:
                previous = start_prev if form >= 2 and stream_id == "run" else None
            if type(version) is int:
                seen[stream_key] = (version, digest)
            yield EventRow._make(
                (
                    position,
                    view_id(event_id),
                    run_id,
                    stream_id,
                    version,
                    event_type,
                    schema_version,
                    epoch,
                    seed_id,
                    payload,
                    view_time(recorded_at),
                    GENESIS_HASH if previous is None else view_hash(previous),
                    view_hash(digest),
                    rank,
                )
            )

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
        if stream_key not in run.streams:
            return None
        lean = (
            position, event_id, run.run_id, run.streams[stream_key], version,
            run.types.get(type_key),
            schema_version, epoch, seed_id, payload, recorded_at, digest, rank, stream_key,
            run.form, run.start_prev,
        )  # fmt: skip
        return next(self._rendered([lean], {}))

    def _previous_at(self, position: object) -> object:
        with translate(self.store.url):
            rows = self.store.fetch(_PREVIOUS_AT, [position])  # type: ignore[list-item]
        return rows[0][0] if rows else None
