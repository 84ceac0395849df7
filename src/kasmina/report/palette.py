"""Colours: one per seed stage, keyed by `SeedStage` so a new stage cannot go unpainted.

Growth stages run cool to warm (blue, violet, amber) and end in green;
failure stages are reds and oranges; idle stages are greys. Labels on a
stage pick black or white text by the fill's luminance.
"""

from __future__ import annotations

from collections.abc import Mapping

from kasmina.stages import SeedStage

STAGE_COLOURS: Mapping[SeedStage, str] = {
    SeedStage.UNKNOWN: "#9ca3af",
    SeedStage.DORMANT: "#e5e7eb",
    SeedStage.GERMINATED: "#99f6e4",
    SeedStage.TRAINING: "#60a5fa",
    SeedStage.BLENDING: "#a78bfa",
    SeedStage.HOLDING: "#fbbf24",
    SeedStage.FOSSILIZED: "#059669",
    SeedStage.PRUNED: "#dc2626",
    SeedStage.EMBARGOED: "#fb923c",
    SeedStage.RESETTING: "#fca5a5",
}
#: For a stage name a newer log may carry and this code does not know.
OTHER_STAGE = "#d1d5db"
PASS = "#15803d"
FAIL = "#dc2626"
CURVE = "#1e293b"
#: Caches and metrics are coloured in order of their names.
SERIES = ("#2563eb", "#f59e0b", "#10b981", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#ea580c")


def stage_colour(name: str) -> str:
    member = SeedStage.__members__.get(name)
    return OTHER_STAGE if member is None else STAGE_COLOURS[member]


def ink(fill: str) -> str:
    """Black or white, whichever reads better on ``fill`` (a #rrggbb colour)."""
    r, g, b = (int(fill[i : i + 2], 16) / 255 for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#111827" if luminance > 0.45 else "#ffffff"


def series_colour(index: int) -> str:
    return SERIES[index % len(SERIES)]
