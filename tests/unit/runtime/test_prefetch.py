from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from kasmina.errors import KasminaError
from kasmina.runtime.blueprints import UnknownBlueprint, build_blueprint, param_digest
from kasmina.runtime.prefetch import (
    PrefetchCanceled,
    PrefetchClosed,
    PrefetchCoordinator,
    PrefetchError,
    PrefetchTimeout,
    UnknownPrefetch,
)

T = TypeVar("T")
Builder = Callable[[str, int, str, int], nn.Module]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Gate:
    """A builder that blocks its worker thread until released, standing in for a slow build.

    The wait is bounded so a broken test cannot hang the suite; every test
    releases the gate before its event loop shuts down, because `asyncio.run`
    waits for worker threads.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()

    def __call__(self, blueprint_id: str, channels: int, topology: str, seed: int) -> nn.Module:
        try:
            if not self.release.wait(timeout=30):
                raise RuntimeError("gate never released")
            return nn.Identity()
        finally:
            self.finished.set()


async def finished(coordinator: PrefetchCoordinator, request_id: str) -> None:
    await asyncio.wait({coordinator.tasks[request_id]})


def test_request_and_get_return_the_blueprint_module() -> None:
    async def scenario() -> tuple[str, nn.Module, PrefetchCoordinator]:
        async with PrefetchCoordinator() as coordinator:
            request_id = await coordinator.request("conv_small", 16, init_seed=3)
            module = await coordinator.get(request_id)
            assert coordinator.tasks == {}
            with pytest.raises(UnknownPrefetch):
                await coordinator.get(request_id)
            assert coordinator.poll_task_issue() is None
        with pytest.raises(PrefetchClosed):
            await coordinator.request("conv_small", 16)
        return request_id, module, coordinator

    request_id, module, coordinator = run(scenario())
    prefix, _, rest = request_id.partition("-")
    assert prefix == "prefetch"
    assert str(uuid.UUID(rest)) == rest
    assert param_digest(module) == param_digest(build_blueprint("conv_small", 16, "cnn", 3))
    x = torch.randn(2, 16, 5, 5)
    assert module(x).shape == x.shape
    assert coordinator.poll_task_issue() is None
    stats = coordinator.stats()
    assert (stats.scheduled, stats.ready, stats.error, stats.in_flight) == (1, 1, 0, 0)
    assert (stats.timeout, stats.canceled) == (0, 0)
    assert stats.latency_last_s > 0
    assert stats.latency_avg_s == stats.latency_last_s


def test_transformer_topology_is_passed_through() -> None:
    async def scenario() -> nn.Module:
        async with PrefetchCoordinator() as coordinator:
            return await coordinator.get(await coordinator.request("mlp", 8, "transformer", 5))

    module = run(scenario())
    assert param_digest(module) == param_digest(build_blueprint("mlp", 8, "transformer", 5))


def test_request_ids_are_unique() -> None:
    async def scenario() -> list[str]:
        async with PrefetchCoordinator() as coordinator:
            ids = [await coordinator.request("norm", 4) for _ in range(20)]
            for request_id in ids:
                await coordinator.get(request_id)
            return ids

    assert len(set(run(scenario()))) == 20


def test_concurrent_builds_match_serial_builds() -> None:
    seeds = range(24)

    async def scenario() -> list[nn.Module]:
        async with PrefetchCoordinator(timeout=30.0) as coordinator:
            ids = [await coordinator.request("conv_light", 64, init_seed=s) for s in seeds]
            return list(await asyncio.gather(*(coordinator.get(i) for i in ids)))

    built = [param_digest(module) for module in run(scenario())]
    expected = [param_digest(build_blueprint("conv_light", 64, "cnn", s)) for s in seeds]
    assert built == expected


def test_builder_error_is_raised_by_get_and_reported() -> None:
    error = RuntimeError("disk on fire\nsecond line")

    def broken(blueprint_id: str, channels: int, topology: str, seed: int) -> nn.Module:
        raise error

    async def scenario() -> tuple[str, PrefetchCoordinator]:
        coordinator = PrefetchCoordinator(broken)
        request_id = await coordinator.request("bp-x", 8)
        with pytest.raises(RuntimeError) as info:
            await coordinator.get(request_id)
        assert info.value is error
        await coordinator.close()
        return request_id, coordinator

    request_id, coordinator = run(scenario())
    issue = coordinator.poll_task_issue()
    assert issue is not None
    assert request_id in issue and "'bp-x'" in issue
    assert "RuntimeError" in issue and "disk on fire" in issue
    assert "\n" not in issue
    stats = coordinator.stats()
    assert (stats.scheduled, stats.ready, stats.error, stats.in_flight) == (1, 0, 1, 0)
    assert stats.latency_last_s == 0.0


def test_failure_is_reported_without_anyone_calling_get() -> None:
    async def scenario() -> tuple[str | None, str | None, str]:
        async with PrefetchCoordinator() as coordinator:
            before = coordinator.poll_task_issue()
            request_id = await coordinator.request("no_such_blueprint", 8)
            await finished(coordinator, request_id)
            return before, coordinator.poll_task_issue(), request_id

    before, issue, request_id = run(scenario())
    assert before is None
    assert issue is not None
    assert request_id in issue and "no_such_blueprint" in issue
    assert UnknownBlueprint.__name__ in issue


def test_builder_returning_a_non_module_is_an_error() -> None:
    def wrong(blueprint_id: str, channels: int, topology: str, seed: int) -> nn.Module:
        return "not a module"  # type: ignore[return-value]

    async def scenario() -> str | None:
        async with PrefetchCoordinator(wrong) as coordinator:
            with pytest.raises(TypeError):
                await coordinator.get(await coordinator.request("conv_small", 8))
            return coordinator.poll_task_issue()

    issue = run(scenario())
    assert issue is not None and "TypeError" in issue


def test_close_cancels_outstanding_builds_without_reporting_them() -> None:
    gate = Gate()

    async def scenario() -> PrefetchCoordinator:
        coordinator = PrefetchCoordinator(gate)
        try:
            first = await coordinator.request("conv_small", 8)
            second = await coordinator.request("conv_small", 8)
            tasks = dict(coordinator.tasks)
            assert coordinator.stats().in_flight == 2
            await coordinator.close()
            assert all(task.cancelled() for task in tasks.values())
            await coordinator.close()
            for request_id in (first, second):
                with pytest.raises(PrefetchCanceled):
                    await coordinator.get(request_id)
            with pytest.raises(PrefetchClosed):
                await coordinator.request("conv_small", 8)
            return coordinator
        finally:
            gate.release.set()

    coordinator = run(scenario())
    assert coordinator.poll_task_issue() is None
    stats = coordinator.stats()
    assert (stats.scheduled, stats.canceled, stats.in_flight) == (2, 2, 0)
    assert (stats.ready, stats.error, stats.timeout) == (0, 0, 0)


@pytest.mark.parametrize("settle_before_close", [True, False])
def test_cancel_by_someone_else_is_reported(settle_before_close: bool) -> None:
    gate = Gate()

    async def scenario() -> tuple[str, str | None, PrefetchCoordinator]:
        coordinator = PrefetchCoordinator(gate)
        try:
            victim = await coordinator.request("depthwise", 8)
            bystander = await coordinator.request("depthwise", 8)
            task = coordinator.tasks[victim]
            task.cancel()
            if settle_before_close:
                await asyncio.wait({task})
                assert coordinator.poll_task_issue() is not None
            await coordinator.close()
            with pytest.raises(PrefetchCanceled):
                await coordinator.get(bystander)
            return victim, coordinator.poll_task_issue(), coordinator
        finally:
            gate.release.set()

    victim, issue, coordinator = run(scenario())
    assert issue is not None
    assert victim in issue and "'depthwise'" in issue and "cancel" in issue
    assert coordinator.stats().canceled == 2


def test_slow_builder_times_out() -> None:
    gate = Gate()

    async def scenario() -> PrefetchCoordinator:
        coordinator = PrefetchCoordinator(gate, timeout=0.05)
        try:
            request_id = await coordinator.request("conv_light", 8)
            with pytest.raises(PrefetchTimeout) as info:
                await coordinator.get(request_id)
            assert isinstance(info.value, PrefetchError)
            assert isinstance(info.value, KasminaError)
            assert info.value.request_id == request_id
            assert request_id in str(info.value)
            assert request_id not in coordinator.tasks
            with pytest.raises(UnknownPrefetch):
                await coordinator.get(request_id)
            assert coordinator.stats().in_flight == 0
        finally:
            gate.release.set()
        assert await asyncio.to_thread(gate.finished.wait, 30)
        await coordinator.close()
        return coordinator

    coordinator = run(scenario())
    assert coordinator.poll_task_issue() is None
    stats = coordinator.stats()
    assert (stats.scheduled, stats.timeout, stats.ready, stats.canceled) == (1, 1, 0, 0)
    assert stats.in_flight == 0


def test_stats_count_every_ending_and_average_ready_latency() -> None:
    durations = {"a": 0.25, "b": 0.5, "c": 1.25}
    now = [100.0]
    gate = Gate()

    def builder(blueprint_id: str, channels: int, topology: str, seed: int) -> nn.Module:
        if blueprint_id in durations:
            now[0] += durations[blueprint_id]
            return nn.Identity()
        if blueprint_id == "bad":
            raise ValueError("bad blueprint")
        return gate(blueprint_id, channels, topology, seed)

    async def scenario() -> PrefetchCoordinator:
        coordinator = PrefetchCoordinator(builder, timeout=0.05, clock=lambda: now[0])
        try:
            seen: list[float] = []
            for name in durations:
                request_id = await coordinator.request(name, 4)
                await finished(coordinator, request_id)
                assert isinstance(await coordinator.get(request_id), nn.Identity)
                seen.append(durations[name])
                stats = coordinator.stats()
                assert stats.ready == len(seen)
                assert stats.latency_last_s == pytest.approx(durations[name])
                assert stats.latency_avg_s == pytest.approx(sum(seen) / len(seen))
            with pytest.raises(ValueError):
                await coordinator.get(await coordinator.request("bad", 4))
            with pytest.raises(PrefetchTimeout):
                await coordinator.get(await coordinator.request("slow", 4))
            await coordinator.request("slow", 4)
            stats = coordinator.stats()
            assert (stats.scheduled, stats.in_flight) == (6, 1)
            await coordinator.close()
            return coordinator
        finally:
            gate.release.set()

    stats = run(scenario()).stats()
    assert (stats.scheduled, stats.ready, stats.error) == (6, 3, 1)
    assert (stats.timeout, stats.canceled, stats.in_flight) == (1, 1, 0)
    assert stats.latency_last_s == pytest.approx(1.25)
    assert stats.latency_avg_s == pytest.approx(2.0 / 3.0)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(PrefetchError):
        PrefetchCoordinator(timeout=0)


def test_unknown_request_id_is_refused() -> None:
    async def scenario() -> None:
        async with PrefetchCoordinator() as coordinator:
            with pytest.raises(UnknownPrefetch):
                await coordinator.get("prefetch-nope")

    run(scenario())
