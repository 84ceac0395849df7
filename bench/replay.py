"""Replay: fold throughput and the state at a random epoch, against a plain read, in one run.

    .venv/bin/python bench/replay.py [--events 1000000] [--slots 8] [--repeat 3]
        [--epochs-sampled 7] [--snapshot-every 10000] [--db PATH] [--seed 0]

The run is a synthetic one (`kasmina.replay.synthetic`: real slots, a random
policy using every command, ~16 events per epoch with 8 slots) in SQLite,
generated once; with ``--db`` the file is kept, and a later run that finds a
"synthetic" run of enough events with the same slot count in it reuses it.

Rows, from one run:
- the floor: a plain `sqlite3` read of the run's rows (the 13 columns the
  ledger reads, position order, one query) with `json.loads` of every payload;
- `replay(ledger, run_id, snapshots=False)`, the whole run folded with the
  hash chain of every row checked inline (verified, the default), and with
  ``trust=True`` (no chain check), in events/s and as a ratio of the floor.
  Target: fold >= 0.80x the floor;
- `replay(ledger, run_id, until_epoch=E)` at random epochs E (seeded), from
  the first event (``snapshots=False``) and from the newest snapshot at or
  before E (snapshots taken by `snapshot_run` every ``--snapshot-every``
  events, timed and printed), median and max seconds over the epochs; both
  give the same state (checked). Target: < 0.2 s at any epoch with snapshots.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kasmina.ledger import Ledger  # noqa: E402
from kasmina.ledger import snapshots as snapshot_table  # noqa: E402
from kasmina.replay import replay, snapshot_run  # noqa: E402
from kasmina.replay.synthetic import synthetic_run  # noqa: E402

RUN_NAME = "synthetic"
GC_PERIOD = 1000  # each governor pass is a gc.collect; rare passes keep generation fast
CALIBRATION_EPOCHS = 1000
FLOOR_SQL = (
    "SELECT position, event_id, run_id, stream_id, version, event_type, schema_version, "
    "epoch, seed_id, payload, recorded_at, prev_hash, hash FROM events "
    "WHERE run_id = ? ORDER BY position"
)


def run_slots(path: str, run_id: str) -> int | None:
    """The slot count recorded in a run's RunStarted config."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT payload FROM events WHERE run_id = ? AND event_type = 'RunStarted'",
            (run_id,),
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    slots = (json.loads(row[0]).get("config") or {}).get("slots")
    return slots if isinstance(slots, int) else None


def find_run(ledger: Ledger, path: str, events: int, slots: int) -> tuple[str, int] | None:
    """A completed synthetic run of at least `events` events and `slots` slots, if stored."""
    found = [
        (r.events, r.run_id)
        for r in ledger.runs()
        if r.name == RUN_NAME and r.status == "completed" and r.events >= events
    ]
    for count, run_id in sorted(found):
        if run_slots(path, run_id) == slots:
            return run_id, count
    return None


def events_per_epoch(slots: int, seed: int) -> float:
    """Events per epoch of the same seed's first epochs, in a scratch database."""
    folder = Path(tempfile.mkdtemp(prefix="kasmina-bench-replay-calib-"))
    with Ledger.open(f"sqlite:///{folder / 'calib.db'}") as ledger:
        synthetic_run(
            ledger, epochs=CALIBRATION_EPOCHS, slots=slots, seed=seed, gc_period=GC_PERIOD
        )
        (run,) = ledger.runs()
    return run.events / CALIBRATION_EPOCHS


