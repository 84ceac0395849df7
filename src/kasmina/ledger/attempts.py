"""A run's attempts: which events a resumed run's abandoned attempts left behind.

A run whose process died is continued by a new attempt that appends
`RunResumed`: the events after its ``abandoned_after_position`` and before
it are the abandoned attempt's. They stay in the log; every reader that
tells the run's story (the fold, the views, re-execution, ``history
--live``) passes over them, and ``history`` marks them with their attempt.
This module answers "is this position superseded, and by which attempt",
from the `RunResumed` rows alone.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from kasmina.events import RunResumed

__all__ = ["Attempts"]


@dataclass(frozen=True)
class Attempts:
    """The superseded ranges of one run: (after, before, attempt abandoned), by position.

    An event is superseded when a range covers it, and it was left behind by
    the attempt that wrote it: one more than the resumes recorded before it.
    That is not always the attempt whose range covers it: an attempt that
    dies before its first checkpoint is resumed from the same checkpoint
    again, and the wider range then covers both dead attempts' events.
    """

    ranges: tuple[tuple[int, int, int], ...] = ()
    _starts: list[int] = field(default_factory=list, compare=False, repr=False)
    _resumes: list[int] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(cls, resumes: Iterable[tuple[int, RunResumed]]) -> Attempts:
        """From each `RunResumed` and its position."""
        ranges = sorted((r.abandoned_after_position, at, r.attempt - 1) for at, r in resumes)
        return cls(tuple(ranges), [a for a, _, _ in ranges], sorted(b for _, b, _ in ranges))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    @property
    def count(self) -> int:
        """How many attempts the run has had (1 for a run never resumed)."""
        return 1 + len(self.ranges)

    def abandoned_by(self, position: int) -> int | None:
        """The attempt that wrote and abandoned the event at `position`, or None if it is live."""
        index = bisect.bisect_left(self._starts, position)
        # Ranges may nest (a resume from a checkpoint older than the last resume):
        # look at every range starting before the position.
        for after, before, _ in self.ranges[:index]:
            if after < position < before:
                return 1 + bisect.bisect_left(self._resumes, position)
        return None

    def superseded(self, position: int) -> bool:
        return self.abandoned_by(position) is not None
