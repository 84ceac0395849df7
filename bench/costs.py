"""Where a batched kasmina append spends its time, per event, measured step by step.

bench/compare.py says how fast kasmina records against its peers; this says
why, by timing each step of a batched SQLite append on its own, on the same
records (bench/workload.py) and in the same run:

- payload validation: building each payload model from its dict;
- envelope: `make_event` (a time-ordered event id, the checks);
- canonical text: the payload's RFC 8785 text (ledger format 2), what is
  stored and hashed;
- hash chain: the envelope's RFC 8785 text, with both links, and its SHA-256,
  and the row as revision 0015 stores it (`Appending._chained_rows`): the
  run, stream and event type by their integer keys, the event id as its 16
  bytes, the hash as its 32 bytes, ``recorded_at`` as integer microseconds;
- storage: the finished rows inserted into ``ledger_events`` (the table
  under the ``events`` view since revision 0014), 1,000 per transaction,
  WAL + synchronous=NORMAL, all indexes and triggers in place, with the
  checkpoints on a thread as kasmina runs them; then the same with SQLite's
  checkpoints inside the commit, and without the (``run_key``,
  ``position``) index (it reads a run in order and finds an append's tip),
  to price it;
- the whole `Recorder.emit` + flush path, as compare.py times it; what the
  steps do not account for is the ledger's bookkeeping (versions, heads,
  the run check, the run's and streams' keys).

The storage rows go under a run, streams and types recorded in
``ledger_runs``, ``ledger_streams`` and ``ledger_types`` beforehand, untimed
(`add_run`); in a real append the run row comes with `start_run` and a
stream's or type's row with the first append to it,
which the whole append pays and the bookkeeping row shows.

Each figure is the median of ``--repeat`` interleaved repetitions.

    .venv/bin/python bench/costs.py [--epochs 150] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import Record, build  # noqa: E402

from kasmina.canonical import GENESIS_HASH, quote  # noqa: E402
from kasmina.events import NewEvent, Payload, make_event, payload_class  # noqa: E402
from kasmina.ids import uuid_bytes  # noqa: E402
from kasmina.ledger import Ledger, migrate  # noqa: E402
from kasmina.ledger.formats import LEDGER_FORMAT, payload_text, row_hash  # noqa: E402
from kasmina.ledger.run import LedgerRecorder  # noqa: E402
from kasmina.ledger.sqlite import SQLiteStore  # noqa: E402
from kasmina.ledger.store import INSERT_COLUMNS, micros  # noqa: E402

BATCH = 1000
STORAGE = "storage: rows into ledger_events, all indexes"
RUN_ID = "bench"
#: The one index of ``ledger_events`` that is not unique (revision 0014).
RUN_INDEX = "ix_ledger_events_run_key_position"
#: The bare connection's statement (the store builds the same one for itself).
INSERT = (
    f"INSERT INTO ledger_events ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in INSERT_COLUMNS)})"
)


class Keys(NamedTuple):
    """The run's key and its streams' and event types' keys: what a row stores instead of
    their names."""

    run_key: int
    streams: dict[str, int]
    types: dict[str, int]


def add_run(path: Path, records: Sequence[Record], run_id: str = RUN_ID) -> Keys:
    """Record a run (ledger format 2, the first run start), its streams and its event types
    in the ledger at `path`, as an append does before its rows, and give their keys."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        (run_key,) = conn.execute(
            "INSERT INTO ledger_runs (run_id, format, start_prev) VALUES (?, ?, ?) "
            "RETURNING run_key",
            (run_id, LEDGER_FORMAT, bytes.fromhex(GENESIS_HASH)),
        ).fetchone()
        keys = Keys(int(run_key), {}, {})
        for stream in dict.fromkeys(r.stream_id for r in records):
            (key,) = conn.execute(
                "INSERT INTO ledger_streams (run_key, stream_id) VALUES (?, ?) "
                "RETURNING stream_key",
                (run_key, stream),
            ).fetchone()
            keys.streams[stream] = int(key)
        for name in dict.fromkeys(r.event_type for r in records):
            (key,) = conn.execute(
                "INSERT INTO ledger_types (event_type) VALUES (?) RETURNING type_key", (name,)
            ).fetchone()
            keys.types[name] = int(key)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return keys


def payload_models(records: Sequence[Record]) -> list[Payload]:
    return [payload_class(r.event_type)(**r.payload) for r in records]


def new_events(records: Sequence[Record], models: Sequence[Payload]) -> list[NewEvent]:
    return [
        make_event(m, run_id=RUN_ID, stream_id=r.stream_id, epoch=r.epoch, seed_id=r.seed_id)
        for r, m in zip(records, models, strict=True)
    ]


def chained_rows(
    events: Sequence[NewEvent], texts: Sequence[str], keys: Keys
) -> list[tuple[object, ...]]:
    """The rows an append would insert (`INSERT_COLUMNS` order): versions per stream, the
    hash chain, the run and streams by key, ids and hashes as bytes, the time in µs."""
    heads: dict[str, tuple[int, str]] = {}
    run_prev = GENESIS_HASH
    at = "2026-11-23T00:00:00.000000+00:00"
    at_micros = micros(datetime.fromisoformat(at))
    rows: list[tuple[object, ...]] = []
    for event, text in zip(events, texts, strict=True):
        version, prev = heads.get(event.stream_id, (0, GENESIS_HASH))
        digest = run_prev = row_hash(
            LEDGER_FORMAT,
            quote(event.event_id),
            quote(event.run_id),
            quote(event.stream_id),
            version + 1,
            quote(event.event_type),
            event.schema_version,
            "null" if event.epoch is None else str(event.epoch),
            "null" if event.seed_id is None else quote(event.seed_id),
            text,
            quote(at),
            prev,
            run_prev,
            None,
        )
        heads[event.stream_id] = (version + 1, digest)
        rows.append(
            (
                uuid_bytes(event.event_id),
                keys.run_key,
                keys.streams[event.stream_id],
                version + 1,
                keys.types[event.event_type],
                event.schema_version,
                event.epoch,
                event.seed_id,
                text,
                at_micros,
                bytes.fromhex(digest),
                None,
            )
        )
    return rows


