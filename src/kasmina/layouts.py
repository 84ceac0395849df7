"""How the `kasmina` command writes events and query results for people and files.

Kept apart from the command definitions so that the layouts (the history
table and its one-line-per-event form for `--follow`, the SQL result in a
table, CSV, JSON or JSON lines) live in one place, and the commands only
choose one.

Every layout streams: a run or a query result of any size is printed row by
row, never gathered first. A table small enough to see whole (at most
`TABLE_ROWS` rows) is drawn as a rich table; a longer one is printed as
fixed-width lines, the form `history --follow` uses, because a rich table
must hold all its rows before it can measure its columns. Text from the
database reaches a terminal only through `kasmina.terminal`; JSON and CSV
keep it exact (CSV text cells follow `kasmina.spreadsheet`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from itertools import chain, islice
from typing import IO, TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table

from kasmina.canonical import canonical_json, json_float, loads
from kasmina.spreadsheet import CsvWriter, safe_cell
from kasmina.terminal import cell, visible

if TYPE_CHECKING:
    from kasmina.events import StoredEvent

#: The most rows drawn as one rich table; past it, fixed-width lines.
TABLE_ROWS = 1000
#: The widest a column of fixed-width lines is padded to (longer cells shift the rest).
LINE_WIDTH = 40


class DataFormat(StrEnum):
    """`--format` of the data commands: one meaning everywhere (DESIGN §5)."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


def plain(value: object) -> object:
    """A value as JSON and CSV output carry it, the same from either database.

    PostgreSQL hands back a JSONB payload as a dict where SQLite hands back
    its text, so structured values become their canonical JSON text; NaN and
    the infinities become the ledger's markers, since JSON has no number for
    them.
    """
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return json_float(float(value))
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list):
        return canonical_json(value)
    return value


def shown(value: object) -> str:
    """A value as a terminal shows it: NULL as nothing, controls escaped."""
    return "" if value is None else visible(str(plain(value)))


def summary(event: StoredEvent) -> str:
    data = event.payload.model_dump(mode="json")
    if event.event_type == "SeedStageChanged":
        return (
            f"{data['from_stage']} -> {data['to_stage']} ({data['trigger']}, alpha {data['alpha']})"
        )
    keep = {k: v for k, v in data.items() if v not in (None, [], {}) and k != "slot_id"}
    text = ", ".join(f"{k}={v}" for k, v in keep.items())
    return text if len(text) <= 100 else text[:99] + "…"


#: An event's columns, in order.
EVENT_FIELDS = (
    "position", "event_id", "run_id", "stream_id", "version", "event_type", "schema_version",
    "epoch", "seed_id", "payload", "recorded_at", "hash",
)  # fmt: skip


def event_values(event: StoredEvent) -> tuple[object, ...]:
    """`EVENT_FIELDS` of an event; the payload as its canonical JSON text."""
    return (
        event.position,
        event.event_id,
        event.run_id,
        event.stream_id,
        event.version,
        event.event_type,
        event.schema_version,
        event.epoch,
        event.seed_id,
        event.payload.canonical_text(),
        event.recorded_at.isoformat(),
        event.hash,
    )


_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


#: The fields of `history --format json|jsonl|csv`, in order: the event's columns, then
#: ``abandoned_attempt``, the abandoned attempt of a resumed run that left the event
#: behind (`kasmina.ledger.attempts.Attempts.abandoned_by`), or null for a live event.
HISTORY_FIELDS = (*EVENT_FIELDS, "abandoned_attempt")


def history_values(event: StoredEvent, abandoned: int | None) -> tuple[object, ...]:
    """`HISTORY_FIELDS` of an event, `abandoned` the attempt that left it behind (or None)."""
    return (*event_values(event), abandoned)


def history_json(event: StoredEvent, abandoned: int | None) -> str:
    """One event of `history` as a JSON object; the payload an object, non-finite floats
    as markers."""
    item = dict(zip(HISTORY_FIELDS, history_values(event, abandoned), strict=True))
    item["payload"] = loads(str(item["payload"]))
    return _JSON.encode(item)


HISTORY_COLUMNS = ("pos", "epoch", "stream", "v", "event", "seed", "detail")


def superseded_mark(abandoned: int) -> str:
    """What the history table puts before the detail of an event an abandoned attempt left."""
    return f"superseded (attempt {abandoned}):"


def history_cells(
    event: StoredEvent, abandoned: int | None = None
) -> tuple[str, str, str, str, str, str, str]:
    """The history table's cells, safe for a terminal; an event that the abandoned attempt
    `abandoned` left behind has its detail marked with `superseded_mark`."""
    detail = summary(event)
    if abandoned is not None:
        detail = f"{superseded_mark(abandoned)} {detail}".rstrip()
    return (
        str(event.position),
        "" if event.epoch is None else str(event.epoch),
        visible(event.stream_id),
        str(event.version),
        visible(event.event_type),
        visible(event.seed_id or ""),
        visible(detail),
    )


def follow_line(cells: Sequence[str]) -> str:
    """One event per line (a table needs all its rows before it can be drawn)."""
    pos, epoch, stream, version, kind, seed, detail = (" ".join(c.split()) for c in cells)
    return f"{pos:>7} {epoch:>5} {stream:<14} {version:>4} {kind:<20} {seed:<8} {detail}".rstrip()


