"""A run's tables as files: its events and every SQL view, one file each.

An export is for the tools that never talk to the ledger's database — DuckDB,
pandas, a spreadsheet, an archive — so it has to mean the same thing whichever
database it came from. Drivers disagree on types (PostgreSQL gives ``True``
and ``Decimal`` where SQLite gives ``1`` and ``int``, a datetime where SQLite
gives text), so every column has one declared kind, by name, and each value
is converted to it: the same run gives the same CSV and JSON lines bytes from
SQLite and PostgreSQL, but for the wall-clock timestamps (and the hashes
chained over them), and the same Parquet schema.

`events` keeps the stored columns, payload as the JSON text it was hashed
as (RFC 8785 in a format-2 run) and ``recorded_at`` as the hashed text, so
every hash can be re-checked from the files alone. Views are cut to the run
by ``run_id``; a view without one (``transition_table``, the legal moves) is
written whole, so SQL checks of a run's moves work on the files too. Rows are
streamed, a batch at a time.
CSV text cells follow `kasmina.spreadsheet` (no cell opens as a formula, and
the rule can be undone); each file is written by `kasmina.files`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeAlias

from kasmina.canonical import json_float
from kasmina.errors import KasminaError
from kasmina.files import atomic_bytes, atomic_text
from kasmina.spreadsheet import CsvWriter, safe_cell

if TYPE_CHECKING:
    from kasmina.ledger import Ledger
from kasmina.ledger.sqljson import sql_literal

FORMATS = ("csv", "jsonl", "parquet")
PARQUET_HINT = (
    "--format parquet needs pyarrow, which is not installed: pip install 'kasmina[parquet]'"
)
#: Rows per Parquet record batch (and row group): bounded memory, large enough to compress well.
BATCH_ROWS = 50_000
#: Rows between two reports to `export_run`'s `progress`.
TALLY_ROWS = 1000

Value: TypeAlias = "int | float | str | bool | datetime | None"
Row: TypeAlias = tuple[Value, ...]


class Kind(StrEnum):
    INT = "int"
    FLOAT = "float"
    TEXT = "text"
    BOOL = "bool"
    TIME = "time"


_NAMES: Mapping[Kind, tuple[str, ...]] = {
    Kind.INT: (
        "position", "version", "schema_version", "epoch", "seed", "events", "epochs", "seeds",
        "fossilized", "pruned", "evicted", "from_epoch", "to_epoch", "germinated_epoch",
        "ended_epoch", "epochs_in_stage", "params_added", "epochs_total", "rank", "attempt",
        "resumed_at_position", "depth",
    ),
    Kind.FLOAT: (
        "score", "alpha", "alpha_target", "accuracy", "accuracy_delta", "counterfactual",
        "final_val_accuracy", "grad_ratio", "improvement", "blending_delta", "val_accuracy",
        "val_loss", "train_accuracy", "train_loss", "host_grad_norm", "value",
    ),
    Kind.BOOL: (
        "passed", "has_vanishing", "has_exploding", "auto_pruned", "scheduled", "accepted",
    ),
    Kind.TIME: ("recorded_at", "started_at", "finished_at"),
    Kind.TEXT: (
        "event_id", "run_id", "stream_id", "event_type", "seed_id", "payload", "prev_hash",
        "hash", "name", "status", "slot_id", "from_stage", "to_stage", "trigger", "stage",
        "blueprint_id", "final_stage", "cache", "reason", "gate", "target_stage",
        "checks_failed", "checks_passed", "message", "check_name", "outcome", "initiator",
        "decision_id", "policy", "action", "refusal", "ancestor_run_id",
    ),
}  # fmt: skip

#: The kind of every column of `events` and of the views, by name: a column
#: name means one thing in every view. A name missing here is exported as text
#: (a test holds this table to the database's own column types).
COLUMN_KINDS: Mapping[str, Kind] = {n: kind for kind, names in _NAMES.items() for n in names}

#: Views an export leaves out: `live_events` is the events file again, less the
#: rows that `superseded_events` (which is exported) names.
NOT_EXPORTED = frozenset({"live_events"})


@dataclass(frozen=True, slots=True)
class Table:
    """One table of a run, its rows converted to the kinds of its columns."""

    name: str
    columns: tuple[str, ...]
    kinds: tuple[Kind, ...]
    rows: Generator[Row, None, None]


# -- reading ----------------------------------------------------------------


def _to_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _text(value: object) -> str:
    """A stored payload's text: what was hashed, so never anything but text."""
    if not isinstance(value, str):
        raise TypeError(f"a payload is stored as {type(value).__name__}, not text")
    return value


