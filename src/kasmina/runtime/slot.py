"""SeedSlot: one injection point of a host network, and the seed living in it.

The slot is the runtime face of the lifecycle: it owns the seed module, the
alpha controller and the seed's metrics, checks gates, and makes every stage
move through `kasmina.lifecycle.LIFECYCLE`, the single place moves are made
and recorded. Side effects of a move (installing a seed, starting a ramp,
dropping a pruned module) run only after the move and its record succeeded.
"""

from __future__ import annotations

import warnings
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import torch
from torch import nn

from kasmina.alpha import (
    DEFAULT_BLENDING_TOTAL_STEPS,
    AlphaController,
    AlphaCurve,
    AlphaMode,
    AlphaScheduleError,
)
from kasmina.errors import InvalidTransition, SlotError
from kasmina.events import AlphaMode as AlphaModeName
from kasmina.events import (
    AlphaTargetSet,
    Initiator,
    MemoryReleased,
    Payload,
    PolicyDecided,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedPruned,
    Trigger,
)
from kasmina.gates import GateResult, QualityGates, SeedFacts
from kasmina.lifecycle import LIFECYCLE, MoveContext, Staged
from kasmina.recording import Recorder
from kasmina.runtime.blocks import BlockPool
from kasmina.runtime.blueprints import Topology, build_blueprint, param_count, param_digest
from kasmina.runtime.distributed import agree
from kasmina.runtime.isolation import GradientMonitor
from kasmina.slot_state import (
    SeedMetricsState,
    SlotState,
    dormant,
    evolve_all,
    fact,
    from_legacy_checkpoint,
    measured,
    tick,
)
from kasmina.stages import SeedStage, is_active, is_failure, is_legal, next_stage

DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE = 5
_ALPHA_CACHE_LIMIT = 16


#: The probe's shape per topology, until the slot has seen its host's features.
_DEFAULT_PROBE: dict[str, Callable[[int], tuple[int, ...]]] = {
    "cnn": lambda c: (1, c, 32, 32),
    "transformer": lambda c: (2, 8, c),
    "tabular": lambda c: (2, c),
}


def _probe(topology: Topology, channels: int, seen: torch.Size | None) -> torch.Tensor:
    """A fixed random input shaped like the host's features (as last seen), batch of 2."""
    shape = (2, *seen[1:]) if seen is not None else _DEFAULT_PROBE[topology](channels)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def default_init_seed(seed_id: str) -> int:
    """A stable init seed for a seed id, so a run without explicit seeds still replays."""
    return zlib.crc32(seed_id.encode("utf-8"))


#: Stages in which the slot holds a seed module (a checkpoint rebuilds it there).
_LIVE_SEED_STAGES = (
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
)


class PendingDecision:
    """A policy's decision on its way into a slot's next batch (see `SeedSlot.deciding`)."""

    __slots__ = ("payload", "recorded")

    def __init__(self, payload: PolicyDecided) -> None:
        self.payload = payload
        self.recorded = False


#: Slots (by object id) whose forwards in this context see alpha 0: `SeedSlot.silenced`.
_SILENCED: ContextVar[frozenset[int]] = ContextVar("kasmina_silenced", default=frozenset())


#: The version of the checkpoint form `get_extra_state` writes (1 had no such key).
CHECKPOINT_FORMAT = 2


