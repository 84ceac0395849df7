"""Verify throughput: a format-2 run against the same run hashed in format 1, in one run.

    .venv/bin/python bench/verify.py [--events 200000] [--slots 8] [--repeat 3] [--db PATH]

Two synthetic runs (`kasmina.replay.synthetic`, the same seed, so the same
events) are recorded into one SQLite file: one in format 1, as kasmina wrote
every run before ledger format 2 (`Ledger.new_run_format`), and one in format 2. Then
`Ledger.verify(run)` of each is timed, interleaved, ``--repeat`` times; the
table gives events/s and format 2 / format 1. Issue 22's target for verify is
>= 1.5x of format 1 on a 1M-event run (``--events 1000000``), which needed
the lean rows of its item 1: since revision 0014 every run, in either
format, is stored in them (``ledger_events`` under the ``events`` view), so
both runs here are read from the same tables and differ only in format.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kasmina.ledger import Ledger  # noqa: E402
from kasmina.replay.synthetic import synthetic_run  # noqa: E402

EVENTS_PER_EPOCH = 10  # about, with 8 slots and seed 0 (bench/replay.py calibrates it)


def record(ledger: Ledger, form: int, epochs: int, slots: int) -> str:
    ledger.new_run_format = form  # where a run starts: the format it keeps
    return synthetic_run(ledger, epochs=epochs, slots=slots, seed=0, gc_period=1000)


def timed_verify(ledger: Ledger, run_id: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    report = ledger.verify(run_id)
    elapsed = time.perf_counter() - t0
    assert report.ok, report.faults[:3]
    return elapsed, report.events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, help="where to keep the runs (default: a temp dir)")
    args = parser.parse_args()
    path = args.db or Path(tempfile.mkdtemp(prefix="kasmina-bench-verify-")) / "verify.db"
    epochs = math.ceil(args.events / EVENTS_PER_EPOCH)
    with Ledger.open(f"sqlite:///{path}") as ledger:
        print(f"recording two runs of {epochs:,} epochs x {args.slots} slots...", file=sys.stderr)
        runs = {form: record(ledger, form, epochs, args.slots) for form in (1, 2)}
        times: dict[int, list[float]] = {1: [], 2: []}
        counts: dict[int, int] = {}
        for _ in range(args.repeat):
            for form, run_id in runs.items():
                elapsed, counts[form] = timed_verify(ledger, run_id)
                times[form].append(elapsed)
    assert counts[1] == counts[2], counts
    rate = {form: counts[form] / statistics.median(t) for form, t in times.items()}
    print(f"\nverify of one run of {counts[1]:,} events on SQLite, median of {args.repeat}\n")
    print("| run | events/s | ÷ format 1 |")
    print("|---|---:|---:|")
    for form in (1, 2):
        print(f"| format {form} | {rate[form]:,.0f} | {rate[form] / rate[1]:.2f}x |")
    print("\ntarget (issue 22, with lean rows): format 2 >= 1.50x of format 1 on 1M events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
