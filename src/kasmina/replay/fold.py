"""The fold: a run's events, in position order, into the state of every slot.

One pass, constant memory (a few fields per slot and per stream). Stage moves
are checked against `kasmina.stages` directly, the same table the live
`transitions` machine is built from, without a trigger call per event.

The fold knows what the log does not spell out because a slot's state is a
function of its recorded epochs: `SeedSlot.step_epoch` ticks once per epoch
that passed, so between two events the fold replays the ticks (epochs in
stage, the alpha ramp) from the epoch numbers alone. Telemetry samples, the
bulk of a run, are kept as raw text and decoded only for the slot's latest
one when the state is read: the fold reads only what it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from kasmina.alpha import (
    DEFAULT_BLENDING_TOTAL_STEPS,
    DEFAULT_STEEPNESS,
    AlphaController,
    AlphaCurve,
    AlphaMode,
)
from kasmina.canonical import Json
from kasmina.errors import ReplayError, UnverifiedRun
from kasmina.events import EVENT_TYPES, upcast
from kasmina.ledger.store import Row, Store
from kasmina.ledger.verify import ChainChecker
from kasmina.replay.state import (
    CacheStats,
    ControllerState,
    GateRecord,
    ReplayState,
    RunState,
    SeedMetricsState,
    SlotState,
    real,
)
from kasmina.stages import SeedStage, is_legal

_SLOT_PREFIX = "slot/"
_DORMANT = SeedStage.DORMANT
_BLENDING = SeedStage.BLENDING
_CURRENT_VERSION = {name: cls.schema_version for name, cls in EVENT_TYPES.items()}
#: Undecoded gate verdicts kept per slot before they are folded (bounds memory).
GATE_BATCH = 64


class _Slot:
    """The mutable mirror of `SlotState` that the fold updates in place."""

    __slots__ = (
        "blend_curve",
        "blend_steps",
        "blend_target",
        "blueprint_id",
        "controller",
        "epoch",
        "epochs_in_stage",
        "epochs_total",
        "fossil_digest",
        "gate_rows",
        "gates",
        "germinating",
        "init_seed",
        "metrics",
        "outcome",
        "pending_prune",
        "sample",
        "seed_id",
        "slot_id",
        "stage",
    )

    def __init__(self, state: SlotState) -> None:
        self.slot_id = state.slot_id
        self.stage = state.stage
        self.epoch = state.epoch
        self.seed_id = state.seed_id
        self.blueprint_id = state.blueprint_id
        self.init_seed = state.init_seed
        self.blend_target = state.blend_target
        self.blend_steps = state.blend_steps
        self.blend_curve = state.blend_curve
        self.controller = state.controller.controller()
        self.epochs_in_stage = state.epochs_in_stage
        self.epochs_total = state.epochs_total
        self.pending_prune = state.pending_prune
        #: Baselines and the last sample, as a SeedMetricsState (samples decoded lazily).
        self.metrics = state.metrics
        self.sample: object = None
        self.gates: dict[str, GateRecord] = {g.gate: g for g in state.gates}
        #: Gate verdicts not yet decoded: most belong to seeds that end before
        #: the state is read, and are then dropped undecoded.
        self.gate_rows: list[Row] = []
        self.fossil_digest = state.fossil_digest
        self.outcome = state.outcome
        self.germinating = False

    def clear_seed(self) -> None:
        """What `SeedSlot._clear_seed_state` forgets."""
        self.seed_id = self.blueprint_id = self.init_seed = None
        self.blend_target, self.blend_steps, self.blend_curve = (
            1.0,
            DEFAULT_BLENDING_TOTAL_STEPS,
            "LINEAR",
        )
        self.controller = AlphaController()
        self.epochs_in_stage = self.epochs_total = 0
        self.pending_prune = None
        self.metrics = SeedMetricsState()
        self.sample = None
        self.gates = {}
        self.gate_rows = []
        self.fossil_digest = None

    def tick(self, epoch: int) -> None:
        """The ticks of `SeedSlot.step_epoch` for the epochs since the last one."""
        ticks = epoch - self.epoch
        self.epoch = epoch
        stage = self.stage
        if stage is _DORMANT:
            return
        self.epochs_in_stage += ticks
        self.epochs_total += ticks
        if stage is _BLENDING:
            step = self.controller.step
            for _ in range(ticks):
                step()


def _stage(value: object) -> SeedStage:
    return SeedStage[str(value)]


class Folder:
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
        germinating: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.load: Callable[[object], Json] = store.payload_value
        self.checker = None if trust else (checker or ChainChecker(store, run_id))
        run = start.run if start is not None else RunState(run_id)
        self.run = run
        self.caches: dict[str, CacheStats] = dict(run.caches)
        self.slots: dict[str, _Slot] = {}
        if start is not None:
            for slot_id, state in start.slots.items():
                self.slots[_SLOT_PREFIX + slot_id] = _Slot(state)
        for slot_id in germinating:
            self.slots[_SLOT_PREFIX + slot_id].germinating = True
        self.events = run.events
        self.position = run.position
        self.last_hash = ""
        self.max_epoch = max_epoch
        self.last_epoch_raw: object = None
        self.run_epoch = run.epoch
        self._handlers: dict[str, Callable[[_Slot, Any, Row], None]] = {
            "SeedGerminated": self._germinated,
            "SeedStageChanged": self._stage_changed,
            "AlphaTargetSet": self._alpha_target,
            "SeedFossilized": self._fossilized,
            "SeedPruned": self._pruned,
            "MemoryReleased": self._memory_released,
        }

    # -- feeding -------------------------------------------------------------

    def fail(self, row: Row, message: str) -> ReplayError:
        return ReplayError(f"{row[5]} in stream {row[3]}: {message}", int(row[0]))  # type: ignore[call-overload]

    def feed(self, row: Row) -> None:
        checker = self.checker
        if checker is not None and not checker.check(row):
            fault = checker.faults[-1]
            raise UnverifiedRun(
                f"{fault.kind} in stream {fault.stream_id}: {fault.detail}; the run's hash "
                "chain does not verify (pass --trust to fold it anyway)",
                int(row[0]),  # type: ignore[call-overload]
            )
        self.events += 1
        self.position = row[0]  # type: ignore[assignment]
        self.last_hash = row[12]  # type: ignore[assignment]
        stream: str = row[3]  # type: ignore[assignment]
        epoch: int | None = row[7]  # type: ignore[assignment]
        event_type: str = row[5]  # type: ignore[assignment]
        if epoch is not None and (self.max_epoch is None or epoch > self.max_epoch):
            self.max_epoch = epoch
        slot = self.slots.get(stream)
        if slot is None and stream.startswith(_SLOT_PREFIX):
            slot = self.slots[stream] = _Slot(SlotState(stream[len(_SLOT_PREFIX) :]))
        if slot is not None:
            if epoch is not None and epoch != slot.epoch:
                if epoch < slot.epoch:
                    raise self.fail(
                        row,
                        f"epoch {epoch} after epoch {slot.epoch} of the same slot: out of order",
                    )
                slot.tick(epoch)
            if event_type == "SeedGateEvaluated":
                slot.gate_rows.append(row)
                if len(slot.gate_rows) >= GATE_BATCH:
                    self._fold_gates(slot)
                return
            if event_type == "SeedTelemetrySampled":
                slot.sample = row[9]
                if slot.metrics.initial_accuracy is None:
                    accuracy = real(self._payload(row).get("accuracy"))
                    if accuracy is not None:
                        slot.metrics = replace(slot.metrics, initial_accuracy=accuracy)
                return
            handler = self._handlers.get(event_type)
            if handler is None:
                if event_type not in _CURRENT_VERSION:
                    raise self.fail(row, "unknown event type")
                return
            try:
                handler(slot, self._payload(row), row)
            except (KeyError, TypeError, ValueError) as exc:
                raise self.fail(row, f"malformed payload ({exc!r})") from None
            return
        self._run_event(event_type, row)

    def _payload(self, row: Row) -> dict[str, Any]:
        data = self.load(row[9])
        if not isinstance(data, dict):
            raise self.fail(row, "payload is not an object")
        event_type: str = row[5]  # type: ignore[assignment]
        version: int = row[6]  # type: ignore[assignment]
        if _CURRENT_VERSION.get(event_type) != version:
            data = upcast(event_type, version, data)
        return data

    def _run_event(self, event_type: str, row: Row) -> None:
        if event_type == "SeedTelemetrySampled":
            return
        if event_type == "EpochCompleted":
            self.last_epoch_raw = row[9]
            self.run_epoch = row[7]  # type: ignore[assignment]
            return
        if event_type not in _CURRENT_VERSION:
            raise self.fail(row, "unknown event type")
        try:
            data = self._payload(row)
            if event_type == "CacheEvicted":
                name = str(data["cache"])
                old = self.caches.get(name, CacheStats())
                reason = str(data["reason"])
                by_reason = dict(old.by_reason)
                by_reason[reason] = by_reason.get(reason, 0) + int(data["evicted"])
                self.caches[name] = CacheStats(
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
                self._memory_released(None, data, row)
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

    # -- slot events -----------------------------------------------------------

    def _germinated(self, slot: _Slot, data: dict[str, Any], row: Row) -> None:
        if slot.stage is not _DORMANT:
            raise self.fail(row, f"a seed germinated in slot {slot.slot_id} at {slot.stage.name}")
        slot.clear_seed()
        slot.seed_id = row[8]  # type: ignore[assignment]
        slot.blueprint_id = str(data["blueprint_id"])
        slot.init_seed = data.get("init_seed")
        slot.blend_target = real(data.get("alpha_target", 1.0)) or 0.0
        slot.blend_steps = int(data.get("blend_tempo_epochs", DEFAULT_BLENDING_TOTAL_STEPS))
        slot.blend_curve = str(data.get("alpha_curve", "LINEAR"))
        slot.outcome = None
        slot.germinating = True

    def _stage_changed(self, slot: _Slot, data: dict[str, Any], row: Row) -> None:
        source, dest = _stage(data["from_stage"]), _stage(data["to_stage"])
        if source is not slot.stage:
            raise self.fail(
                row,
                f"{source.name} -> {dest.name} in slot {slot.slot_id}, but the log has "
                f"the slot at {slot.stage.name}: out of order",
            )
        if not is_legal(source, dest):
            raise self.fail(
                row,
                f"illegal move {source.name} -> {dest.name} in slot {slot.slot_id} "
                "(not in the transition table)",
            )
        if dest is SeedStage.GERMINATED and not slot.germinating:
            raise self.fail(row, f"slot {slot.slot_id} germinated without a SeedGerminated event")
        slot.germinating = False
        slot.stage = dest
        slot.epochs_in_stage = 0
        accuracy = real(data.get("accuracy"))
        if dest is SeedStage.TRAINING:
            slot.metrics = replace(slot.metrics, training_start_accuracy=accuracy)
        elif dest is _BLENDING:
            if slot.metrics.blending_start_accuracy is None:
                slot.metrics = replace(slot.metrics, blending_start_accuracy=accuracy)
        elif dest is SeedStage.HOLDING:
            slot.controller = AlphaController(
                alpha=1.0, alpha_start=1.0, alpha_target=1.0, curve=slot.controller.curve
            )
        elif dest is SeedStage.PRUNED:
            slot.controller = AlphaController()
            slot.pending_prune = None
            slot.metrics = replace(self._metrics(slot), accuracy=accuracy)
            slot.sample = None
        elif dest is _DORMANT:
            slot.clear_seed()

    def _fold_gates(self, slot: _Slot) -> None:
        for row in slot.gate_rows:
            try:
                self._gate(slot, self._payload(row), row)
            except (KeyError, TypeError, ValueError) as exc:
                raise self.fail(row, f"malformed payload ({exc!r})") from None
        slot.gate_rows = []

    def _gate(self, slot: _Slot, data: dict[str, Any], row: Row) -> None:
        gate = str(data["gate"])
        passed = bool(data["passed"])
        old = slot.gates.get(gate)
        slot.gates[gate] = GateRecord(
            gate=gate,
            target_stage=str(data["target_stage"]),
            attempts=(old.attempts if old else 0) + 1,
            passes=(old.passes if old else 0) + passed,
            last_passed=passed,
            last_score=real(data["score"]) or 0.0,
            last_epoch=row[7],  # type: ignore[arg-type]
        )

    def _alpha_target(self, slot: _Slot, data: dict[str, Any], row: Row) -> None:
        if slot.stage not in (_BLENDING, SeedStage.HOLDING):
            raise self.fail(row, f"an alpha target for slot {slot.slot_id} at {slot.stage.name}")
        mode = AlphaMode[str(data["mode"])]
        start = real(data["alpha_start"]) or 0.0
        target = real(data["target"]) or 0.0
        slot.controller = AlphaController(
            alpha=start if mode is not AlphaMode.HOLD else target,
            alpha_start=start,
            alpha_target=target,
            mode=mode,
            curve=AlphaCurve[str(data["curve"])],
            steepness=real(data.get("steepness", DEFAULT_STEEPNESS)) or 0.0,
            steps_total=int(data["steps"]),
            steps_done=0,
        )
        if data.get("prune_ramp"):
            reason = data.get("reason") or "scheduled_prune"
            slot.pending_prune = (str(reason), str(data.get("initiator", "policy")))

    def _fossilized(self, slot: _Slot, data: dict[str, Any], row: Row) -> None:
        slot.fossil_digest = data.get("param_digest")
        slot.outcome = "fossilized"

    def _pruned(self, slot: _Slot, data: dict[str, Any], row: Row) -> None:
        slot.outcome = f"pruned: {data['reason']}"
        slot.metrics = replace(self._metrics(slot), counterfactual=real(data.get("counterfactual")))
        slot.sample = None

    def _memory_released(self, slot: _Slot | None, data: dict[str, Any], row: Row) -> None:
        self.run = replace(self.run, blocks_released=self.run.blocks_released + int(data["blocks"]))

    # -- reading the state -----------------------------------------------------

    def tick_all(self, epoch: int) -> None:
        for slot in self.slots.values():
            if slot.epoch < epoch:
                slot.tick(epoch)
        self.run_epoch = epoch

    def _metrics(self, slot: _Slot) -> SeedMetricsState:
        """The recorded baselines with the slot's latest sample decoded on top."""
        metrics = slot.metrics
        if slot.sample is not None:
            data = self.load(slot.sample)
            if isinstance(data, dict):
                metrics = replace(
                    metrics,
                    accuracy=real(data.get("accuracy")),
                    counterfactual=real(data.get("counterfactual")),
                    grad_ratio=real(data.get("grad_norm")),
                    grad_health=real(data.get("grad_health")),
                    has_vanishing=data.get("has_vanishing"),  # type: ignore[arg-type]
                    has_exploding=data.get("has_exploding"),  # type: ignore[arg-type]
                )
        return metrics

    def _slot_state(self, slot: _Slot) -> SlotState:
        self._fold_gates(slot)
        metrics = self._metrics(slot)
        return SlotState(
            slot_id=slot.slot_id,
            stage=slot.stage,
            epoch=slot.epoch,
            seed_id=slot.seed_id,
            blueprint_id=slot.blueprint_id,
            init_seed=slot.init_seed,
            blend_target=slot.blend_target,
            blend_steps=slot.blend_steps,
            blend_curve=slot.blend_curve,
            controller=ControllerState.of(slot.controller),
            epochs_in_stage=slot.epochs_in_stage,
            epochs_total=slot.epochs_total,
            pending_prune=slot.pending_prune,
            metrics=metrics,
            gates=tuple(sorted(slot.gates.values(), key=lambda g: g.gate)),
            fossil_digest=slot.fossil_digest,
            outcome=slot.outcome,
        )

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
            {s.slot_id: self._slot_state(s) for s in self.slots.values()},
            run,
        )

    def germinating(self) -> list[str]:
        return sorted(s.slot_id for s in self.slots.values() if s.germinating)


__all__ = ["Folder"]
