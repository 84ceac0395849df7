"""The HTML page around the charts: header figures, legends, tables, notes and CSS.

The page is one file with no script and a Content-Security-Policy that
forbids every fetch, so it opens the same offline, from a mail attachment or
from a CI artefact, and a stray external reference would show as a blocked
load in the browser console rather than a silent call home.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from kasmina.report.charts import caches, evictions_svg, metric_svg, owners
from kasmina.report.data import OPTIONAL_VIEWS, RUN, RunData, Summary, natural_key
from kasmina.report.lanes import lanes_svg
from kasmina.report.palette import (
    CURVE,
    FAIL,
    OTHER_STAGE,
    PASS,
    STAGE_COLOURS,
    ink,
    series_colour,
    stage_colour,
)
from kasmina.report.svg import esc
from kasmina.stages import SeedStage

#: Seeds listed in the outcomes table; the rest are counted and left to SQL.
OUTCOME_ROWS = 1000
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
:root{--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f3f4f6}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1260px;margin:0 auto;padding:24px 20px 32px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:0 0 6px}
h3{font-size:13px;margin:12px 0 4px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.sub,.hint{color:var(--muted)}.hint{font-size:12px;margin:0 0 8px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
background:#f3f4f6;padding:1px 4px;border-radius:4px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(128px,1fr));gap:10px;
margin:16px 0 4px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.card.wide{grid-column:span 2}
.card b{display:block;font-size:18px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.card span{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.05em}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 18px;
margin:16px 0}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:0 0 10px;font-size:12px;color:#374151}
.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;vertical-align:-2px;
margin-right:5px}
.legend svg{vertical-align:-2px;margin-right:5px}
svg.chart{width:100%;height:auto;display:block;font-size:11px}
.axis text,.tick{fill:var(--muted);font-size:10.5px}.grid{stroke:#eceef1}
.axis-title{font-style:italic}
.band{fill:#f9fafb;stroke:#e5e7eb}
.st{shape-rendering:crispEdges;stroke:#fff;stroke-width:.6}
.st.brief{stroke:#111827;stroke-width:1}
.slot{font-weight:600;font-size:12.5px;fill:var(--ink)}
.seed{font-size:11px;font-weight:600;pointer-events:none;fill:#111827;paint-order:stroke;
stroke:#ffffffc0;stroke-width:3px;stroke-linejoin:round}
.strip{fill:#fcfcfd;stroke:#e5e7eb}.half{stroke:#e5e7eb;stroke-dasharray:3 3}
.curve{fill:none;stroke-width:1.7;stroke-linejoin:round;stroke-linecap:round}
.curve.envelope{stroke:#64748b;stroke-width:1}
.metric{fill:none;stroke-width:1.8;stroke-linejoin:round}
.bar rect{shape-rendering:crispEdges}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{color:var(--muted);font-weight:600;font-size:12px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.chip{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600}
.scroll{overflow-x:auto}
ul.notes{margin:0;padding-left:18px;color:#374151}
footer{color:var(--muted);font-size:12px;text-align:center}
.live{background:#ecfdf5;border:1px solid #a7f3d0;border-radius:8px;padding:6px 12px;margin:0}
.columns{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px}
.run-column h3 i,th i,td i{display:inline-block;width:10px;height:10px;border-radius:3px;
margin-right:5px}
ul.trends{margin:8px 0;padding-left:18px}
table.side th{white-space:normal;overflow-wrap:anywhere;min-width:9em}
"""
#: Added to a fork's page only, so any other page stays as it was.
_FORK_CSS = """
.lineage{margin:6px 0 0;font-size:13px;color:#374151}
.parent-segment .st,.parent-segment .gates{opacity:.4}
.parent-zone{fill:none;stroke:#6b7280;stroke-width:1.2;stroke-dasharray:5 3}
.parent-segment .curve,.parent-segment .metric{stroke-dasharray:4 3;opacity:.6}
.parent-segment .dot{opacity:.6}
.fork-marker line{stroke:#374151;stroke-width:1.5;stroke-dasharray:6 3}
.fork-marker text{fill:#374151;font-size:11px;font-weight:600}
.legend .parent-key{opacity:.4;outline:1.2px dashed #6b7280}
"""


