"""The swimlanes: one lane per slot with its stages, seed ids, gate verdicts and alpha.

Each lane is a `<g class="lane" data-slot=...>` holding three rows: gate
markers, the stage band, and the alpha strip. Every stage interval and every
gate verdict is drawn; only when a lane holds more of them than it has pixels
are neighbours within one pixel block merged into a single mark whose title
counts what it holds, and the page says so. Curves arrive already thinned.

A fork's lanes begin with its ancestors' segments (`<g class="parent-segment"
data-run=...>`: muted stages in a dashed frame, their gate verdicts and
dashed alpha), a `<g class="fork-marker">` line at each fork epoch, and the
stages the fork carried on from its parent (`st carried`) until its first
move in the slot.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from kasmina.report.data import Ancestor, Interval, RunData, Verdict
from kasmina.report.svg import (
    LEFT,
    PLOT,
    EpochScale,
    epoch_axis,
    esc,
    fork_marker,
    num,
    svg_open,
    title,
)
from kasmina.report.thinning import Curve, Thinner

MARKS = 16
BAND = 26
GAP = 6
ALPHA = 40
LANE = MARKS + BAND + GAP + ALPHA
BETWEEN = 20
TOP = 6
AXIS = 36
#: Narrowest drawn stage mark in a merged lane.
MIN_MARK = 2.0
#: Narrowest mark of a stage left within its first epoch (a one-epoch HOLDING, say), drawn
#: outlined and on top, so a stay too short for the scale still shows and can be hovered.
BRIEF_MARK = 6.0
#: A lane with more intervals than this merges them into blocks of MERGE_PX.
MERGE_PX = 3.0
#: A lane with more alpha curves than PLOT / CURVE_PX draws them as one envelope.
CURVE_PX = 6.0
#: Gate verdicts closer than this share a marker.
MARKER_PX = 8.0
#: A marker holding more verdicts than this sums them up in its tooltip.
TITLE_LINES = 6
CHAR_PX = 6.6
#: Height of each fork marker's label row above the lanes.
FORK_LABEL = 16


def _fork_labels(data: RunData) -> list[tuple[int, str]]:
    """Each fork point of the lineage as (epoch, label), the parent's first."""
    labels = []
    for index, ancestor in enumerate(data.lineage):
        child = "" if index == 0 else f"{data.lineage[index - 1].run_id} "
        labels.append((ancestor.epoch, f"{child}forked from {ancestor.run_id} @ {ancestor.epoch}"))
    return labels


def lanes_svg(data: RunData, notes: list[str]) -> str:
    scale = EpochScale(data.span)
    by_slot: dict[str, list[Interval]] = defaultdict(list)
    for interval in data.intervals:
        by_slot[interval.slot_id].append(interval)
    verdicts: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in data.verdicts:
        verdicts[verdict.slot_id].append(verdict)
    curves: dict[str, list[Curve]] = defaultdict(list)
    for curve in data.alpha:
        curves[curve.key[0]].append(curve)
    carried: dict[str, list[Interval]] = defaultdict(list)
    for interval in data.carried:
        carried[interval.slot_id].append(interval)
    n = len(data.slots)
    labels = _fork_labels(data)
    top = TOP + len(labels) * FORK_LABEL
    bottom = top + n * LANE + max(n - 1, 0) * BETWEEN
    parts = [
        svg_open(bottom + AXIS, "lanes", f"stage swimlanes of {n} slot(s)"),
        epoch_axis(scale, top, bottom),
    ]
    merged = crowded = joined = 0
    for index, slot in enumerate(data.slots):
        y = top + index * (LANE + BETWEEN)
        intervals = _ordered(by_slot[slot])
        stages, folded = _stages(intervals, scale)
        markers, shared = _markers(verdicts[slot], scale)
        merged += folded
        joined += shared
        before, inherited = "", ""
        if data.lineage:
            before, inherited, folded, shared = _ancestors(slot, data.lineage, scale)
            parent = data.lineage[0]
            kept, folded_carried = _stages(
                _ordered(carried[slot]),
                scale,
                note=f" · carried on from {parent.run_id} @ {parent.epoch}",
                cls=" carried",
            )
            stages = kept + stages
            intervals = _ordered(carried[slot] + by_slot[slot])
            merged += folded + folded_carried
            joined += shared
        parts.append(
            f'<g class="lane" data-slot="{esc(slot)}" transform="translate(0,{y})">'
            f'<text class="slot" x="{LEFT - 10}" y="{MARKS + BAND / 2}" dy="0.35em" '
            f'text-anchor="end">{esc(slot)}</text>'
            f'<rect class="band" x="{LEFT}" y="{MARKS}" width="{PLOT}" height="{BAND}"/>'
            f"{before}{stages}{_seed_labels(intervals, scale)}{markers}"
            f"{_alpha(slot, curves[slot], scale, inherited)}</g>"
        )
        crowded += len(curves[slot]) if len(curves[slot]) * CURVE_PX > PLOT else 0
    for row, (epoch, label) in enumerate(labels):
        parts.append(
            fork_marker(
                scale, epoch, TOP + row * FORK_LABEL, bottom, label, data.lineage[row].run_id
            )
        )
    parts.append("</svg>")
    if merged:
        notes.append(
            f"Stage intervals: {merged:,} intervals narrower than {MERGE_PX:g} px were merged "
            "into blocks coloured by the stage that fills most of each block; the block's "
            "tooltip counts them."
        )
    if crowded:
        notes.append(
            f"Alpha: in lanes with more seeds than room, the {crowded:,} seeds' curves are "
            "drawn as one line per lane (lowest and highest alpha per pixel column)."
        )
    if joined:
        notes.append(
            f"Gate verdicts: {joined:,} verdicts of different epochs less than {MARKER_PX:g} px "
            "apart share markers; each marker's tooltip lists or counts them."
        )
    return "".join(parts)


