"""The fold: a run's events, in position order, into the state of every slot.

One pass, constant memory (a slot's state and what is put off for it). What
an event does to a slot is `kasmina.slot_state.evolve`, the same function the
live `SeedSlot` sets its state with; this module keeps what is the fold's own:
reading rows, checking the hash chain inline, decoding and upcasting
payloads, the run-level totals, and reading only what it needs. Telemetry
samples, the bulk of a run, stay undecoded until an event reads what they
write, and gate verdicts wait in batches (see `_Deferred`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from kasmina.canonical import Json
from kasmina.errors import ReplayError, UnverifiedRun
from kasmina.events import EVENT_TYPES, upcast
from kasmina.ledger.store import EventRow, Store
from kasmina.ledger.verify import ChainChecker
from kasmina.run_state import CacheEvictions, ReplayState, RunState
from kasmina.slot_state import (
    SLOT_EVENT_TYPES,
    Fact,
    SlotState,
    discards_seed,
    dormant,
    evolve,
    tick,
    uses_measurements,
)

_SLOT_PREFIX = "slot/"
_CURRENT_VERSION = {name: cls.schema_version for name, cls in EVENT_TYPES.items()}
#: The run-level events the fold totals; every other type passes through unread.
_RUN_EVENT_TYPES = frozenset(
    ("CacheEvicted", "EventsDropped", "MemoryReleased", "RunStarted", "RunFinished")
)
#: Undecoded gate verdicts kept per slot before they are applied (bounds memory).
GATE_BATCH = 64


class _Deferred:
    """A slot's state as far as it has been applied, and what the fold has put off.

    `kasmina.slot_state` says which effects commute; the fold uses that to
    read only what it needs. Ticks wait in `epoch` until an event needs the
    clock. The latest telemetry sample waits undecoded (a sample overwrites
    the one before it) until an event reads what samples write, and gate
    verdicts wait in batches: most belong to seeds that end, and are dropped
    undecoded with them.
    """

    __slots__ = ("epoch", "gate_rows", "sample", "state")

    def __init__(self, state: SlotState) -> None:
        self.state = state
        self.epoch = state.epoch
        self.sample: EventRow | None = None
        self.gate_rows: list[EventRow] = []


class Fold:
    """Feeds on rows (the ledger's 14 columns, position order) and yields `ReplayState`."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        trust: bool = False,
        start: ReplayState | None = None,
        checker: ChainChecker | None = None,
        max_epoch: int | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.load: Callable[[object], Json] = store.payload_value
        self.checker = None if trust else (checker or ChainChecker(store, run_id))
        run = start.run if start is not None else RunState(run_id)
        self.run = run
        self.caches: dict[str, CacheEvictions] = dict(run.caches)
        self.slots: dict[str, _Deferred] = {}
        if start is not None:
            for slot_id, state in start.slots.items():
                self.slots[_SLOT_PREFIX + slot_id] = _Deferred(state)
        self.events = run.events
        self.position = run.position
        self.last_hash = ""
        self.max_epoch = max_epoch
        self.last_epoch_raw: object = None
        self.run_epoch = run.epoch

    # -- feeding -------------------------------------------------------------

    def fail(self, row: EventRow, message: str) -> ReplayError:
        return ReplayError(f"{row.event_type} in stream {row.stream_id}: {message}", row.position)

    def pass_over(self, row: EventRow) -> None:
        """Take in a row that has no effect on the state: one a resumed run superseded.

        Its place in the hash chain is still checked, and it is still counted.
        """
        checker = self.checker
        if checker is not None and not checker.check(row):
            fault = checker.faults[-1]
            raise UnverifiedRun(
                f"{fault.kind} in stream {fault.stream_id}: {fault.detail}; the run's hash "
                "chain does not verify (pass --trust to fold it anyway)",
                row.position,
            )
        self.events += 1
        self.position = row.position
        self.last_hash = row.hash

    def feed(self, row: EventRow) -> None:
        self.pass_over(row)
        stream = row.stream_id
        epoch = row.epoch
        event_type = row.event_type
        if epoch is not None and (self.max_epoch is None or epoch > self.max_epoch):
            self.max_epoch = epoch
        slot = self.slots.get(stream)
        if slot is None and stream.startswith(_SLOT_PREFIX):
            slot = self.slots[stream] = _Deferred(dormant(stream[len(_SLOT_PREFIX) :]))
        if slot is None:
            self._run_event(event_type, row)
            return
        if epoch is not None and epoch != slot.epoch:
            if epoch < slot.epoch:
                raise self.fail(
                    row, f"epoch {epoch} after epoch {slot.epoch} of the same slot: out of order"
                )
            slot.epoch = epoch
        if event_type == "SeedGateEvaluated":
            slot.gate_rows.append(row)
            if len(slot.gate_rows) >= GATE_BATCH:
                self._apply_gates(slot)
            return
        if event_type == "SeedTelemetrySampled":
            if slot.state.metrics.initial_accuracy is None:
                slot.sample = None
                slot.state = self._evolve(slot.state, row)
            else:
                slot.sample = row
            return
        if event_type not in SLOT_EVENT_TYPES:
            if event_type == "MemoryReleased":
                self._run_event(event_type, row)
            return  # no effect on a slot, a user's own event type included
        event = self._fact(row)
        if discards_seed(event):
            slot.sample = None
            slot.gate_rows = []
        elif slot.sample is not None and uses_measurements(event):
            self._apply_sample(slot)
        slot.state = self._evolve(tick(slot.state, slot.epoch), row, event)

    def _payload(self, row: EventRow) -> dict[str, Any]:
        data = self.load(row.payload)
        if not isinstance(data, dict):
            raise self.fail(row, "payload is not an object")
        if _CURRENT_VERSION.get(row.event_type) != row.schema_version:
            data = upcast(row.event_type, row.schema_version, data)
        return data

    def _fact(self, row: EventRow) -> Fact:
        return Fact(row.event_type, self._payload(row), row.epoch, row.seed_id)

    def _evolve(self, state: SlotState, row: EventRow, event: Fact | None = None) -> SlotState:
        """`evolve` over one row (decoded here unless given), its errors naming the row."""
        try:
            return evolve(state, event if event is not None else self._fact(row))
        except ReplayError as exc:
            raise self.fail(row, str(exc)) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(row, f"malformed payload ({exc!r})") from None

    def _apply_sample(self, slot: _Deferred) -> None:
        if slot.sample is not None:
            slot.state = self._evolve(slot.state, slot.sample)
            slot.sample = None

    def _apply_gates(self, slot: _Deferred) -> None:
        state = slot.state
        for row in slot.gate_rows:
            state = self._evolve(state, row)
        slot.state = state
        slot.gate_rows = []

    def _run_event(self, event_type: str, row: EventRow) -> None:
        if event_type == "SeedTelemetrySampled":
            return
        if event_type == "EpochCompleted":
            self.last_epoch_raw = row.payload
            self.run_epoch = row.epoch
            return
        if event_type not in _RUN_EVENT_TYPES:
            return  # no effect on the run's totals, a user's own event type included
        try:
            data = self._payload(row)
            if event_type == "CacheEvicted":
                name = str(data["cache"])
                old = self.caches.get(name, CacheEvictions())
                reason = str(data["reason"])
                by_reason = dict(old.by_reason)
                by_reason[reason] = by_reason.get(reason, 0) + int(data["evicted"])
                self.caches[name] = CacheEvictions(
                    evicted=old.evicted + int(data["evicted"]),
                    passes=old.passes + 1,
                    by_reason=by_reason,
                    size=int(data["size_after"]),
                )
            elif event_type == "EventsDropped":
                self.run = replace(
                    self.run, samples_dropped=self.run.samples_dropped + int(data["count"])
                )
            elif event_type == "MemoryReleased":
                self.run = replace(
                    self.run, blocks_released=self.run.blocks_released + int(data["blocks"])
                )
            elif event_type == "RunStarted":
                config = data.get("config") or {}
                self.run = replace(
                    self.run,
                    name=data.get("name"),
                    seed=data.get("seed"),
                    config=config,
                    started=data,
                )
            elif event_type == "RunFinished":
                self.run = replace(self.run, status=str(data.get("status", "completed")))
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(row, f"malformed payload ({exc!r})") from None

    # -- reading the state -----------------------------------------------------

    def tick_all(self, epoch: int) -> None:
        for slot in self.slots.values():
            if slot.epoch < epoch:
                slot.epoch = epoch
        self.run_epoch = epoch

    def _slot_state(self, slot: _Deferred) -> SlotState:
        """Everything put off applied, so the state read is the state of every event fed."""
        self._apply_gates(slot)
        self._apply_sample(slot)
        slot.state = tick(slot.state, slot.epoch)
        return slot.state

    def state(self) -> ReplayState:
        last_epoch: Mapping[str, Json] = self.run.last_epoch
        if self.last_epoch_raw is not None:
            data = self.load(self.last_epoch_raw)
            last_epoch = data if isinstance(data, dict) else {}
        run = replace(
            self.run,
            caches=dict(self.caches),
            epoch=self.run_epoch,
            events=self.events,
            position=self.position,
            last_epoch=last_epoch,
        )
        return ReplayState(
            {s.slot_id: s for s in (self._slot_state(d) for d in self.slots.values())},
            run,
        )


__all__ = ["GATE_BATCH", "Fold"]