def _store(
    template: Path, rows: Sequence[tuple[object, ...]], drop: str | None, *, inline: bool = False
) -> float:
    """Insert the rows through kasmina's SQLite store (its checkpoint thread and all), or
    with a bare connection whose checkpoints SQLite runs inside the commit."""
    folder = Path(tempfile.mkdtemp(prefix="kasmina-costs-"))
    try:
        path = folder / "store.db"
        shutil.copyfile(template, path)
        batches = [rows[start : start + BATCH] for start in range(0, len(rows), BATCH)]
        if inline:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            t0 = time.perf_counter()
            for batch in batches:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT, batch)
                conn.execute("COMMIT")
            elapsed = time.perf_counter() - t0
            conn.close()
            return elapsed
        store = SQLiteStore(f"sqlite:///{path}", str(path), synchronous="NORMAL")
        if drop:
            with store.write("costs") as cur:
                cur.execute(f"DROP INDEX {drop}")
        t0 = time.perf_counter()
        for batch in batches:
            with store.write("costs") as cur:
                store.insert_events(cur, batch)
        elapsed = time.perf_counter() - t0
        store.close()
        return elapsed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _recorder(template: Path, records: Sequence[Record]) -> float:
    folder = Path(tempfile.mkdtemp(prefix="kasmina-costs-"))
    try:
        path = folder / "kasmina.db"
        shutil.copyfile(template, path)
        with Ledger.open(f"sqlite:///{path}") as ledger:
            run_id = ledger.start_run("costs", seed=0).run_id
            recorder = LedgerRecorder(ledger, run_id, buffer_size=BATCH)
            t0 = time.perf_counter()
            for r in records:
                recorder.emit(
                    payload_class(r.event_type)(**r.payload),
                    stream_id=r.stream_id,
                    epoch=r.epoch,
                    seed_id=r.seed_id,
                )
            recorder.flush()
            return time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(records: Sequence[Record], repeat: int = 5) -> list[tuple[str, float]]:
    """(step, microseconds per event) rows, medians of interleaved repetitions."""
    folder = Path(tempfile.mkdtemp(prefix="kasmina-costs-"))
    template = folder / "template.db"  # empty, for the whole append
    migrate.upgrade(f"sqlite:///{template}")
    keyed = folder / "keyed.db"  # with the rows' run and streams, for storage
    shutil.copyfile(template, keyed)
    keys = add_run(keyed, records)
    models = payload_models(records)
    events = new_events(records, models)
    texts = [payload_text(m, LEDGER_FORMAT) for m in models]
    rows = chained_rows(events, texts, keys)
    steps: dict[str, Callable[[], float]] = {
        "payload validation (model from dict)": lambda: _timed(lambda: payload_models(records)),
        "envelope (make_event, v7 event id)": lambda: _timed(lambda: new_events(records, models)),
        "canonical payload text (RFC 8785)": lambda: _timed(
            lambda: [payload_text(m, LEDGER_FORMAT) for m in models]
        ),
        "hash chain (envelope text + SHA-256)": lambda: _timed(
            lambda: chained_rows(events, texts, keys)
        ),
        STORAGE: lambda: _store(keyed, rows, None),
        "  (the same with SQLite's checkpoints inside the commit)": lambda: _store(
            keyed, rows, None, inline=True
        ),
        f"storage without {RUN_INDEX}": lambda: _store(keyed, rows, RUN_INDEX),
        "whole append (Recorder.emit + flush)": lambda: _recorder(template, records),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            times[name].append(step())
    shutil.rmtree(folder, ignore_errors=True)
    per_event = {name: statistics.median(v) / len(records) * 1e6 for name, v in times.items()}
    whole = per_event["whole append (Recorder.emit + flush)"]
    storage = per_event[STORAGE]
    index = storage - per_event[f"storage without {RUN_INDEX}"]
    accounted = storage + sum(
        per_event[name]
        for name in (
            "payload validation (model from dict)",
            "envelope (make_event, v7 event id)",
            "canonical payload text (RFC 8785)",
            "hash chain (envelope text + SHA-256)",
        )
    )
    out = [(name, value) for name, value in per_event.items() if not name.startswith("storage w")]
    out.insert(5, (f"  of which the {RUN_INDEX} index", index))
    out.append(("  bookkeeping (whole minus the steps)", whole - accounted))
    return out


def render(rows: Sequence[tuple[str, float]]) -> list[str]:
    """Markdown lines: each step, its microseconds per event and its share of the whole."""
    whole = dict(rows)["whole append (Recorder.emit + flush)"]
    lines = ["| step | µs per event | share of the whole |", "|---|---:|---:|"]
    for name, value in rows:
        label = name.strip()
        share = "—" if label.startswith("(") else f"{value / whole:.0%}"
        lines.append(f"| {label} | {value:.1f} | {share} |")
    return lines


def workload_arguments(doc: str | None) -> tuple[list[Record], int]:
    """The workload's records and the repetitions, from ``--epochs`` and ``--repeat``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    return list(build(args.epochs).records), args.repeat


def main() -> int:
    records, repeat = workload_arguments(__doc__)
    rows = measure(records, repeat)
    print(f"\n{len(records):,} events, {BATCH:,} per transaction, median of {repeat}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:{width}} {value:7.1f} µs/event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
