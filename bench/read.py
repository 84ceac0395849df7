"""Reading a run back, against the same run read by older code, in one run.

    .venv/bin/python bench/read.py [--repeat 3] [--reads 7] [--against SRC]

The workload of bench/compare.py (about 20,000 events, 100 slots) is
appended 1,000 events at a time into a SQLite file, and in each repetition
a fresh process opens it and times, best of `--reads`, two reads of the
whole run: ``list(ledger.read(run))`` (every payload decoded; its model is
validated when first read) and the same with every ``payload`` read besides.
With ``--against SRC``, the ``src`` folder of another checkout (``git
worktree add /tmp/old COMMIT``), the same records are appended by that code
into a file of its own and read by it in processes alternating with this
code's; the ratios are then to it. Separate processes, so neither code's
objects are in the other's heap, alternating, so that the machine's drift
falls on both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Run in a subprocess on the code of `src`: record the workload once, or time the reads.
_CODE = """
import gc, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from kasmina.ledger import Ledger
db, what = sys.argv[3], sys.argv[4]
with Ledger.open("sqlite:///" + db) as ledger:
    if what == "record":
        from kasmina.events import event_from_dict
        from workload import build
        run_id = ledger.start_run("bench", seed=0, config={}).run_id
        events = [
            event_from_dict(r.event_type, r.payload, run_id=run_id, stream_id=r.stream_id,
                            epoch=r.epoch, seed_id=r.seed_id)
            for r in build().records
        ]
        for i in range(0, len(events), 1000):
            ledger.append(events[i : i + 1000])
    else:
        run_id = ledger.run_ids()[0]
        cases = (
            lambda: len(list(ledger.read(run_id))),
            lambda: len([event.payload for event in ledger.read(run_id)]),
        )
        for case in cases:
            best = float("inf")
            for _ in range(int(what)):
                gc.collect()
                t0 = time.perf_counter()
                events = case()
                best = min(best, time.perf_counter() - t0)
            print(events / best)
"""

CASES = ("list(ledger.read(run))", "every payload read besides")


def run(src: Path, db: Path, what: str) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", _CODE, str(src), str(ROOT / "bench"), str(db), what],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    return [float(line) for line in done.stdout.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="processes per code")
    parser.add_argument("--reads", type=int, default=7, help="reads per process (the best)")
    parser.add_argument("--against", type=Path, help="another checkout's src folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kasmina-bench-read-"))
    codes = {"this checkout": ROOT / "src"}
    if args.against is not None:
        codes = {str(args.against): args.against, **codes}
    files = {name: folder / f"read-{index}.db" for index, name in enumerate(codes)}
    for name, src in codes.items():
        print(f"recording with {name}...", file=sys.stderr)
        run(src, files[name], "record")
    rates: dict[str, list[list[float]]] = {name: [] for name in codes}
    for _ in range(args.repeat):
        for name, src in codes.items():
            rates[name].append(run(src, files[name], str(args.reads)))
    base = next(iter(codes))
    print(f"\nreading one run back from SQLite, {args.repeat} processes per code, alternating\n")
    print("| code | read | median events/s | min–max | ratio |")
    print("|---|---|---:|---:|---:|")
    for index, case in enumerate(CASES):
        ref = statistics.median(r[index] for r in rates[base])
        for name in codes:
            values = [r[index] for r in rates[name]]
            median = statistics.median(values)
            ratio = "ref" if name == base else f"**{median / ref:.2f}x**"
            spread = f"{min(values):,.0f}–{max(values):,.0f}"
            print(f"| {name} | {case} | {median:,.0f} | {spread} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
