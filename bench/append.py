"""Append throughput: kasmina against hand-written floors, measured in one run.

Every system writes the same ~300-byte telemetry rows in 1,000-row
transactions into the same tables (created by kasmina's migration, so shape,
indexes and triggers are identical), with the same WAL / synchronous=NORMAL
settings on SQLite and a default-durability PostgreSQL server. Since revision
0014 those are the tables under the `events` view: a row goes into
`ledger_events` and names its run, stream and (since 0015) event type by the
integer keys of `ledger_runs`, `ledger_streams` and `ledger_types`, with the
event id as a uuid's 16 bytes, the
hash as 32 bytes and `recorded_at` as integer microseconds on
SQLite (a timestamptz on PostgreSQL). The floors do what a careful
hand-written logger of that schema does: a uuid and a stdlib JSON encoding
per row, the run's and the type's rows written before the clock starts (as
kasmina's `start_run` is), a stream's row when the stream is first seen, one
`executemany` per transaction. kasmina also validates every payload against
its model, computes the canonical text and the hash chain, checks for
already-stored event ids and reads the stream heads.

    .venv/bin/python bench/append.py [--events 50000] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402

from kasmina.events import event_from_dict  # noqa: E402
from kasmina.ledger import Ledger, migrate  # noqa: E402
from kasmina.ledger.formats import LEDGER_FORMAT  # noqa: E402
from kasmina.ledger.store import INSERT_COLUMNS, micros  # noqa: E402

BATCH = 1000
#: What the floors write: every column of `ledger_events` an append writes but `rank` (NULL).
FLOOR_COLUMNS = tuple(column for column in INSERT_COLUMNS if column != "rank")
INSERT = (
    f"INSERT INTO ledger_events ({', '.join(FLOOR_COLUMNS)}) VALUES ("
    + ", ".join("{payload}" if column == "payload" else "?" for column in FLOOR_COLUMNS)
    + ")"
)
NEW_RUN = "INSERT INTO ledger_runs (run_id, format) VALUES (?, ?) RETURNING run_key"
NEW_STREAM = "INSERT INTO ledger_streams (run_key, stream_id) VALUES (?, ?) RETURNING stream_key"
#: The one event type the floors write.
SAMPLED = "SeedTelemetrySampled"
NEW_TYPE = "INSERT INTO ledger_types (event_type) VALUES (?) RETURNING type_key"


def payload(i: int) -> dict[str, object]:
    """A ~300-byte telemetry sample."""
    return {
        "slot_id": f"r0c{i % 3}",
        "stage": "BLENDING",
        "alpha": round((i % 100) / 100, 4),
        "alpha_target": 1.0,
        "alpha_mode": "UP",
        "accuracy": 71.25 + (i % 17) * 0.01,
        "accuracy_delta": 0.125 * (i % 9),
        "epochs_in_stage": i % 12,
        "grad_norm": 0.0123456789 * (1 + i % 5),
        "grad_health": 0.975,
        "has_vanishing": False,
        "has_exploding": False,
    }


def rows_for(n: int) -> list[tuple[int, dict[str, object]]]:
    return [(i, payload(i)) for i in range(n)]


def stream_keys(new_stream: Callable[[str], int]) -> Callable[[str], int]:
    """A stream's key: remembered, or made by `new_stream` (inside the open transaction)."""
    keys: dict[str, int] = {}

    def key(stream: str) -> int:
        found = keys.get(stream)
        if found is None:
            found = keys[stream] = new_stream(stream)
        return found

    return key


def floor_rows(
    run_key: int,
    type_key: int,
    stream_key: Callable[[str], int],
    start: int,
    batch: list[tuple[int, dict[str, object]]],
    *,
    postgres: bool,
) -> list[tuple[object, ...]]:
    """`FLOOR_COLUMNS` rows: a uuid's 16 bytes, the time in microseconds on SQLite and a
    datetime on PostgreSQL, a constant 32-byte hash."""
    now = datetime.now(UTC)
    at: object = now if postgres else micros(now)
    rows: list[tuple[object, ...]] = []
    for k, (i, p) in enumerate(batch):
        rows.append(
            (
                uuid.uuid4().bytes,
                run_key,
                stream_key(f"slot/r0c{i % 3}"),
                start + k + 1,
                type_key,
                1,
                i // 100,
                f"s{i % 3}",
                json.dumps(p),
                at,
                b"\xff" * 32,
            )
        )
    return rows


