"""Startup: ``kasmina --help`` and ``kasmina runs`` on a small ledger, against ``python -c pass``.

    .venv/bin/python bench/cli.py [--repeat 15]

Each command runs as a user runs it (the installed ``kasmina`` script, a new
process each time), interleaved with the others, ``--repeat`` times; the
table gives the median wall time and its ratio to starting Python itself.
The small ledger is a 3-epoch synthetic run. Issue 23's target: each of
the two kasmina commands under 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kasmina.ledger import Ledger  # noqa: E402
from kasmina.replay.synthetic import synthetic_run  # noqa: E402

BIN = str(Path(sys.executable).with_name("kasmina"))
TARGET_S = 0.5


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='kasmina-bench-cli-')) / 'small.db'}"
    with Ledger.open(url) as ledger:
        synthetic_run(ledger, epochs=3, slots=3, seed=0)
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "kasmina --help": [BIN, "--help"],
        "kasmina runs": [BIN, "--db", url, "runs"],
    }
    for argv in cases.values():  # warm the file cache
        timed(argv)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, argv in cases.items():
            times[name].append(timed(argv))
    base = statistics.median(times["python -c pass"])
    print(f"\nstartup, median of {args.repeat}, interleaved\n")
    print("| command | median s | min–max s | ÷ python -c pass | target |")
    print("|---|---:|---:|---:|---|")
    for name, spent in times.items():
        median = statistics.median(spent)
        target = (
            ""
            if name.startswith("python")
            else f"< {TARGET_S} s: " + ("met" if median < TARGET_S else "short")
        )
        print(
            f"| `{name}` | {median:.3f} | {min(spent):.3f}–{max(spent):.3f} | "
            f"{median / base:.1f}x | {target} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