def _ordered(intervals: Sequence[Interval]) -> list[Interval]:
    return sorted(intervals, key=lambda i: (i.start, math.inf if i.end is None else i.end))


def _ancestors(
    slot: str, lineage: Sequence[Ancestor], scale: EpochScale
) -> tuple[str, str, int, int]:
    """A fork lane's ancestor segments, oldest first: the band's part and the alpha
    strip's part, and the intervals merged and verdicts sharing markers among them."""
    band, strip = [], []
    merged = shared = 0
    start = 0
    for ancestor in reversed(lineage):
        note = f" · in run {ancestor.run_id}, up to its fork @ {ancestor.epoch}"
        mine = [i for i in ancestor.carried + ancestor.intervals if i.slot_id == slot]
        stages, folded = _stages(_ordered(mine), scale, note=note)
        markers, joined = _markers([v for v in ancestor.verdicts if v.slot_id == slot], scale)
        merged += folded
        shared += joined
        x0, x1 = scale(start), scale(ancestor.epoch + 1)
        band.append(
            f'<g class="parent-segment" data-run="{esc(ancestor.run_id)}" '
            f'data-epoch="{ancestor.epoch}">{stages}{_seed_labels(_ordered(mine), scale)}'
            f'<rect class="parent-zone" x="{num(x0)}" y="{MARKS}" width="{num(x1 - x0)}" '
            f'height="{BAND}">{title(f"run {ancestor.run_id}, epochs {start}–{ancestor.epoch}")}'
            f"</rect>{markers}</g>"
        )
        curves = [c for c in ancestor.alpha if c.key[0] == slot]
        if curves:
            strip.append(
                f'<g class="parent-segment" data-run="{esc(ancestor.run_id)}" '
                f'data-epoch="{ancestor.epoch}">'
                f"{_curves(slot, curves, scale, f' in run {ancestor.run_id}')}</g>"
            )
        start = ancestor.epoch + 1
    return "".join(band), "".join(strip), merged, shared


def _span(interval: Interval, scale: EpochScale) -> tuple[float, float]:
    end = scale.span if interval.end is None else interval.end
    return scale(interval.start), scale(end)


def _when(interval: Interval) -> str:
    if interval.end is None:
        return f"from epoch {interval.start} (still there at the end)"
    if interval.end == interval.start:
        return f"entered and left in epoch {interval.start}"
    return f"epochs {interval.start}–{interval.end}"