#: How narrow a `foldable` column of `print_table` may become on a terminal.
FOLD_WIDTH = 16


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    console: Console,
    dest: IO[str],
    line: Callable[[Sequence[str]], str] | None = None,
    *,
    droppable: Sequence[int] = (),
    foldable: Sequence[int] = (),
) -> None:
    """Rows of terminal-safe cells as a rich table, or as lines once past `TABLE_ROWS`.

    A table never cuts a value. Into a pipe it is as wide as its widest
    rows; on a terminal too narrow for it, the columns in `droppable` go
    first (in that order), then the `foldable` ones (free text) wrap, down
    to `FOLD_WIDTH`; if it is still too wide, each row is printed as a
    record (`_records`), so that no id is ever folded. `line` lays out one
    row of the lines form (`follow_line` for history); by default each
    column is padded to the widest of its first `TABLE_ROWS` cells (at most
    `LINE_WIDTH`).
    """
    it = iter(rows)
    first = list(islice(it, TABLE_ROWS + 1))
    if len(first) <= TABLE_ROWS:
        widths = [
            max([cell_len(c), *(cell_len(r[i]) for r in first)]) for i, c in enumerate(columns)
        ]
        kept = list(range(len(columns)))

        def width() -> int:  # a foldable column gives way down to FOLD_WIDTH
            shown = (min(widths[i], FOLD_WIDTH) if i in foldable else widths[i] for i in kept)
            return sum(w + 3 for w in shown) + 1  # padding and rules

        if console.is_terminal:
            for index in droppable:
                if width() <= console.width:
                    break
                kept.remove(index)
            if width() > console.width:  # still too wide: a record per row, as psql's \x
                _records(columns, first, console)
                return
        table = Table(
            *(Column(cell(columns[i]), overflow="fold", no_wrap=i not in foldable) for i in kept)
        )
        for row in first:
            table.add_row(*(cell(row[i]) for i in kept))
        if not console.is_terminal:  # as wide as it needs: a pipe has no edge
            console = Console(file=dest, width=max(width(), console.width), soft_wrap=True)
        console.print(table)
        return
    if line is None:
        widths = [
            min(LINE_WIDTH, max(len(c), *(len(r[i]) for r in first))) for i, c in enumerate(columns)
        ]

        def padded(cells: Sequence[str]) -> str:
            flat = (" ".join(c.split()) for c in cells)
            return "  ".join(c.ljust(w) for c, w in zip(flat, widths, strict=True)).rstrip()

        line = padded
    dest.write(line([visible(c) for c in columns]) + "\n")
    for row in chain(first, it):
        dest.write(line(row) + "\n")


def _records(columns: Sequence[str], rows: Sequence[Sequence[str]], console: Console) -> None:
    """Each row as lines of ``column  value``: a narrow terminal then wraps only a value
    longer than the line, never folds an id into a column's width."""
    names = [visible(c) for c in columns]
    label = max(cell_len(n) for n in names)
    for number, row in enumerate(rows, 1):
        console.print(f"-[ {number} ]" + "-" * max(0, label - 4), markup=False, highlight=False)
        for name, value in zip(names, row, strict=True):
            console.print(
                f"{name.ljust(label)}  {value}", markup=False, highlight=False, soft_wrap=True
            )


def print_rows(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    fmt: DataFormat,
    dest: IO[str],
    console: Console,
) -> None:
    """A query result in `fmt`, streamed row by row."""
    if fmt is DataFormat.csv:
        write_csv(columns, rows, dest)
        return
    if fmt is DataFormat.json or fmt is DataFormat.jsonl:
        items = (_row_json(columns, row) for row in rows)
        write_json(items, dest, lines=fmt is DataFormat.jsonl)
        return
    print_table(columns, ([shown(v) for v in row] for row in rows), console, dest)


def _row_json(columns: Sequence[str], row: Sequence[object]) -> str:
    item = {c: plain(v) for c, v in zip(columns, row, strict=True)}
    return json.dumps(item, default=str, ensure_ascii=False, allow_nan=False)


def write_json(items: Iterator[str], dest: IO[str], *, lines: bool) -> None:
    """JSON texts as JSON lines, or as one JSON array written as they come."""
    if lines:
        for item in items:
            dest.write(item + "\n")
        return
    dest.write("[")
    for n, item in enumerate(items):
        dest.write(("," if n else "") + "\n" + item)
    dest.write("\n]\n")


def write_csv(
    columns: Sequence[str], rows: Iterable[Sequence[object]], dest: IO[str], *, header: bool = True
) -> None:
    """Rows as CSV: text cells spreadsheet-safe, everything else as `plain` gives it."""
    writer = CsvWriter(dest)
    if header:
        writer.writerow([safe_cell(c) for c in columns])
    for row in rows:
        writer.writerow([safe_cell(v) if isinstance(v, str) else plain(v) for v in row])


__all__ = [
    "EVENT_FIELDS",
    "HISTORY_COLUMNS",
    "HISTORY_FIELDS",
    "DataFormat",
    "event_values",
    "follow_line",
    "history_cells",
    "history_json",
    "history_values",
    "plain",
    "print_rows",
    "print_table",
    "shown",
    "superseded_mark",
    "write_csv",
    "write_json",
]
