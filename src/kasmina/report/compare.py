"""`kasmina report RUN1 RUN2 …`: several runs on one page.

A researcher compares runs to learn what a change did: the same metric's
curves overlaid, one colour per run; the runs' outcomes side by side; and,
over a series of runs (a sweep, or a policy's episodes), whether seeds are
germinated, pruned and fossilized more or less often as the series goes on
(DOMAIN §9, question 11). The runs are read one at a time with `read_run`, so
every figure is the one that run's own report shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kasmina.report.charts import Line, lines_svg
from kasmina.report.data import RUN, RUN_COLUMNS, RunData, chart_names
from kasmina.report.page import (
    document,
    duration,
    number,
    series_legend,
    stage_chip,
    when,
)
from kasmina.report.palette import series_colour
from kasmina.report.svg import esc
from kasmina.report.thinning import Curve

#: Seeds listed per run in the side-by-side outcomes; the rest are counted.
SIDE_ROWS = 200
#: A trend's slope per run smaller than this share of the series' mean reads as flat.
FLAT = 0.01


@dataclass(frozen=True, slots=True)
class Rates:
    """One run's seed rates: germinations per 100 epochs, and the share of its seeds
    pruned and fossilized (None when it germinated none)."""

    run_id: str
    epochs: int
    germinated: int
    pruned: int
    fossilized: int

    @property
    def germination(self) -> float:
        return self.germinated / max(self.epochs, 1) * 100

    @property
    def prune(self) -> float | None:
        return self.pruned / self.germinated if self.germinated else None

    @property
    def fossilization(self) -> float | None:
        return self.fossilized / self.germinated if self.germinated else None


RATE_NAMES = {
    "germination": "germinations per 100 epochs",
    "prune": "pruned per seed germinated",
    "fossilization": "fossilized per seed germinated",
}


def rates(data: RunData) -> Rates:
    s = data.summary
    return Rates(s.run_id, s.epochs, s.seeds, s.pruned, s.fossilized)


def trend(values: Sequence[float | None]) -> tuple[float | None, str]:
    """The least-squares slope per run over the runs that have a value, in words.

    Fewer than three values make no trend; a slope within `FLAT` of the mean's
    size per run is flat.
    """
    points = [(float(i), v) for i, v in enumerate(values) if v is not None]
    if len(points) < 3:
        return None, "too few runs"
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    spread = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / spread
    if abs(slope) <= FLAT * max(abs(my), 1e-12):
        return slope, "flat"
    return slope, "rising" if slope > 0 else "falling"


def default_metrics(runs: Sequence[RunData]) -> list[str]:
    """Every metric some run charts by default, `EpochCompleted`'s first."""
    names = {name for data in runs for name in data.charts}
    return [n for n in RUN_COLUMNS if n in names] + sorted(n for n in names if n not in RUN_COLUMNS)


def check_metrics(runs: Sequence[RunData], chosen: Sequence[str]) -> list[str]:
    """``chosen`` if at least one run recorded each; `ReportError` otherwise."""
    recorded: dict[str, str] = {}
    for data in runs:
        recorded.update(data.recorded)
    return chart_names(recorded, chosen)


def render_compare(
    runs: Sequence[RunData], metrics: Sequence[str], version: str, live: float | None = None
) -> str:
    colours = [series_colour(i) for i in range(len(runs))]
    labels = [_run_label(data) for data in runs]
    body = [
        f"<header><h1>{len(runs)} runs compared</h1><div class=sub>kasmina comparison "
        "report · runs in the order given, one colour each</div></header>",
        _side_by_side(runs, colours, labels),
        _rates_section(runs, colours, labels),
        _overlays(runs, metrics, colours, labels),
        _outcomes(runs, colours, labels),
    ]
    title = "compare · " + ", ".join(d.summary.run_id for d in runs)
    views = "run_summary, seed_outcomes, seed_timeline, epoch_metrics, metrics"
    return document(title, body, version, views, live=live)


def _run_label(data: RunData) -> str:
    s = data.summary
    return f"{s.name} · {s.run_id}" if s.name else s.run_id


def _swatch(colour: str) -> str:
    return f'<i style="background:{colour}"></i>'


