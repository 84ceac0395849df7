"""Verify throughput on one long run, against the same run verified by older code, in one run.

    .venv/bin/python bench/verify.py [--events 1000000] [--repeat 3] [--against SRC]

A synthetic run (`kasmina.replay.synthetic`, seed 0, 8 slots) is recorded
into a SQLite file, then `Ledger.verify(run)` is timed in this process with
one job and with the default jobs (one per CPU while each gets 100,000
events; `kasmina.ledger.verify_jobs`), and for format 1 with one job. With
``--against SRC``, the ``src`` folder of another checkout (issue 22 names
124ed2c: ``git worktree add /tmp/old 124ed2c``), the same synthetic run is
recorded by that code into a file of its own and its ``verify`` timed in a
subprocess, interleaved with the rest; the ratios are then to it. Issue
22's target: verify >= 1.5x of 124ed2c's on a 1M-event run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kasmina.ledger import Ledger  # noqa: E402
from kasmina.ledger.verify_jobs import available_cpus  # noqa: E402
from kasmina.replay.synthetic import synthetic_run  # noqa: E402

EVENTS_PER_EPOCH = 9  # about, with 8 slots and seed 0

#: Run in a subprocess on the code of `--against`: record once, or time one verify.
_OTHER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from kasmina.ledger import Ledger
from kasmina.replay.synthetic import synthetic_run
with Ledger.open("sqlite:///" + sys.argv[2]) as ledger:
    if sys.argv[3] == "record":
        synthetic_run(ledger, epochs=int(sys.argv[4]), slots=8, seed=0, gc_period=1000)
    else:
        run_id = ledger.run_ids()[0]
        t0 = time.perf_counter()
        report = ledger.verify(run_id)
        elapsed = time.perf_counter() - t0
        assert report.ok, report.faults[:3]
        print(elapsed, report.events)
"""


def record(ledger: Ledger, form: int, epochs: int) -> str:
    ledger.new_run_format = form  # where a run starts: the format it keeps
    return synthetic_run(ledger, epochs=epochs, slots=8, seed=0, gc_period=1000)


def timed(ledger: Ledger, run_id: str, jobs: int | None) -> tuple[float, int]:
    t0 = time.perf_counter()
    report = ledger.verify(run_id, jobs=jobs)
    elapsed = time.perf_counter() - t0
    assert report.ok, report.faults[:3]
    return elapsed, report.events


def other(src: Path, db: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _OTHER, str(src), str(db), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout's src folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kasmina-bench-verify-"))
    epochs = math.ceil(args.events / EVENTS_PER_EPOCH)
    cpus = available_cpus()
    with Ledger.open(f"sqlite:///{folder / 'verify.db'}") as ledger:
        print(f"recording runs of {epochs:,} epochs x 8 slots...", file=sys.stderr)
        runs = {form: record(ledger, form, epochs) for form in (1, 2)}
        cases: dict[str, Callable[[], tuple[float, int]]] = {
            "format 1, one process": lambda: timed(ledger, runs[1], 1),
            "format 2, one process": lambda: timed(ledger, runs[2], 1),
            f"format 2, default jobs ({cpus} CPUs)": lambda: timed(ledger, runs[2], None),
        }
        if args.against is not None:
            old_db = folder / "against.db"
            other(args.against, old_db, "record", str(epochs))

            def against() -> tuple[float, int]:
                elapsed, events = other(args.against, old_db, "time").split()
                return float(elapsed), int(events)

            cases = {f"{args.against}, as it verified": against, **cases}
        times: dict[str, list[float]] = {name: [] for name in cases}
        counts: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, case in cases.items():
                elapsed, counts[name] = case()
                times[name].append(elapsed)
    rate = {name: counts[name] / statistics.median(t) for name, t in times.items()}
    base = next(iter(cases))
    print(f"\nverify of one run on SQLite, median of {args.repeat}, interleaved\n")
    print("| run | events | events/s | min–max s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in cases:
        spread = f"{min(times[name]):.2f}–{max(times[name]):.2f}"
        ratio = "ref" if name == base else f"**{rate[name] / rate[base]:.2f}x**"
        print(f"| {name} | {counts[name]:,} | {rate[name]:,.0f} | {spread} | {ratio} |")
    print("\ntarget (issue 22): verify >= 1.50x of 124ed2c's on a 1M-event run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
