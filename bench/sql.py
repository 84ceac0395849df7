"""The SQL cookbook on a million events: each recipe's time, against a full scan, in one run.

    .venv/bin/python bench/sql.py [--events 1000000] [--epochs-per-run 400]
        [--repeat 3] [--db PATH]

The ledger is synthetic (`kasmina.replay.synthetic`: real slots under a
random policy that uses every command, so every view has rows): runs of
``--epochs-per-run`` epochs with 8 slots each, recorded into one SQLite file
until it holds ``--events`` events. With ``--db`` the file is kept and reused
by a later run that finds enough events in it.

Every recipe of docs/sql.md is run through `Ledger.sql` (the read-only path
`kasmina sql` takes) with its rows fetched, once to warm the page cache and
then ``--repeat`` times; the table gives the median and the slowest, and the
ratio to the baseline measured in the same run: one full pass over the log
reading every payload (``SELECT SUM(LENGTH(payload)) FROM events``), what a
query with no usable index would cost at least. Target: < 1 s per recipe.
The last column names the indexes SQLite's plan uses, by table and columns
(since revision 0014 `events` is a view over ``ledger_events``,
``ledger_streams`` and ``ledger_runs``, since 0015 also ``ledger_types``, and
the index names of the old ``events`` table are gone), and says so when the
statement's program reads ``ledger_events`` whole: a loop from the first row of the table, or of one
of its indexes.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kasmina.ledger import Ledger  # noqa: E402
from kasmina.ledger.sqlparams import bind  # noqa: E402
from kasmina.recipes import example, recipes  # noqa: E402
from kasmina.replay.synthetic import synthetic_run  # noqa: E402

BASELINE = "SELECT SUM(LENGTH(payload)) FROM events"
SLOTS = 8
GC_PERIOD = 40
TARGET_S = 1.0


def event_count(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def generate(path: Path, events: int, epochs: int) -> None:
    """Record synthetic runs into `path` until it holds at least `events` events."""
    have = event_count(path)
    t0 = time.perf_counter()
    with Ledger.open(f"sqlite:///{path}") as ledger:
        seed = len(ledger.runs())
        while have < events:
            synthetic_run(ledger, epochs=epochs, slots=SLOTS, seed=seed, gc_period=GC_PERIOD)
            seed += 1
            have = event_count(path)
            if seed % 25 == 0:
                print(f"  {have:,}/{events:,} events, {seed} runs", file=sys.stderr, flush=True)
    print(f"generated in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def timed(
    ledger: Ledger, query: str, repeat: int, params: dict[str, str] | None = None
) -> tuple[int, list[float]]:
    def once() -> tuple[int, float]:
        t0 = time.perf_counter()
        _, rows = ledger.sql(query, params=params)
        n = sum(1 for _ in rows)
        return n, time.perf_counter() - t0

    count, _ = once()
    return count, [once()[1] for _ in range(repeat)]


def plan(path: Path, query: str) -> str:
    """The indexes SQLite's plan uses, as table(columns), and whether the statement reads
    ``ledger_events`` whole.

    The plan shows tables by the aliases of the views that read them, so a full
    scan is found in the program instead (``EXPLAIN``): a ``Rewind`` of a cursor
    opened on the b-tree of ``ledger_events`` or of one of its indexes.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}")]
        program = conn.execute(f"EXPLAIN {query}").fetchall()
        objects = conn.execute(
            "SELECT name, tbl_name, type, rootpage FROM sqlite_master WHERE rootpage > 0"
        ).fetchall()
        columns = {
            name: [str(c[2]) for c in conn.execute(f"PRAGMA index_info('{name}')")]
            for name, _, kind, _ in objects
            if kind == "index"
        }
    finally:
        conn.close()
    described = {
        name: f"{table}({', '.join(columns[name])})"
        for name, table in ((name, table) for name, table, kind, _ in objects if kind == "index")
    }
    used = sorted(
        {
            described.get(m.group(1), m.group(1))
            for step in steps
            if (m := re.search(r"USING (?:COVERING )?INDEX (\w+)", step))
        }
    )
    events_roots = {int(root) for _, table, _, root in objects if table == "ledger_events"}
    opened: dict[int, int] = {}  # cursor -> root page, as the program opens them
    full = False
    for _, opcode, p1, p2, p3, *_ in program:
        if opcode == "OpenRead" and p3 == 0:
            opened[int(p1)] = int(p2)
        elif opcode == "Rewind" and opened.get(int(p1)) in events_roots:
            full = True
    return (" ".join(used) + (" + full scan of ledger_events" if full else "")).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--epochs-per-run", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()
    path = args.db or Path(tempfile.mkdtemp(prefix="kasmina-bench-sql-")) / "ledger.db"
    if event_count(path) < args.events:
        print(f"recording ~{args.events:,} events into {path}...", file=sys.stderr, flush=True)
        generate(path, args.events, args.epochs_per_run)

    with Ledger.open(f"sqlite:///{path}") as ledger:
        runs = len(ledger.runs())
        _, base = timed(ledger, BASELINE, args.repeat)
        floor = statistics.median(base)
        results = []
        for name, query in recipes().items():
            given = example(name)
            count, times = timed(ledger, query, args.repeat, given)
            bound = bind(query, given, "sqlite")
            results.append((name, count, statistics.median(times), max(times), plan(path, bound)))

    print(
        f"{event_count(path):,} events in {runs} runs, {path.stat().st_size / 2**20:.0f} MiB; "
        f"median of {args.repeat} warm runs; baseline: one pass reading every payload, "
        f"{floor:.3f} s"
    )
    print()
    print("| recipe | rows | median s | max s | x full pass | plan |")
    print("|---|---:|---:|---:|---:|---|")
    for name, count, med, worst, how in results:
        print(f"| {name} | {count:,} | {med:.3f} | {worst:.3f} | {med / floor:.2f} | {how} |")
    slowest = max(results, key=lambda r: r[2])
    verdict = "meets" if slowest[3] < TARGET_S else "MISSES"
    print()
    print(
        f"slowest: {slowest[0]} at {slowest[2]:.3f} s median; {verdict} the {TARGET_S:.0f} s target"
    )


if __name__ == "__main__":
    main()
