"""`kasmina report`: self-contained HTML pages about one run or several.

One run's page has swimlanes of every slot's stages with seed ids and gate
verdicts, alpha per seed, GC evictions per epoch, a chart of any recorded
metric and a table of seed outcomes; several runs' page overlays their curves,
sets their outcomes side by side and follows their seed rates over the
series. Inline SVG and CSS, no script, no network. Everything is read through
the ledger's SQL views, so a report needs no torch and works on SQLite and
PostgreSQL alike. Dense curves are thinned and crowded marks merged so a long
run still gives a small page; the page lists whatever it thinned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kasmina.ledger import Ledger
from kasmina.report.data import READ_STEPS, RunData, chart_names, read_run
from kasmina.report.page import render_page
from kasmina.versions import package_version


def render_report(
    ledger: Ledger,
    run_id: str,
    metrics: Sequence[str] | None = None,
    live: float | None = None,
    step: Callable[[], None] = lambda: None,
) -> str:
    """The report page of ``run_id``; `RunNotFound` if the ledger has no such run.

    ``metrics`` chooses the metrics charted (default: every per-epoch metric);
    `ReportError` names any the run never recorded. ``live`` makes the page
    reload itself every so many seconds; ``step`` is called after each of the
    `READ_STEPS` reads, for a progress bar.
    """
    data = read_run(ledger, run_id, metrics, step)
    if metrics is not None:
        chart_names(data.recorded, metrics)
    return render_page(data, package_version("kasmina") or "unknown", live)


def render_runs(
    ledger: Ledger,
    run_ids: Sequence[str],
    metrics: Sequence[str] | None = None,
    live: float | None = None,
    step: Callable[[], None] = lambda: None,
) -> str:
    """One run's page, or for two runs or more the page that compares them
    (`READ_STEPS` calls of ``step`` per run)."""
    if len(run_ids) == 1:
        return render_report(ledger, run_ids[0], metrics, live, step)
    from kasmina.report.compare import check_metrics, default_metrics, render_compare

    runs = [read_run(ledger, run_id, metrics, step) for run_id in run_ids]
    chosen = default_metrics(runs) if metrics is None else check_metrics(runs, metrics)
    return render_compare(runs, chosen, package_version("kasmina") or "unknown", live)


__all__ = ["READ_STEPS", "RunData", "read_run", "render_report", "render_runs"]