def plain_sqlite(path: str, data: list[tuple[int, dict[str, object]]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = INSERT.format(payload="?")
    conn.execute("BEGIN IMMEDIATE")
    (run_key,) = conn.execute(NEW_RUN, (uuid.uuid4().hex, LEDGER_FORMAT)).fetchone()
    (type_key,) = conn.execute(NEW_TYPE, (SAMPLED,)).fetchone()
    conn.execute("COMMIT")
    key = stream_keys(lambda stream: conn.execute(NEW_STREAM, (run_key, stream)).fetchone()[0])
    t0 = time.perf_counter()
    for start in range(0, len(data), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        rows = floor_rows(
            run_key, type_key, key, start, data[start : start + BATCH], postgres=False
        )
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(data) / elapsed


def plain_psycopg(conninfo: str, data: list[tuple[int, dict[str, object]]]) -> float:
    sql = INSERT.format(payload="CAST(? AS jsonb)").replace("?", "%s")
    new_run, new_stream, new_type = (q.replace("?", "%s") for q in (NEW_RUN, NEW_STREAM, NEW_TYPE))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(new_run, (uuid.uuid4().hex, LEDGER_FORMAT)).fetchone()
        run_key = int(row[0]) if row else 0
        row = conn.execute(new_type, (SAMPLED,)).fetchone()
        type_key = int(row[0]) if row else 0

        def made(stream: str) -> int:  # in the transaction `conn` has open
            found = conn.execute(new_stream, (run_key, stream)).fetchone()
            return int(found[0]) if found else 0

        key = stream_keys(made)
        t0 = time.perf_counter()
        for start in range(0, len(data), BATCH):
            with conn.transaction(), conn.cursor() as cur:
                rows = floor_rows(
                    run_key, type_key, key, start, data[start : start + BATCH], postgres=True
                )
                cur.executemany(sql, rows)
        elapsed = time.perf_counter() - t0
    return len(data) / elapsed


def kasmina_append(url: str, data: list[tuple[int, dict[str, object]]]) -> float:
    with Ledger.open(url) as ledger:
        run = ledger.start_run("bench", seed=0)
        t0 = time.perf_counter()
        for start in range(0, len(data), BATCH):
            batch = [
                event_from_dict(
                    "SeedTelemetrySampled",
                    p,
                    run_id=run.run_id,  # type: ignore[arg-type]
                    stream_id=f"slot/r0c{i % 3}",
                    epoch=i // 100,
                    seed_id=f"s{i % 3}",
                )
                for i, p in data[start : start + BATCH]
            ]
            ledger.append(batch)
        elapsed = time.perf_counter() - t0
        assert ledger.verify(run.run_id).ok
    return len(data) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile kasmina on SQLite")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    data = rows_for(args.events)
    work = Path(tempfile.mkdtemp(prefix="kasmina-bench-"))
    sqlite_url = f"sqlite:///{work / 'kasmina.db'}"
    floor_db = work / "floor.db"
    migrate.upgrade(sqlite_url)
    migrate.upgrade(f"sqlite:///{floor_db}")

    server = None
    systems: dict[str, Callable[[], float]] = {
        "plain sqlite3 executemany": lambda: plain_sqlite(str(floor_db), data),
        "kasmina SQLite": lambda: kasmina_append(sqlite_url, data),
    }
    if not args.no_postgres:
        from pgserver import start_server

        server = start_server(durable=True, port=5441)
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        migrate.upgrade(server.url("bench"))
        conninfo = server.conninfo("bench")
        pg_url = server.url("bench")
        systems["plain psycopg executemany"] = lambda: plain_psycopg(conninfo, data)
        systems["kasmina PostgreSQL"] = lambda: kasmina_append(pg_url, data)

    try:
        results: dict[str, list[float]] = {name: [] for name in systems}
        for _ in range(args.repeat):  # interleaved, so drift hits every system alike
            for name, fn in systems.items():
                results[name].append(fn())
        median = {name: statistics.median(v) for name, v in results.items()}
        print(
            f"\nappend throughput, {args.events:,} events of ~300 B, {BATCH:,} per transaction,"
            f" median of {args.repeat}"
        )
        print(f"{'system':32} {'events/s':>12} {'vs floor':>9}")
        pairs = {
            "kasmina SQLite": "plain sqlite3 executemany",
            "kasmina PostgreSQL": "plain psycopg executemany",
        }
        for name, value in median.items():
            floor = pairs.get(name)
            ratio = f"{value / median[floor]:.2f}x" if floor else "floor"
            print(f"{name:32} {value:12,.0f} {ratio:>9}")
        print("targets: kasmina SQLite >= 0.60x its floor; kasmina PostgreSQL >= 0.60x its floor")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            kasmina_append(sqlite_url, data)
            profiler.disable()
            print("\nwhere kasmina's SQLite append spends its time (cumulative, top 15):")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
