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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn

from kasmina.alpha import (
    DEFAULT_BLENDING_TOTAL_STEPS,
    AlphaController,
    AlphaCurve,
    AlphaMode,
)
from kasmina.errors import InvalidTransition, SlotError
from kasmina.events import AlphaMode as AlphaModeName
from kasmina.events import (
    AlphaTargetSet,
    Initiator,
    MemoryReleased,
    Payload,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedPruned,
    Trigger,
)
from kasmina.gates import GateResult, QualityGates, SeedFacts
from kasmina.lifecycle import LIFECYCLE, Emitter, MoveContext, Staged
from kasmina.runtime.blocks import BlockPool
from kasmina.runtime.blueprints import Topology, build_blueprint, param_count, param_digest
from kasmina.runtime.distributed import agree
from kasmina.runtime.isolation import IsolationMonitor
from kasmina.runtime.metrics import SeedMetrics
from kasmina.runtime.slot_checkpoint import SlotCheckpoint
from kasmina.runtime.slot_gradients import SlotGradients
from kasmina.runtime.slot_ramps import SlotRamps
from kasmina.stages import SeedStage, is_active, is_failure, is_legal, next_stage

DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE = 5
_ALPHA_CACHE_LIMIT = 16


def _probe(topology: Topology, channels: int) -> torch.Tensor:
    shape = (1, channels, 32, 32) if topology == "cnn" else (2, 8, channels)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def default_init_seed(seed_id: str) -> int:
    """A stable init seed for a seed id, so a run without explicit seeds still replays."""
    return zlib.crc32(seed_id.encode("utf-8"))