def _stage_css() -> str:
    rules = [
        f".st{{fill:{OTHER_STAGE}}}.pass{{fill:{PASS}}}.fail{{fill:{FAIL}}}"
        f".curve{{stroke:{CURVE}}}.dot{{fill:{CURVE}}}"
    ]
    for stage, colour in STAGE_COLOURS.items():
        rules.append(
            f".st-{stage.name}{{fill:{colour}}}"
            f".chip-{stage.name}{{background:{colour};color:{ink(colour)}}}"
        )
    return "".join(rules)


def render_page(data: RunData, version: str, live: float | None = None) -> str:
    notes: list[str] = []
    s = data.summary
    lanes = lanes_svg(data, notes)
    evictions = (
        evictions_svg(data.evictions, data.span, notes, data.lineage) if data.evictions else ""
    )
    _thinning_notes(data, notes)
    if data.lineage:
        _fork_note(data, notes)
    heading = f"{s.name} · {s.run_id}" if s.name else s.run_id
    body = [
        f"<header><h1>{esc(heading)}</h1><div class=sub>kasmina run report</div>",
        *([_lineage(data)] if data.lineage else []),
        _cards(s),
        "</header>",
        "<section id=swimlanes><h2>Seed lifecycle by slot</h2>",
        "<p class=hint>Each lane is one slot: the band shows its stage over epochs with the "
        "seed's id, markers above it the gate verdicts, the strip below the seed's alpha. "
        "Hover any mark for details.</p>",
        _stage_legend(data),
        lanes,
        "</section>",
    ]
    body += [_metric_charts(data)]
    body += ["<section id=evictions><h2>GC evictions</h2>"]
    if evictions:
        body += [_eviction_legend(data), evictions]
    else:
        body.append("<p class=hint>No cache evicted anything in this run.</p>")
    if data.unplaced_evictions:
        body.append(
            f"<p class=hint>{data.unplaced_evictions:,} eviction record(s) carry no epoch "
            "and are not drawn; they are counted in the header.</p>"
        )
    body += ["</section>", _gate_table(data), _outcome_table(data, notes), _metric_table(data)]
    body += ["<section id=notes><h2>What this page leaves out</h2>", _notes(data, notes)]
    body.append("</section>")
    views = ", ".join(_views_used(data))
    return document(f"kasmina report · {heading}", body, version, views, data.lineage != [], live)


def document(
    title: str,
    body: Sequence[str],
    version: str,
    views: str,
    fork: bool = False,
    live: float | None = None,
) -> str:
    """The page around ``body``. ``live`` (seconds) makes a page that reloads itself
    that often, for `--watch`, and says so at its top."""
    refresh = ""
    banner = ""
    if live is not None:
        seconds = max(1, round(live))
        refresh = f'<meta http-equiv="refresh" content="{seconds}">'
        banner = (
            f"<p class=live>Live: this page reloads every {seconds} s while "
            f"kasmina report --watch runs; written {esc(when(datetime.now(UTC)))}.</p>\n"
        )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">{refresh}'
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>{_CSS}{_stage_css()}{_FORK_CSS if fork else ''}</style></head>\n"
        "<body><main>\n"
        + banner
        + "\n".join(body)
        + f"\n<footer>kasmina {esc(version)} · drawn from the ledger's SQL views "
        f"({esc(views)}) · self-contained, no network</footer>\n"
        "</main></body></html>\n"
    )


