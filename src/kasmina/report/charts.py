"""The smaller charts under the lanes: GC evictions per epoch, and the run's accuracy.

Eviction bars are summed into buckets of whole epochs when the run has more
epochs than the plot has room for bars; each bar's tooltip names its epochs
and splits its count by cache and reason, so no eviction goes uncounted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from kasmina.report.data import Ancestor, Eviction
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


def accuracy_names(curves: Sequence[Curve], lineage: Sequence[Ancestor] = ()) -> list[str]:
    """The accuracy series in colour order: the run's own, then any only an ancestor has."""
    names = [c.key[1] for c in curves] + [c.key[1] for a in lineage for c in a.accuracy]
    return list(dict.fromkeys(names))


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
    vmax, axis = value_axis(float(peak), TOP, HEIGHT)
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
            h = count / vmax * HEIGHT
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


def accuracy_svg(curves: Sequence[Curve], span: int, lineage: Sequence[Ancestor] = ()) -> str:
    """The run's accuracy curves; a fork's ancestors' curves up to each fork, dashed."""
    scale = EpochScale(span)
    inherited = [(a, c) for a in lineage for c in a.accuracy]
    every = [*curves, *(c for _, c in inherited)]
    peak = max((v for c in every for _, v in c.points if math.isfinite(v)), default=1.0)
    vmax, axis = value_axis(peak, TOP, HEIGHT)
    colour = {name: series_colour(i) for i, name in enumerate(accuracy_names(curves, lineage))}
    parts = [
        svg_open(TOP + HEIGHT + AXIS, "accuracy", "accuracy per epoch"),
        axis,
        epoch_axis(scale, TOP, TOP + HEIGHT),
    ]
    for ancestor, curve in inherited:
        parts.append(
            f'<g class="parent-segment" data-run="{esc(ancestor.run_id)}" '
            f'data-epoch="{ancestor.epoch}">'
            f"{_polyline(curve, scale, vmax, colour[curve.key[1]], f' in run {ancestor.run_id}')}"
            "</g>"
        )
    for curve in curves:
        parts.append(_polyline(curve, scale, vmax, colour[curve.key[1]]))
    parts += [_markers(lineage, TOP, TOP + HEIGHT, scale), "</svg>"]
    return "".join(parts)


def _polyline(curve: Curve, scale: EpochScale, vmax: float, colour: str, where: str = "") -> str:
    coords = " ".join(
        f"{num(scale(e + 0.5))},{num(TOP + HEIGHT - v / vmax * HEIGHT)}"
        for e, v in curve.points
        if math.isfinite(v)
    )
    return (
        f'<polyline class="metric" stroke="{colour}" points="{coords}">'
        f"{title(f'{curve.key[1]} accuracy{where}: {curve.raw:,} epochs')}</polyline>"
    )


__all__ = ["accuracy_names", "accuracy_svg", "caches", "evictions_svg"]
