from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
import torch
from torch import nn

from kasmina.runtime.isolation import (
    IsolationMonitor,
    gradient_health,
    shared_parameters,
)


def make_pair() -> tuple[nn.Linear, nn.Linear, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    host = nn.Linear(4, 3)
    seed = nn.Linear(3, 3)
    with torch.no_grad():
        for p in (*host.parameters(), *seed.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(5, 4, generator=gen)
    return host, seed, x


def step(host: nn.Module, seed: nn.Module, x: torch.Tensor, seed_scale: float = 1.0) -> None:
    h = host(x)
    s = seed(h.detach())
    (h.square().sum() + seed_scale * (h.detach() + s).square().sum()).backward()


def squared_norm(params: Iterable[nn.Parameter]) -> float:
    total = 0.0
    for p in params:
        assert p.grad is not None
        total += sum(v * v for v in p.grad.double().flatten().tolist())
    return total


def test_snapshot_matches_a_direct_computation() -> None:
    host, seed, x = make_pair()
    with IsolationMonitor(host.parameters(), seed.parameters()) as monitor:
        step(host, seed, x)
        snap = monitor.snapshot()
    host_norm = math.sqrt(squared_norm(host.parameters()))
    seed_norm = math.sqrt(squared_norm(seed.parameters()))
    assert host_norm > 0 and seed_norm > 0
    assert snap.host_param_count == 4 * 3 + 3
    assert snap.seed_param_count == 3 * 3 + 3
    assert snap.host_norm == pytest.approx(host_norm, rel=1e-12)
    assert snap.seed_norm == pytest.approx(seed_norm, rel=1e-12)
    assert snap.raw_ratio == pytest.approx(seed_norm / (host_norm + 1e-8), rel=1e-12)
    expected = min((seed_norm / host_norm) * math.sqrt(15 / 12), 10.0)
    assert snap.normalised_ratio == pytest.approx(expected, rel=1e-12)
    assert snap.dot == 0.0
    assert snap.violation is False


def test_normalised_ratio_is_capped() -> None:
    host, seed, x = make_pair()
    with IsolationMonitor(host.parameters(), seed.parameters()) as monitor:
        step(host, seed, x, seed_scale=1e6)
        snap = monitor.snapshot()
    assert (snap.seed_norm / snap.host_norm) * math.sqrt(15 / 12) > 10.0
    assert snap.normalised_ratio == 10.0
    assert snap.raw_ratio > 10.0


def test_side_without_gradients_reports_zero() -> None:
    host, seed, x = make_pair()
    with IsolationMonitor(host.parameters(), seed.parameters()) as monitor:
        host(x).sum().backward()
        snap = monitor.snapshot()
    assert snap.seed_norm == 0.0
    assert snap.host_norm > 0.0
    assert snap.raw_ratio == 0.0 and snap.normalised_ratio == 0.0

    host, seed, x = make_pair()
    with IsolationMonitor(host.parameters(), seed.parameters()) as monitor:
        seed(x[:, :3]).sum().backward()
        snap = monitor.snapshot()
    assert snap.host_norm == 0.0
    assert snap.seed_norm > 0.0
    assert snap.raw_ratio == 0.0 and snap.normalised_ratio == 0.0


def test_frozen_parameters_are_not_counted() -> None:
    host, seed, x = make_pair()
    host.bias.requires_grad_(False)
    with IsolationMonitor(host.parameters(), seed.parameters()) as monitor:
        step(host, seed, x)
        snap = monitor.snapshot()
    assert snap.host_param_count == 12
    assert snap.host_norm == pytest.approx(math.sqrt(squared_norm([host.weight])), rel=1e-12)


def test_empty_seed_gives_zero_normalised_ratio() -> None:
    host, _, x = make_pair()
    with IsolationMonitor(host.parameters(), []) as monitor:
        host(x).sum().backward()
        snap = monitor.snapshot()
    assert snap.seed_param_count == 0
    assert snap.normalised_ratio == 0.0
    assert snap.violation is False


def test_reset_then_next_step_measures_only_that_step() -> None:
    host, seed, x = make_pair()
    with IsolationMonitor(host.parameters(), seed.parameters()) as monitor:
        step(host, seed, x)
        first = monitor.snapshot()
        monitor.reset()
        zeroed = monitor.snapshot()
        for p in (*host.parameters(), *seed.parameters()):
            p.grad = None
        step(host, seed, x * 2)
        second = monitor.snapshot()
    assert (zeroed.host_norm, zeroed.seed_norm, zeroed.dot) == (0.0, 0.0, 0.0)
    assert second.host_norm == pytest.approx(math.sqrt(squared_norm(host.parameters())), rel=1e-12)
    assert second.host_norm != pytest.approx(first.host_norm)


def test_close_removes_the_hooks() -> None:
    host, seed, x = make_pair()
    monitor = IsolationMonitor(host.parameters(), seed.parameters())
    with monitor:
        pass
    step(host, seed, x)
    snap = monitor.snapshot()
    assert (snap.host_norm, snap.seed_norm) == (0.0, 0.0)
    monitor.close()


def test_shared_parameter_is_a_violation() -> None:
    host, seed, x = make_pair()
    seed_params = [*seed.parameters(), host.weight]
    with IsolationMonitor(host.parameters(), seed_params) as monitor:
        step(host, seed, x)
        snap = monitor.snapshot()
    shared = squared_norm([host.weight])
    assert snap.violation is True
    assert snap.dot == pytest.approx(shared, rel=1e-12)
    assert snap.dot > 1e-6
    assert snap.seed_norm == pytest.approx(
        math.sqrt(squared_norm(seed.parameters()) + shared), rel=1e-12
    )


def test_shared_parameter_without_gradient_is_still_a_violation() -> None:
    host, seed, _ = make_pair()
    with IsolationMonitor(host.parameters(), [host.bias]) as monitor:
        snap = monitor.snapshot()
    assert snap.dot == 0.0
    assert snap.violation is True


def test_shared_parameters_by_identity() -> None:
    host, seed, _ = make_pair()
    assert shared_parameters(host, seed) == []
    wrapped = nn.Sequential(seed, nn.Linear(3, 3))
    wrapped[1].weight = host.weight
    assert shared_parameters(host, wrapped) == ["1.weight"]
    copy = nn.Linear(4, 3)
    copy.load_state_dict(host.state_dict())
    assert shared_parameters(host, copy) == []


@pytest.mark.parametrize("detach", [True, False])
def test_detached_seed_input_keeps_host_gradients_unchanged(detach: bool) -> None:
    """Straight-through training (output numerically h) with and without the detach."""
    host, seed, x = make_pair()
    host(x).square().sum().backward()
    baseline = [p.grad.clone() for p in host.parameters() if p.grad is not None]
    host.zero_grad(set_to_none=True)

    h = host(x)
    s = seed(h.detach() if detach else h)
    out = h + (s - s.detach())
    assert torch.equal(out, h)
    out.square().sum().backward()

    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in seed.parameters())
    same = all(torch.equal(p.grad, b) for p, b in zip(host.parameters(), baseline, strict=True))
    assert same is detach


def set_grads(values: list[list[float] | None]) -> list[nn.Parameter]:
    params = []
    for v in values:
        if v is None:
            params.append(nn.Parameter(torch.zeros(2, dtype=torch.float64)))
            continue
        p = nn.Parameter(torch.zeros(len(v), dtype=torch.float64))
        p.grad = torch.tensor(v, dtype=torch.float64)
        params.append(p)
    return params


def test_health_of_healthy_gradients() -> None:
    result = gradient_health(set_grads([[0.6, 0.8], [3.0, 4.0], [0.1]]))
    assert result.measured
    assert result.health == 1.0
    assert (result.vanishing_fraction, result.exploding_fraction) == (0.0, 0.0)
    assert not result.has_vanishing and not result.has_exploding
    assert result.total_norm == pytest.approx(math.sqrt(1.0 + 25.0 + 0.01), rel=1e-12)


def test_health_with_vanishing_and_exploding() -> None:
    params = set_grads([[1e-8, 0.0], [0.0], [60.0, 80.0], [1.0], None])
    result = gradient_health(params)
    assert result.vanishing_fraction == 0.5
    assert result.exploding_fraction == 0.25
    assert result.has_vanishing and result.has_exploding
    assert result.health == pytest.approx(1 - 0.5 * 0.5 - 0.8 * 0.25)
    assert result.total_norm == pytest.approx(math.sqrt(1e-16 + 1e4 + 1.0), rel=1e-12)


def test_exploding_threshold_follows_clip_norm() -> None:
    assert gradient_health(set_grads([[15.0]])).has_exploding
    assert not gradient_health(set_grads([[15.0]]), clip_norm=2.0).has_exploding
    assert not gradient_health(set_grads([[10.0]])).has_exploding
    assert not gradient_health(set_grads([[1e-7]])).has_vanishing


def test_health_is_clamped_at_zero() -> None:
    result = gradient_health(set_grads([[5e-8], [5e-8]]), clip_norm=1e-9)
    assert result.vanishing_fraction == 1.0 and result.exploding_fraction == 1.0
    assert math.isfinite(result.total_norm)
    assert result.health == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_zeroes_health(bad: float) -> None:
    result = gradient_health(set_grads([[1.0], [1.0], [1.0], [bad, 1.0]]))
    assert result.exploding_fraction == 0.25
    assert result.has_exploding
    assert not math.isfinite(result.total_norm)
    assert result.health == 0.0


def test_health_of_float32_gradients_is_measured_in_float64() -> None:
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3e30, 4e30])
    result = gradient_health([p], clip_norm=1e31)
    assert math.isfinite(result.total_norm)
    assert result.total_norm == pytest.approx(5e30, rel=1e-6)
    assert not result.has_exploding


def test_no_gradients_is_unmeasured() -> None:
    result = gradient_health(set_grads([None, None]))
    assert not result.measured
    assert result.health == 0.0
    assert not result.has_vanishing and not result.has_exploding
    assert gradient_health([]) == result
