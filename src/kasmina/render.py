"""How the `kasmina` command writes events and query results for people and files.

Kept apart from the command definitions so that the layouts (the history
table and its one-line-per-event form for `--follow`, the SQL result in a
table, CSV or JSON) live in one place, and the commands only choose one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from kasmina.events import StoredEvent


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def summary(event: StoredEvent) -> str:
    data = event.payload.model_dump(mode="json")
    if event.event_type == "SeedStageChanged":
        return (
            f"{data['from_stage']} -> {data['to_stage']} ({data['trigger']}, alpha {data['alpha']})"
        )
    keep = {k: v for k, v in data.items() if v not in (None, [], {}) and k != "slot_id"}
    text = ", ".join(f"{k}={v}" for k, v in keep.items())
    return text if len(text) <= 100 else text[:99] + "…"


def event_json(event: StoredEvent) -> str:
    return json.dumps(
        {
            "position": event.position,
            "event_id": event.event_id,
            "run_id": event.run_id,
            "stream_id": event.stream_id,
            "version": event.version,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "epoch": event.epoch,
            "seed_id": event.seed_id,
            "payload": event.payload.model_dump(mode="json"),
            "recorded_at": event.recorded_at.isoformat(),
            "hash": event.hash,
        },
        ensure_ascii=False,
    )


HISTORY_COLUMNS = ("pos", "epoch", "stream", "v", "event", "seed", "detail")


def history_cells(event: StoredEvent) -> tuple[str, str, str, str, str, str, str]:
    return (
        str(event.position),
        "" if event.epoch is None else str(event.epoch),
        event.stream_id,
        str(event.version),
        event.event_type,
        event.seed_id or "",
        summary(event),
    )


def follow_line(cells: Sequence[str]) -> str:
    """One event per line (a table needs all its rows before it can be drawn)."""
    pos, epoch, stream, version, kind, seed, detail = (" ".join(c.split()) for c in cells)
    return f"{pos:>7} {epoch:>5} {stream:<14} {version:>4} {kind:<20} {seed:<8} {detail}".rstrip()


def print_rows(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    fmt: SqlFormat,
    dest: TextIO,
    console: Console,
) -> None:
    if fmt is SqlFormat.csv:
        writer = csv.writer(dest, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([plain(v) for v in row])
        return
    if fmt is SqlFormat.json:
        dest.write("[")
        for n, row in enumerate(rows):
            item = {c: plain(v) for c, v in zip(columns, row, strict=True)}
            dest.write(("," if n else "") + "\n" + json.dumps(item, default=str))
        dest.write("\n]\n")
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(plain(v)) for v in row))
    console.print(table)