def _stages(
    intervals: Sequence[Interval], scale: EpochScale, note: str = "", cls: str = ""
) -> tuple[str, int]:
    """Stage rects, widest first so zero-length stages stay visible on top; and merges made.

    ``note`` ends each tooltip and ``cls`` is added to each rect's classes.
    """
    if len(intervals) * MERGE_PX > PLOT:
        return _merged(intervals, scale, note, cls)
    wide: list[str] = []
    thin: list[str] = []
    for interval in intervals:
        x0, x1 = _span(interval, scale)
        who = interval.seed_id or "no seed"
        if interval.stage == "DORMANT":
            who = f"empty slot (last seed {interval.seed_id})" if interval.seed_id else "empty"
        brief = x1 - x0 < BRIEF_MARK
        rect = (
            f'<rect class="st st-{esc(interval.stage)}{cls}{" brief" if brief else ""}" '
            f'x="{num(x0)}" y="{MARKS}" width="{num(max(x1 - x0, BRIEF_MARK))}" '
            f'height="{BAND}">'
            f"{title(f'{interval.stage} · {who} · {_when(interval)}{note}')}</rect>"
        )
        (thin if brief else wide).append(rect)
    return "".join(wide + thin), 0


def _merged(
    intervals: Sequence[Interval], scale: EpochScale, note: str = "", cls: str = ""
) -> tuple[str, int]:
    parts: list[str] = []
    folded = 0
    block: list[Interval] = []

    def flush() -> None:
        nonlocal folded
        if not block:
            return
        x0, x1 = _span(block[0], scale)[0], _span(block[-1], scale)[1]
        cover: dict[str, float] = defaultdict(float)
        for item in block:
            a, b = _span(item, scale)
            cover[item.stage] += b - a
        stage = max(cover, key=lambda s: cover[s])
        seeds = [s for s in dict.fromkeys(i.seed_id for i in block) if s]
        who = f"seeds {seeds[0]} … {seeds[-1]}" if len(seeds) > 1 else ", ".join(seeds)
        last = block[-1].end
        text = (
            f"epochs {block[0].start}–{'end' if last is None else last}: {len(block)} stage "
            f"intervals, mostly {stage} · {who}{note}"
        )
        parts.append(
            f'<rect class="st st-{esc(stage)}{cls}" x="{num(x0)}" y="{MARKS}" '
            f'width="{num(max(x1 - x0, MIN_MARK))}" height="{BAND}">{title(text)}</rect>'
        )
        if len(block) > 1:
            folded += len(block)
        block.clear()

    for interval in intervals:
        x0, x1 = _span(interval, scale)
        if x1 - x0 >= MERGE_PX:
            flush()
            block.append(interval)
            flush()
            continue
        block.append(interval)
        if x1 - _span(block[0], scale)[0] >= MERGE_PX:
            flush()
    flush()
    return "".join(parts), folded


def _seed_labels(intervals: Sequence[Interval], scale: EpochScale) -> str:
    """Each seed's id over its stretch of the lane, where it fits."""
    spans: list[tuple[str, float, float]] = []
    for interval in intervals:
        if interval.seed_id is None or interval.stage == "DORMANT":
            continue
        x0, x1 = _span(interval, scale)
        if spans and spans[-1][0] == interval.seed_id:
            spans[-1] = (interval.seed_id, spans[-1][1], x1)
        else:
            spans.append((interval.seed_id, x0, x1))
    parts = []
    for seed, x0, x1 in spans:
        if x1 - x0 >= len(seed) * CHAR_PX + 8:
            parts.append(
                f'<text class="seed" x="{num(x0 + 4)}" y="{MARKS + BAND / 2}" '
                f'dy="0.35em">{esc(seed)}</text>'
            )
    return "".join(parts)


