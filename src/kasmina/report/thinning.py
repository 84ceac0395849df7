"""Thinning dense curves so a long run still gives a small, quick page.

A curve is cut into buckets of whole epochs; each bucket keeps its lowest and
its highest point, and every curve keeps its first and last point. Spikes and
dips survive (a plain stride would skip them) and a curve never gets shorter
at either end. Rows may arrive in any order, so the view needs no sort.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Point = tuple[int, float]
#: (owner, name): (slot id, seed id) for alpha, ("run", metric) for run metrics.
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Curve:
    """A thinned series: ``points`` in epoch order; ``raw`` counts the points that went in."""

    key: Key
    points: list[Point]
    raw: int


@dataclass(slots=True)
class _Series:
    first: Point
    last: Point
    raw: int = 0
    low: dict[int, Point] = field(default_factory=dict)
    high: dict[int, Point] = field(default_factory=dict)


class Thinner:
    def __init__(self, bucket_epochs: int) -> None:
        self.bucket_epochs = max(1, bucket_epochs)
        self._series: dict[Key, _Series] = {}

    def add(self, key: Key, epoch: int, value: float) -> None:
        point = (epoch, value)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(point, point)
        s.raw += 1
        if epoch < s.first[0]:
            s.first = point
        if epoch >= s.last[0]:
            s.last = point
        bucket = epoch // self.bucket_epochs
        low = s.low.get(bucket)
        if low is None or value < low[1] or (value == low[1] and epoch < low[0]):
            s.low[bucket] = point
        high = s.high.get(bucket)
        if high is None or value > high[1] or (value == high[1] and epoch > high[0]):
            s.high[bucket] = point

    def keys(self) -> list[Key]:
        return list(self._series)

    def points(self, key: Key) -> list[Point]:
        s = self._series[key]
        kept = {s.first, s.last, *s.low.values(), *s.high.values()}
        by_epoch: dict[int, Point] = {}
        for point in sorted(kept):
            by_epoch.setdefault(point[0], point)
        return sorted(by_epoch.values())

    def curves(self) -> list[Curve]:
        return [Curve(key, self.points(key), s.raw) for key, s in self._series.items()]
