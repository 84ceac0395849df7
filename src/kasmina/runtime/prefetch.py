"""Builds blueprint modules ahead of germination, off the event loop's thread.

`build_blueprint` serialises its own use of torch's global RNG, so builds on
worker threads still give the weights their init seed names; a custom builder
that draws from the global RNG must do the same.

Each request ends exactly once, as ready, error, timeout or canceled; the
counters count those endings. A worker thread cannot be stopped, so a timed-out
or cancelled build still runs to its end, with its result thrown away.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Literal, cast

from torch import nn

from kasmina.errors import KasminaError
from kasmina.runtime.blueprints import Topology, build_blueprint

Builder = Callable[[str, int, str, int], nn.Module]
_Status = Literal["pending", "ready", "error", "timeout", "canceled"]


class PrefetchError(KasminaError):
    """A prefetch request that cannot be served as asked."""


class UnknownPrefetch(PrefetchError):
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no pending prefetch with id {request_id!r}")


class PrefetchTimeout(PrefetchError):
    def __init__(self, request_id: str, blueprint_id: str, timeout: float) -> None:
        self.request_id = request_id
        self.blueprint_id = blueprint_id
        self.timeout = timeout
        super().__init__(
            f"prefetch {request_id} of blueprint {blueprint_id!r} not ready within {timeout} s"
        )


class PrefetchCanceled(PrefetchError):
    def __init__(self, request_id: str, blueprint_id: str) -> None:
        self.request_id = request_id
        self.blueprint_id = blueprint_id
        super().__init__(f"prefetch {request_id} of blueprint {blueprint_id!r} was cancelled")


class PrefetchClosed(PrefetchError):
    """A request made after `close`."""


@dataclass(frozen=True)
class PrefetchStats:
    """Requests by how they ended; latency covers ready builds only, from request to result."""

    scheduled: int
    ready: int
    error: int
    timeout: int
    canceled: int
    in_flight: int
    latency_avg_s: float
    latency_last_s: float


def _build_default(blueprint_id: str, channels: int, topology: str, init_seed: int) -> nn.Module:
    """`build_blueprint` for a plain-string topology; it refuses unknown ones itself."""
    return build_blueprint(blueprint_id, channels, cast(Topology, topology), init_seed)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(eq=False)
class _Request:
    request_id: str
    blueprint_id: str
    started: float
    status: _Status = "pending"
    finished: float | None = None
    cancel_expected: bool = False
    task: asyncio.Task[nn.Module] = field(init=False)


class PrefetchCoordinator:
    """Schedules blueprint builds and hands each result to the caller who asks for it.

    `timeout` bounds how long `get` stalls its caller, not how long a build may
    take: a build started early enough is simply ready when asked for.
    `clock` is injectable so tests can pin latencies.
    """

    def __init__(
        self,
        builder: Builder = _build_default,
        *,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise PrefetchError(f"prefetch timeout must be positive, got {timeout}")
        self._builder = builder
        self._timeout = timeout
        self._clock = clock
        self._requests: dict[str, _Request] = {}
        self._counts: dict[_Status, int] = dict.fromkeys(
            ("ready", "error", "timeout", "canceled"), 0
        )
        self._scheduled = 0
        self._latency_total = 0.0
        self._latency_last = 0.0
        self._issue: str | None = None
        self._closed = False

    @property
    def tasks(self) -> Mapping[str, asyncio.Task[nn.Module]]:
        """The tasks of requests not yet collected by `get`, for health checks and tests."""
        return MappingProxyType({rid: r.task for rid, r in self._requests.items()})

    async def request(
        self, blueprint_id: str, channels: int, topology: str = "cnn", init_seed: int = 0
    ) -> str:
        if self._closed:
            raise PrefetchClosed(f"prefetch coordinator is closed; {blueprint_id!r} not scheduled")
        request_id = f"prefetch-{uuid.uuid4()}"
        record = _Request(request_id, blueprint_id, self._clock())
        record.task = asyncio.create_task(
            self._build(record, channels, topology, init_seed), name=request_id
        )
        record.task.add_done_callback(lambda _: self._settle(record))
        self._requests[request_id] = record
        self._scheduled += 1
        return request_id

    async def _build(
        self, record: _Request, channels: int, topology: str, init_seed: int
    ) -> nn.Module:
        module = await asyncio.to_thread(
            self._builder, record.blueprint_id, channels, topology, init_seed
        )
        record.finished = self._clock()
        if not isinstance(module, nn.Module):
            raise TypeError(f"builder returned {type(module).__name__}, not an nn.Module")
        return module

    def _end(self, record: _Request, status: _Status) -> None:
        record.status = status
        self._counts[status] += 1

    def _report(self, record: _Request, problem: str) -> None:
        if self._issue is None:
            self._issue = (
                f"prefetch {record.request_id} of blueprint {record.blueprint_id!r} {problem}"
            )

    def _settle(self, record: _Request) -> None:
        """Record how a finished task ended; idempotent, as both its callback and `get` call it."""
        task = record.task
        if record.status != "pending" or not task.done():
            return
        if task.cancelled():
            self._end(record, "canceled")
            if not record.cancel_expected:
                self._report(record, "was cancelled while the coordinator was running")
            return
        error = task.exception()
        if error is not None:
            self._end(record, "error")
            self._report(record, f"failed: {_one_line(error)}")
            return
        self._end(record, "ready")
        if record.finished is not None:
            self._latency_last = record.finished - record.started
            self._latency_total += self._latency_last

    def _settle_done(self) -> None:
        for record in list(self._requests.values()):
            self._settle(record)

    async def get(self, request_id: str) -> nn.Module:
        """The built module, the build's own error, or `PrefetchTimeout` after `timeout` s.

        Collecting a request ends it, whatever the outcome: a second `get` of the
        same id raises `UnknownPrefetch`.
        """
        record = self._requests.get(request_id)
        if record is None:
            raise UnknownPrefetch(request_id)
        task = record.task
        if not task.done():
            await asyncio.wait({task}, timeout=self._timeout)
        self._requests.pop(request_id, None)
        if not task.done() and record.status == "pending":
            self._end(record, "timeout")
            task.cancel()
        self._settle(record)
        if record.status == "timeout":
            raise PrefetchTimeout(request_id, record.blueprint_id, self._timeout)
        if record.status == "canceled":
            raise PrefetchCanceled(request_id, record.blueprint_id)
        return task.result()

    def stats(self) -> PrefetchStats:
        self._settle_done()
        counts = self._counts
        ended = sum(counts.values())
        ready = counts["ready"]
        return PrefetchStats(
            scheduled=self._scheduled,
            ready=ready,
            error=counts["error"],
            timeout=counts["timeout"],
            canceled=counts["canceled"],
            in_flight=self._scheduled - ended,
            latency_avg_s=self._latency_total / ready if ready else 0.0,
            latency_last_s=self._latency_last,
        )

    def poll_task_issue(self) -> str | None:
        """The first task that failed or was cancelled by anyone but this coordinator.

        Build errors stay reported after `close`; only the cancellations that
        `close` itself makes are expected and never reported.
        """
        self._settle_done()
        return self._issue

    async def close(self) -> None:
        """Cancel every unfinished build and wait until its task has ended; idempotent."""
        self._closed = True
        pending = [r for r in self._requests.values() if not r.task.done()]
        for record in pending:
            if record.task.cancelling() == 0:
                record.cancel_expected = True
                record.task.cancel()
        if pending:
            await asyncio.wait({r.task for r in pending})
        self._settle_done()

    async def __aenter__(self) -> PrefetchCoordinator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = [
    "Builder",
    "PrefetchCanceled",
    "PrefetchClosed",
    "PrefetchCoordinator",
    "PrefetchError",
    "PrefetchStats",
    "PrefetchTimeout",
    "UnknownPrefetch",
]
