"""Small SVG helpers: the shared epoch axis, tick choice and compact numbers.

Every chart uses the same horizontal geometry, so an epoch sits at the same
x in the swimlanes, the eviction bars and the accuracy curve and the eye can
run straight down the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

WIDTH = 1200
LEFT = 100
RIGHT = 24
PLOT = WIDTH - LEFT - RIGHT


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def num(value: float) -> str:
    """A coordinate with one decimal at most: plenty on screen, and half the bytes."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def title(text: str) -> str:
    return f"<title>{esc(text)}</title>"


class EpochScale:
    """Maps epochs to x; the axis runs from the start of epoch 0 to the end of the last."""

    def __init__(self, span: int) -> None:
        self.span = max(span, 1)
        self.per_epoch = PLOT / self.span

    def __call__(self, epoch: float) -> float:
        return LEFT + epoch * self.per_epoch


def nice_step(extent: float, count: int) -> float:
    """A 1-2-5 step giving about ``count`` ticks over ``extent``."""
    if extent <= 0:
        return 1.0
    raw = extent / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


def ticks(top: float, count: int, *, whole: bool = False) -> list[float]:
    """Tick values from 0 to at least ``top``."""
    return span_ticks(0.0, top, count, whole=whole)


def span_ticks(low: float, high: float, count: int, *, whole: bool = False) -> list[float]:
    """Round tick values from at most ``low`` to at least ``high``.

    The axis hugs the data, so a loss between 0.02 and 0.05 fills the plot rather
    than lying flat at the bottom of an axis from 0. A constant series gets a
    small band around its value.
    """
    if not high > low:
        pad = abs(high) * 0.1 or 1.0
        low, high = high - pad, high + pad
    step = nice_step(high - low, count)
    if whole:
        step = max(1.0, round(step))
    first = math.floor(low / step + 1e-9)
    n = max(1, math.ceil(high / step - 1e-9) - first)
    digits = max(0, -math.floor(math.log10(step))) + 1
    return [round((first + i) * step, digits) for i in range(n + 1)]


def label(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:g}"


def epoch_axis(scale: EpochScale, top: float, bottom: float, name: str = "epoch") -> str:
    """Vertical grid lines at round epochs and their labels under ``bottom``."""
    parts = ['<g class="axis">']
    for value in ticks(scale.span, 10, whole=True):
        if value > scale.span:
            break
        x = num(scale(value))
        parts.append(
            f'<line class="grid" x1="{x}" x2="{x}" y1="{num(top)}" y2="{num(bottom)}"/>'
            f'<text x="{x}" y="{num(bottom + 14)}" text-anchor="middle">{label(value)}</text>'
        )
    parts.append(
        f'<text class="axis-title" x="{LEFT + PLOT}" y="{num(bottom + 28)}" '
        f'text-anchor="end">{esc(name)}</text></g>'
    )
    return "".join(parts)


def value_axis(
    low: float, high: float, y0: float, height: float, count: int = 4
) -> tuple[Callable[[float], float], str]:
    """Horizontal grid lines with labels on the left, from round values around
    ``low`` and ``high``; returns the value-to-y map and the markup."""
    values = span_ticks(low, high, count)
    bottom, top = values[0], values[-1]

    def y(value: float) -> float:
        return y0 + height - (value - bottom) / (top - bottom) * height

    parts = ['<g class="axis">']
    for value in values:
        at = num(y(value))
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT}" y1="{at}" y2="{at}"/>'
            f'<text x="{LEFT - 8}" y="{at}" dy="0.32em" text-anchor="end">{label(value)}</text>'
        )
    parts.append("</g>")
    return y, "".join(parts)


def svg_open(
    height: float, name: str, description: str, attrs: dict[str, str] | None = None
) -> str:
    extra = "".join(f' {key}="{esc(value)}"' for key, value in (attrs or {}).items())
    return (
        f'<svg class="chart" id="{esc(name)}"{extra} '
        f'viewBox="0 0 {WIDTH} {num(height)}" role="img" aria-label="{esc(description)}">'
    )


def fork_marker(
    scale: EpochScale, epoch: int, top: float, bottom: float, label: str | None, run: str
) -> str:
    """A fork's vertical line at the end of ``epoch`` (where the parent's part ends),
    labelled at ``top`` when ``label`` is given; ``run`` is the run it leaves."""
    x = scale(epoch + 1)
    text = ""
    if label is not None:
        right = x > LEFT + PLOT / 2
        text = (
            f'<text x="{num(x - 4 if right else x + 4)}" y="{num(top)}" dy="0.9em" '
            f'text-anchor="{"end" if right else "start"}">{esc(label)}</text>'
        )
    return (
        f'<g class="fork-marker" data-run="{esc(run)}" data-epoch="{epoch}">'
        f"{title(label or f'forked from {run} @ {epoch}')}"
        f'<line x1="{num(x)}" x2="{num(x)}" y1="{num(top)}" y2="{num(bottom)}"/>{text}</g>'
    )