def _metric_charts(data: RunData) -> str:
    """A chart per chosen metric, and the names of the metrics left out to choose from."""
    parts = ["<section id=charts><h2>Metrics per epoch</h2>"]
    for index, (name, curves) in enumerate(data.charts.items()):
        inherited = [a for a in data.lineage if a.charts.get(name)]
        parts.append(f"<h3>{esc(name)}</h3>")
        if not curves and not inherited:
            parts.append("<p class=hint>Not recorded in this run.</p>")
            continue
        every = owners({name: curves}, inherited)
        if every != [RUN]:
            parts.append(series_legend(every))
        parts.append(metric_svg(f"chart-{index}", name, curves, data.span, every, data.lineage))
    if not data.charts:
        parts.append("<p class=hint>The run recorded no metric per epoch.</p>")
    left = sorted(n for n in data.recorded if n not in data.charts)
    if left:
        parts.append(
            "<p class=hint>Also recorded: "
            + ", ".join(f"<code>{esc(n)}</code>{_per_slot(data, n)}" for n in left)
            + ". Chart any with <code>kasmina report RUN --metric NAME</code>.</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _per_slot(data: RunData, name: str) -> str:
    return " (per slot)" if data.recorded[name] != RUN else ""


def _views_used(data: RunData) -> list[str]:
    used = ["run_summary", "stage_intervals", "gate_evaluations", "seed_timeline"]
    used += ["gc_evictions", "seed_outcomes"]
    used += [v for v in OPTIONAL_VIEWS if v not in data.missing_views]
    return [*used, "run_lineage"] if data.lineage else used


def _lineage(data: RunData) -> str:
    """A fork's header line: its parent and fork epoch, then each older ancestor."""
    steps = []
    for index, ancestor in enumerate(data.lineage):
        who = "forked from" if index == 0 else f"{esc(data.lineage[index - 1].run_id)} from"
        steps.append(f"{who} <code>{esc(ancestor.run_id)}</code> at epoch {ancestor.epoch:,}")
    return (
        "<p class=lineage>This run is a fork: "
        + ", ".join(steps)
        + ". Its lanes begin with that part of the story, muted in a dashed frame, "
        "up to the dashed fork marker.</p>"
    )


def _fork_note(data: RunData, notes: list[str]) -> None:
    parent = data.lineage[0]
    runs = ", ".join(a.run_id for a in data.lineage)
    notes.append(
        f"Fork: up to epoch {parent.epoch:,} this run's story is its ancestors' ({runs}); "
        "their stages, gate verdicts, alpha and charted metrics are drawn, their evictions, "
        "gate table, seed outcomes and metrics are in their own reports."
    )


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.tzinfo else "")


