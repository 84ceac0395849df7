from __future__ import annotations

import gc
import itertools
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kasmina.errors import KasminaError
from kasmina.events import CacheEvicted, Payload
from kasmina.runtime.memory import (
    CacheError,
    CacheStats,
    GCReport,
    MemoryGovernor,
    TTLMemoryCache,
)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class CollectingSink:
    records: list[tuple[Payload, str, int | None]] = field(default_factory=list)

    def emit(
        self,
        payload: Payload,
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        assert seed_id is None
        self.records.append((payload, stream_id, epoch))

    def evictions(self, start: int = 0) -> list[CacheEvicted]:
        out = []
        for payload, _, _ in self.records[start:]:
            assert isinstance(payload, CacheEvicted)
            out.append(payload)
        return out

    def total(self, cache: str) -> int:
        return sum(p.evicted for p in self.evictions() if p.cache == cache)


class FailingSink(CollectingSink):
    """Refuses the calls whose 1-based numbers are in `fail_on`."""

    def __init__(self, fail_on: set[int]) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.calls = 0

    def emit(
        self,
        payload: Payload,
        *,
        stream_id: str,
        epoch: int | None = None,
        seed_id: str | None = None,
    ) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError("ledger unavailable")
        super().emit(payload, stream_id=stream_id, epoch=epoch, seed_id=seed_id)


def evicted(cache: str, count: int, reason: str, before: int, after: int) -> CacheEvicted:
    return CacheEvicted.model_validate(
        {
            "cache": cache,
            "evicted": count,
            "reason": reason,
            "size_before": before,
            "size_after": after,
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- the cache ---------------------------------------------------------------------------


def test_hits_misses_and_lazy_expiry_on_get(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, clock=clock)
    cache.put("a", 1)
    assert cache.get("a") == 1
    assert cache.get("b") is None
    assert cache.get("b", -1) == -1
    clock.advance(10)
    assert len(cache) == 1
    assert cache.get("a") is None
    assert len(cache) == 0
    assert cache.stats() == CacheStats(size=0, hits=1, misses=3, evictions=1, hit_rate=0.25)
    assert cache.take_unreported() == {"ttl": 1}
    assert cache.take_unreported() == {}


def test_entry_lives_until_exactly_its_ttl(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, clock=clock)
    cache.put("a", 1)
    clock.advance(9.5)
    assert "a" in cache
    assert cache.get("a") == 1
    clock.advance(0.5)
    assert "a" not in cache
    assert cache.get("a") is None


def test_default_ttl_is_300_seconds(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", clock=clock)
    assert cache.ttl == 300.0
    cache.put("a", 1)
    clock.advance(299.9)
    assert "a" in cache
    clock.advance(0.1)
    assert "a" not in cache


def test_put_refreshes_expiry_and_overwriting_a_live_key_is_no_eviction(
    clock: FakeClock,
) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, clock=clock)
    cache.put("a", 1)
    clock.advance(6)
    cache.put("a", 2)
    clock.advance(6)
    assert cache.get("a") == 2
    assert cache.stats().evictions == 0
    assert cache.take_unreported() == {}


def test_expired_entry_met_by_put_or_delete_is_a_ttl_eviction(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    clock.advance(10)
    cache.put("a", 3)
    assert cache.delete("b") is False
    assert cache.get("a") == 3
    assert len(cache) == 1
    assert cache.stats().evictions == 2
    assert cache.take_unreported() == {"ttl": 2}


def test_delete_of_live_or_missing_key_is_no_eviction(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, clock=clock)
    cache.put("a", 1)
    assert cache.delete("a") is True
    assert cache.delete("a") is False
    assert cache.delete("never") is False
    assert len(cache) == 0
    assert cache.stats().evictions == 0
    assert cache.take_unreported() == {}


def test_cleanup_removes_expired_entries_and_returns_the_count(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, clock=clock)
    cache.put("a", 1)
    clock.advance(5)
    cache.put("b", 2)
    clock.advance(5)
    cache.put("c", 3)
    clock.advance(5)
    assert cache.cleanup() == 2
    assert len(cache) == 1
    assert "c" in cache
    assert cache.cleanup() == 0
    assert cache.stats() == CacheStats(size=1, hits=0, misses=0, evictions=2, hit_rate=0.0)
    assert cache.take_unreported() == {"ttl": 2}


def test_capacity_evicts_the_least_recently_used(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, capacity=3, clock=clock)
    for value, key in enumerate("abc"):
        cache.put(key, value)
    assert cache.get("a") == 0
    cache.put("d", 3)
    assert ["b" in cache, "a" in cache, "c" in cache, "d" in cache] == [False, True, True, True]
    cache.put("a", 4)
    cache.put("e", 5)
    assert "c" not in cache
    assert {k for k in "abcde" if k in cache} == {"a", "d", "e"}
    assert len(cache) == 3
    assert cache.stats().evictions == 2
    assert cache.take_unreported() == {"capacity": 2}


def test_capacity_pushing_out_an_expired_entry_counts_it_as_ttl(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, capacity=2, clock=clock)
    cache.put("a", 1)
    clock.advance(5)
    cache.put("b", 2)
    clock.advance(6)
    cache.put("c", 3)
    assert {k for k in "abc" if k in cache} == {"b", "c"}
    assert cache.take_unreported() == {"ttl": 1}


def test_clear_zeroes_counters_but_keeps_unreported_evictions(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, capacity=1, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("b")
    cache.get("a")
    assert cache.stats() == CacheStats(size=1, hits=1, misses=1, evictions=1, hit_rate=0.5)
    cache.clear()
    assert cache.stats() == CacheStats(size=0, hits=0, misses=0, evictions=0, hit_rate=0.0)
    assert "b" not in cache
    assert cache.take_unreported() == {"capacity": 1}


def test_hit_rate(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", clock=clock)
    assert cache.stats().hit_rate == 0.0
    cache.put("a", 1)
    for _ in range(3):
        cache.get("a")
    cache.get("z")
    assert cache.stats().hit_rate == 0.75


def test_len_and_contains_leave_stats_alone(clock: FakeClock) -> None:
    cache: TTLMemoryCache[str, int] = TTLMemoryCache("k", ttl=10, clock=clock)
    cache.put("a", 1)
    clock.advance(20)
    assert "a" not in cache
    assert "z" not in cache
    assert len(cache) == 1
    assert cache.stats() == CacheStats(size=1, hits=0, misses=0, evictions=0, hit_rate=0.0)
    assert cache.take_unreported() == {}


@pytest.mark.parametrize(
    ("name", "ttl", "capacity"),
    [("", 1.0, None), ("k", 0.0, None), ("k", -1.0, None), ("k", float("nan"), None)]
    + [("k", 1.0, 0), ("k", 1.0, -3)],
)
def test_bad_configuration_is_refused(name: str, ttl: float, capacity: int | None) -> None:
    with pytest.raises(CacheError):
        TTLMemoryCache(name, ttl, capacity=capacity)
    assert issubclass(CacheError, KasminaError)


def test_module_does_not_import_torch() -> None:
    code = "import sys, kasmina.runtime.memory; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the governor ------------------------------------------------------------------------


def governor(
    clock: FakeClock, sink: CollectingSink | None = None, *, gc_period: int = 10, **caps: int
) -> MemoryGovernor:
    names = ("kernels", "telemetry", "teacher")
    caches: list[TTLMemoryCache[int, int]] = [
        TTLMemoryCache(n, ttl=10, capacity=caps.get(n), clock=clock) for n in names
    ]
    return MemoryGovernor(sink, gc_period=gc_period, caches=caches)


def test_default_caches_and_lookup() -> None:
    gov = MemoryGovernor()
    assert set(gov.stats()) == {"kernels", "telemetry"}
    assert gov.cache("kernels").ttl == 300.0
    assert gov.cache("telemetry").name == "telemetry"
    with pytest.raises(CacheError, match="no cache named 'gpu'"):
        gov.cache("gpu")
    gov.add_cache(TTLMemoryCache("teacher"))
    assert gov.cache("teacher").name == "teacher"
    with pytest.raises(CacheError, match="already governed"):
        gov.add_cache(TTLMemoryCache("kernels"))


def test_given_caches_replace_the_defaults(clock: FakeClock) -> None:
    gov = MemoryGovernor(caches=[TTLMemoryCache("only", clock=clock)])
    assert set(gov.stats()) == {"only"}


CADENCE = [
    (0, True),
    (5, False),
    (9, False),
    (10, True),
    (19, False),
    (20, True),
    (3, True),
    (12, False),
    (13, True),
    (13, False),
]


def test_periodic_gc_cadence(clock: FakeClock) -> None:
    gov = governor(clock, gc_period=10)
    runs = 0
    for epoch, should_run in CADENCE:
        report = gov.periodic_gc(epoch)
        assert (report is not None) == should_run, epoch
        if report is not None:
            runs += 1
            assert report.epoch == epoch
            assert report.passes == runs
    assert gov.passes == runs == 5


@pytest.mark.parametrize("period", [0, -1])
def test_periodic_gc_with_a_non_positive_period_never_runs(clock: FakeClock, period: int) -> None:
    sink = CollectingSink()
    gov = governor(clock, sink, gc_period=period)
    gov.cache("kernels").put("a", 1)
    clock.advance(100)
    assert [gov.periodic_gc(e) for e in (0, 10, 1000, -5)] == [None] * 4
    assert len(gov.cache("kernels")) == 1
    assert sink.records == []


def test_periodic_gc_runs_python_gc_only_when_it_runs(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fake_collect(generation: int = 2) -> int:
        calls.append(generation)
        return 7

    monkeypatch.setattr(gc, "collect", fake_collect)
    gov = governor(clock, gc_period=10)
    report = gov.periodic_gc(0)
    assert report is not None and report.collected == 7
    assert gov.periodic_gc(1) is None
    assert len(calls) == 1
    assert gov.emergency_cleanup().collected == 7
    assert len(calls) == 2


def test_periodic_gc_reports_real_collections(clock: FakeClock) -> None:
    report = governor(clock).periodic_gc(0)
    assert report is not None
    assert isinstance(report.collected, int) and report.collected >= 0


def test_periodic_gc_sweeps_every_cache_and_records_once_per_cache(clock: FakeClock) -> None:
    sink = CollectingSink()
    gov = governor(clock, sink)
    kernels, telemetry = gov.cache("kernels"), gov.cache("telemetry")
    kernels.put("a", 1)
    kernels.put("b", 2)
    telemetry.put("x", 1)
    clock.advance(5)
    kernels.put("c", 3)
    telemetry.put("y", 2)
    clock.advance(5)
    report = gov.periodic_gc(7)
    assert report is not None
    assert report == GCReport(
        epoch=7,
        evicted={"kernels": 2, "telemetry": 1, "teacher": 0},
        collected=report.collected,
        passes=1,
    )
    assert sink.records == [
        (evicted("kernels", 2, "ttl", 3, 1), "memory/kernels", 7),
        (evicted("telemetry", 1, "ttl", 2, 1), "memory/telemetry", 7),
    ]
    assert gov.periodic_gc(17) is not None
    assert len(sink.records) == 2


def test_lazy_evictions_are_recorded_at_the_next_pass_with_their_reason(
    clock: FakeClock,
) -> None:
    sink = CollectingSink()
    gov = governor(clock, sink, kernels=3)
    kernels = gov.cache("kernels")
    kernels.put("a", 1)
    kernels.put("b", 2)
    clock.advance(5)
    kernels.put("c", 3)
    kernels.put("d", 4)
    clock.advance(6)
    assert kernels.get("b") is None
    kernels.put("e", 5)
    clock.advance(5)
    assert sink.records == []
    report = gov.periodic_gc(3)
    assert report is not None and report.evicted["kernels"] == 2
    assert sink.records == [
        (evicted("kernels", 1, "capacity", 4, 3), "memory/kernels", 3),
        (evicted("kernels", 3, "ttl", 4, 1), "memory/kernels", 3),
    ]
    assert kernels.take_unreported() == {}


def test_evictions_by_direct_cleanup_are_recorded_by_the_governor(clock: FakeClock) -> None:
    sink = CollectingSink()
    gov = governor(clock, sink)
    telemetry = gov.cache("telemetry")
    telemetry.put("a", 1)
    clock.advance(10)
    assert telemetry.cleanup() == 1
    report = gov.periodic_gc(0)
    assert report is not None and report.evicted["telemetry"] == 0
    assert sink.records == [(evicted("telemetry", 1, "ttl", 1, 0), "memory/telemetry", 0)]


def test_emergency_cleanup_keeps_the_teacher_unless_asked(clock: FakeClock) -> None:
    sink = CollectingSink()
    gov = governor(clock, sink)
    for name, n in (("kernels", 3), ("telemetry", 0), ("teacher", 2)):
        for i in range(n):
            gov.cache(name).put(i, i)
    report = gov.emergency_cleanup(epoch=4)
    assert report.epoch == 4
    assert report.evicted == {"kernels": 3, "telemetry": 0}
    assert len(gov.cache("kernels")) == 0
    assert len(gov.cache("teacher")) == 2
    assert sink.records == [(evicted("kernels", 3, "emergency", 3, 0), "memory/kernels", 4)]

    report = gov.emergency_cleanup(include_teacher=True)
    assert report.epoch is None
    assert report.evicted == {"kernels": 0, "telemetry": 0, "teacher": 2}
    assert len(gov.cache("teacher")) == 0
    assert sink.records[1:] == [(evicted("teacher", 2, "emergency", 2, 0), "memory/teacher", None)]


def test_emergency_records_the_kept_teachers_lazy_evictions(clock: FakeClock) -> None:
    sink = CollectingSink()
    gov = governor(clock, sink, teacher=1)
    teacher = gov.cache("teacher")
    teacher.put("old", 1)
    teacher.put("new", 2)
    gov.emergency_cleanup(epoch=9)
    assert "new" in teacher
    assert sink.records == [(evicted("teacher", 1, "capacity", 2, 1), "memory/teacher", 9)]


def test_emergency_does_not_count_as_a_periodic_run(clock: FakeClock) -> None:
    gov = governor(clock, gc_period=10)
    assert gov.periodic_gc(0) is not None
    assert gov.emergency_cleanup(epoch=5).passes == 1
    assert gov.periodic_gc(6) is None
    report = gov.periodic_gc(10)
    assert report is not None and report.passes == 2


def test_without_a_sink_reports_are_still_returned(clock: FakeClock) -> None:
    gov = governor(clock, None, kernels=1)
    kernels = gov.cache("kernels")
    kernels.put("a", 1)
    kernels.put("b", 2)
    clock.advance(10)
    report = gov.periodic_gc(0)
    assert report is not None and report.evicted["kernels"] == 1
    assert kernels.take_unreported() == {}
    gov.cache("telemetry").put("x", 1)
    assert gov.emergency_cleanup().evicted["telemetry"] == 1


@pytest.mark.parametrize("fail_on", [{1}, {2}, {1, 2}, {3}])
def test_a_refused_record_is_kept_and_recorded_by_a_later_pass(
    clock: FakeClock, fail_on: set[int]
) -> None:
    sink = FailingSink(fail_on)
    gov = governor(clock, sink, kernels=1)
    kernels, telemetry = gov.cache("kernels"), gov.cache("telemetry")
    kernels.put("a", 1)
    kernels.put("b", 2)
    telemetry.put("x", 1)
    telemetry.put("y", 2)
    clock.advance(10)
    expected = {"kernels": 2, "telemetry": 2}
    attempts = 0
    while True:
        attempts += 1
        try:
            report = gov.periodic_gc(0)
        except RuntimeError:
            assert gov.passes == 0
            continue
        break
    assert report is not None and report.passes == 1
    assert attempts == 1 + len([n for n in fail_on if n <= 3])
    assert {name: sink.total(name) for name in expected} == expected
    for payload in sink.evictions():
        assert payload.evicted == payload.size_before - payload.size_after


def test_stats_per_cache(clock: FakeClock) -> None:
    gov = governor(clock)
    gov.cache("kernels").put("a", 1)
    gov.cache("kernels").get("a")
    stats = gov.stats()
    assert set(stats) == {"kernels", "telemetry", "teacher"}
    assert stats["kernels"] == CacheStats(size=1, hits=1, misses=0, evictions=0, hit_rate=1.0)


# --- the accounting invariant ------------------------------------------------------------

NAMES = ("kernels", "telemetry", "teacher")
TTLS = {"kernels": 10.0, "telemetry": 7.0, "teacher": 20.0}
CAPACITIES = {"kernels": 2, "telemetry": None, "teacher": 2}

cache_names = st.sampled_from(NAMES)
keys = st.integers(0, 3)
ARGUMENTS: dict[str, st.SearchStrategy[tuple[object, ...]]] = {
    "put": st.tuples(st.just("put"), cache_names, keys),
    "get": st.tuples(st.just("get"), cache_names, keys),
    "delete": st.tuples(st.just("delete"), cache_names, keys),
    "advance": st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.5, 3.0, 5.0, 7.0, 10.0])),
    "cleanup": st.tuples(st.just("cleanup"), cache_names),
    "clear": st.tuples(st.just("clear"), cache_names),
    "gc": st.tuples(st.just("gc"), st.integers(0, 30)),
    "emergency": st.tuples(st.just("emergency"), st.booleans(), st.none() | st.integers(0, 30)),
}
# Weighted towards puts, lookups and time passing, so that capacity and lazy
# expiry come up often before a sweep, a clear or an emergency hides them.
KINDS = ["put"] * 6 + ["get"] * 6 + ["advance"] * 3
KINDS += ["delete", "cleanup", "gc", "clear", "emergency"]
operations = st.sampled_from(KINDS).flatmap(ARGUMENTS.__getitem__)


def check_pass(sink: CollectingSink, start: int, epoch: int | None) -> list[CacheEvicted]:
    """The records one pass made: right streams and epoch, one per cache and reason."""
    events = sink.evictions(start)
    for payload, stream_id, recorded_epoch in sink.records[start:]:
        assert isinstance(payload, CacheEvicted)
        assert stream_id == f"memory/{payload.cache}"
        assert recorded_epoch == epoch
        assert payload.evicted >= 1
        assert payload.evicted == payload.size_before - payload.size_after
    pairs = [(p.cache, p.reason) for p in events]
    assert len(pairs) == len(set(pairs))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=20, max_size=100))
def test_recorded_evictions_equal_entries_evicted(ops: list[tuple[object, ...]]) -> None:
    # A full collection per pass would dominate the run; the call itself is tested above.
    with mock.patch.object(gc, "collect", return_value=0):
        run_workload(ops)


def run_workload(ops: list[tuple[object, ...]]) -> None:
    clock = FakeClock()
    sink = CollectingSink()
    caches = {
        n: TTLMemoryCache[int, int](n, ttl=TTLS[n], capacity=CAPACITIES[n], clock=clock)
        for n in NAMES
    }
    gov = MemoryGovernor(sink, gc_period=3, caches=caches.values())
    put_at: dict[tuple[str, int], tuple[float, int]] = {}
    values = itertools.count()
    # Every entry put leaves by exactly one door: overwritten while live, deleted
    # while live, cleared, still there at the end, or evicted (which must be recorded).
    puts: Counter[str] = Counter()
    overwritten: Counter[str] = Counter()
    deleted: Counter[str] = Counter()
    cleared: Counter[str] = Counter()

    def model_live(name: str, key: int) -> bool:
        at = put_at.get((name, key))
        return at is not None and clock.now < at[0] + TTLS[name]

    for op in ops:
        start = len(sink.records)
        kind = op[0]
        if kind == "put":
            name, key = op[1], op[2]
            assert isinstance(name, str) and isinstance(key, int)
            cache = caches[name]
            live = key in cache
            assert not live or model_live(name, key)
            overwritten[name] += live
            puts[name] += 1
            value = next(values)
            cache.put(key, value)
            put_at[(name, key)] = (clock.now, value)
        elif kind == "get":
            name, key = op[1], op[2]
            assert isinstance(name, str) and isinstance(key, int)
            got = caches[name].get(key)
            if got is not None:
                assert model_live(name, key)
                assert got == put_at[(name, key)][1]
        elif kind == "delete":
            name, key = op[1], op[2]
            assert isinstance(name, str) and isinstance(key, int)
            if caches[name].delete(key):
                assert model_live(name, key)
                deleted[name] += 1
        elif kind == "advance":
            assert isinstance(op[1], float)
            clock.advance(op[1])
        elif kind == "cleanup":
            caches[str(op[1])].cleanup()
        elif kind == "clear":
            name = str(op[1])
            cleared[name] += len(caches[name])
            caches[name].clear()
        elif kind == "gc":
            epoch = op[1]
            assert isinstance(epoch, int)
            sizes = {n: len(c) for n, c in caches.items()}
            report = gov.periodic_gc(epoch)
            events = check_pass(sink, start, epoch)
            if report is None:
                assert events == []
                continue
            for n, c in caches.items():
                assert report.evicted[n] == sizes[n] - len(c)
            for p in events:
                assert p.reason in ("ttl", "capacity")
                if p.reason == "ttl":
                    assert p.size_after == len(caches[p.cache])
        else:
            include_teacher = bool(op[1])
            at = op[2]
            assert at is None or isinstance(at, int)
            sizes = {n: len(c) for n, c in caches.items()}
            report = gov.emergency_cleanup(at, include_teacher=include_teacher)
            events = check_pass(sink, start, at)
            wiped = {n for n in NAMES if include_teacher or n != "teacher"}
            assert report.evicted == {n: sizes[n] for n in wiped}
            assert len(caches["teacher"]) == (0 if include_teacher else sizes["teacher"])
            emergency = {p.cache: p for p in events if p.reason == "emergency"}
            assert set(emergency) == {n for n in wiped if sizes[n]}
            for n, p in emergency.items():
                assert (p.evicted, p.size_before, p.size_after) == (sizes[n], sizes[n], 0)
        if kind not in ("gc", "emergency"):
            assert len(sink.records) == start

    final = gov.periodic_gc(10_000)
    assert final is not None
    for name, cache in caches.items():
        assert cache.take_unreported() == {}
        removed = puts[name] - overwritten[name] - deleted[name] - cleared[name] - len(cache)
        assert sink.total(name) == removed, name


# --- threads -----------------------------------------------------------------------------


@pytest.fixture
def busy_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.usefixtures("busy_switching")
def test_concurrent_use_keeps_the_accounting_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)
    sink = CollectingSink()
    clock = FakeClock()
    kernels: TTLMemoryCache[tuple[int, int], int] = TTLMemoryCache(
        "kernels", ttl=1e9, capacity=20, clock=clock
    )
    telemetry: TTLMemoryCache[tuple[int, int], int] = TTLMemoryCache(
        "telemetry", ttl=1e9, clock=clock
    )
    caches = {"kernels": kernels, "telemetry": telemetry}
    gov = MemoryGovernor(sink, gc_period=1, caches=caches.values())
    workers, per_worker, emergencies_wanted = 4, 3000, 3
    puts: Counter[str] = Counter()
    deletes: Counter[str] = Counter()
    gets: Counter[str] = Counter()
    tallies_lock = threading.Lock()
    # Workers keep going until the governor has wiped entries under them a few
    # times, so the test never passes merely because the threads did not overlap.
    overlapped = threading.Event()
    done = threading.Event()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        rng = random.Random(worker)
        mine_puts: Counter[str] = Counter()
        mine_deletes: Counter[str] = Counter()
        mine_gets: Counter[str] = Counter()
        i = 0
        try:
            while (i < per_worker or not overlapped.is_set()) and i < 100 * per_worker:
                name = rng.choice(("kernels", "telemetry"))
                cache = caches[name]
                cache.put((worker, i), i)
                mine_puts[name] += 1
                for _ in range(2):
                    cache.get((worker, rng.randrange(i + 1)))
                    mine_gets[name] += 1
                if i % 7 == 0 and cache.delete((worker, rng.randrange(i + 1))):
                    mine_deletes[name] += 1
                assert len(kernels) <= 20
                i += 1
        except BaseException as exc:
            errors.append(exc)
        with tallies_lock:
            puts.update(mine_puts)
            deletes.update(mine_deletes)
            gets.update(mine_gets)

    def govern() -> None:
        epoch = wiped = 0
        try:
            while not done.is_set():
                epoch += 1
                if epoch % 5 == 0:
                    if sum(gov.emergency_cleanup(epoch).evicted.values()):
                        wiped += 1
                        if wiped >= emergencies_wanted:
                            overlapped.set()
                else:
                    gov.periodic_gc(epoch)
                time.sleep(1e-4)
        except BaseException as exc:
            errors.append(exc)
            overlapped.set()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    governor_thread = threading.Thread(target=govern)
    governor_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    governor_thread.join()
    assert errors == []
    assert overlapped.is_set()

    assert gov.periodic_gc(-1) is not None
    for payload in sink.evictions():
        assert payload.evicted == payload.size_before - payload.size_after
    for name, cache in caches.items():
        stats = cache.stats()
        assert sink.total(name) == puts[name] - deletes[name] - len(cache), name
        assert sink.total(name) == stats.evictions, name
        assert stats.hits + stats.misses == gets[name], name
    assert sum(p.evicted for p in sink.evictions() if p.reason == "capacity") > 0
