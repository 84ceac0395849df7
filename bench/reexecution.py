"""Re-execution: `kasmina replay RUN --verify` of the demo, against the demo itself, in one run.

    .venv/bin/python bench/reexecution.py [--epochs 30] [--repeat 3] [--no-warmup]

Rows, from one run, interleaved (demo, re-execution, demo, re-execution, ...):
- the baseline: `run_demo(ledger, epochs=E)` into a fresh SQLite ledger in a
  temporary directory of its own, as `kasmina demo` records it (no console);
- the re-execution of the run that demo just recorded:
  `reexecute(ledger, run_id, RecordedProgram())`, which is what
  `kasmina replay RUN --verify` runs for a run started by `kasmina run` (the
  demo is one): the hash chain verified, the program loaded from the
  recorded entry point and its code digested, trained again on CPU into a
  scratch ledger with the recorded decisions, and every event compared.

Each side is the median of ``--repeat`` timings; the ratio is
re-execution / demo. Target: <= 1.5x. Every report must be ok (0
divergences); its figures (events compared, parameter digests equal) are
printed, and the script exits 1 if any repetition diverges. Before the
timed rounds a one-epoch demo and its re-execution run untimed, so that the
first timed demo does not pay for the imports and the first kernels alone.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from kasmina.demo import run_demo  # noqa: E402
from kasmina.ledger import Ledger  # noqa: E402
from kasmina.programs import RecordedProgram  # noqa: E402
from kasmina.replay.reexecution import Reexecution, reexecute, started_of  # noqa: E402

TARGET = 1.5


def one_round(epochs: int) -> tuple[float, float, Reexecution, int | None]:
    """A demo into a fresh ledger, then the re-execution of its run.

    Returns (demo s, re-execution s, the report, the thread count the run
    recorded). Re-execution sets torch's thread count to the recorded one
    and leaves it so; it is put back here, so every demo starts as a fresh
    `kasmina demo` process would.
    """
    threads = torch.get_num_threads()
    with (
        tempfile.TemporaryDirectory(prefix="kasmina-bench-reexecution-") as folder,
        Ledger.open(f"sqlite:///{Path(folder) / 'demo.db'}") as ledger,
    ):
        gc.collect()
        t0 = time.perf_counter()
        result = run_demo(ledger, epochs=epochs)
        demo_s = time.perf_counter() - t0
        started = started_of(ledger, result.run_id)
        # As `kasmina replay --verify` picks it: a run with an entry point is a program's.
        assert started.entry_point is not None
        gc.collect()
        t0 = time.perf_counter()
        try:
            report = reexecute(ledger, result.run_id, RecordedProgram())
        finally:
            reexec_s = time.perf_counter() - t0
            torch.set_num_threads(threads)
    return demo_s, reexec_s, report, started.num_threads


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}–{max(values):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="timings of each side")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed 1-epoch round")
    args = parser.parse_args()

    if not args.no_warmup:
        print("warm-up: a 1-epoch demo and its re-execution (untimed)...", file=sys.stderr)
        one_round(1)
    process_threads = torch.get_num_threads()
    recorded: int | None = None
    demo: list[float] = []
    again: list[float] = []
    reports: list[Reexecution] = []
    for i in range(args.repeat):
        demo_s, reexec_s, report, recorded = one_round(args.epochs)
        demo.append(demo_s)
        again.append(reexec_s)
        reports.append(report)
        print(
            f"  round {i + 1}/{args.repeat}: demo {demo_s:.1f} s, re-execution {reexec_s:.1f} s "
            f"({reexec_s / demo_s:.2f}x); {report.compared} events compared, "
            f"{report.digests} digests equal, {len(report.divergences)} divergences",
            file=sys.stderr,
            flush=True,
        )
        for note in report.notes:
            print(f"    note: {note}", file=sys.stderr)

    base, ours = statistics.median(demo), statistics.median(again)
    ratio = ours / base
    ok = all(r.ok for r in reports)
    compared = sorted({r.compared for r in reports})
    digests = sorted({r.digests for r in reports})
    divergences = max(len(r.divergences) for r in reports)
    print(
        f"\nre-execution of the {args.epochs}-epoch demo on SQLite (CPU; the runs recorded "
        f"{recorded} torch thread(s), the process has {process_threads}), "
        f"median of {args.repeat} interleaved"
    )
    print(f"{'measure':58} {'median s':>9} {'min–max':>11} {'ratio':>7}")
    print(
        f"{f'run_demo(ledger, epochs={args.epochs}), fresh SQLite ledger':58} "
        f"{base:9.1f} {spread(demo):>11} {'ref':>7}"
    )
    print(
        f"{'reexecute(ledger, run_id, RecordedProgram())':58} "
        f"{ours:9.1f} {spread(again):>11} {ratio:6.2f}x"
    )
    print(f"{'  target: re-execution <= 1.5x of the demo':58} {'':9} {'':>11} {TARGET:6.2f}x")
    print(
        f"report: ok {ok} in every round; events compared "
        f"{'/'.join(map(str, compared))}, parameter digests equal "
        f"{'/'.join(map(str, digests))}, divergences {divergences}"
    )
    print(
        f"\ntarget: re-execution <= {TARGET}x of a plain demo: {ratio:.2f}x "
        f"{verdict(ratio <= TARGET)}; 0 divergences: {verdict(ok)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
