"""Which runs `kasmina runs` lists, in what order, and what it shows of each.

A ledger collects hundreds of runs over a project; people look for "the
wide ones from this week that finished", so the list filters by name
(a shell pattern), status and start time, and sorts by any column.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kasmina.errors import KasminaError

if TYPE_CHECKING:
    from kasmina.ledger.core import RunInfo

_AGO = re.compile(r"([0-9]{1,6})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

#: The fields of `kasmina runs --format json|jsonl|csv`, in order.
RUN_FIELDS = (
    "run_id", "name", "seed", "status", "epochs", "events", "final_val_accuracy",
    "started_at", "finished_at", "duration_s",
)  # fmt: skip
#: The table's columns: the same, less the seed and the finish time.
RUN_COLUMNS = ("run", "name", "status", "epochs", "val acc", "events", "duration", "started (UTC)")
#: On a narrow terminal these go first, in this order: never the id, name or status.
RUN_DROPPABLE = (5, 7, 6, 3, 4)


class RunSort(StrEnum):
    """`--sort` of `kasmina runs`."""

    started = "started"
    name = "name"
    status = "status"
    epochs = "epochs"
    events = "events"
    accuracy = "accuracy"
    duration = "duration"


def since_time(text: str, now: datetime) -> datetime:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or an age such
    as ``90m``, ``12h``, ``3d`` or ``2w`` before `now`."""
    ago = _AGO.fullmatch(text.strip())
    if ago is not None:
        return now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise KasminaError(
            f"--since {text!r} is neither a date or time (2026-12-01, 2026-12-01T09:30) "
            "nor an age (90m, 12h, 3d, 2w)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def duration_s(info: RunInfo) -> float | None:
    """Seconds from start to seal; None for a run not sealed."""
    if info.finished_at is None:
        return None
    return (info.finished_at - info.started_at).total_seconds()


def selected(
    infos: Sequence[RunInfo],
    *,
    name: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    sort: RunSort = RunSort.started,
    reverse: bool = False,
) -> list[RunInfo]:
    """The runs that pass every filter given, sorted by `sort` (runs without the
    value last either way, ties by start time)."""
    chosen = [
        info
        for info in infos
        if (name is None or (info.name is not None and fnmatch.fnmatchcase(info.name, name)))
        and (status is None or info.status == status)
        and (since is None or info.started_at >= since)
    ]
    by_start = sorted(chosen, key=lambda i: (i.started_at, i.run_id), reverse=reverse)
    if sort is RunSort.started:
        return by_start
    key: Callable[[RunInfo], Any] = {
        RunSort.name: lambda i: i.name,
        RunSort.status: lambda i: i.status,
        RunSort.epochs: lambda i: i.epochs,
        RunSort.events: lambda i: i.events,
        RunSort.accuracy: lambda i: i.final_val_accuracy,
        RunSort.duration: duration_s,
    }[sort]
    known = [i for i in by_start if key(i) is not None]
    unknown = [i for i in by_start if key(i) is None]
    return sorted(known, key=key, reverse=reverse) + unknown


def run_values(info: RunInfo) -> tuple[object, ...]:
    """`RUN_FIELDS` of a run."""
    return (
        info.run_id, info.name, info.seed, info.status, info.epochs, info.events,
        info.final_val_accuracy, info.started_at, info.finished_at, duration_s(info),
    )  # fmt: skip


def run_cells(info: RunInfo) -> tuple[str, ...]:
    """`RUN_COLUMNS` of a run, as text (the caller makes it safe for a terminal)."""
    seconds = duration_s(info)
    return (
        info.run_id,
        info.name or "",
        info.status,
        "" if info.epochs is None else str(info.epochs),
        "" if info.final_val_accuracy is None else f"{info.final_val_accuracy:.4g}",
        str(info.events),
        "" if seconds is None else _duration(seconds),
        info.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
    )


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