class SeedSlot(nn.Module):
    """A slot: identity while empty, a gated and blended seed once germinated.

    Its lifecycle state is `state`, a `kasmina.slot_state.SlotState`. Every
    command builds its events, records them, and only then sets ``state`` to
    `evolve` over exactly those payloads, so the live state is by
    construction the fold of what was recorded, and a refused record changes
    nothing. What is torch's stays on the module: the seed, the cached alpha
    tensors, the gradient monitor, the parameters frozen during a blend-out.
    """

    def __init__(
        self,
        slot_id: str,
        channels: int,
        *,
        topology: Topology = "cnn",
        recorder: Recorder | None = None,
        gates: QualityGates | None = None,
        embargo_epochs: int = DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE,
        auto_advance: bool | None = None,
        env_id: int = -1,
        pool: BlockPool | None = None,
        blocks_per_seed: int = 1,
    ) -> None:
        super().__init__()
        self.slot_id = slot_id
        self.channels = channels
        self.topology: Topology = topology
        self.recorder = recorder
        self.gates = gates or QualityGates()
        self.embargo_epochs = embargo_epochs
        self.auto_advance = bool(auto_advance)
        #: What the constructor was given, so `adopt` fills in only the rest.
        self._given = (recorder is not None, gates is not None, auto_advance is not None)
        self.env_id = env_id
        self.pool = pool
        self.blocks_per_seed = blocks_per_seed
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        self.seed: nn.Module | None = None
        self.state: SlotState = dormant(slot_id)
        self.gradients = GradientMonitor()
        self._staged = Staged(slot_id)
        LIFECYCLE.join(self._staged)
        weakref.finalize(self, LIFECYCLE.leave, self._staged)
        self._forced: float | None = None
        self._warned_distributed = False
        self._alpha_cache: dict[tuple[float, torch.device, torch.dtype], torch.Tensor] = {}
        self._frozen: list[nn.Parameter] = []
        self._host_shape: torch.Size | None = None
        self._decision: PendingDecision | None = None

    def adopt(
        self,
        *,
        recorder: Recorder | None = None,
        gates: QualityGates | None = None,
        auto_advance: bool | None = None,
    ) -> None:
        """Take a manager's recorder, gates and auto-advance where the constructor had none.

        So a model's own constructor can build its slots without knowing the
        ledger (`kasmina.runtime.manager.SeedManager` calls this).
        """
        has_recorder, has_gates, has_advance = self._given
        if recorder is not None and not has_recorder:
            self.recorder = recorder
        if gates is not None and not has_gates:
            self.gates = gates
        if auto_advance is not None and not has_advance:
            self.auto_advance = auto_advance

    # -- reading the state ----------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return self.get_buffer("_anchor").device

    @property
    def stage(self) -> SeedStage:
        return self.state.stage

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def seed_id(self) -> str | None:
        return self.state.seed_id

    @property
    def blueprint_id(self) -> str | None:
        return self.state.blueprint_id

    @property
    def init_seed(self) -> int | None:
        return self.state.init_seed

    @property
    def metrics(self) -> SeedMetricsState:
        return self.state.metrics

    @property
    def controller(self) -> AlphaController:
        """The alpha ramp, as a copy: changing it changes nothing (use the ramp commands)."""
        return self.state.controller.controller()

    @property
    def alpha(self) -> float:
        return self._forced if self._forced is not None else self.state.controller.alpha

    @property
    def isolate_gradients(self) -> bool:
        """Whether the seed's input is detached: in TRAINING, and while blended on a CNN."""
        stage = self.state.stage
        if stage is SeedStage.TRAINING:
            return True
        return stage in (SeedStage.BLENDING, SeedStage.HOLDING) and self.topology == "cnn"

    def facts(self) -> SeedFacts:
        st = self.state
        m = st.metrics
        c = st.controller
        return SeedFacts(
            stage=st.stage,
            seed_id=st.seed_id,
            blueprint_id=st.blueprint_id,
            epochs_in_stage=st.epochs_in_stage,
            improvement_since_training=m.improvement_since_training,
            grad_ratio=m.grad_ratio,
            grad_health=m.grad_health,
            has_exploding=m.has_exploding,
            alpha=c.alpha,
            alpha_target=c.alpha_target,
            alpha_mode=c.mode,
            counterfactual=m.counterfactual,
            healthy=not m.has_exploding,
        )

    def _context(self, seed_id: str | None = None) -> MoveContext:
        st = self.state
        m = st.metrics
        return MoveContext(
            alpha=self.alpha,
            accuracy=m.accuracy,
            accuracy_delta=m.accuracy_delta,
            epochs_in_stage=st.epochs_in_stage,
            grad_ratio=m.grad_ratio or 0.0,
            has_vanishing=bool(m.has_vanishing),
            has_exploding=bool(m.has_exploding),
            alpha_curve=st.controller.curve,
            epoch=st.epoch,
            seed_id=seed_id if seed_id is not None else st.seed_id,
            env_id=self.env_id,
            decision_id=self._decision.payload.decision_id if self._decision else None,
        )

    # -- recording, then evolving -----------------------------------------------

    def _evolve_over(self, payloads: Sequence[Payload], seed_id: str | None) -> None:
        """Set the state to what the recorded `payloads` make of it."""
        epoch = self.state.epoch
        self.state = evolve_all(
            self.state, [fact(p, epoch=epoch, seed_id=seed_id) for p in payloads]
        )

    def _emit(self, payloads: Sequence[Payload]) -> None:
        seed_id = self.state.seed_id
        payloads = self._decided(payloads)
        if self.recorder is not None:
            self.recorder.emit_many(
                payloads, stream_id=f"slot/{self.slot_id}", epoch=self.state.epoch, seed_id=seed_id
            )
        self._mark_decided()
        self._evolve_over(payloads, seed_id)

    def _stamped(self, payloads: Sequence[Payload]) -> Sequence[Payload]:
        """`payloads` as effects of the pending decision: each carries its id."""
        pending = self._decision
        if pending is None:
            return payloads
        stamp = {"decision_id": pending.payload.decision_id}
        return [
            p.model_copy(update=stamp) if getattr(p, "decision_id", "") is None else p
            for p in payloads
        ]

    def _decided(self, payloads: Sequence[Payload]) -> Sequence[Payload]:
        """`payloads` stamped, headed by the decision itself if it is not recorded yet."""
        pending = self._decision
        stamped = self._stamped(payloads)
        if pending is None or pending.recorded:
            return stamped
        return [pending.payload, *stamped]

    def _mark_decided(self) -> None:
        if self._decision is not None:
            self._decision.recorded = True

    @contextmanager
    def deciding(self, decision: PolicyDecided) -> Iterator[PendingDecision]:
        """Record `decision` at the head of the next batch made in the block, as its cause.

        Every event the block records carries the decision's id. If the block
        records nothing (the command was refused before any record), the
        yielded `PendingDecision` says so, and the caller records the refusal.
        """
        if decision.slot_id != self.slot_id:
            raise SlotError(f"decision for slot {decision.slot_id!r} given to {self.slot_id!r}")
        if self._decision is not None:
            raise SlotError(f"decisions cannot be nested (slot {self.slot_id!r})")
        pending = PendingDecision(decision)
        self._decision = pending
        try:
            yield pending
        finally:
            self._decision = None

    def _move(
        self,
        to: SeedStage,
        trigger: Trigger,
        *,
        before: Sequence[Payload] = (),
        after: Sequence[Payload] = (),
        seed_id: str | None = None,
    ) -> None:
        """Move through the shared machine (the one emission site), then evolve over the batch."""
        context = self._context(seed_id)
        before, after = self._decided(before), self._stamped(after)
        change = LIFECYCLE.move(
            self._staged,
            to,
            trigger=trigger,
            context=context,
            emitter=self.recorder,
            before=before,
            after=after,
        )
        self._mark_decided()
        self._evolve_over((*before, change, *after), context.seed_id)
        self._sync_freeze()

    # -- commands -----------------------------------------------------------

    def germinate(
        self,
        blueprint_id: str,
        seed_id: str,
        *,
        init_seed: int | None = None,
        alpha_target: float = 1.0,
        tempo: int = DEFAULT_BLENDING_TOTAL_STEPS,
        curve: AlphaCurve = AlphaCurve.LINEAR,
    ) -> None:
        """DORMANT -> GERMINATED: build the seed, check its shape and G0, then move."""
        if self.stage is not SeedStage.DORMANT:
            raise InvalidTransition(self.slot_id, self.stage.name, SeedStage.GERMINATED.name)
        if not 0.0 < alpha_target <= 1.0:
            raise SlotError(f"initial alpha target must lie in (0, 1], got {alpha_target}")
        seed_value = default_init_seed(seed_id) if init_seed is None else init_seed
        module = build_blueprint(blueprint_id, self.channels, self.topology, seed_value)
        probe = _probe(self.topology, self.channels, self._host_shape)
        with torch.no_grad():
            module.eval()
            try:
                out = module(probe)
            except Exception as exc:  # the user's blueprint may raise anything
                raise SlotError(
                    f"blueprint {blueprint_id!r} cannot run on features of shape "
                    f"{tuple(probe.shape)} in slot {self.slot_id!r} (topology "
                    f"{self.topology!r}): {_first_line(exc)}"
                ) from None
            finally:
                module.train()
        if out.shape != probe.shape:
            raise SlotError(
                f"blueprint {blueprint_id!r} changes the shape {tuple(probe.shape)} to "
                f"{tuple(out.shape)} in slot {self.slot_id!r}"
            )
        verdict = self.gates.check(
            SeedStage.GERMINATED,
            SeedFacts(stage=self.stage, seed_id=seed_id, blueprint_id=blueprint_id),
        )
        if not verdict.passed:
            raise SlotError(f"germination refused in slot {self.slot_id!r}: {verdict.message}")
        module.to(device=self._device)
        germinated = SeedGerminated(
            slot_id=self.slot_id,
            env_id=self.env_id,
            blueprint_id=blueprint_id,
            params=param_count(module),
            alpha=0.0,
            blend_tempo_epochs=tempo,
            alpha_curve=curve.name,
            init_seed=seed_value,
            alpha_target=alpha_target,
        )
        if self.pool is not None:  # all or nothing, before anything is recorded
            self.pool.allocate(self.blocks_per_seed, self.slot_id, seed_id)
        try:
            self._move(SeedStage.GERMINATED, "command", before=[germinated], seed_id=seed_id)
        except BaseException:
            if self.pool is not None:
                self.pool.free_seed(seed_id)
            raise
        self.gradients.stop()
        self.seed = module

    def advance_stage(
        self, target: SeedStage | None = None, *, trigger: Trigger = "command"
    ) -> GateResult:
        """Check the target's gate and, if it passes, move; every attempt is recorded.

        Under `torch.distributed` the verdict is rank 0's, broadcast to every
        rank (`kasmina.runtime.distributed.agree`): a collective, so every rank
        advances its replica of the slot at the same point of the loop.
        """
        stage = self.stage
        goal = target if target is not None else next_stage(stage)
        if goal is None:
            raise InvalidTransition(self.slot_id, stage.name, "(nothing to advance to)")
        if is_failure(goal):
            raise SlotError(f"advance_stage cannot move to {goal.name}; use prune()")
        if not is_legal(stage, goal):
            raise InvalidTransition(self.slot_id, stage.name, goal.name)
        if goal is SeedStage.GERMINATED:
            raise SlotError("use germinate() to plant a seed")
        result = agree(self.gates.check(goal, self.facts()))
        verdict = SeedGateEvaluated(
            slot_id=self.slot_id,
            env_id=self.env_id,
            gate=result.gate,  # type: ignore[arg-type]
            passed=result.passed,
            score=result.score,
            target_stage=goal,
            checks_passed=list(result.checks_passed),
            checks_failed=list(result.checks_failed),
            message=result.message,
            trigger=trigger,
        )
        if not result.passed:
            pending = self._decision
            if pending is not None and not pending.recorded:
                pending.payload = pending.payload.model_copy(
                    update={"accepted": False, "refusal": result.message}
                )
            self._emit([verdict])
            return result
        after: list[Payload] = []
        if goal is SeedStage.BLENDING:
            st = self.state
            ramp = st.controller.controller()
            ramp.retarget(st.blend_target, st.blend_steps, AlphaCurve[st.blend_curve])
            after.append(self._target_payload(ramp, initiator="auto", prune_ramp=False))
        elif goal is SeedStage.FOSSILIZED:
            after.append(self._fossilized_payload())
        self._move(goal, trigger, before=[verdict], after=after)
        return result

    def _fossilized_payload(self) -> SeedFossilized:
        st = self.state
        assert self.seed is not None and st.blueprint_id is not None
        m = st.metrics
        return SeedFossilized(
            slot_id=self.slot_id,
            env_id=self.env_id,
            blueprint_id=st.blueprint_id,
            improvement=m.accuracy_delta,
            params_added=param_count(self.seed),
            alpha=self.alpha,
            epochs_total=st.epochs_total,
            counterfactual=m.counterfactual,
            blending_delta=m.blending_delta,
            param_digest=param_digest(self.seed),
        )

    def _target_payload(
        self,
        ramp: AlphaController,
        *,
        initiator: Initiator,
        prune_ramp: bool,
        reason: str | None = None,
    ) -> AlphaTargetSet:
        return AlphaTargetSet(
            slot_id=self.slot_id,
            alpha_start=ramp.alpha_start,
            target=ramp.alpha_target,
            steps=ramp.steps_total,
            curve=ramp.curve.name,
            steepness=ramp.steepness,
            mode=cast(AlphaModeName, ramp.mode.name),
            initiator=initiator,
            prune_ramp=prune_ramp,
            reason=reason,
        )

    def prune(self, reason: str = "policy", initiator: Initiator = "policy") -> bool:
        """Remove the seed at once. Refused (False) for a fossilized seed."""
        return self._prune(reason, initiator, scheduled=False)

    def _prune(self, reason: str, initiator: Initiator, *, scheduled: bool) -> bool:
        st = self.state
        stage = st.stage
        if stage is SeedStage.FOSSILIZED:
            return False
        if not is_legal(stage, SeedStage.PRUNED):
            raise InvalidTransition(self.slot_id, stage.name, SeedStage.PRUNED.name)
        m = st.metrics
        pruned = SeedPruned(
            slot_id=self.slot_id,
            env_id=self.env_id,
            reason=reason,
            blueprint_id=st.blueprint_id,
            improvement=m.accuracy_delta,
            auto_pruned=initiator in ("auto", "governor"),
            epochs_total=st.epochs_total,
            counterfactual=m.counterfactual,
            blending_delta=m.blending_delta,
            initiator=initiator,
            scheduled=scheduled,
        )
        after: list[Payload] = [pruned]
        seed_id = st.seed_id
        if self.pool is not None and seed_id is not None:
            held = sum(len(a.blocks) for a in self.pool.allocations(seed_id))
            if held:
                after.append(MemoryReleased(slot_id=self.slot_id, blocks=held))
        self._move(SeedStage.PRUNED, "prune", after=after)
        # The module goes now; the record (ids, metrics) stays through the cooldown.
        if self.pool is not None and seed_id is not None:
            self.pool.free_seed(seed_id)
        self.seed = None
        self.gradients.stop()
        return True

    # -- alpha ramps ------------------------------------------------------------

    def schedule_prune(
        self,
        steps: int = 3,
        *,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        steepness: float = 12.0,
        reason: str = "scheduled_prune",
        initiator: Initiator = "policy",
    ) -> bool:
        """Ramp alpha down to 0, then prune; at once if alpha is 0 or steps <= 0."""
        stage = self.stage
        if (
            self.state.controller.alpha == 0.0
            or steps <= 0
            or stage in (SeedStage.GERMINATED, SeedStage.TRAINING)
        ):
            return self.prune(reason, initiator)
        if stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
            raise InvalidTransition(self.slot_id, stage.name, SeedStage.PRUNED.name)
        ramp = self._retargeted(0.0, steps, curve, steepness)
        self._retarget(
            self._target_payload(ramp, initiator=initiator, prune_ramp=True, reason=reason)
        )
        return True

    def set_alpha_target(
        self,
        target: float,
        steps: int = DEFAULT_BLENDING_TOTAL_STEPS,
        *,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        steepness: float = 12.0,
        initiator: Initiator = "policy",
    ) -> None:
        """A new alpha target from BLENDING or HOLDING (use schedule_prune for 0)."""
        if self.stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
            raise SlotError(f"alpha targets are set in BLENDING or HOLDING, not {self.stage.name}")
        if not 0.0 < target <= 1.0:
            raise SlotError(f"alpha target must lie in (0, 1], got {target}")
        ramp = self._retargeted(target, steps, curve, steepness)
        self._retarget(self._target_payload(ramp, initiator=initiator, prune_ramp=False))

    def _retargeted(
        self, target: float, steps: int, curve: AlphaCurve, steepness: float
    ) -> AlphaController:
        """A new ramp from the resting one; a ramp cannot change course midway."""
        ramp = self.state.controller.controller()
        if ramp.mode is not AlphaMode.HOLD:
            raise AlphaScheduleError(
                f"slot {self.slot_id!r} is ramping {ramp.mode.name}; "
                "wait until alpha reaches its target"
            )
        ramp.retarget(target, steps, curve, steepness)
        return ramp

    def _retarget(self, payload: AlphaTargetSet) -> None:
        """HOLDING means full strength, so any target below it first goes back to BLENDING."""
        if self.stage is SeedStage.HOLDING and payload.target < 1.0:
            self._move(SeedStage.BLENDING, "command", after=[payload])
        else:
            self._emit([payload])
            self._sync_freeze()

    # -- measurements -----------------------------------------------------------

    def measure(self, **values: float | bool | None) -> None:
        """Take in numbers measured outside the slot (accuracy, gradient health, ...).

        The gates read them. They are not events: they reach the log in the
        seed's next telemetry sample (`kasmina.runtime.telemetry`), so a slot
        without a seed, which has no samples, refuses them.
        """
        if self.seed is None:
            raise SlotError(f"slot {self.slot_id!r} has no seed to measure")
        self.state = measured(self.state, **values)

    def watch_gradients(self, host_parameters: Iterable[nn.Parameter]) -> None:
        """Measure seed/host gradient norms after each backward (for G2)."""
        if self.seed is None:
            raise SlotError(f"slot {self.slot_id!r} has no seed to watch")
        self.gradients.watch(host_parameters)

    def capture_gradients(self) -> None:
        """Fold the last backward's gradients into the seed's metrics (EMA of the ratio)."""
        if self.seed is not None:
            self.gradients.record(self.seed)
            self.settle_gradients()

    def settle_gradients(self) -> None:
        """Fold the backwards recorded by `gradients.record` into the seed's metrics."""
        if self.seed is None:
            return
        values = self.gradients.drain(self.seed, self.state.metrics.grad_ratio)
        if values is not None:
            self.state = measured(self.state, **values)

    # -- the epoch tick -----------------------------------------------------

    def step_epoch(
        self,
        *,
        accuracy: float | None = None,
        counterfactual: float | None = None,
        epoch: int | None = None,
    ) -> None:
        """Advance the slot's clock to `epoch` (default: the next one) and run its schedule.

        The number of ticks is the number of epochs that passed, so the slot's
        state is a function of the recorded epoch numbers: that is what lets
        `kasmina.replay` fold it back exactly. A step that does not advance
        the epoch only records the metrics.
        """
        before = self.state
        target = before.epoch + 1 if epoch is None else epoch
        if target < before.epoch:
            raise SlotError(
                f"slot {self.slot_id!r} is at epoch {before.epoch}; epoch {target} is in the past"
            )
        ticks = target - before.epoch
        self.state = tick(before, target)
        stage = self.stage
        if stage is SeedStage.DORMANT:
            return
        if self.seed is not None:  # a slot without a seed has nothing to measure
            values: dict[str, float | bool | None] = {}
            if accuracy is not None:
                values["accuracy"] = accuracy
            if counterfactual is not None:
                values["counterfactual"] = counterfactual
            if values:
                self.state = measured(self.state, **values)
        if ticks == 0:
            return
        st = self.state
        if stage is SeedStage.PRUNED:
            self._move(SeedStage.EMBARGOED, "auto")
        elif stage is SeedStage.EMBARGOED:
            if st.epochs_in_stage >= self.embargo_epochs:
                self._move(SeedStage.RESETTING, "auto")
        elif stage is SeedStage.RESETTING:
            self._move(SeedStage.DORMANT, "auto")
        elif stage is SeedStage.BLENDING:
            reached = before.controller.ramping and not st.controller.ramping
            self._sync_freeze()
            if reached and st.pending_prune is not None and st.controller.alpha == 0.0:
                reason, initiator = st.pending_prune
                self._prune(reason, cast(Initiator, initiator), scheduled=True)
            elif (
                self.auto_advance
                and not st.controller.ramping
                and st.controller.alpha_target >= 1.0
            ):
                self.advance_stage(SeedStage.HOLDING, trigger="gate")
        elif self.auto_advance and stage is SeedStage.GERMINATED:
            self.advance_stage(SeedStage.TRAINING, trigger="gate")
        elif (
            self.auto_advance
            and stage is SeedStage.TRAINING
            and st.epochs_in_stage >= self.gates.min_training_epochs
        ):
            self.advance_stage(SeedStage.BLENDING, trigger="gate")

    # -- checkpoints ------------------------------------------------------------

    def get_extra_state(self) -> dict[str, object]:
        """The slot's state as JSON; `state_dict` carries the seed's weights beside it."""
        return {"format": CHECKPOINT_FORMAT, "slot_state": self.state.to_json()}

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore from a checkpoint of either form; a live seed is rebuilt for its weights."""
        if "slot_state" in state:
            restored = SlotState.from_json(state["slot_state"])
        else:
            restored = from_legacy_checkpoint(self.slot_id, state)
        self.restore(restored)  # refuses another slot's state

    def restore(self, state: SlotState) -> None:
        """Put the slot into `state` without recording anything: for checkpoints and replay.

        A live seed is rebuilt from its blueprint and init seed, so its
        weights are those it had at germination until a checkpoint's load on top.
        """
        if state.slot_id != self.slot_id:
            raise SlotError(f"state of slot {state.slot_id!r} given to slot {self.slot_id!r}")
        self._restore_frozen()
        self.gradients.stop()
        self.seed = None
        self.state = state
        if state.stage in _LIVE_SEED_STAGES and state.blueprint_id and state.init_seed is not None:
            self.seed = build_blueprint(
                state.blueprint_id, self.channels, self.topology, state.init_seed
            ).to(device=self._device)
        LIFECYCLE.restore(self._staged, state.stage)
        self._sync_freeze()

    # -- blend-out freeze -----------------------------------------------------

    def _sync_freeze(self) -> None:
        """While alpha ramps DOWN the seed's parameters are frozen, then restored exactly."""
        if self.state.controller.mode == "DOWN" and self.seed is not None:
            if not self._frozen:
                self._frozen = [p for p in self.seed.parameters() if p.requires_grad]
                for p in self._frozen:
                    p.requires_grad_(False)
        else:
            self._restore_frozen()

    def _restore_frozen(self) -> None:
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []

    # -- forward --------------------------------------------------------------

    def _alpha_tensor(self, value: float, like: torch.Tensor) -> torch.Tensor:
        key = (value, like.device, like.dtype)
        cached = self._alpha_cache.get(key)
        if cached is None:
            if len(self._alpha_cache) >= _ALPHA_CACHE_LIMIT:
                self._alpha_cache.clear()
            cached = torch.tensor(value, device=like.device, dtype=like.dtype)
            self._alpha_cache[key] = cached
        return cached

    def forward(
        self, host_features: torch.Tensor, alpha_override: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """lerp(host, seed, alpha); the host features unchanged while no seed is active.

        ``alpha_override`` replaces alpha for this call only and mutates
        nothing, so it is safe across threads and DDP ranks; 0.0 gives exactly
        the host features.
        """
        seed = self.seed
        if seed is None or not is_active(self.stage):
            self._host_shape = host_features.shape  # what the next germination probes with
            return host_features
        if alpha_override is None and _SILENCED.get() and id(self) in _SILENCED.get():
            alpha_override = 0.0
        seed_input = (
            host_features.detach().contiguous() if self.isolate_gradients else host_features
        )
        seed_out: torch.Tensor = seed(seed_input)
        if alpha_override is not None:
            if isinstance(alpha_override, torch.Tensor):
                weight = alpha_override.to(host_features.dtype).clamp(0.0, 1.0)
            else:
                weight = self._alpha_tensor(
                    min(1.0, max(0.0, float(alpha_override))), host_features
                )
            return torch.lerp(host_features, seed_out, weight)
        alpha = self.alpha
        if self.stage is SeedStage.TRAINING and alpha == 0.0 and self._forced is None:
            return host_features + (seed_out - seed_out.detach())
        return torch.lerp(host_features, seed_out, self._alpha_tensor(alpha, host_features))

    @contextmanager
    def silenced(self) -> Iterator[None]:
        """Forwards in this block see alpha 0, as ``alpha_override=0.0`` would give.

        Nothing on the module changes: the override lives in the calling
        context (a `contextvars` variable), so other threads and DDP ranks
        are untouched. It is how `SeedManager` scores a seed's counterfactual
        through a user's own `evaluate`, which cannot pass an override itself.
        """
        token = _SILENCED.set(_SILENCED.get() | {id(self)})
        try:
            yield
        finally:
            _SILENCED.reset(token)

    @contextmanager
    def force_alpha(self, value: float) -> Iterator[None]:
        """Set alpha for the block, always restoring it. Single-threaded eval use only.

        It mutates the slot: another thread's forward sees the forced value,
        and under DDP ranks may run different graphs. Prefer ``alpha_override``.
        """
        if self._forced is not None:
            raise SlotError(f"force_alpha cannot be nested (slot {self.slot_id!r})")
        if (
            not self._warned_distributed
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            self._warned_distributed = True
            warnings.warn(
                "force_alpha mutates the slot under torch.distributed; ranks may diverge. "
                "Use forward(..., alpha_override=...) instead.",
                RuntimeWarning,
                stacklevel=3,
            )
        self._forced = min(1.0, max(0.0, float(value)))
        try:
            yield
        finally:
            self._forced = None

    def extra_repr(self) -> str:
        return (
            f"slot_id={self.slot_id!r}, channels={self.channels}, stage={self.stage.name}, "
            f"seed_id={self.seed_id!r}, alpha={self.alpha:.3f}"
        )


__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_BLENDING_TOTAL_STEPS",
    "DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE",
    "PendingDecision",
    "SeedSlot",
    "SlotError",
    "default_init_seed",
]
