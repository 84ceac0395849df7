"""Run references: what a person types for RUN, resolved to one run's id.

A run id is 32 hex characters nobody remembers, so every command that takes
RUN also takes what people type instead:

- the full id (always first: a run may be named ``latest`` and still be found by id);
- ``latest``, the run started last, and ``latest~N``, the N-th before it
  (in the order of ``kasmina runs``: by start time, then id);
- a prefix of one run's id, at least `MIN_PREFIX` characters;
- the name of one run.

A prefix and a name are looked up together: a reference that is the prefix
of one run and the name of another names two runs, and is refused with
both listed rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from kasmina.errors import AmbiguousRun, RunNotFound


class RunEntry(Protocol):
    """What a reference is matched against (`kasmina.ledger.core.RunInfo` has it)."""

    @property
    def run_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def started_at(self) -> datetime: ...


#: The shortest id prefix taken: shorter ones match too much to mean one run.
MIN_PREFIX = 4
_LATEST = re.compile(r"latest(?:~([0-9]{1,9}))?")
#: What a reference may be, for the line that says none matched.
FORMS = (
    f"a run id, a unique id prefix of {MIN_PREFIX}+ characters, a unique run name, "
    "latest or latest~N"
)


def resolve_run(
    ref: str, exists: Callable[[str], bool], listed: Callable[[], Sequence[RunEntry]]
) -> str:
    """The id of the one run `ref` names; `RunNotFound` or `AmbiguousRun` otherwise.

    `exists` says whether a run has an id; `listed` gives every run in start order.
    """
    if exists(ref):
        return ref
    runs = listed()
    latest = _LATEST.fullmatch(ref)
    if latest is not None:
        back = int(latest.group(1) or 0)
        if back >= len(runs):
            held = "no runs" if not runs else f"{len(runs)} run{'s' * (len(runs) != 1)}"
            raise RunNotFound(ref, f"no run {ref!r}: the ledger holds {held}")
        return runs[-1 - back].run_id
    found = [
        r for r in runs if r.name == ref or (len(ref) >= MIN_PREFIX and r.run_id.startswith(ref))
    ]
    if len(found) == 1:
        return found[0].run_id
    if not found:
        raise RunNotFound(ref, f"no run matches {ref!r} ({FORMS})")
    raise AmbiguousRun(ref, _described(found))


def _described(runs: Sequence[RunEntry]) -> list[str]:
    return [
        f"{r.run_id!r} ({'unnamed' if r.name is None else f'name {r.name!r}'}, "
        f"started {r.started_at:%Y-%m-%d %H:%M:%S})"
        for r in runs
    ]
