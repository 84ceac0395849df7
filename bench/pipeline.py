"""The recorder pipeline: cost on the training thread and sustained throughput.

    .venv/bin/python bench/pipeline.py [--events 50000] [--repeat 3]

Rows, from one run:
- `emit` of a fact and of a sample on the training thread (µs/event, the
  writer parked so only the caller's work is timed), against a bare
  `list.append` of the same payload;
- sustained end-to-end throughput into SQLite: payloads built from dicts
  (validated), emitted, and flushed until durable, against kasmina's own
  batched `Ledger.append` of the same events in 1,000-event batches (the
  `bench/append.py` figure, measured here in the same run). Target: >= 0.8x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from append import BATCH, payload  # noqa: E402

from kasmina.events import (  # noqa: E402
    EpochCompleted,
    SeedTelemetrySampled,
    event_from_dict,
    load_payload,
)
from kasmina.ledger import Ledger  # noqa: E402
from kasmina.runtime.pipeline import RecorderPipeline  # noqa: E402
from kasmina.stages import SeedStage  # noqa: E402


def emit_costs(ledger: Ledger, n: int = 100_000) -> tuple[float, float, float]:
    run = ledger.start_run("bench-emit", seed=0)
    fact = EpochCompleted(val_accuracy=1.0)
    sample = SeedTelemetrySampled(slot_id="r0c0", stage=SeedStage.TRAINING, alpha=0.0)
    sink: list[object] = []
    t0 = time.perf_counter()
    for _ in range(n):
        sink.append(fact)
    floor = (time.perf_counter() - t0) / n
    # The writer is parked (no batch fills, no timer fires) so this is the
    # training thread's own cost; its appends are measured by the throughput rows.
    with RecorderPipeline(
        ledger, run.run_id, batch_size=2 * n + 1, flush_interval=3600, sample_capacity=n
    ) as pipe:
        t0 = time.perf_counter()
        for i in range(n):
            pipe.emit(fact, stream_id="run", epoch=i)
        facts = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for i in range(n):
            pipe.emit(sample, stream_id="slot/r0c0", epoch=i)
        samples = (time.perf_counter() - t0) / n
    return facts * 1e6, samples * 1e6, floor * 1e6


def pipeline_throughput(ledger: Ledger, data: list[dict[str, object]]) -> float:
    run = ledger.start_run("bench-pipeline", seed=0)
    t0 = time.perf_counter()
    with RecorderPipeline(ledger, run.run_id, batch_size=BATCH, sample_capacity=len(data)) as pipe:
        for i, p in enumerate(data):
            pipe.emit(
                load_payload("SeedTelemetrySampled", 1, p),  # type: ignore[arg-type]
                stream_id=f"slot/r0c{i % 3}",
                epoch=i // 100,
                seed_id=f"s{i % 3}",
            )
        pipe.flush()
        elapsed = time.perf_counter() - t0
        assert pipe.stats().samples_dropped == 0
    return len(data) / elapsed


def append_throughput(ledger: Ledger, data: list[dict[str, object]]) -> float:
    run = ledger.start_run("bench-append", seed=0)
    t0 = time.perf_counter()
    for start in range(0, len(data), BATCH):
        ledger.append(
            [
                event_from_dict(
                    "SeedTelemetrySampled",
                    p,  # type: ignore[arg-type]
                    run_id=run.run_id,
                    stream_id=f"slot/r0c{i % 3}",
                    epoch=i // 100,
                    seed_id=f"s{i % 3}",
                )
                for i, p in enumerate(data[start : start + BATCH], start)
            ]
        )
    return len(data) / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = [payload(i) for i in range(args.events)]
    folder = Path(tempfile.mkdtemp(prefix="kasmina-bench-pipeline-"))
    with Ledger.open(f"sqlite:///{folder / 'pipeline.db'}") as ledger:
        fact_us, sample_us, floor_us = emit_costs(ledger)
        through: dict[str, list[float]] = {"pipeline": [], "append": []}
        for _ in range(args.repeat):  # interleaved
            through["append"].append(append_throughput(ledger, data))
            through["pipeline"].append(pipeline_throughput(ledger, data))
    pipe, direct = (statistics.median(through[k]) for k in ("pipeline", "append"))
    print(
        f"\nrecorder pipeline on SQLite, {args.events:,} events of ~300 B, median of {args.repeat}"
    )
    print(f"{'measure':46} {'value':>10} {'ratio':>10}")
    print(
        f"{'emit a fact on the training thread (us)':46} {fact_us:10.2f} "
        f"{fact_us / floor_us:9.1f}x of list.append ({floor_us:.3f} us)"
    )
    print(
        f"{'emit a sample on the training thread (us)':46} {sample_us:10.2f} "
        f"{sample_us / floor_us:9.1f}x"
    )
    print(f"{'Ledger.append, 1,000-event batches (ev/s)':46} {direct:10,.0f} {1.0:9.2f}x")
    print(f"{'pipeline end to end, durable (ev/s)':46} {pipe:10,.0f} {pipe / direct:9.2f}x")
    print(
        f"\ntargets: emit < 3 us; pipeline >= 0.80x of batched append "
        f"(measured {pipe / direct:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