def _markers(verdicts: Sequence[Verdict], scale: EpochScale) -> tuple[str, int]:
    """Circles for passed gates, red triangles for failed ones (drawn on top), above the band."""
    fine = scale.per_epoch >= MARKER_PX
    groups: dict[int, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        key = verdict.epoch if fine else int(scale(verdict.epoch) // MARKER_PX)
        groups[key].append(verdict)
    passes, fails = [], []
    cy = MARKS / 2
    shared = 0
    for group in groups.values():
        if len({v.epoch for v in group}) > 1:
            shared += len(group)
        passed = [v for v in group if v.passed]
        failed = [v for v in group if not v.passed]
        nudge = 3.0 if passed and failed else 0.0
        if passed:
            x = sum(scale(v.epoch) for v in passed) / len(passed) - nudge
            passes.append(
                f'<circle class="pass" cx="{num(x)}" cy="{num(cy)}" r="4">'
                f"{title(_verdicts(passed))}</circle>"
            )
        if failed:
            x = sum(scale(v.epoch) for v in failed) / len(failed) + nudge
            fails.append(
                f'<path class="fail" d="M{num(x - 4.5)} {num(cy - 4)}h9l-4.5 8z">'
                f"{title(_verdicts(failed))}</path>"
            )
    return f'<g class="gates">{"".join(passes)}{"".join(fails)}</g>', shared


def _verdicts(group: Sequence[Verdict]) -> str:
    """A marker's tooltip: each verdict when few, else counts per gate and failed check."""
    if len(group) <= TITLE_LINES:
        lines = []
        for v in group:
            target = f" → {v.target_stage}" if v.target_stage else ""
            verdict = "passed" if v.passed else "failed"
            if v.checks_failed:
                verdict += ": " + ", ".join(v.checks_failed)
            lines.append(f"epoch {v.epoch} · {v.seed_id or 'no seed'} · {v.gate}{target} {verdict}")
        return "\n".join(lines)
    first, last = min(v.epoch for v in group), max(v.epoch for v in group)
    verdict = "passed" if group[0].passed else "failed"
    gates = Counter(f"{v.gate} → {v.target_stage}" if v.target_stage else v.gate for v in group)
    checks = Counter(c for v in group for c in v.checks_failed)
    lines = [f"epochs {first}–{last}: {len(group):,} gate verdicts {verdict}"]
    lines += [f"{gate}: {n:,}" for gate, n in gates.most_common(6)]
    lines += [f"failed check {c}: {n:,}" for c, n in checks.most_common(3)]
    return "\n".join(lines)


def _alpha(slot: str, curves: Sequence[Curve], scale: EpochScale, inherited: str = "") -> str:
    """The alpha strip: ``inherited`` (a fork's ancestor curves) first, then the run's own."""
    top = MARKS + BAND + GAP
    mid = num(top + ALPHA / 2)
    parts = [
        f'<g class="alpha"><rect class="strip" x="{LEFT}" y="{top}" width="{PLOT}" '
        f'height="{ALPHA}"/><line class="half" x1="{LEFT}" x2="{LEFT + PLOT}" y1="{mid}" '
        f'y2="{mid}"/><text class="tick" x="{LEFT - 6}" y="{top}" dy="0.7em" '
        f'text-anchor="end">α 1</text><text class="tick" x="{LEFT - 6}" y="{top + ALPHA}" '
        'text-anchor="end">0</text>',
        inherited,
        _curves(slot, curves, scale),
        "</g>",
    ]
    return "".join(parts)


def _curves(slot: str, curves: Sequence[Curve], scale: EpochScale, where: str = "") -> str:
    """Alpha polylines (a dot for one sample), or one envelope when the lane is crowded."""
    top = MARKS + BAND + GAP
    parts = []
    kind = "curve"
    if len(curves) * CURVE_PX > PLOT:
        curves, kind = [_envelope(slot, curves, scale)], "curve envelope"
    for curve in curves:
        points = [
            (scale(e + 0.5), top + ALPHA - min(max(a, 0.0), 1.0) * ALPHA) for e, a in curve.points
        ]
        seed = curve.key[1]
        thinned = f", thinned to {len(points):,} points" if len(points) < curve.raw else ""
        text = title(f"{seed} alpha{where}: {curve.raw:,} samples{thinned}")
        if len(points) == 1:
            ((x, y),) = points
            parts.append(f'<circle class="dot" cx="{num(x)}" cy="{num(y)}" r="2">{text}</circle>')
            continue
        coords = " ".join(f"{num(x)},{num(y)}" for x, y in points)
        parts.append(f'<polyline class="{kind}" points="{coords}">{text}</polyline>')
    return "".join(parts)


def _envelope(slot: str, curves: Sequence[Curve], scale: EpochScale) -> Curve:
    """All of a crowded lane's curves as one: the seeds follow each other in the slot."""
    thinner = Thinner(max(1, math.ceil(1 / scale.per_epoch)))
    for curve in curves:
        for epoch, value in curve.points:
            thinner.add(("", ""), epoch, value)
    raw = sum(c.raw for c in curves)
    return Curve((slot, f"{len(curves):,} seeds of {slot}"), thinner.points(("", "")), raw)
