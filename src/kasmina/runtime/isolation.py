"""Gradient measurements for the isolation gate (G2) and for dashboards.

Isolation itself is structural: the slot detaches the seed's input, so no
seed-path gradient can reach the host. Nothing here can see such a leak through
the graph; what the monitor can see is a parameter that sits on both sides,
which the detach does not protect. Its norms feed the gate's gradient ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_Side = Literal["host", "seed"]
_Accumulator = Literal["host", "seed", "dot"]

_RATIO_EPS = 1e-8
_DOT_TOLERANCE = 1e-6
_RATIO_CAP = 10.0
_VANISHING = 1e-7
_EXPLODING_FACTOR = 10.0


@dataclass(frozen=True)
class IsolationSnapshot:
    host_norm: float
    seed_norm: float
    dot: float
    raw_ratio: float
    normalised_ratio: float
    host_param_count: int
    seed_param_count: int
    violation: bool


def _trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """Trainable parameters, each once: a tensor listed twice must not count twice."""
    seen: set[int] = set()
    kept: list[nn.Parameter] = []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            kept.append(p)
    return kept


def normalised_ratio(host_norm: float, seed_norm: float, host_count: int, seed_count: int) -> float:
    """Seed/host gradient norm ratio scaled by sqrt(host/seed parameter counts), capped.

    A seed has far fewer parameters than its host, so its raw gradient norm is
    small by construction; the scale makes the gate's threshold mean the same
    for any seed size.
    """
    if host_norm < _RATIO_EPS or seed_count == 0:
        return 0.0
    return min((seed_norm / host_norm) * math.sqrt(host_count / seed_count), _RATIO_CAP)


class IsolationMonitor:
    """Accumulates each side's squared gradient norm from per-parameter hooks.

    The hooks read `p.grad` once the backward has accumulated it, so gradients
    are expected to be zeroed between steps, and `reset()` called after each
    `snapshot()`. Sums stay on the parameter's device in float64 until
    `snapshot()`, so the hot loop never syncs. Call `close()` (or use the monitor
    as a context manager) to remove the hooks: they keep the monitor alive.
    """

    def __init__(
        self, host_params: Iterable[nn.Parameter], seed_params: Iterable[nn.Parameter]
    ) -> None:
        host = _trainable(host_params)
        seed = _trainable(seed_params)
        host_ids = {id(p) for p in host}
        self._shared_ids = {id(p) for p in seed if id(p) in host_ids}
        self.host_param_count = sum(p.numel() for p in host)
        self.seed_param_count = sum(p.numel() for p in seed)
        self._sums: dict[tuple[_Accumulator, torch.device], torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        sides: tuple[tuple[_Side, list[nn.Parameter]], ...] = (("host", host), ("seed", seed))
        for side, params in sides:
            for p in params:
                hook = partial(self._on_gradient, side)
                handle = p.register_post_accumulate_grad_hook(hook)  # type: ignore[no-untyped-call]
                self._handles.append(handle)

    def _add(self, key: _Accumulator, value: torch.Tensor) -> None:
        slot = (key, value.device)
        current = self._sums.get(slot)
        self._sums[slot] = value if current is None else current + value

    def _on_gradient(self, side: _Side, param: torch.Tensor) -> None:
        """The one place gradients are measured, for either side.

        A shared parameter has a single `.grad` holding both paths' sum, so the
        host's and the seed's gradient of it are that same tensor; its dot is
        taken once, on the seed side, so the two hooks do not count it twice.
        """
        grad = param.grad
        if grad is None:
            return
        flat = grad.detach().reshape(-1).to(torch.float64)
        squared = torch.dot(flat, flat)
        self._add(side, squared)
        if side == "seed" and id(param) in self._shared_ids:
            self._add("dot", squared)

    def _total(self, key: _Accumulator) -> float:
        return sum((float(value.item()) for (k, _), value in self._sums.items() if k == key), 0.0)

    def snapshot(self) -> IsolationSnapshot:
        host_norm = math.sqrt(self._total("host"))
        seed_norm = math.sqrt(self._total("seed"))
        dot = self._total("dot")
        raw_ratio = seed_norm / (host_norm + _RATIO_EPS) if host_norm > 0.0 else 0.0
        normalised = normalised_ratio(
            host_norm, seed_norm, self.host_param_count, self.seed_param_count
        )
        return IsolationSnapshot(
            host_norm=host_norm,
            seed_norm=seed_norm,
            dot=dot,
            raw_ratio=raw_ratio,
            normalised_ratio=normalised,
            host_param_count=self.host_param_count,
            seed_param_count=self.seed_param_count,
            violation=abs(dot) > _DOT_TOLERANCE or bool(self._shared_ids),
        )

    def reset(self) -> None:
        self._sums.clear()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> IsolationMonitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def shared_parameters(host: nn.Module, seed: nn.Module) -> list[str]:
    """Seed parameters that are host parameters too: the check the detach cannot make.

    `host` must not contain the seed as a submodule, or every seed parameter is
    reported.
    """
    host_ids = {id(p) for p in host.parameters()}
    return [name for name, p in seed.named_parameters() if id(p) in host_ids]


@dataclass(frozen=True)
class GradientHealth:
    health: float
    vanishing_fraction: float
    exploding_fraction: float
    has_vanishing: bool
    has_exploding: bool
    total_norm: float
    measured: bool


_UNMEASURED = GradientHealth(
    health=0.0,
    vanishing_fraction=0.0,
    exploding_fraction=0.0,
    has_vanishing=False,
    has_exploding=False,
    total_norm=0.0,
    measured=False,
)


def _norms64(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per-tensor float64 norms on the CPU, with one transfer per device."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    return torch.cat([_device_norms(group).cpu() for group in by_device.values()])


def _device_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per-tensor float64 norms of tensors on one device, left there (no sync)."""
    return torch.stack(torch._foreach_norm([g.detach() for g in grads], 2, dtype=torch.float64))


