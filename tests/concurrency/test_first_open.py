"""Several processes opening one new SQLite file at once migrate it exactly once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from multiprocessing.synchronize import Barrier
from pathlib import Path

from kasmina.ledger import Ledger
from kasmina.ledger.migrate import HEAD_REVISION

PROCESSES = 6


def _open_and_start(url: str, barrier: Barrier, number: int) -> None:
    barrier.wait()
    with Ledger.open(url) as ledger:
        ledger.start_run("first-open", seed=number, run_id=f"run-{number}")


def test_ranks_opening_a_new_file_together_all_get_one_schema(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_open_and_start, args=(url, barrier, n)) for n in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (HEAD_REVISION,)
        ]
    finally:
        conn.close()
    with Ledger.open(url) as ledger:
        assert sorted(r.run_id for r in ledger.runs()) == [f"run-{n}" for n in range(PROCESSES)]
        assert ledger.verify().ok