def _side_by_side(runs: Sequence[RunData], colours: Sequence[str], labels: Sequence[str]) -> str:
    rows: list[tuple[str, list[str]]] = [
        ("status", [esc(d.summary.status) for d in runs]),
        ("epochs", [f"{d.summary.epochs:,}" for d in runs]),
        ("events", [f"{d.summary.events:,}" for d in runs]),
        ("seeds germinated", [f"{d.summary.seeds:,}" for d in runs]),
        ("fossilized", [f"{d.summary.fossilized:,}" for d in runs]),
        ("pruned", [f"{d.summary.pruned:,}" for d in runs]),
        ("evicted", [f"{d.summary.evicted:,}" for d in runs]),
        ("final val acc.", [number(d.summary.final_val_accuracy, 4) for d in runs]),
        ("started", [when(d.summary.started_at) for d in runs]),
        ("duration", [duration(d.summary) for d in runs]),
    ]
    head = "".join(
        f'<th class=n data-run="{esc(d.summary.run_id)}">{_swatch(c)}{esc(label)}</th>'
        for d, c, label in zip(runs, colours, labels, strict=True)
    )
    body = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td class=n>{v}</td>" for v in values) + "</tr>"
        for name, values in rows
    )
    return (
        "<section id=runs><h2>Runs side by side</h2><div class=scroll><table class=side>"
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def _rates_section(runs: Sequence[RunData], colours: Sequence[str], labels: Sequence[str]) -> str:
    found = [rates(d) for d in runs]
    series: dict[str, list[float | None]] = {
        "germination": [r.germination for r in found],
        "prune": [r.prune for r in found],
        "fossilization": [r.fossilization for r in found],
    }
    rows = "".join(
        f'<tr data-run="{esc(r.run_id)}"><td>{_swatch(c)}{esc(label)}</td>'
        f"<td class=n>{r.epochs:,}</td><td class=n>{r.germinated:,}</td>"
        f"<td class=n>{r.pruned:,}</td><td class=n>{r.fossilized:,}</td>"
        f"<td class=n>{number(r.germination, 3)}</td><td class=n>{number(r.prune, 3)}</td>"
        f"<td class=n>{number(r.fossilization, 3)}</td></tr>"
        for r, c, label in zip(found, colours, labels, strict=True)
    )
    verdicts = []
    for key, values in series.items():
        slope, words = trend(values)
        sign = "" if slope is None else f" ({slope:+.3g} per run)"
        verdicts.append(
            f'<li data-rate="{key}" data-trend="{esc(words)}"><b>{RATE_NAMES[key]}</b>: '
            f"{esc(words)}{esc(sign)}</li>"
        )
    shares = ("prune", "fossilization")
    lines = [
        Line(
            Curve((key, key), [(i, v) for i, v in enumerate(series[key]) if v is not None], 0),
            series_colour(index),
            RATE_NAMES[key],
        )
        for index, key in enumerate(shares)
    ]
    chart = lines_svg("rates-chart", "rate", lines, len(runs), axis="run, in the order given")
    return (
        "<section id=rates><h2>Seed rates over the series</h2>"
        "<p class=hint>Germinations per 100 epochs, and the share of each run's germinated "
        "seeds that were pruned and fossilized; a trend is the least-squares slope per run "
        f"over three runs or more, flat within {FLAT:.0%} of the mean.</p>"
        "<div class=scroll><table><thead><tr><th>run</th><th class=n>epochs</th>"
        "<th class=n>germinated</th><th class=n>pruned</th><th class=n>fossilized</th>"
        "<th class=n>germinations / 100 epochs</th><th class=n>prune rate</th>"
        "<th class=n>fossilization rate</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div><ul class=trends>{''.join(verdicts)}</ul>"
        + series_legend([RATE_NAMES[key] for key in shares])
        + chart
        + "</section>"
    )


def _overlays(
    runs: Sequence[RunData],
    metrics: Sequence[str],
    colours: Sequence[str],
    labels: Sequence[str],
) -> str:
    span = max(d.span for d in runs)
    parts = ["<section id=charts><h2>Metrics per epoch</h2>"]
    parts.append(series_legend(list(labels), colours=colours))
    for index, name in enumerate(metrics):
        lines = [
            Line(
                _owned(curve, data.summary.run_id),
                colour,
                f"{name} · {label}" + ("" if curve.key[0] == RUN else f" · {curve.key[0]}"),
            )
            for data, colour, label in zip(runs, colours, labels, strict=True)
            for curve in data.charts.get(name, [])
        ]
        parts.append(f"<h3>{esc(name)}</h3>")
        if not lines:
            parts.append("<p class=hint>None of these runs recorded it.</p>")
            continue
        parts.append(lines_svg(f"chart-{index}", name, lines, span))
    parts.append("</section>")
    return "".join(parts)


def _owned(curve: Curve, run_id: str) -> Curve:
    """The curve keyed by its run, so the drawn line names the run it belongs to."""
    return Curve((run_id, curve.key[1]), curve.points, curve.raw)


def _outcomes(runs: Sequence[RunData], colours: Sequence[str], labels: Sequence[str]) -> str:
    columns = []
    for data, colour, label in zip(runs, colours, labels, strict=True):
        shown = data.outcomes[:SIDE_ROWS]
        rows = "".join(
            f"<tr><td>{esc(o.seed_id)}</td><td>{esc(o.slot_id)}</td>"
            f"<td>{stage_chip(o.final_stage)}</td>"
            f"<td class=n>{'—' if o.germinated_epoch is None else o.germinated_epoch}</td>"
            f"<td class=n>{'—' if o.ended_epoch is None else o.ended_epoch}</td></tr>"
            for o in shown
        )
        more = len(data.outcomes) - len(shown)
        extra = f"<p class=hint>and {more:,} more seeds.</p>" if more > 0 else ""
        if not data.outcomes:
            extra = "<p class=hint>No seed was germinated.</p>"
        columns.append(
            f'<div class=run-column data-run="{esc(data.summary.run_id)}">'
            f"<h3>{_swatch(colour)}{esc(label)}</h3><table><thead><tr><th>seed</th>"
            "<th>slot</th><th>at the end</th><th class=n>from</th><th class=n>to</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>{extra}</div>"
        )
    return (
        "<section id=outcomes><h2>Seed outcomes side by side</h2>"
        f"<div class=columns>{''.join(columns)}</div></section>"
    )


__all__ = ["Rates", "check_metrics", "default_metrics", "rates", "render_compare", "trend"]