def _health(count: int, vanishing: int, exploding: int, total_norm: float) -> GradientHealth:
    vanishing_fraction = vanishing / count
    exploding_fraction = exploding / count
    if math.isfinite(total_norm):
        score = 1.0 - 0.5 * vanishing_fraction - 0.8 * exploding_fraction
        health = min(max(score, 0.0), 1.0)
    else:
        health = 0.0
    return GradientHealth(
        health=health,
        vanishing_fraction=vanishing_fraction,
        exploding_fraction=exploding_fraction,
        has_vanishing=vanishing > 0,
        has_exploding=exploding > 0,
        total_norm=total_norm,
        measured=True,
    )


def _health_of(norms: Sequence[float], clip_norm: float = 1.0) -> GradientHealth:
    """The health of one backward from its per-tensor gradient norms."""
    vanishing = sum(n < _VANISHING for n in norms)
    exploding = sum(not math.isfinite(n) or n > _EXPLODING_FACTOR * clip_norm for n in norms)
    return _health(len(norms), vanishing, exploding, math.sqrt(sum(n * n for n in norms)))


def gradient_health(params: Iterable[nn.Parameter], clip_norm: float = 1.0) -> GradientHealth:
    """A [0, 1] score of the gradients before clipping; fractions count only parameters
    that have a gradient.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return _UNMEASURED
    return _health_of(_norms64(grads).tolist(), clip_norm)


#: Weight of the past in the gradient ratio's moving average.
GRADIENT_EMA_DECAY = 0.9


def step_norms(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-tensor gradient norms of one backward as one tensor, left on the device.

    One fused kernel (`_foreach_norm`) for any number of tensors: a training
    step never waits for the GPU and pays a few launches, not one per tensor.
    """
    with torch.no_grad():  # cheaper than a detach per tensor
        return torch.stack(torch._foreach_norm(list(grads), 2))