def generate(ledger: Ledger, events: int, slots: int, seed: int) -> tuple[str, int, float]:
    """Record a synthetic run of about `events` events; returns (run id, events, seconds)."""
    rate = events_per_epoch(slots, seed)
    # later epochs run ~10% leaner than the first ones (fewer germinations), hence the margin
    epochs = math.ceil(events / rate * 1.15)
    print(
        f"generating a synthetic run: {epochs:,} epochs x {slots} slots "
        f"(~{rate:.2f} events/epoch, seed {seed})...",
        file=sys.stderr,
        flush=True,
    )
    step = max(1, epochs // 10)

    def on_epoch(epoch: int) -> None:
        if (epoch + 1) % step == 0:
            print(f"  epoch {epoch + 1:,}/{epochs:,}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    run_id = synthetic_run(
        ledger, epochs=epochs, slots=slots, seed=seed, gc_period=GC_PERIOD, on_epoch=on_epoch
    )
    elapsed = time.perf_counter() - t0
    count = next(r.events for r in ledger.runs() if r.run_id == run_id)
    return run_id, count, elapsed


def floor_read(path: str, run_id: str) -> float:
    """A plain sqlite3 read of the run with json.loads of every payload; events/s."""
    conn = sqlite3.connect(path)
    loads = json.loads
    n = 0
    t0 = time.perf_counter()
    for row in conn.execute(FLOOR_SQL, (run_id,)):
        loads(row[9])
        n += 1
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed


def fold(ledger: Ledger, run_id: str, *, trust: bool) -> float:
    """The whole run folded from its first event; events/s."""
    t0 = time.perf_counter()
    state = replay(ledger, run_id, trust=trust, snapshots=False)
    elapsed = time.perf_counter() - t0
    return state.run.events / elapsed


def state_at(ledger: Ledger, run_id: str, epoch: int, *, snapshots: bool) -> tuple[float, object]:
    t0 = time.perf_counter()
    state = replay(ledger, run_id, until_epoch=epoch, snapshots=snapshots)
    return time.perf_counter() - t0, state


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--epochs-sampled", type=int, default=7, help="random epochs for the state-at-epoch rows"
    )
    parser.add_argument("--snapshot-every", type=int, default=10_000, help="events")
    parser.add_argument("--db", type=Path, help="keep (or reuse) the generated run in this file")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed and the epoch RNG's")
    args = parser.parse_args()

    if args.db is not None:
        path = args.db.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="kasmina-bench-replay-")) / "replay.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        found = find_run(ledger, str(path), args.events, args.slots)
        if found is not None:
            run_id, count = found
            print(f"reusing run {run_id} in {path}: {count:,} events")
        else:
            run_id, count, gen_s = generate(ledger, args.events, args.slots, args.seed)
            print(
                f"generated run {run_id} in {path}: {count:,} events in {gen_s:.1f} s "
                f"({count / gen_s:,.0f} events/s)"
            )
        (max_epoch,) = ledger.store.fetch(
            "SELECT MAX(epoch) FROM events WHERE run_id = ?", (run_id,)
        )[0]

        # Whole-run throughput, interleaved so drift hits every system alike.
        systems = {
            "floor": lambda: floor_read(str(path), run_id),
            "verified": lambda: fold(ledger, run_id, trust=False),
            "trusted": lambda: fold(ledger, run_id, trust=True),
        }
        results: dict[str, list[float]] = {name: [] for name in systems}
        for _ in range(args.repeat):
            for name, fn in systems.items():
                results[name].append(fn())
        rate = {name: statistics.median(v) for name, v in results.items()}

        # Snapshots, taken afresh so their cost is measured.
        dropped = snapshot_table.delete(ledger.store, run_id)
        t0 = time.perf_counter()
        saved = snapshot_run(ledger, run_id, every=args.snapshot_every)
        snap_s = time.perf_counter() - t0
        print(
            f"snapshot_run every {args.snapshot_every:,} events: {saved} snapshots in "
            f"{snap_s:.2f} s ({dropped} old ones dropped first)"
        )

        rng = random.Random(args.seed)
        epochs = sorted(rng.randint(0, int(max_epoch)) for _ in range(args.epochs_sampled))
        cold: dict[int, list[float]] = {e: [] for e in epochs}
        warm: dict[int, list[float]] = {e: [] for e in epochs}
        for _ in range(args.repeat):
            for e in epochs:
                t_cold, s_cold = state_at(ledger, run_id, e, snapshots=False)
                t_warm, s_warm = state_at(ledger, run_id, e, snapshots=True)
                assert s_cold == s_warm, f"state at epoch {e} differs with snapshots"
                cold[e].append(t_cold)
                warm[e].append(t_warm)
    per_cold = [statistics.median(v) for v in cold.values()]
    per_warm = [statistics.median(v) for v in warm.values()]

    floor = rate["floor"]
    print(
        f"\nreplay on SQLite, a synthetic run of {count:,} events ({args.slots} slots, "
        f"{int(max_epoch) + 1:,} epochs), median of {args.repeat}"
    )
    print(f"{'measure':46} {'value':>12} {'ratio':>9}")
    print(f"{'plain sqlite3 read + json.loads (ev/s)':46} {floor:12,.0f} {'floor':>9}")
    for name, label in (
        ("verified", "replay, verified, no snapshots (ev/s)"),
        ("trusted", "replay, trust=True, no snapshots (ev/s)"),
    ):
        print(f"{label:46} {rate[name]:12,.0f} {rate[name] / floor:8.2f}x")
    print(f"state at {len(epochs)} random epochs (s), epochs {', '.join(map(str, epochs))}:")
    for label, times in (("no snapshots", per_cold), ("snapshots", per_warm)):
        for stat, value in (("median", statistics.median(times)), ("max", max(times))):
            ratio = ""
            if label == "snapshots":
                base = statistics.median(per_cold) if stat == "median" else max(per_cold)
                ratio = f"{value / base:8.3f}x"
            print(f"{'  ' + label + ', ' + stat:46} {value:12.4f} {ratio:>9}")
    verified, trusted = rate["verified"] / floor, rate["trusted"] / floor
    worst = max(per_warm)
    print(
        f"\ntargets: fold >= 0.80x of the floor: verified {verified:.2f}x "
        f"{verdict(verified >= 0.8)}, trusted {trusted:.2f}x {verdict(trusted >= 0.8)}; "
        f"state at any epoch with snapshots < 0.2 s: max {worst:.3f} s {verdict(worst < 0.2)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
