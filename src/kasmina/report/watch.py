"""`kasmina report --watch`: a page that follows runs while they are written.

The page itself stays a file with no script: while a run is open it carries
a refresh header, so a browser reloads it, and kasmina rewrites it (whole,
by rename) each time the runs' event counts change. Once every run is sealed
the last page is written without the refresh and the watch ends, so what is
left on disk is an ordinary report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kasmina.files import atomic_text
from kasmina.ledger import Ledger
from kasmina.report import render_runs

#: What a live page's refresh header and the watch's look at the ledger wait, by default.
EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class Mark:
    """How far the runs have got: their event counts, and whether all are sealed."""

    events: tuple[int, ...]
    sealed: bool


def mark(ledger: Ledger, run_ids: Sequence[str]) -> Mark:
    counts = []
    sealed = True
    for run_id in run_ids:
        _, rows = ledger.sql(
            "SELECT events, status FROM runs WHERE run_id = :run", params={"run": run_id}
        )
        found = list(rows)
        counts.append(int(str(found[0][0])) if found else 0)
        sealed = sealed and bool(found) and str(found[0][1]) != "open"
    return Mark(tuple(counts), sealed)


def watch(
    ledger: Ledger,
    run_ids: Sequence[str],
    output: Path,
    metrics: Sequence[str] | None,
    *,
    every_s: float = EVERY_S,
    wrote: Callable[[Mark], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Mark:
    """Rewrite ``output`` whenever the runs gain events, until every run is sealed.

    ``wrote`` is told each time the page is written. Returns the last mark; an
    interrupt (Ctrl-C) ends the watch with the page as last written.
    """
    last: Mark | None = None
    while True:
        now = mark(ledger, run_ids)
        if now != last:
            page = render_runs(ledger, run_ids, metrics, None if now.sealed else every_s)
            with atomic_text(output) as dest:
                dest.write(page)
            wrote(now)
            last = now
        if now.sealed:
            return now
        sleep(every_s)


__all__ = ["EVERY_S", "Mark", "mark", "watch"]
