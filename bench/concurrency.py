"""Many processes appending to one run: what the per-run ordering lock costs, measured in one run.

On PostgreSQL every append to a run takes a transaction-scoped advisory lock
keyed by the run (`PostgresStore.write`), so a run's positions are handed out
in commit order and a reader tailing it by position never skips an event.
This measures aggregate events/s of 1, 2, 4 and 8 writer processes appending
to ONE run

- on PostgreSQL as shipped, with the lock;
- on PostgreSQL without it (`UnorderedPostgresStore` below, bench only);
- on SQLite (1, 2, 4 writers; one writer at a time by design),

each with batches of 100 events and with single-event appends. Every writer
owns its streams, appends ~300-byte telemetry (the load test's events) and is
a process kept alive across measurements (connected before the clock starts;
events are built inside the timed loop, as a real writer builds them).
Systems are interleaved within each repetition, each taking its turn to go
first; figures are medians.

Then, per lock setting, a reader tails the run while writers append
(``position > last seen``, polling without pause) and counts the events it
missed: committed with a position below one it had already seen. That is the
anomaly the lock prevents.

PostgreSQL runs with default durability (fsync on, synchronous_commit on), as
in bench/append.py; ``--no-fsync`` measures the test suite's setting instead.

    .venv/bin/python bench/concurrency.py [--events 20000] [--single-events 2000]
        [--repeat 5] [--pg-url URL] [--no-postgres] [--no-fsync]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "concurrency"))

import psycopg  # noqa: E402
from load_writer import telemetry  # noqa: E402

from kasmina.ledger import Ledger, migrate  # noqa: E402
from kasmina.ledger.postgres import PostgresStore  # noqa: E402
from kasmina.ledger.store import Cursor  # noqa: E402

BATCH = 100
MAX_WRITERS = 8
TAIL = "SELECT position FROM events WHERE run_id = ? AND position > ? ORDER BY position"


class UnorderedPostgresStore(PostgresStore):
    """PostgresStore without the per-run advisory lock: for this benchmark only.

    Appends to one run then overlap, so positions (from a sequence, taken at
    INSERT) no longer follow commit order.
    """

    @contextmanager
    def write(self, run_id: str) -> Iterator[Cursor]:
        with self.lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield cast(Cursor, cur)


@dataclass(frozen=True)
class System:
    label: str
    kind: str  # "locked", "unlocked" or "sqlite"
    url: str
    conninfo: str = ""
    writer_counts: tuple[int, ...] = (1, 2, 4, 8)


def open_ledger(system: System) -> Ledger:
    if system.kind == "unlocked":
        return Ledger(UnorderedPostgresStore(system.url, system.conninfo))
    return Ledger.open(system.url)


# -- writer processes --------------------------------------------------------


def writer_loop(number: int, tasks: Queue[Any], done: Queue[Any], go: Event) -> None:
    """A writer process: per task, connect (once per system), report ready, wait, append."""
    ledgers: dict[System, Ledger] = {}
    while (task := tasks.get()) is not None:
        system, run_id, events, batch = task
        if system not in ledgers:
            ledgers[system] = open_ledger(system)
        ledger = ledgers[system]
        done.put(("ready", number))
        go.wait()
        for start in range(0, events, batch):
            stop = min(start + batch, events)
            ledger.append([telemetry(run_id, number, n) for n in range(start, stop)])
        done.put(("done", number))
    for ledger in ledgers.values():
        ledger.close()


class Writers:
    """MAX_WRITERS spawned processes, reused for every measurement."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.go = ctx.Event()
        self.done: Queue[Any] = ctx.Queue()
        self.tasks: list[Queue[Any]] = [ctx.Queue() for _ in range(MAX_WRITERS)]
        self.procs = [
            ctx.Process(target=writer_loop, args=(n, self.tasks[n], self.done, self.go))
            for n in range(MAX_WRITERS)
        ]
        for p in self.procs:
            p.start()

    def _wait(self, kind: str, count: int) -> None:
        for _ in range(count):
            got = self.done.get(timeout=900)
            assert got[0] == kind, got

    def run(
        self, system: System, writers: int, events: int, batch: int, *, tail: bool = False
    ) -> tuple[float, int, int]:
        """Append `events` in all with `writers` processes; (events/s, missed by tail, polls)."""
        with open_ledger(system) as ledger:
            run_id = ledger.start_run("bench-concurrency", seed=0).run_id
            self.go.clear()
            for n in range(writers):
                self.tasks[n].put((system, run_id, events // writers, batch))
            self._wait("ready", writers)
            seen: list[int] = []
            polls = 0
            started = time.perf_counter()
            self.go.set()
            if tail:
                finished = 0
                while finished < writers:
                    after = seen[-1] if seen else 0
                    seen.extend(int(r[0]) for r in ledger.store.fetch(TAIL, (run_id, after)))
                    polls += 1
                    while not self.done.empty():
                        assert self.done.get()[0] == "done"
                        finished += 1
            else:
                self._wait("done", writers)
            elapsed = time.perf_counter() - started
            rows = ledger.store.fetch(TAIL, (run_id, 0))
            stored = [int(r[0]) for r in rows]
            assert len(stored) == events // writers * writers + 1, "lost or duplicated events"
            missed = 0
            if tail:
                after = seen[-1] if seen else 0
                seen.extend(int(r[0]) for r in ledger.store.fetch(TAIL, (run_id, after)))
                missed = len(set(stored) - set(seen))
        return events / elapsed, missed, polls

    def close(self) -> None:
        for queue in self.tasks:
            queue.put(None)
        for p in self.procs:
            p.join(60)


# -- the benchmark -----------------------------------------------------------


def postgres_systems(args: argparse.Namespace) -> tuple[list[System], Any]:
    server = None
    if args.pg_url:
        url = args.pg_url
        from sqlalchemy.engine import make_url

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
    else:
        from pgserver import start_server

        server = start_server(durable=not args.no_fsync, port=5442)
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_concurrency")
        url, conninfo = server.url("bench_concurrency"), server.conninfo("bench_concurrency")
    migrate.upgrade(url)
    return [
        System("PostgreSQL, per-run lock", "locked", url, conninfo),
        System("PostgreSQL, no lock", "unlocked", url, conninfo),
    ], server


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="per batched measurement")
    parser.add_argument("--single-events", type=int, default=2_000, help="per single-event one")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg-url", help="an existing PostgreSQL database to write into")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-fsync", action="store_true", help="our own server with fsync off")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kasmina-bench-"))
    sqlite_url = f"sqlite:///{work / 'concurrency.db'}"
    migrate.upgrade(sqlite_url)
    systems: list[System] = []
    server = None
    if not args.no_postgres:
        systems, server = postgres_systems(args)
    systems.append(System("SQLite", "sqlite", sqlite_url, writer_counts=(1, 2, 4)))
    modes = {"batches of 100": (BATCH, args.events), "single events": (1, args.single_events)}

    writers = Writers()
    try:
        results: dict[tuple[str, str, int], list[float]] = {}
        for rep in range(args.repeat):  # interleaved, so drift hits every system alike
            order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
            for mode, (batch, events) in modes.items():
                for count in (1, 2, 4, 8):
                    for system in order:  # each system first in turn
                        if count in system.writer_counts:
                            rate, _, _ = writers.run(system, count, events, batch)
                            results.setdefault((system.label, mode, count), []).append(rate)
        median = {key: statistics.median(v) for key, v in results.items()}
        durability = "fsync off" if args.no_fsync else "default durability"
        print(
            f"\nappends to ONE run from N processes, ~300 B telemetry, median of {args.repeat};"
            f" {args.events:,} events batched / {args.single_events:,} single, PostgreSQL"
            f" {durability if not args.pg_url else 'at --pg-url'}"
        )
        header = f"{'system':26} {'writers':>7}"
        for mode in modes:
            header += f" | {mode + ' ev/s':>22} {'vs 1':>5} {'vs no lock':>10}"
        print(header)
        for system in systems:
            for count in system.writer_counts:
                line = f"{system.label:26} {count:7d}"
                for mode in modes:
                    value = median[(system.label, mode, count)]
                    one = median[(system.label, mode, 1)]
                    vs = ""
                    if system.kind == "locked":
                        vs = f"{value / median[('PostgreSQL, no lock', mode, count)]:.2f}x"
                    line += f" | {value:22,.0f} {value / one:4.2f}x {vs:>10}"
                print(line)

        print(
            "\na reader tailing the run by position (position > last seen) while N processes"
            " append single events:"
        )
        print(f"{'system':26} {'writers':>7} {'events':>7} {'missed by tail':>15} {'polls':>7}")
        for system in systems:
            for count in system.writer_counts[1:]:
                _, missed, polls = writers.run(system, count, args.single_events, 1, tail=True)
                print(
                    f"{system.label:26} {count:7d} {args.single_events:7,d} {missed:15,d}"
                    f" {polls:7,d}"
                )
    finally:
        writers.close()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
