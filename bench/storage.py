"""Other ways of storing a batch in SQLite, against the one kasmina uses.

docs/benchmarks.md says the SQLite append targets are out of reach with the
contract's table; this measures the storage alternatives that were tried on
the way, on the workload's own finished rows (bench/workload.py, chained as
bench/costs.py chains them, so stored as revision 0014 keeps them: into
``ledger_events``, the run and stream by integer key, under a run and streams
recorded in ``ledger_runs`` and ``ledger_streams`` first, untimed; 16-byte
ids, 32-byte hashes, ``recorded_at`` in integer microseconds), 1,000 per
transaction, WAL + synchronous=NORMAL, every variant through a bare
connection with SQLite's own checkpoints so that only the storing differs:

- ``executemany``: one ``INSERT`` run per row, as kasmina stored before
  migration 0006 (the base);
- one ``INSERT … SELECT … FROM json_each(?)`` per batch, the batch sent as one
  JSON array: SQLite then works a whole batch without the interpreter lock,
  which a second thread could overlap with the next batch's hashing. JSON
  carries no bytes, so the ids and hashes travel as hex and SQLite's
  ``unhex()`` makes them bytes again; SQLite before 3.41 has no ``unhex()``,
  and there this variant is left out (the output says so);
- one ``INSERT … VALUES`` of 250 rows per statement (the same, in parts), as
  kasmina stores since 0006's trigger against replacing rows, whose cost is
  paid per statement rather than per row;
- ``executemany`` into a file of 2 KiB or 1 KiB pages instead of 4 KiB;
- ``executemany`` without the one index that is not unique, (``run_key``,
  ``position``): reading a run in order, an append's tip. Until revision
  0014 this variant dropped the three such indexes of the old ``events``
  table (audits by seed, reading a run in order, the SQL views); 0014 dropped
  the other two.

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
    RUN_INDEX,
    Keys,
    add_run,
    chained_rows,
    new_events,
    payload_models,
    workload_arguments,
)
from workload import Record  # noqa: E402

from kasmina.ledger import migrate  # noqa: E402
from kasmina.ledger.formats import LEDGER_FORMAT, payload_text  # noqa: E402
from kasmina.ledger.store import INSERT_COLUMNS  # noqa: E402

Row = tuple[object, ...]
#: The index of ``ledger_events`` this prices by leaving it out.
NOT_UNIQUE = (RUN_INDEX,)
PART = 250
_COLUMNS = ", ".join(INSERT_COLUMNS)
#: The columns a JSON batch carries as hex, for ``unhex()`` to make bytes again.
_HEX = frozenset({"event_id", "hash"})
JSON_EACH = (
    f"INSERT INTO ledger_events ({_COLUMNS}) SELECT "
    + ", ".join(
        f"unhex(value->>{i})" if column in _HEX else f"value->>{i}"
        for i, column in enumerate(INSERT_COLUMNS)
    )
    + " FROM json_each(?)"
)


def _values(rows: int) -> str:
    one = "(" + ", ".join("?" for _ in INSERT_COLUMNS) + ")"
    return f"INSERT INTO ledger_events ({_COLUMNS}) VALUES " + ", ".join([one] * rows)


def has_unhex() -> bool:
    """Whether this SQLite has ``unhex()`` (3.41 and later)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELECT unhex('00')")
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return True


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
    as_json = [[v.hex() if isinstance(v, bytes) else v for v in row] for row in batch]
    conn.execute(JSON_EACH, (json.dumps(as_json),))


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
JSON_VARIANT = "one INSERT … SELECT FROM json_each(?) per batch"


def measure(records: Sequence[Record], repeat: int = 5) -> list[tuple[str, float]]:
    """(variant, microseconds per event) rows, medians of interleaved repetitions."""
    folder = Path(tempfile.mkdtemp(prefix="kasmina-storage-"))
    try:
        t4, t2, t1 = (_template(folder, size) for size in (4096, 2048, 1024))
        keys: list[Keys] = [add_run(t, records) for t in (t4, t2, t1)]
        assert keys[0] == keys[1] == keys[2], "every template gives the run the same keys"
        models = payload_models(records)
        texts = [payload_text(m, LEDGER_FORMAT) for m in models]
        rows = chained_rows(new_events(records, models), texts, keys[0])
        variants: dict[str, Callable[[], float]] = {
            BASE: lambda: _store(t4, rows, _executemany),
            JSON_VARIANT: lambda: _store(t4, rows, _json_each),
            f"INSERT … VALUES of {PART} rows per statement": lambda: _store(t4, rows, _in_parts),
            "executemany, 2 KiB pages": lambda: _store(t2, rows, _executemany),
            "executemany, 1 KiB pages": lambda: _store(t1, rows, _executemany),
            f"executemany, without {RUN_INDEX}": (
                lambda: _store(t4, rows, _executemany, NOT_UNIQUE)
            ),
        }
        if not has_unhex():
            del variants[JSON_VARIANT]
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeat):
            for name, variant in variants.items():
                times[name].append(variant())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [(name, statistics.median(v) / len(records) * 1e6) for name, v in times.items()]


def render(results: Sequence[tuple[str, float]]) -> list[str]:
    """Markdown lines: each variant, its microseconds per event and its ratio to the base."""
    base = dict(results)[BASE]
    lines = ["| storing 1,000 rows per transaction | µs per event | ÷ executemany |"]
    lines.append("|---|---:|---:|")
    lines += [f"| {name} | {value:.1f} | {value / base:.2f}x |" for name, value in results]
    return lines


def main() -> int:
    records, repeat = workload_arguments(__doc__)
    results = measure(records, repeat)
    print(f"\n{len(records):,} events, {BATCH:,} per transaction, median of {repeat}\n")
    print("\n".join(render(results)))
    if not has_unhex():
        print(
            f"\n({JSON_VARIANT} left out: SQLite {sqlite3.sqlite_version} has no unhex(), "
            "which the JSON batch needs to store ids and hashes as bytes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