def duration(s: Summary) -> str:
    if s.started_at is None or s.finished_at is None:
        return "—"
    seconds = int((s.finished_at - s.started_at).total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def _cards(s: Summary) -> str:
    accuracy = "—" if s.final_val_accuracy is None else f"{s.final_val_accuracy:.4g}"
    figures = [
        ("status", s.status),
        ("seed", "—" if s.seed is None else str(s.seed)),
        ("epochs", f"{s.epochs:,}"),
        ("events", f"{s.events:,}"),
        ("seeds", f"{s.seeds:,}"),
        ("fossilized", f"{s.fossilized:,}"),
        ("pruned", f"{s.pruned:,}"),
        ("evicted", f"{s.evicted:,}"),
        ("final val acc.", accuracy),
        ("started", when(s.started_at)),
        ("duration", duration(s)),
    ]
    cards = "".join(
        f"<div class='card{' wide' if k == 'started' else ''}'><span>{esc(k)}</span>"
        f"<b title='{esc(v)}'>{esc(v)}</b></div>"
        for k, v in figures
    )
    return f"<div class=cards>{cards}</div>"


def _stage_legend(data: RunData) -> str:
    seen = {i.stage for i in data.intervals} | {i.stage for i in data.carried}
    seen |= {i.stage for a in data.lineage for i in a.intervals + a.carried}
    items = [
        f"<span><i style='background:{c}'></i>{s.name}</span>"
        for s, c in STAGE_COLOURS.items()
        if s is not SeedStage.UNKNOWN or s.name in seen
    ]
    items += [
        f"<span><i style='background:{stage_colour(name)}'></i>{esc(name)}</span>"
        for name in sorted(seen - set(SeedStage.__members__))
    ]
    items += [
        "<span><svg width=12 height=12><circle class=pass cx=6 cy=6 r=5 /></svg>gate passed</span>",
        "<span><svg width=12 height=12><path class=fail d='M1 2h10l-5 9z'/></svg>"
        "gate failed</span>",
        "<span><svg width=18 height=12><path d='M1 10L8 4L17 2' fill=none stroke-width=2 "
        f"stroke='{CURVE}'/></svg>alpha (0–1)</span>",
    ]
    if data.lineage:
        items += [
            f"<span><i class=parent-key style='background:{CURVE}'></i>"
            "before the fork (its ancestors' runs)</span>",
            "<span><svg width=12 height=12><line x1=6 x2=6 y1=0 y2=12 stroke='#374151' "
            "stroke-width=1.5 stroke-dasharray='3 2'/></svg>fork</span>",
        ]
    return f"<div class=legend>{''.join(items)}</div>"


def series_legend(
    names: Sequence[str],
    totals: Sequence[int] | None = None,
    colours: Sequence[str] | None = None,
) -> str:
    items = []
    for index, name in enumerate(names):
        extra = f" ({totals[index]:,})" if totals is not None else ""
        colour = series_colour(index) if colours is None else colours[index]
        items.append(f"<span><i style='background:{colour}'></i>{esc(name)}{extra}</span>")
    return f"<div class=legend>{''.join(items)}</div>"


def stage_chip(stage: str) -> str:
    return f"<span class='chip chip-{esc(stage)}'>{esc(stage)}</span>"


def _eviction_legend(data: RunData) -> str:
    names = caches(data.evictions)
    totals: dict[str, int] = defaultdict(int)
    for e in data.evictions:
        totals[e.cache] += e.evicted
    return series_legend(names, [totals[n] for n in names])


def _empty(name: str, heading: str, text: str) -> str:
    return f"<section id={name}><h2>{heading}</h2><p class=hint>{text}</p></section>"


def _gate_table(data: RunData) -> str:
    if not data.verdicts:
        return _empty("gates", "Gate verdicts", "No gate was evaluated.")
    stats: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    blockers: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for v in data.verdicts:
        key = (v.gate, v.target_stage or "")
        stats[key][0 if v.passed else 1] += 1
        blockers[key].update(v.checks_failed)
    rows = []
    for key in sorted(stats, key=lambda k: natural_key(k[0] + " " + k[1])):
        passed, failed = stats[key]
        top = ", ".join(f"{c} ({n:,})" for c, n in blockers[key].most_common(3))
        rows.append(
            f"<tr><td>{esc(key[0])}</td><td>{esc(key[1])}</td><td class=n>{passed:,}</td>"
            f"<td class=n>{failed:,}</td><td>{esc(top) or '—'}</td></tr>"
        )
    return (
        "<section id=gates><h2>Gate verdicts</h2><div class=scroll><table><thead><tr>"
        "<th>gate</th><th>target stage</th><th class=n>passed</th><th class=n>failed</th>"
        "<th>checks that failed most</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div></section>"
    )


def number(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _metric_value(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def _metric_table(data: RunData) -> str:
    """The run's free-named metrics (`EpochCompleted.metrics`, samples' `metrics`)."""
    if not data.metrics:
        return _empty("metrics", "Your metrics", "The run recorded no free-named metrics.")
    rows = [
        f"<tr><td>{esc(m.slot_id or 'run')}</td><td>{esc(m.name)}</td>"
        f"<td class=n>{m.count:,}</td><td class=n>{_metric_value(m.low)}</td>"
        f"<td class=n>{_metric_value(m.high)}</td><td class=n>{_metric_value(m.last)}</td>"
        f"<td class=n>{'' if m.last_epoch is None else m.last_epoch}</td></tr>"
        for m in data.metrics
    ]
    return (
        "<section id=metrics><h2>Your metrics</h2><div class=scroll><table><thead><tr>"
        "<th>of</th><th>name</th><th class=n>values</th><th class=n>lowest</th>"
        "<th class=n>highest</th><th class=n>last</th><th class=n>last epoch</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
        "<p class=hint>From the <code>metrics</code> view; NaN values count but are neither "
        "lowest nor highest.</p></section>"
    )


def _outcome_table(data: RunData, notes: list[str]) -> str:
    outcomes = data.outcomes
    if not outcomes:
        text = "No seed was germinated."
        if data.lineage:
            text = (
                "No seed was germinated in this fork; the seeds it carried on from "
                f"<code>{esc(data.lineage[0].run_id)}</code> are in that run's outcomes."
            )
        return _empty("outcomes", "Seed outcomes", text)
    ending_heads = (
        "<th>reason</th><th>initiator</th><th class=n>improvement</th>"
        "<th class=n>counterfactual</th><th class=n>params added</th>"
        if data.has_endings
        else ""
    )
    rows = []
    for o in outcomes[:OUTCOME_ROWS]:
        lived = None
        if o.germinated_epoch is not None:
            lived = (o.ended_epoch if o.ended_epoch is not None else data.span) - o.germinated_epoch
        cells = [
            esc(o.seed_id),
            esc(o.slot_id),
            esc(o.blueprint_id or "—"),
            stage_chip(o.final_stage),
        ]
        row = "".join(f"<td>{c}</td>" for c in cells) + "".join(
            f"<td class=n>{number(v)}</td>" for v in (o.germinated_epoch, o.ended_epoch, lived)
        )
        if data.has_endings:
            e = o.ending
            row += (
                f"<td>{esc(e.reason or '—') if e else '—'}</td>"
                f"<td>{esc(e.initiator or '—') if e else '—'}</td>"
                + "".join(
                    f"<td class=n>{number(v)}</td>"
                    for v in (
                        (e.improvement, e.counterfactual, e.params_added) if e else (None,) * 3
                    )
                )
            )
        rows.append(f"<tr>{row}</tr>")
    if len(outcomes) > OUTCOME_ROWS:
        notes.append(
            f"Seed outcomes: the table lists the first {OUTCOME_ROWS:,} of {len(outcomes):,} "
            "seeds by germination; the lanes draw them all."
        )
    return (
        "<section id=outcomes><h2>Seed outcomes</h2><div class=scroll><table><thead><tr>"
        "<th>seed</th><th>slot</th><th>blueprint</th><th>stage at the end</th>"
        "<th class=n>germinated</th><th class=n>ended</th><th class=n>epochs</th>"
        f"{ending_heads}</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div></section>"
    )


def _thinning_notes(data: RunData, notes: list[str]) -> None:
    charted = [c for curves in data.charts.values() for c in curves]
    for label, curves in (("Alpha curves", data.alpha), ("Metric curves", charted)):
        thinned = [c for c in curves if len(c.points) < c.raw]
        if thinned:
            raw = sum(c.raw for c in thinned)
            kept = sum(len(c.points) for c in thinned)
            notes.append(
                f"{label}: {len(thinned):,} of {len(curves):,} thinned from {raw:,} samples to "
                f"{kept:,} points (the lowest and highest point of every "
                f"{data.bucket_epochs:,}-epoch bucket, and each curve's first and last)."
            )


def _notes(data: RunData, notes: list[str]) -> str:
    items = [esc(n) for n in notes]
    if data.missing_views:
        items.append(
            "This database predates the views "
            + ", ".join(f"<code>{esc(v)}</code>" for v in data.missing_views)
            + "; run <code>kasmina db upgrade</code> for prune reasons and metric curves."
        )
    run = esc(data.summary.run_id.replace("'", "''"))
    if not items:
        items.append("Nothing: every sample and every event of the run is drawn.")
    items.append(
        "Every figure comes from the ledger's SQL views; for instance "
        f"<code>kasmina sql \"SELECT * FROM seed_outcomes WHERE run_id = '{run}'\"</code>."
    )
    return "<ul class=notes>" + "".join(f"<li>{n}</li>" for n in items) + "</ul>"