def _to_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _to_text(value: object) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def _to_bool(value: object) -> bool | None:
    return None if value is None else bool(value)


def _to_time(value: object) -> datetime | None:
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


_CONVERTERS: Mapping[Kind, Callable[[object], Value]] = {
    Kind.INT: _to_int,
    Kind.FLOAT: _to_float,
    Kind.TEXT: _to_text,
    Kind.BOOL: _to_bool,
    Kind.TIME: _to_time,
}


def _converted(
    rows: Iterator[tuple[object, ...]], convert: Sequence[Callable[[object], Value]]
) -> Generator[Row, None, None]:
    try:
        for row in rows:
            try:
                yield tuple([f(v) for f, v in zip(convert, row, strict=True)])
            except (TypeError, ValueError, OverflowError) as exc:
                raise KasminaError(
                    f"a row holds a value of the wrong kind ({exc}): only a row made by hand "
                    "does; `kasmina verify` names it"
                ) from None
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # the query's connection, if the writer stopped early


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scalar(ledger: Ledger, query: str) -> object:
    _, rows = ledger.sql(query)
    found = list(rows)
    return found[0][0] if found else None


def _order_by(columns: Sequence[str], kinds: Sequence[Kind], dialect: str) -> str:
    """Every column, so ties cannot fall out differently on the two databases.

    Position first where there is one, then numbers and times, then text in
    byte order (PostgreSQL's default collation follows the locale), with NULLs
    first on both (their defaults differ).
    """
    ranked = sorted(
        zip(columns, kinds, strict=True),
        key=lambda ck: (ck[0] != "position", ck[1] is Kind.TEXT),
    )
    keys = []
    for column, kind in ranked:
        collate = ' COLLATE "C"' if dialect == "postgresql" and kind is Kind.TEXT else ""
        keys.append(f"{_ident(column)}{collate} NULLS FIRST")
    return ", ".join(keys)


def _events(ledger: Ledger, run_id: str, last: int) -> Table:
    from kasmina.ledger.schema import COLUMNS
    from kasmina.ledger.verify import run_format

    store = ledger.store
    kinds = tuple(COLUMN_KINDS[c] for c in COLUMNS)
    convert = [_CONVERTERS[k] for k in kinds]
    form = run_format(store, run_id)
    convert[COLUMNS.index("payload")] = lambda raw: _text(store.payload_text(raw, form))
    convert[COLUMNS.index("recorded_at")] = store.recorded_at_value
    rows = _converted(ledger.raw_rows(run_id, until=last), convert)
    return Table("events", tuple(COLUMNS), kinds, rows)


def _view(ledger: Ledger, view: str, run_id: str, last: int) -> Table:
    columns, probe = ledger.sql(f"SELECT * FROM {_ident(view)} LIMIT 0")
    list(probe)
    kinds = tuple(COLUMN_KINDS.get(c, Kind.TEXT) for c in columns)
    where = []
    if "run_id" in columns:
        where.append(f"run_id = {sql_literal(run_id)}")
    if "position" in columns:
        where.append(f"position <= {last}")
    query = f"SELECT * FROM {_ident(view)}"
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY " + _order_by(columns, kinds, ledger.dialect)
    _, rows = ledger.sql(query)
    return Table(view, tuple(columns), kinds, _converted(rows, [_CONVERTERS[k] for k in kinds]))


