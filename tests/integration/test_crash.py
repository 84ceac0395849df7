"""Invariant 3: a batch is all or nothing, also when the writer is SIGKILLed."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from appender import batch_size

from kasmina.ledger import Ledger

APPENDER = Path(__file__).with_name("appender.py")
KILLS = 20


def test_sigkill_at_random_moments_never_tears_a_batch(db_url: str) -> None:
    rng = random.Random(20261123)
    with Ledger.open(db_url) as ledger:
        run_id = ledger.start_run("crash", seed=1).run_id
    acknowledged: set[int] = set()
    next_batch = 0
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(APPENDER), db_url, run_id, str(next_batch)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(rng.randint(1, 4)):
            line = child.stdout.readline()
            assert line, "appender died before it was killed"
            acknowledged.add(int(line))
        # where the kill lands within the next batch is what varies; the
        # assertions below hold for any landing point
        time.sleep(rng.uniform(0, 0.02))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        acknowledged.update(int(x) for x in rest.split())
        child.wait(30)
        assert child.returncode == -signal.SIGKILL

        with Ledger.open(db_url) as ledger:
            report = ledger.verify(run_id)
            assert report.ok, [str(f) for f in report.faults]
            counts = Counter(e.epoch for e in ledger.read(run_id) if e.epoch is not None)
        assert acknowledged <= set(counts)
        for number, count in counts.items():
            assert count == batch_size(number), f"batch {number} torn: {count} events"
        next_batch = max(counts) + 1
