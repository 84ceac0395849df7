"""What a fold produces: the state of every slot and of the run, at one point of a log.

Plain frozen dataclasses with a JSON form, importable without torch. The JSON
form is complete (a fold can resume from it), which is what makes it usable
as a snapshot as well as the output of ``kasmina replay --format json``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

from kasmina.canonical import Json, canonical_value
from kasmina.slot_state import SlotState, dormant


@dataclass(frozen=True, slots=True)
class CacheEvictions:
    """GC evictions of one memory cache, as `CacheEvicted` events counted them."""

    evicted: int = 0
    passes: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    size: int | None = None


@dataclass(frozen=True, slots=True)
class RunState:
    """Run-level state: what started it, where it is, and memory governance totals."""

    run_id: str
    name: str | None = None
    seed: int | None = None
    config: Mapping[str, Json] = field(default_factory=dict)
    started: Mapping[str, Json] = field(default_factory=dict)
    #: In the words of `kasmina runs` and the ``runs`` view: open until its `RunFinished`.
    status: str = "open"
    #: The epoch the state is at (the cut, or the last epoch seen).
    epoch: int | None = None
    #: The payload of the last `EpochCompleted` folded.
    last_epoch: Mapping[str, Json] = field(default_factory=dict)
    caches: Mapping[str, CacheEvictions] = field(default_factory=dict)
    blocks_released: int = 0
    samples_dropped: int = 0
    events: int = 0
    position: int = 0

    def to_json(self) -> dict[str, Json]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["caches"] = {
            name: {f.name: getattr(c, f.name) for f in fields(CacheEvictions)}
            for name, c in sorted(self.caches.items())
        }
        return cast(dict[str, Json], canonical_value(data))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunState:
        values = dict(data)
        if values.get("status") == "running":  # a snapshot from before the word was shared
            values["status"] = "open"
        values["caches"] = {
            name: CacheEvictions(
                evicted=int(c["evicted"]),
                passes=int(c["passes"]),
                by_reason=dict(c["by_reason"]),
                size=c["size"],
            )
            for name, c in data["caches"].items()
        }
        return cls(**values)


class ReplayState(Mapping[str, SlotState]):
    """``{slot_id: SlotState}`` plus the run's state; a slot never seen reads as DORMANT."""

    __slots__ = ("run", "slots")

    def __init__(self, slots: Mapping[str, SlotState], run: RunState) -> None:
        self.slots = dict(sorted(slots.items()))
        self.run = run

    def __getitem__(self, slot_id: str) -> SlotState:
        return self.slots[slot_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.slots)

    def __len__(self) -> int:
        return len(self.slots)

    def slot(self, slot_id: str) -> SlotState:
        """The slot's state, or a DORMANT slot at the run's epoch if the log never named it."""
        known = self.slots.get(slot_id)
        if known is not None:
            return known
        return dormant(slot_id, self.run.epoch or 0)

    @property
    def position(self) -> int:
        return self.run.position

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplayState):
            return NotImplemented
        return self.slots == other.slots and self.run == other.run

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReplayState(position={self.run.position}, slots={list(self.slots)})"

    def to_json(self) -> dict[str, Json]:
        return {
            "run": self.run.to_json(),
            "slots": {k: v.to_json() for k, v in self.slots.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayState:
        return cls(
            {k: SlotState.from_json(v) for k, v in data["slots"].items()},
            RunState.from_json(data["run"]),
        )

    def with_run(self, **changes: Any) -> ReplayState:
        return ReplayState(self.slots, replace(self.run, **changes))


__all__ = ["CacheEvictions", "ReplayState", "RunState"]
