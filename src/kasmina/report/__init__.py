"""`kasmina report`: one self-contained HTML page about one run.

Swimlanes of every slot's stages with seed ids and gate verdicts, alpha per
seed, GC evictions per epoch, accuracy and a table of seed outcomes — inline
SVG and CSS, no script, no network. Everything is read through the ledger's
SQL views, so the report needs no torch and works on SQLite and PostgreSQL
alike. Dense curves are thinned and crowded marks merged so a long run still
gives a small page; the page lists whatever it thinned.
"""

from __future__ import annotations

from kasmina.ledger import Ledger
from kasmina.report.data import RunData, read_run
from kasmina.report.page import render_page
from kasmina.versions import package_version


def render_report(ledger: Ledger, run_id: str) -> str:
    """The report page of ``run_id``; `RunNotFound` if the ledger has no such run."""
    return render_page(read_run(ledger, run_id), package_version("kasmina") or "unknown")


__all__ = ["RunData", "read_run", "render_report"]