class SeedSlot(SlotRamps, SlotCheckpoint, SlotGradients, nn.Module):
    """A slot: identity while empty, a gated and blended seed once germinated."""

    def __init__(
        self,
        slot_id: str,
        channels: int,
        *,
        topology: Topology = "cnn",
        recorder: Emitter | None = None,
        gates: QualityGates | None = None,
        embargo_epochs: int = DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE,
        auto_advance: bool = False,
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
        self.auto_advance = auto_advance
        self.env_id = env_id
        self.pool = pool
        self.blocks_per_seed = blocks_per_seed
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        self.seed: nn.Module | None = None
        self._staged = Staged(slot_id)
        LIFECYCLE.join(self._staged)
        weakref.finalize(self, LIFECYCLE.leave, self._staged)
        self.epoch = 0
        self._forced: float | None = None
        self._warned_distributed = False
        self._alpha_cache: dict[tuple[float, torch.device, torch.dtype], torch.Tensor] = {}
        self._monitor: IsolationMonitor | None = None
        self._clear_seed_state()

    def _clear_seed_state(self) -> None:
        self.seed = None
        self.seed_id: str | None = None
        self.blueprint_id: str | None = None
        self.init_seed: int | None = None
        self.blend_target = 1.0
        self.blend_steps = DEFAULT_BLENDING_TOTAL_STEPS
        self.blend_curve = AlphaCurve.LINEAR
        self.controller = AlphaController()
        self.metrics = SeedMetrics()
        self.isolate_gradients = False
        self._embargo = 0
        self._pending_prune: tuple[str, Initiator] | None = None
        self._frozen: list[nn.Parameter] = []
        self._stop_watching()

    # -- state --------------------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return self.get_buffer("_anchor").device

    @property
    def stage(self) -> SeedStage:
        return self._staged.stage

    @property
    def alpha(self) -> float:
        return self._forced if self._forced is not None else self.controller.alpha

    def facts(self) -> SeedFacts:
        m = self.metrics
        return SeedFacts(
            stage=self.stage,
            seed_id=self.seed_id,
            blueprint_id=self.blueprint_id,
            epochs_in_stage=m.epochs_in_stage,
            improvement_since_training=m.improvement_since_training,
            grad_ratio=m.grad_ratio,
            grad_health=m.grad_health,
            has_exploding=m.has_exploding,
            alpha=self.controller.alpha,
            alpha_target=self.controller.alpha_target,
            alpha_mode=self.controller.mode.name,
            counterfactual=m.counterfactual,
            healthy=not m.has_exploding,
        )

    def _context(self, seed_id: str | None = None) -> MoveContext:
        m = self.metrics
        return MoveContext(
            alpha=self.alpha,
            accuracy=m.accuracy,
            accuracy_delta=m.accuracy_delta,
            epochs_in_stage=m.epochs_in_stage,
            grad_ratio=m.grad_ratio or 0.0,
            has_vanishing=bool(m.has_vanishing),
            has_exploding=bool(m.has_exploding),
            alpha_curve=self.controller.curve.name,
            epoch=self.epoch,
            seed_id=seed_id if seed_id is not None else self.seed_id,
            env_id=self.env_id,
        )

    def _emit(self, payloads: Sequence[Payload]) -> None:
        if self.recorder is not None:
            self.recorder.emit_many(
                payloads, stream_id=f"slot/{self.slot_id}", epoch=self.epoch, seed_id=self.seed_id
            )

    def _move(
        self,
        to: SeedStage,
        trigger: Trigger,
        *,
        before: Sequence[Payload] = (),
        after: Sequence[Payload] = (),
        on_moved: Callable[[], None] | None = None,
        seed_id: str | None = None,
    ) -> None:
        def moved() -> None:
            self.metrics.epochs_in_stage = 0
            if on_moved is not None:
                on_moved()
            self._sync_freeze()

        LIFECYCLE.move(
            self._staged,
            to,
            trigger=trigger,
            context=self._context(seed_id),
            emitter=self.recorder,
            before=before,
            after=after,
            on_moved=moved,
        )

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
        probe = _probe(self.topology, self.channels)
        with torch.no_grad():
            module.eval()
            out = module(probe)
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

        def install() -> None:
            self._clear_seed_state()
            self.seed = module
            self.seed_id, self.blueprint_id, self.init_seed = seed_id, blueprint_id, seed_value
            self.blend_target, self.blend_steps, self.blend_curve = alpha_target, tempo, curve

        if self.pool is not None:  # all or nothing, before anything is recorded
            self.pool.allocate(self.blocks_per_seed, self.slot_id, seed_id)
        try:
            self._move(
                SeedStage.GERMINATED,
                "command",
                before=[germinated],
                on_moved=install,
                seed_id=seed_id,
            )
        except BaseException:
            if self.pool is not None:
                self.pool.free_seed(seed_id)
            raise

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
            self._emit([verdict])
            return result
        after: list[Payload] = []
        on_moved: Callable[[], None]
        if goal is SeedStage.TRAINING:
            on_moved = self._enter_training
        elif goal is SeedStage.BLENDING:
            ramp = AlphaController(alpha=self.controller.alpha)
            ramp.retarget(self.blend_target, self.blend_steps, self.blend_curve)
            after.append(self._target_payload(ramp, initiator="auto", prune_ramp=False))
            on_moved = lambda: self._enter_blending(ramp)  # noqa: E731
        elif goal is SeedStage.HOLDING:
            on_moved = self._enter_holding
        else:
            after.append(self._fossilized_payload())
            on_moved = self._enter_fossilized
        self._move(goal, trigger, before=[verdict], after=after, on_moved=on_moved)
        return result

    def _enter_training(self) -> None:
        self.isolate_gradients = True
        self.metrics.training_start_accuracy = self.metrics.accuracy

    def _enter_blending(self, ramp: AlphaController) -> None:
        self.controller = ramp
        self.isolate_gradients = self.topology == "cnn"
        if self.metrics.blending_start_accuracy is None:
            self.metrics.blending_start_accuracy = self.metrics.accuracy

    def _enter_holding(self) -> None:
        self.controller = AlphaController(
            alpha=1.0, alpha_start=1.0, alpha_target=1.0, curve=self.controller.curve
        )

    def _enter_fossilized(self) -> None:
        self.isolate_gradients = False

    def _fossilized_payload(self) -> SeedFossilized:
        assert self.seed is not None and self.blueprint_id is not None
        m = self.metrics
        return SeedFossilized(
            slot_id=self.slot_id,
            env_id=self.env_id,
            blueprint_id=self.blueprint_id,
            improvement=m.accuracy_delta,
            params_added=param_count(self.seed),
            alpha=self.alpha,
            epochs_total=m.epochs_total,
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
        stage = self.stage
        if stage is SeedStage.FOSSILIZED:
            return False
        if not is_legal(stage, SeedStage.PRUNED):
            raise InvalidTransition(self.slot_id, stage.name, SeedStage.PRUNED.name)
        m = self.metrics
        pruned = SeedPruned(
            slot_id=self.slot_id,
            env_id=self.env_id,
            reason=reason,
            blueprint_id=self.blueprint_id,
            improvement=m.accuracy_delta,
            auto_pruned=initiator in ("auto", "governor"),
            epochs_total=m.epochs_total,
            counterfactual=m.counterfactual,
            blending_delta=m.blending_delta,
            initiator=initiator,
            scheduled=scheduled,
        )
        after: list[Payload] = [pruned]
        if self.pool is not None and self.seed_id is not None:
            held = sum(len(a.blocks) for a in self.pool.allocations(self.seed_id))
            if held:
                after.append(MemoryReleased(slot_id=self.slot_id, blocks=held))
        self._move(SeedStage.PRUNED, "prune", after=after, on_moved=self._drop_seed)
        return True

    def _drop_seed(self) -> None:
        """Free the module now; the record (ids, metrics) stays through the cooldown."""
        if self.pool is not None and self.seed_id is not None:
            self.pool.free_seed(self.seed_id)
        self._restore_frozen()
        self.seed = None
        self.controller = AlphaController()
        self.isolate_gradients = False
        self._pending_prune = None
        self._stop_watching()

    def set_alpha(self, value: float) -> None:
        self.controller.set_alpha(value)

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
        target = self.epoch + 1 if epoch is None else epoch
        if target < self.epoch:
            raise SlotError(
                f"slot {self.slot_id!r} is at epoch {self.epoch}; epoch {target} is in the past"
            )
        ticks = target - self.epoch
        self.epoch = target
        stage = self.stage
        if stage is SeedStage.DORMANT:
            return
        m = self.metrics
        m.epochs_in_stage += ticks
        m.epochs_total += ticks
        if self.seed is not None:  # a slot without a seed has nothing to measure
            if accuracy is not None:
                m.observe_accuracy(accuracy)
            if counterfactual is not None:
                m.counterfactual = counterfactual
        if ticks == 0:
            return
        if stage is SeedStage.PRUNED:
            self._move(SeedStage.EMBARGOED, "auto", on_moved=self._start_embargo)
        elif stage is SeedStage.EMBARGOED:
            self._embargo += ticks
            if self._embargo >= self.embargo_epochs:
                self._move(SeedStage.RESETTING, "auto")
        elif stage is SeedStage.RESETTING:
            self._move(SeedStage.DORMANT, "auto", on_moved=self._clear_seed_state)
        elif stage is SeedStage.BLENDING:
            reached = False
            for _ in range(ticks):
                reached = self.controller.step() or reached
            self._sync_freeze()
            if reached and self._pending_prune is not None and self.controller.alpha == 0.0:
                reason, initiator = self._pending_prune
                self._prune(reason, initiator, scheduled=True)
            elif (
                self.auto_advance
                and self.controller.mode is AlphaMode.HOLD
                and (self.controller.alpha_target >= 1.0)
            ):
                self.advance_stage(SeedStage.HOLDING, trigger="gate")
        elif self.auto_advance and stage is SeedStage.GERMINATED:
            self.advance_stage(SeedStage.TRAINING, trigger="gate")
        elif (
            self.auto_advance
            and stage is SeedStage.TRAINING
            and m.epochs_in_stage >= self.gates.min_training_epochs
        ):
            self.advance_stage(SeedStage.BLENDING, trigger="gate")

    def _start_embargo(self) -> None:
        self._embargo = 0

    # -- blend-out freeze -----------------------------------------------------

    def _sync_freeze(self) -> None:
        """While alpha ramps DOWN the seed's parameters are frozen, then restored exactly."""
        if self.controller.mode is AlphaMode.DOWN and self.seed is not None:
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
            return host_features
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
    "DEFAULT_BLENDING_TOTAL_STEPS",
    "DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE",
    "SeedMetrics",
    "SeedSlot",
    "SlotError",
    "default_init_seed",
]