def run_tables(ledger: Ledger, run_id: str) -> Iterator[Table]:
    """The run's events, then each view of `schema.VIEWS` the database has (bar `NOT_EXPORTED`).

    Rows are read lazily: take each table's rows before the next table. The
    events and every view with a position stop at the run's last event as of
    the start, so a run still being recorded exports one consistent prefix;
    views without a position are read as they are when their turn comes.
    """
    from kasmina.ledger.schema import VIEWS

    ledger.require_run(run_id)
    last = _to_int(
        _scalar(ledger, f"SELECT MAX(position) FROM events WHERE run_id = {sql_literal(run_id)}")
    )
    assert last is not None  # the run exists, so it has events
    yield _events(ledger, run_id, last)
    existing = ledger.views()
    for view in VIEWS:
        if view in existing and view not in NOT_EXPORTED:
            yield _view(ledger, view, run_id, last)


# -- writing ----------------------------------------------------------------


def _csv_text(value: Value) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return str(json_float(value))
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, str):
        return safe_cell(value)
    return str(value)


def _json_value(value: Value) -> Value:
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value


def _write_csv(table: Table, dest: IO[str]) -> None:
    writer = CsvWriter(dest)
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_csv_text(v) for v in row])


_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _write_jsonl(table: Table, dest: IO[str]) -> None:
    columns = table.columns
    for row in table.rows:
        item = {c: _json_value(v) for c, v in zip(columns, row, strict=True)}
        dest.write(_JSON.encode(item) + "\n")


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _parquet_writer() -> Callable[[Table, IO[bytes]], None]:
    """The Parquet writer, or one clear error before anything is written."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise KasminaError(PARQUET_HINT) from None
    types = {
        Kind.INT: pa.int64(),
        Kind.FLOAT: pa.float64(),
        Kind.TEXT: pa.string(),
        Kind.BOOL: pa.bool_(),
        Kind.TIME: pa.timestamp("us", tz="UTC"),
    }

    def write(table: Table, dest: IO[bytes]) -> None:
        schema = pa.schema(
            [pa.field(c, types[k]) for c, k in zip(table.columns, table.kinds, strict=True)]
        )
        with pq.ParquetWriter(dest, schema) as writer:
            for batch in _batches(table.rows, BATCH_ROWS):
                arrays = [
                    pa.array(values, type=field.type)
                    for values, field in zip(zip(*batch, strict=True), schema, strict=True)
                ]
                writer.write_batch(pa.record_batch(arrays, schema=schema))

    return write


class _Tally:
    """Rows written over every table, told to `progress` every `TALLY_ROWS` rows and
    at each table's end (a clock read per row would cost more than the count)."""

    def __init__(self, progress: Callable[[int], None]) -> None:
        self.done = 0
        self._progress = progress

    def counted(self, rows: Generator[Row, None, None]) -> Generator[Row, None, None]:
        try:
            for row in rows:
                self.done += 1
                if self.done % TALLY_ROWS == 0:
                    self._progress(self.done)
                yield row
        finally:
            rows.close()
        self._progress(self.done)


def export_run(
    ledger: Ledger,
    run_id: str,
    directory: Path | str,
    fmt: str = "csv",
    *,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write the run's tables to `directory` as ``NAME.FMT``; returns the paths written.

    The folder is made if missing. Files of the same names are replaced, each
    one whole (written beside it, then renamed); other files are left alone.
    `progress` is told the rows written so far, all tables together.
    """
    if fmt not in FORMATS:
        raise KasminaError(f"unknown export format {fmt!r}: use {', '.join(FORMATS)}")
    parquet = _parquet_writer() if fmt == "parquet" else None
    text_writer = _write_jsonl if fmt == "jsonl" else _write_csv
    ledger.require_run(run_id)
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise KasminaError(f"cannot export into {folder}: it is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    tally = None if progress is None else _Tally(progress)
    for table in run_tables(ledger, run_id):
        path = folder / f"{table.name}.{fmt}"
        rows = table.rows if tally is None else tally.counted(table.rows)
        try:
            if parquet is not None:
                with atomic_bytes(path) as binary:
                    parquet(replace(table, rows=rows), binary)
            else:
                with atomic_text(path) as text:
                    text_writer(replace(table, rows=rows), text)
        finally:
            rows.close()
            table.rows.close()
        written.append(path)
    return written


__all__ = ["COLUMN_KINDS", "FORMATS", "NOT_EXPORTED", "Kind", "Table", "export_run", "run_tables"]
