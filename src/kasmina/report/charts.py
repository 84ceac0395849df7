"""The charts under the lanes: GC evictions per epoch, and any metric per epoch.

Eviction bars are summed into buckets of whole epochs when the run has more
epochs than the plot has room for bars; each bar's tooltip names its epochs
and splits its count by cache and reason, so no eviction goes uncounted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kasmina.report.data import CURVE_BUCKETS, RUN, Ancestor, Eviction, natural_key
from kasmina.report.palette import series_colour
from kasmina.report.svg import (
    PLOT,
    EpochScale,
    epoch_axis,
    esc,
    fork_marker,
    num,
    svg_open,
    title,
    value_axis,
)
from kasmina.report.thinning import Curve

TOP = 10
HEIGHT = 110
AXIS = 36
#: Narrowest bar; more epochs than PLOT / BAR_PX are summed into buckets.
BAR_PX = 4.0


def caches(evictions: Sequence[Eviction]) -> list[str]:
    return sorted({e.cache for e in evictions})


def owners(charts: dict[str, list[Curve]], lineage: Sequence[Ancestor] = ()) -> list[str]:
    """Every series owner in colour order: "run" first, then slots, ancestors' last."""
    found = [c.key[0] for curves in charts.values() for c in curves]
    found += [c.key[0] for a in lineage for curves in a.charts.values() for c in curves]
    return list(dict.fromkeys(sorted(found, key=lambda o: (o != RUN, natural_key(o)))))


@dataclass(frozen=True, slots=True)
class Line:
    """One curve as drawn: its colour, its tooltip and, for an ancestor's, its group."""

    curve: Curve
    colour: str
    label: str
    wrap: str = ""


def _markers(lineage: Sequence[Ancestor], top: float, bottom: float, scale: EpochScale) -> str:
    return "".join(fork_marker(scale, a.epoch, top, bottom, None, a.run_id) for a in lineage)


def evictions_svg(
    evictions: Sequence[Eviction],
    span: int,
    notes: list[str],
    lineage: Sequence[Ancestor] = (),
) -> str:
    scale = EpochScale(span)
    names = caches(evictions)
    width = max(1, math.ceil(span * BAR_PX / PLOT))
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    reasons: dict[int, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for e in evictions:
        bucket = e.epoch // width
        counts[bucket][e.cache] += e.evicted
        reasons[bucket][(e.cache, e.reason)] += e.evicted
    peak = max((sum(c.values()) for c in counts.values()), default=0)
    y, axis = value_axis(0.0, float(peak) or 1.0, TOP, HEIGHT)
    parts = [
        svg_open(TOP + HEIGHT + AXIS, "evictions", "GC evictions per epoch by cache"),
        axis,
        epoch_axis(scale, TOP, TOP + HEIGHT),
    ]
    for bucket in sorted(counts):
        first, last = bucket * width, min((bucket + 1) * width, span) - 1
        x0, x1 = scale(first), scale(last + 1)
        gap = 2.0 if x1 - x0 > 6 else 0.0
        when = f"epoch {first}" if first >= last else f"epochs {first}–{last}"
        detail = ", ".join(f"{c} {n:,} ({r})" for (c, r), n in sorted(reasons[bucket].items()))
        total = sum(counts[bucket].values())
        parts.append(f'<g class="bar">{title(f"{when}: {total:,} evicted — {detail}")}')
        base = float(TOP + HEIGHT)
        for index, cache in enumerate(names):
            count = counts[bucket].get(cache, 0)
            if not count:
                continue
            h = y(0.0) - y(float(count))
            base -= h
            parts.append(
                f'<rect x="{num(x0 + gap / 2)}" y="{num(base)}" width="{num(x1 - x0 - gap)}" '
                f'height="{num(h)}" fill="{series_colour(index)}"/>'
            )
        parts.append("</g>")
    parts += [_markers(lineage, TOP, TOP + HEIGHT, scale), "</svg>"]
    if width > 1:
        notes.append(f"GC evictions: summed into buckets of {width:,} epochs, one bar each.")
    return "".join(parts)


def metric_svg(
    chart_id: str,
    name: str,
    curves: Sequence[Curve],
    span: int,
    every: Sequence[str],
    lineage: Sequence[Ancestor] = (),
) -> str:
    """One metric of one run, a line per owner coloured by its place in ``every`` (the
    legend's order, from `owners`); a fork's ancestors' lines dashed."""
    colour = {owner: series_colour(i) for i, owner in enumerate(every)}

    def label(curve: Curve, where: str = "") -> str:
        owner = "" if curve.key[0] == RUN else f" · {curve.key[0]}"
        return f"{name}{owner}{where}"

    lines = [
        Line(
            c,
            colour[c.key[0]],
            label(c, f" in run {a.run_id}"),
            f'<g class="parent-segment" data-run="{esc(a.run_id)}" data-epoch="{a.epoch}">',
        )
        for a in lineage
        for c in a.charts.get(name, [])
    ]
    lines += [Line(c, colour[c.key[0]], label(c)) for c in curves]
    return lines_svg(chart_id, name, lines, span, lineage)


def lines_svg(
    chart_id: str,
    name: str,
    lines: Sequence[Line],
    span: int,
    lineage: Sequence[Ancestor] = (),
    axis: str = "epoch",
) -> str:
    """A chart of ``lines`` over the epoch axis, its value axis fitted to their values."""
    scale = EpochScale(span)
    values = [v for line in lines for _, v in line.curve.points if math.isfinite(v)]
    y, values_axis = value_axis(min(values, default=0.0), max(values, default=1.0), TOP, HEIGHT, 5)
    parts = [
        svg_open(TOP + HEIGHT + AXIS, chart_id, f"{name} per epoch", {"data-metric": name}),
        values_axis,
        epoch_axis(scale, TOP, TOP + HEIGHT, axis),
    ]
    gap = max(1, 2 * math.ceil(span / CURVE_BUCKETS))
    for line in lines:
        drawn = (
            f'<path class="metric" data-series="{esc(line.curve.key[0])}" '
            f'stroke="{line.colour}" d="{_trace(line.curve, scale, y, gap)}">'
            f"{title(f'{line.label}: {line.curve.raw:,} epochs')}</path>"
        )
        parts.append(f"{line.wrap}{drawn}</g>" if line.wrap else drawn)
    parts += [_markers(lineage, TOP, TOP + HEIGHT, scale), "</svg>"]
    return "".join(parts)


def _trace(curve: Curve, scale: EpochScale, y: Callable[[float], float], gap: int) -> str:
    """The curve as path data, lifted wherever epochs are missing (a slot between two
    seeds, a NaN), so no line is drawn across epochs that recorded nothing."""
    parts = []
    last: int | None = None
    for epoch, value in curve.points:
        if not math.isfinite(value):
            last = None
            continue
        move = "M" if last is None or epoch - last > gap else "L"
        parts.append(f"{move}{num(scale(epoch + 0.5))},{num(y(value))}")
        last = epoch
    return "".join(parts)


__all__ = ["Line", "caches", "evictions_svg", "lines_svg", "metric_svg", "owners"]
