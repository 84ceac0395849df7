"""Append throughput: kasmina against hand-written floors, measured in one run.

Every system writes the same ~300-byte telemetry rows in 1,000-row
transactions into the same `events` table (created by kasmina's migration, so
shape and indexes are identical), with the same WAL / synchronous=NORMAL
settings on SQLite and a default-durability PostgreSQL server. The floors do
what a careful hand-written logger does: a uuid and a stdlib JSON encoding per
row, one `executemany` per transaction. kasmina also validates every payload
against its model, computes the canonical text and the hash chain, checks for
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

BATCH = 1000
INSERT = (
    "INSERT INTO events (event_id, run_id, stream_id, version, event_type, schema_version, "
    "epoch, seed_id, payload, recorded_at, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, {payload}, ?, ?, ?)"
)


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


def floor_rows(
    run_id: str, start: int, batch: list[tuple[int, dict[str, object]]]
) -> list[tuple[object, ...]]:
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    return [
        (
            str(uuid.uuid4()),
            run_id,
            f"slot/r0c{i % 3}",
            start + k + 1,
            "SeedTelemetrySampled",
            1,
            i // 100,
            f"s{i % 3}",
            json.dumps(p),
            now,
            "0" * 64,
            "f" * 64,
        )
        for k, (i, p) in enumerate(batch)
    ]


def plain_sqlite(path: str, data: list[tuple[int, dict[str, object]]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = INSERT.format(payload="?")
    run_id = uuid.uuid4().hex
    t0 = time.perf_counter()
    for start in range(0, len(data), BATCH):
        rows = floor_rows(run_id, start, data[start : start + BATCH])
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(data) / elapsed


def plain_psycopg(conninfo: str, data: list[tuple[int, dict[str, object]]]) -> float:
    sql = INSERT.format(payload="CAST(? AS jsonb)").replace("?", "%s")
    run_id = uuid.uuid4().hex
    with psycopg.connect(conninfo, autocommit=True) as conn:
        t0 = time.perf_counter()
        for start in range(0, len(data), BATCH):
            rows = floor_rows(run_id, start, data[start : start + BATCH])
            rows = [(*r[:9], datetime.fromisoformat(str(r[9])), *r[10:]) for r in rows]
            with conn.transaction(), conn.cursor() as cur:
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
