"""`kasmina sql` on SQLite: a read-only file, an authorizer, an allow-list of functions, a clock.

The file is opened ``mode=ro`` with ``query_only``; the authorizer refuses
every action that writes or reaches another file (ATTACH, VACUUM INTO needs
ATTACH, setting a pragma) and every SQL function not on `ALLOWED_FUNCTIONS`:
what an analyst needs, never ``load_extension`` or ``fts3_tokenizer`` (which
hands out a native pointer). SQLite's statement API takes one statement, so a
second one is refused rather than ignored.

A progress handler runs every few thousand virtual-machine steps while
SQLite works: it stops the query once `timeout_s` has passed in any one call
into SQLite. It is also where Ctrl-C lands: Python runs its signal handler
inside the progress handler, SQLite then abandons the query, and the
interrupt is raised again once SQLite has let go.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from kasmina.errors import ReadOnlyViolation
from kasmina.ledger.readonly import several_statements, timed_out
from kasmina.ledger.store import Row

#: The SQL functions a query may call (lower case, as the authorizer names them).
ALLOWED_FUNCTIONS = frozenset(
    """
    abs char coalesce concat concat_ws format glob hex ifnull iif instr length like
    likelihood likely lower ltrim max min nullif octet_length printf quote replace round
    rtrim sign soundex substr substring trim typeof unhex unicode unlikely upper
    sqlite_version sqlite_source_id random
    date time datetime julianday unixepoch strftime timediff current_date current_time
    current_timestamp
    avg count group_concat string_agg sum total
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value
    last_value nth_value
    acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln
    log log10 log2 mod pi pow power radians sin sinh sqrt tan tanh trunc
    json jsonb json_array jsonb_array json_array_length json_error_position json_extract
    jsonb_extract json_insert jsonb_insert json_object jsonb_object json_patch jsonb_patch
    json_pretty json_quote json_remove jsonb_remove json_replace jsonb_replace json_set
    jsonb_set json_type json_valid json_group_array jsonb_group_array json_group_object
    jsonb_group_object json_each json_tree -> ->>
    """.split()
)

#: What the authorizer refuses, by action code, named as the refusal says it.
_DENIED_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name.replace(' ', '_')}"): name
    for name in (
        "ATTACH",
        "DETACH",
        "INSERT",
        "UPDATE",
        "DELETE",
        "ALTER TABLE",
        "CREATE INDEX",
        "CREATE TABLE",
        "CREATE TEMP INDEX",
        "CREATE TEMP TABLE",
        "CREATE TEMP TRIGGER",
        "CREATE TEMP VIEW",
        "CREATE TRIGGER",
        "CREATE VIEW",
        "CREATE VTABLE",
        "DROP INDEX",
        "DROP TABLE",
        "DROP TRIGGER",
        "DROP VIEW",
        "DROP VTABLE",
    )
}

T = TypeVar("T")

#: Virtual-machine steps between two looks at the clock.
_STEPS = 10_000
_BATCH = 1000


class _Guard:
    """The authorizer and the progress handler of one query's connection."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = 0.0
        self.timed_out = False
        self.refused: str | None = None

    def authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, src: str | None
    ) -> int:
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
            # SQLite's own bookkeeping as it builds a table-valued function (json_each);
            # a user's write there still meets mode=ro, query_only and writable_schema.
            return sqlite3.SQLITE_OK
        if action in _DENIED_ACTIONS:
            self.refused = f"{_DENIED_ACTIONS[action]} is not allowed"
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and arg2 is not None:
            self.refused = f"setting PRAGMA {arg1} is not allowed"  # reading one is fine
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in ALLOWED_FUNCTIONS:
            self.refused = (
                f"SQL function {arg2}() is not allowed: see ALLOWED_FUNCTIONS in {__name__}"
            )
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def progress(self) -> int:
        if time.monotonic() < self.deadline:
            return 0
        self.timed_out = True
        return 1

    def call(self, work: Callable[[], T]) -> T:
        """Run one call into SQLite under the clock, its failures said in kasmina's words."""
        self.deadline = time.monotonic() + self.timeout_s
        self.timed_out = False
        try:
            return work()
        except sqlite3.Error as exc:
            text = str(exc)
            if text == "interrupted":
                if self.timed_out:
                    raise timed_out(self.timeout_s) from None
                raise KeyboardInterrupt from None  # SQLite swallowed it in the progress handler
            if "one statement at a time" in text:
                raise several_statements() from None
            if self.refused is not None and ("not authorized" in text or "authorization" in text):
                raise ReadOnlyViolation(
                    f"refused: the SQL path is read-only ({self.refused})"
                ) from None
            raise


def open_query(
    conn: sqlite3.Connection, query: str, timeout_s: float
) -> tuple[list[str], Iterator[Row]]:
    """Columns and rows of `query` on `conn`, a read-only connection the rows' iterator closes."""
    guard = _Guard(timeout_s)
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.set_authorizer(guard.authorize)
        conn.set_progress_handler(guard.progress, _STEPS)
        cur = guard.call(lambda: conn.execute(query))
    except BaseException:
        conn.close()
        raise
    columns = [d[0] for d in cur.description or ()]

    def rows() -> Iterator[Row]:
        try:
            while batch := guard.call(lambda: cur.fetchmany(_BATCH)):
                yield from batch
        finally:
            conn.close()

    return columns, rows()
