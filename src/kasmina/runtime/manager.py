"""SeedManager: the seeds of one model, driven from the user's own training loop.

A model's constructor puts `SeedSlot`s wherever it likes; the manager finds
them and owns the glue every user otherwise writes by hand: a germinated
seed's parameters join the optimizer (and leave it, state and all, at
prune), its gradients are measured for the gates, the counterfactual is
scored once per live seed, every slot ticks and is sampled, the epoch's
metrics are recorded, and the policy's decisions are recorded and applied.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from kasmina.canonical import Json
from kasmina.errors import SlotError
from kasmina.events import RUN_STREAM, EpochCompleted, PolicyDecided, load_payload
from kasmina.gates import QualityGates
from kasmina.policy import (
    Action,
    Observation,
    Policy,
    policy_name,
)
from kasmina.recording import Recorder
from kasmina.runtime.blueprints import param_digests
from kasmina.runtime.decisions import decide
from kasmina.runtime.distributed import DistributedRun, broadcast
from kasmina.runtime.isolation import fold_steps, host_norm, split_rows, step_norms
from kasmina.runtime.slot import SeedSlot
from kasmina.runtime.telemetry import emit_sample
from kasmina.stages import SeedStage

#: EpochCompleted's typed fields; any other metric goes into its free-named `metrics`.
_TYPED = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "host_grad_norm")
#: Backwards measured an epoch when `gradient_every` is None: the cost of measuring
#: becomes a fixed cost per epoch, like `end_epoch`'s, and its share falls as epochs grow.
AUTO_SAMPLES = 4
#: The key that marks the seeds' param group, so it is known again after a checkpoint.
SEEDS_GROUP = "kasmina_seeds"
#: Stages whose seed is blended in, so silencing it (alpha 0) measures what it adds.
_SCORED = (SeedStage.BLENDING, SeedStage.HOLDING)

Evaluate = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class _Joined:
    """A seed the optimizer and the gradient monitor know about."""

    seed: weakref.ReferenceType[nn.Module]
    #: The parameters it added to the seeds' param group.
    params: list[nn.Parameter]
    #: All its parameters, listed once: `after_backward` reads their gradients every step.
    measured: list[nn.Parameter]


@dataclass(frozen=True)
class EpochResult:
    """What `end_epoch` measured and decided."""

    epoch: int
    metrics: Mapping[str, float]
    #: Accuracy points lost with each blended seed silenced, by slot id.
    contributions: Mapping[str, float]
    decisions: Sequence[PolicyDecided] = field(default_factory=tuple)
    #: Whether seeds were planted or removed this epoch: the model's parameters
    #: changed, so a wrapper that lists them (DistributedDataParallel) is rebuilt.
    seeds_changed: bool = False
    #: Backwards of the epoch whose gradients were measured (see `gradient_every`).
    measured_backwards: int = 0


class SeedManager:
    """The seeds of `model`: optimizer, gradients, counterfactuals, epochs and the policy.

    `score` names the metric the gates and the counterfactual read, an
    accuracy on a 0-100 scale (DOMAIN §1), taken from `end_epoch`'s metrics or
    from what `evaluate` returns. Slots built without a recorder, gates or an
    auto-advance choice take the manager's.

    `gradient_every=k` measures every k-th backward of an epoch for the gates.
    The default, None, measures every backward of the first epoch and then
    `AUTO_SAMPLES` evenly spaced ones an epoch: the gates read a moving
    average, which a few samples an epoch keep, and measuring every step
    costs a launch-bound GPU loop several percent.

    In a distributed run (`distributed`, a `DistributedRun`) every rank makes
    the same calls: every rank moves every slot, only a slot's writer records
    it, rank 0 records the epoch, and rank 0's policy decides for all (its
    actions are broadcast), as rank 0's gate verdicts are.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        recorder: Recorder,
        *,
        policy: Policy | None = None,
        gates: QualityGates | None = None,
        seed_optimizer: Mapping[str, Any] | None = None,
        scheduler: LRScheduler | None = None,
        score: str = "val_accuracy",
        auto_advance: bool = True,
        gradient_every: int | None = None,
        distributed: DistributedRun | None = None,
    ) -> None:
        slots = [m for m in model.modules() if isinstance(m, SeedSlot)]
        if not slots:
            raise SlotError(f"{type(model).__name__} contains no SeedSlot to manage")
        ids = [s.slot_id for s in slots]
        doubles = sorted({i for i in ids if ids.count(i) > 1})
        if doubles:
            raise SlotError(f"slot ids must be unique in a model; repeated: {doubles}")
        if gradient_every is not None and gradient_every < 1:
            raise SlotError(f"gradient_every must be at least 1 (or None), got {gradient_every}")
        self.model = model
        self.optimizer = optimizer
        self.recorder = recorder
        self.policy = policy
        self.scheduler = scheduler
        self.score = score
        self.gradient_every = gradient_every
        self.seed_optimizer = dict(seed_optimizer or {})
        self.slots: dict[str, SeedSlot] = {s.slot_id: s for s in slots}
        self.distributed = distributed
        for slot in slots:
            if distributed is not None and not distributed.writes_slot(slot.slot_id):
                slot.recorder = None  # every rank moves the slot; its writer records it
                slot.adopt(gates=gates, auto_advance=auto_advance)
            else:
                slot.adopt(recorder=recorder, gates=gates, auto_advance=auto_advance)
        in_slots = {id(p) for s in slots for p in s.parameters()}
        self._host = [p for p in model.parameters() if id(p) not in in_slots]
        self._joined: dict[str, _Joined] = {}
        #: The one param group every live seed's parameters are in, while there is a seed
        #: (found again in an optimizer restored from a checkpoint by its mark).
        self._group: dict[str, Any] | None = _seeds_group(optimizer)
        self._backwards = 0  # this epoch's
        self._every = gradient_every or 1
        self._steps: list[tuple[torch.Tensor, int, list[tuple[str, int, int]]]] = []
        self._last_epoch: int | None = None
        self._sync()
        self._seeds_before = self._seeds()

    # -- the optimizer and the gradient monitor follow the seeds ------------------

    def _sync(self) -> None:
        """Join seeds planted since the last call and let go of seeds gone since."""
        for slot_id, slot in self.slots.items():
            joined = self._joined.get(slot_id)
            seed = slot.seed
            # A pruned seed may be freed already: its dead reference reads None.
            if joined is not None and (seed is None or joined.seed() is not seed):
                self._leave(slot_id, joined)
                joined = None
            if seed is not None and joined is None:
                self._join(slot, seed)

    def _join(self, slot: SeedSlot, seed: nn.Module) -> None:
        group = self._group
        elsewhere = {
            id(p) for g in self.optimizer.param_groups if g is not group for p in g["params"]
        }
        params = [p for p in seed.parameters() if id(p) not in elsewhere]
        grouped = {id(p) for p in group["params"]} if group is not None else set()
        new = [p for p in params if id(p) not in grouped]
        if new and group is not None:
            group["params"].extend(new)
        elif new:
            self._group = self._open_group(new)
        slot.watch_gradients(self._host)
        self._joined[slot.slot_id] = _Joined(weakref.ref(seed), params, list(seed.parameters()))

    def _open_group(self, params: list[nn.Parameter]) -> dict[str, Any]:
        """The seeds' param group: the first group's options as they are now, and `seed_optimizer`.

        One group for all seeds rather than one each: an optimizer pays its
        launches per group on a GPU, so a group per seed would make every
        step dearer as seeds are planted.
        """
        options = {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"}
        options.update(self.seed_optimizer)
        group: dict[str, Any] = {"params": params, **options, SEEDS_GROUP: True}
        if "initial_lr" in options or self.scheduler is not None:
            # The schedule's base: the host's, unless the seeds were given their own lr.
            given = self.seed_optimizer.get("lr")
            group["initial_lr"] = (
                given if given is not None else options.get("initial_lr", group["lr"])
            )
        self.optimizer.add_param_group(group)
        group = self.optimizer.param_groups[-1]
        if self.scheduler is not None:
            for name, value in _per_group(self.scheduler, group):
                getattr(self.scheduler, name).append(value)
        return group

    def _leave(self, slot_id: str, joined: _Joined) -> None:
        """Take the seed's parameters and their state out of the optimizer."""
        gone = {id(p) for p in joined.params}
        for p in joined.params:
            self.optimizer.state.pop(p, None)
        groups = self.optimizer.param_groups
        index = next((i for i, g in enumerate(groups) if g is self._group), None)
        if index is not None and gone:
            group = groups[index]
            group["params"] = [p for p in group["params"] if id(p) not in gone]
            if not group["params"]:  # the last seed has gone: so has its group
                del groups[index]
                if self.scheduler is not None:
                    for name, _ in _per_group(self.scheduler, group):
                        del getattr(self.scheduler, name)[index]
                self._group = None
        self.slots[slot_id].gradients.stop()
        del self._joined[slot_id]

    # -- the training step ---------------------------------------------------------

    def after_backward(self) -> None:
        """Measure the seeds' gradients of the backward just run (call before `step`).

        One fused norm over the host's and every seed's gradients, kept on
        the device: nothing waits for the GPU here. `end_epoch` moves them to
        the host once and folds them into the seeds' metrics, which the gates read.
        """
        self._sync()
        self._backwards += 1
        if self._backwards % self._every:
            return
        grads = [p.grad for p in self._host if p.grad is not None]
        layout: list[tuple[str, int, int]] = []
        host_end = len(grads)
        for slot_id, joined in self._joined.items():
            if not self.slots[slot_id].gradients.watching:
                continue
            start = len(grads)
            grads.extend(p.grad for p in joined.measured if p.grad is not None)
            if len(grads) > start:
                layout.append((slot_id, start, len(grads)))
        if layout:
            self._steps.append((step_norms(grads), host_end, layout))

    def _settle_gradients(self) -> int:
        """Fold the backwards measured since the last epoch into each seed's metrics; how many."""
        steps, self._steps = self._steps, []
        if not steps:
            return 0
        per_slot: dict[str, list[tuple[float, list[float]]]] = {}
        for row, (_, host_end, layout) in zip(
            split_rows([s[0] for s in steps]), steps, strict=True
        ):
            host = host_norm(row[:host_end])
            for slot_id, start, end in layout:
                per_slot.setdefault(slot_id, []).append((host, row[start:end]))
        for slot_id, measured_steps in per_slot.items():
            slot = self.slots[slot_id]
            if slot.seed is None:
                continue
            seed_count = sum(p.numel() for p in slot.seed.parameters() if p.requires_grad)
            values = fold_steps(
                measured_steps, slot.metrics.grad_ratio, slot.gradients.host_count, seed_count
            )
            slot.measure(**values)
        return len(steps)

    # -- the epoch -------------------------------------------------------------------

    def end_epoch(
        self,
        epoch: int,
        *,
        metrics: Mapping[str, float] | None = None,
        evaluate: Evaluate | None = None,
    ) -> EpochResult:
        """Score, tick, sample and record the epoch, then ask the policy and apply its actions.

        `evaluate(model)` is run once as the model is and once per blended
        seed with that seed's alpha forced to 0 (its counterfactual). Its
        results and `metrics` are recorded in `EpochCompleted`: the names of
        its typed fields (``val_accuracy``, ``train_loss``...) fill them, any
        other name goes into its free-named ``metrics``.
        """
        if self._last_epoch is not None and epoch <= self._last_epoch:
            raise SlotError(f"epoch {epoch} comes after epoch {self._last_epoch}, which has ended")
        _epoch_payload(dict(metrics or {}), {})  # a bad metric is refused before anything
        self._sync()
        measured = self._settle_gradients()
        if self.gradient_every is None:  # about AUTO_SAMPLES measured backwards an epoch
            self._every = max(1, self._backwards // AUTO_SAMPLES)
        self._backwards = 0
        values = dict(metrics or {})
        contributions: dict[str, float] = {}
        if evaluate is not None:
            scored = dict(evaluate(self.model))
            if self.score not in scored:  # else every gate waits on a score that never comes
                raise SlotError(
                    f"evaluate returned no {self.score!r} (the score named by "
                    f"SeedManager(score=...)); it returned {sorted(scored)}"
                )
            clash = sorted(set(scored) & set(values))
            if clash:
                raise SlotError(f"metrics {clash} were given and also returned by evaluate")
            values.update(scored)
            contributions = self._counterfactuals(evaluate, scored)
        accuracy = values.get(self.score)
        for slot_id, slot in self.slots.items():
            slot.step_epoch(
                accuracy=accuracy, counterfactual=contributions.get(slot_id), epoch=epoch
            )
            if slot.recorder is not None:
                emit_sample(slot.recorder, slot, epoch)
        self._sync()
        if self.distributed is None or self.distributed.rank == 0:
            self._record_epoch(epoch, values)
        self._last_epoch = epoch  # recorded: from here the epoch has ended
        decisions: list[PolicyDecided] = []
        actions = self._actions(epoch, values)
        unknown = sorted({a.slot_id for a in actions} - set(self.slots))
        if unknown:
            raise SlotError(
                f"the policy named slots {unknown}, which this model does not have "
                f"(slots: {sorted(self.slots)}); none of its actions were applied"
            )
        for index, action in enumerate(actions):
            decisions.append(
                decide(
                    self.slots[action.slot_id],
                    action,
                    f"e{epoch}.{index}",
                    policy_name(self.policy),
                )
            )
        self._sync()
        seeds = self._seeds()
        changed = seeds != self._seeds_before
        self._seeds_before = seeds
        self.recorder.flush()
        return EpochResult(epoch, values, contributions, tuple(decisions), changed, measured)

    def _actions(self, epoch: int, values: Mapping[str, float]) -> list[Action]:
        actions: list[Action] = []
        if self.policy is not None:
            observation = Observation(
                epoch=epoch,
                slots={k: s.state for k, s in self.slots.items()},
                metrics=values,
                topologies={k: s.topology for k, s in self.slots.items()},
            )
            actions = list(self.policy.decide(observation))
        if self.distributed is not None:
            chosen = broadcast(actions)
            if not isinstance(chosen, list):
                raise SlotError(f"rank 0 sent {type(chosen).__name__} for the policy's actions")
            actions = chosen
        return actions

    def _seeds(self) -> dict[str, int]:
        return {k: id(s.seed) for k, s in self.slots.items() if s.seed is not None}

    def _counterfactuals(self, evaluate: Evaluate, scored: Mapping[str, float]) -> dict[str, float]:
        live = [s for s in self.slots.values() if s.seed is not None and s.stage in _SCORED]
        if not live:
            return {}
        full = scored[self.score]  # `end_epoch` refused an evaluate without it
        out: dict[str, float] = {}
        for slot in live:
            with slot.silenced():
                silenced = evaluate(self.model).get(self.score)
            if silenced is None:
                raise SlotError(f"evaluate returned no {self.score!r} with a seed silenced")
            out[slot.slot_id] = float(full) - float(silenced)
        return out

    def _record_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        digests = param_digests(
            {
                s.seed_id: s.seed
                for s in self.slots.values()
                if s.seed is not None and s.seed_id is not None
            }
        )
        self.recorder.emit(_epoch_payload(values, digests), stream_id=RUN_STREAM, epoch=epoch)

    # -- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs beyond the model and optimizer: the gradient sampling
        rate, the last epoch, and the policy's own state when it has one."""
        state: dict[str, Any] = {"every": self._every, "last_epoch": self._last_epoch}
        policy_state = getattr(self.policy, "state_dict", None)
        if callable(policy_state):
            state["policy"] = policy_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take `state_dict` back, and join the seeds of a model restored under this manager."""
        self._every = int(state["every"])
        last = state["last_epoch"]
        self._last_epoch = None if last is None else int(last)
        load_policy = getattr(self.policy, "load_state_dict", None)
        if "policy" in state and callable(load_policy):
            load_policy(state["policy"])
        for slot_id in self._joined:
            self.slots[slot_id].gradients.stop()
        self._joined = {}
        self._group = _seeds_group(self.optimizer)
        self._sync()
        self._seeds_before = self._seeds()

    # -- reading ---------------------------------------------------------------------

    def seed_parameters(self) -> list[nn.Parameter]:
        """Every live seed's parameters (what the optimizer's seed groups hold)."""
        return [p for s in self.slots.values() if s.seed is not None for p in s.seed.parameters()]

    def host_parameters(self) -> list[nn.Parameter]:
        return list(self._host)


def _seeds_group(optimizer: Optimizer) -> dict[str, Any] | None:
    return next((g for g in optimizer.param_groups if g.get(SEEDS_GROUP)), None)


def _per_group(scheduler: LRScheduler, group: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The scheduler's lists that hold one entry per param group, and a new group's entry.

    A seed's group follows the host's schedule: the host's base lr (or the
    seed's own), and the first group's lambda where the schedule has one.
    """
    lists: list[tuple[str, Any]] = [("base_lrs", group["initial_lr"]), ("_last_lr", group["lr"])]
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if isinstance(lambdas, list) and lambdas:
        lists.append(("lr_lambdas", lambdas[0]))
    return lists


def _epoch_payload(values: Mapping[str, float], digests: dict[str, str]) -> EpochCompleted:
    """The epoch's record: typed fields by name, every other metric free-named."""
    data: dict[str, Json] = {k: float(v) for k, v in values.items() if k in _TYPED}
    data["metrics"] = {k: float(v) for k, v in values.items() if k not in _TYPED}
    data["param_digests"] = dict(digests)
    payload = load_payload("EpochCompleted", EpochCompleted.schema_version, data)
    assert isinstance(payload, EpochCompleted)
    return payload


__all__ = ["EpochResult", "Evaluate", "SeedManager"]
