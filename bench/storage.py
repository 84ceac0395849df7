"""Other ways of storing a batch in SQLite, against the one kasmina uses.

docs/benchmarks.md says the SQLite append targets are out of reach with the
contract's table; this measures the storage alternatives that were tried on
the way, on the workload's own finished rows (bench/workload.py, chained as
bench/costs.py chains them), 1,000 per transaction, WAL +
synchronous=NORMAL, every variant through a bare connection with SQLite's
own checkpoints so that only the storing differs:

- ``executemany``: one ``INSERT`` run per row, as kasmina stored before
  migration 0006 (the base);
- one ``INSERT … SELECT … FROM json_each(?)`` per batch, the batch sent as one
  JSON array: SQLite then works a whole batch without the interpreter lock,
  which a second thread could overlap with the next batch's hashing;
- one ``INSERT … VALUES`` of 250 rows per statement (the same, in parts), as
  kasmina stores since 0006's trigger against replacing rows, whose cost is
  paid per statement rather than per row;
- ``executemany`` into a file of 2 KiB or 1 KiB pages instead of 4 KiB;
- ``executemany`` without the three indexes that are not unique (audits by
  seed, reading a run in order, the SQL views).

Each figure is the median of ``--repeat`` interleaved repetitions; the ratio
is the variant's time per event ÷ the base's (>1: slower than one row per run).

    .venv/bin/python bench/storage.py [--epochs 150] [--repeat 5]
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from costs import (  # noqa: E402
    BATCH,
    INSERT,
    chained_rows,
    new_events,
    payload_models,
    workload_arguments,
)

from kasmina.ledger import migrate  # noqa: E402
from kasmina.ledger.formats import LEDGER_FORMAT, payload_text  # noqa: E402
from kasmina.ledger.store import INSERT_COLUMNS  # noqa: E402

Row = tuple[object, ...]
NOT_UNIQUE = (
    "ix_events_run_id_position",
    "ix_events_seed_id",
    "ix_events_event_type_run_id_seed_id",
)
PART = 250
_COLUMNS = ", ".join(INSERT_COLUMNS)
JSON_EACH = (
    f"INSERT INTO events ({_COLUMNS}) SELECT "
    + ", ".join(f"value->>{i}" for i in range(len(INSERT_COLUMNS)))
    + " FROM json_each(?)"
)


def _values(rows: int) -> str:
    one = "(" + ", ".join("?" for _ in INSERT_COLUMNS) + ")"
    return f"INSERT INTO events ({_COLUMNS}) VALUES " + ", ".join([one] * rows)


def _template(folder: Path, page_size: int) -> Path:
    """An empty migrated ledger whose pages are ``page_size`` bytes (set before any table)."""
    path = folder / f"template-{page_size}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    migrate.upgrade(f"sqlite:///{path}")
    return path


def _executemany(conn: sqlite3.Connection, batch: Sequence[Row]) -> None:
    conn.executemany(INSERT, batch)


def _json_each(conn: sqlite3.Connection, batch: Sequence[Row]) -> None:
    conn.execute(JSON_EACH, (json.dumps(batch),))


def _in_parts(conn: sqlite3.Connection, batch: Sequence[Row]) -> None:
    for start in range(0, len(batch), PART):
        part = batch[start : start + PART]
        conn.execute(_values(len(part)), [value for row in part for value in row])


def _store(
    template: Path,
    rows: Sequence[Row],
    insert: Callable[[sqlite3.Connection, Sequence[Row]], None],
    drop: Sequence[str] = (),
) -> float:
    folder = Path(tempfile.mkdtemp(prefix="kasmina-storage-"))
    try:
        path = folder / "store.db"
        shutil.copyfile(template, path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for index in drop:
            conn.execute(f"DROP INDEX {index}")
        batches = [rows[start : start + BATCH] for start in range(0, len(rows), BATCH)]
        t0 = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            insert(conn, batch)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


BASE = "executemany, one INSERT per row"


def measure(rows: Sequence[Row], repeat: int = 5) -> list[tuple[str, float]]:
    """(variant, microseconds per event) rows, medians of interleaved repetitions."""
    folder = Path(tempfile.mkdtemp(prefix="kasmina-storage-"))
    try:
        t4, t2, t1 = (_template(folder, size) for size in (4096, 2048, 1024))
        variants: dict[str, Callable[[], float]] = {
            BASE: lambda: _store(t4, rows, _executemany),
            "one INSERT … SELECT FROM json_each(?) per batch": lambda: _store(t4, rows, _json_each),
            f"INSERT … VALUES of {PART} rows per statement": lambda: _store(t4, rows, _in_parts),
            "executemany, 2 KiB pages": lambda: _store(t2, rows, _executemany),
            "executemany, 1 KiB pages": lambda: _store(t1, rows, _executemany),
            "executemany, without the 3 indexes that are not unique": lambda: _store(
                t4, rows, _executemany, NOT_UNIQUE
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeat):
            for name, variant in variants.items():
                times[name].append(variant())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [(name, statistics.median(v) / len(rows) * 1e6) for name, v in times.items()]


def render(results: Sequence[tuple[str, float]]) -> list[str]:
    """Markdown lines: each variant, its microseconds per event and its ratio to the base."""
    base = dict(results)[BASE]
    lines = ["| storing 1,000 rows per transaction | µs per event | ÷ kasmina's way |"]
    lines.append("|---|---:|---:|")
    lines += [f"| {name} | {value:.1f} | {value / base:.2f}x |" for name, value in results]
    return lines


def main() -> int:
    records, repeat = workload_arguments(__doc__)
    models = payload_models(records)
    texts = [payload_text(m, LEDGER_FORMAT) for m in models]
    rows = chained_rows(new_events(records, models), texts)
    results = measure(rows, repeat)
    print(f"\n{len(rows):,} events, {BATCH:,} per transaction, median of {repeat}\n")
    print("\n".join(render(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
