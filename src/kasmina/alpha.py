"""Alpha schedules and the controller that ramps a seed's blend weight.

Plain `math` on Python floats: the controller ticks once per epoch and its value
is copied into the slot's cached tensor, so building a tensor here per call
would only cost allocations. It lives outside `kasmina.runtime` because the
fold and the slot's state (neither of which may import torch) need the same
curves the torch runtime blends with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from kasmina.errors import KasminaError


class AlphaCurve(IntEnum):
    """Easing curves, with esper's integer values (they are stored in checkpoints)."""

    LINEAR = 1
    COSINE = 2
    SIGMOID = 3


class AlphaMode(IntEnum):
    HOLD = 0
    UP = 1
    DOWN = 2


DEFAULT_STEEPNESS = 12.0
#: Below this the renormalised sigmoid is a straight line up to cancellation error.
MIN_STEEPNESS = 0.1
DEFAULT_BLENDING_TOTAL_STEPS = 5


class AlphaScheduleError(KasminaError):
    """An illegal use of the alpha controller; the controller was left unchanged."""


def _sigmoid(x: float) -> float:
    """Logistic function in the form whose `exp` argument is never positive."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def ease(curve: AlphaCurve, t: float, steepness: float = DEFAULT_STEEPNESS) -> float:
    """Eased progress for raw progress `t`, with p(0) = 0 and p(1) = 1 exactly.

    The endpoints are returned as literals rather than computed, so a finished
    ramp lands on its target with no rounding residue whatever the curve.
    """
    t = _clamp(t, 0.0, 1.0)
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return 1.0
    if curve == AlphaCurve.LINEAR:
        return t
    if curve == AlphaCurve.COSINE:
        return _clamp((1.0 - math.cos(math.pi * t)) / 2.0, 0.0, 1.0)
    if curve == AlphaCurve.SIGMOID:
        k = max(steepness, MIN_STEEPNESS)
        low = _sigmoid(-k / 2.0)
        denominator = _sigmoid(k / 2.0) - low
        if denominator == 0.0:
            return t
        return _clamp((_sigmoid(k * (t - 0.5)) - low) / denominator, 0.0, 1.0)
    raise AlphaScheduleError(f"unknown alpha curve {curve!r}")


def _unit(value: float, what: str) -> float:
    """Clamp to [0, 1]; NaN is refused because min/max would pass it through."""
    if math.isnan(value):
        raise AlphaScheduleError(f"{what} must be a number, got NaN")
    return _clamp(float(value), 0.0, 1.0)


@dataclass
class AlphaController:
    """The alpha ramp of one slot, ticked once per epoch.

    A ramp cannot change course midway: `retarget` is refused outside HOLD, so
    every ramp runs monotonically from its start to its target and the
    blend-out freeze (active while DOWN) has one well-defined end.
    """

    alpha: float = 0.0
    alpha_start: float = 0.0
    alpha_target: float = 0.0
    mode: AlphaMode = AlphaMode.HOLD
    curve: AlphaCurve = AlphaCurve.LINEAR
    steepness: float = DEFAULT_STEEPNESS
    steps_total: int = 0
    steps_done: int = 0

    def retarget(
        self,
        target: float,
        steps: int,
        curve: AlphaCurve | None = None,
        steepness: float | None = None,
    ) -> None:
        """Start a ramp from the current alpha; zero steps jumps there at once."""
        if self.mode != AlphaMode.HOLD:
            raise AlphaScheduleError(f"cannot retarget while ramping {AlphaMode(self.mode).name}")
        if steps < 0:
            raise AlphaScheduleError(f"alpha ramp steps must be >= 0, got {steps}")
        target = _unit(target, "alpha target")
        if curve is not None:
            self.curve = AlphaCurve(curve)
        if steepness is not None:
            self.steepness = float(steepness)
        self.alpha_start = self.alpha
        self.alpha_target = target
        self.steps_done = 0
        if steps == 0 or target == self.alpha:
            self.alpha = target
            self.mode = AlphaMode.HOLD
            self.steps_total = 0
            return
        self.mode = AlphaMode.UP if target > self.alpha else AlphaMode.DOWN
        self.steps_total = steps

    def step(self) -> bool:
        """Advance one tick; True only on the tick that reaches the target."""
        if self.mode == AlphaMode.HOLD or self.steps_total == 0:
            return False
        self.steps_done += 1
        if self.steps_done >= self.steps_total:
            self.alpha = self.alpha_target
            self.mode = AlphaMode.HOLD
            return True
        start, target = self.alpha_start, self.alpha_target
        p = ease(self.curve, self.steps_done / self.steps_total, self.steepness)
        self.alpha = _clamp(start + (target - start) * p, min(start, target), max(start, target))
        return False

    def set_alpha(self, value: float) -> None:
        """Overwrite alpha without touching the ramp, e.g. HOLDING pinning it at 1.0."""
        self.alpha = _unit(value, "alpha")

    @property
    def time_to_target(self) -> int:
        if self.mode == AlphaMode.HOLD:
            return 0
        return max(self.steps_total - self.steps_done, 0)

    def to_dict(self) -> dict[str, float | int]:
        """Checkpoint form: plain floats and ints, enums as their integer values."""
        return {
            "alpha": self.alpha,
            "alpha_start": self.alpha_start,
            "alpha_target": self.alpha_target,
            "mode": int(self.mode),
            "curve": int(self.curve),
            "steepness": self.steepness,
            "steps_total": self.steps_total,
            "steps_done": self.steps_done,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, float | int]) -> AlphaController:
        """Inverse of `to_dict`; a missing key or unknown enum value is refused."""
        try:
            return cls(
                alpha=float(data["alpha"]),
                alpha_start=float(data["alpha_start"]),
                alpha_target=float(data["alpha_target"]),
                mode=AlphaMode(int(data["mode"])),
                curve=AlphaCurve(int(data["curve"])),
                steepness=float(data["steepness"]),
                steps_total=int(data["steps_total"]),
                steps_done=int(data["steps_done"]),
            )
        except KeyError as exc:
            raise AlphaScheduleError(f"alpha controller state lacks key {exc.args[0]!r}") from None
        except ValueError as exc:
            raise AlphaScheduleError(f"bad alpha controller state: {exc}") from None


__all__ = [
    "DEFAULT_BLENDING_TOTAL_STEPS",
    "DEFAULT_STEEPNESS",
    "MIN_STEEPNESS",
    "AlphaController",
    "AlphaCurve",
    "AlphaMode",
    "AlphaScheduleError",
    "ease",
]