def host_norm(norms: Sequence[float]) -> float:
    """The host's total gradient norm from its per-tensor norms."""
    return math.sqrt(sum(n * n for n in norms))


def split_rows(steps: Sequence[torch.Tensor]) -> list[list[float]]:
    """Tensors of norms as lists of floats, with one transfer to the host for all of them."""
    flat = torch.cat(list(steps)).double().cpu().tolist()
    rows, at = [], 0
    for step in steps:
        n = step.numel()
        rows.append(flat[at : at + n])
        at += n
    return rows


def fold_steps(
    steps: Sequence[tuple[float, Sequence[float]]],
    previous_ratio: float | None,
    host_count: int,
    seed_count: int,
) -> dict[str, float | bool | None]:
    """A seed's gradient numbers from its backwards: (host norm, the seed's per-tensor norms).

    The ratio is a moving average over the backwards, the health that of the last.
    """
    ratio = previous_ratio
    for host_norm, seed_norms in steps:
        seed_norm = math.sqrt(sum(n * n for n in seed_norms))
        step = normalised_ratio(host_norm, seed_norm, host_count, seed_count)
        ratio = (
            step if ratio is None else GRADIENT_EMA_DECAY * ratio + (1 - GRADIENT_EMA_DECAY) * step
        )
    health = _health_of(steps[-1][1])
    return {
        "grad_ratio": ratio,
        "grad_health": health.health,
        "has_vanishing": health.has_vanishing,
        "has_exploding": health.has_exploding,
    }


class GradientMonitor:
    """What one slot measures of its seed's gradients: the ratio and health that G2 reads.

    It reads ``p.grad`` after each backward (so gradients are expected to be
    zeroed between steps) and keeps each backward's norms as one small tensor
    on the gradients' device; `drain` moves them to the host once, so a
    training step never waits for the GPU. `SeedManager` measures all its
    slots at once instead, with the same `fold_steps`.
    """

    def __init__(self) -> None:
        self._host: list[nn.Parameter] | None = None
        self.host_count = 0
        self._steps: list[tuple[torch.Tensor, int]] = []

    @property
    def watching(self) -> bool:
        return self._host is not None

    def watch(self, host: Iterable[nn.Parameter]) -> None:
        self.stop()
        self._host = _trainable(host)
        self.host_count = sum(p.numel() for p in self._host)

    def stop(self) -> None:
        self._host = None
        self._steps.clear()

    def record(self, seed: nn.Module) -> None:
        """Take the last backward's norms: the host's total first, then the seed's tensors."""
        host = self._host
        if host is None:
            return
        grads = [p.grad for p in seed.parameters() if p.grad is not None]
        if not grads:
            return
        host_grads = [p.grad for p in host if p.grad is not None]
        self._steps.append((step_norms([*host_grads, *grads]), len(host_grads)))

    def drain(
        self, seed: nn.Module, previous_ratio: float | None
    ) -> dict[str, float | bool | None] | None:
        """The numbers of the backwards recorded since the last drain; None if none were."""
        steps = self._steps
        if self._host is None or not steps:
            return None
        rows = split_rows([norms for norms, _ in steps])
        pairs = [(host_norm(r[:h]), r[h:]) for r, (_, h) in zip(rows, steps, strict=True)]
        steps.clear()
        seed_count = sum(p.numel() for p in seed.parameters() if p.requires_grad)
        return fold_steps(pairs, previous_ratio, self.host_count, seed_count)


__all__ = [
    "GRADIENT_EMA_DECAY",
    "GradientHealth",
    "GradientMonitor",
    "IsolationMonitor",
    "IsolationSnapshot",
    "gradient_health",
    "fold_steps",
    "host_norm",
    "split_rows",
    "step_norms",
    "normalised_ratio",
    "shared_parameters",
]
