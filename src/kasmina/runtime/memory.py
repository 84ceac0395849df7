"""TTL caches and the governor that sweeps them and records what they evicted.

The ledger promises exact eviction counts: summed over every recorded
`CacheEvicted`, ``evicted`` equals the entries that expiry, capacity and
emergency cleanups removed. Evictions happen in two places, lazily when a
lookup or insert meets an expired or surplus entry, and in the governor's
passes, so each cache keeps a tally of the lazy ones until a pass takes and
records them. Removals the caller asks for (`delete` of a live key, `clear`,
overwriting a live key) are the caller's own acts, not evictions, and are
never recorded.

Nothing here imports torch: the governor runs between epochs over plain
Python objects, and the module stays usable where torch is not installed.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, overload

from kasmina.errors import KasminaError
from kasmina.events import CacheEvicted, EvictionReason, memory_stream
from kasmina.recording import Recorder

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

DEFAULT_TTL = 300.0
DEFAULT_GC_PERIOD = 10
DEFAULT_CACHES = ("kernels", "telemetry")
#: The distillation teacher survives an emergency unless it is asked for.
TEACHER = "teacher"
#: Order of a cache's records within one pass: lazy evictions happened before it.
_REASONS: tuple[EvictionReason, ...] = ("capacity", "ttl", "emergency")


class Clock(Protocol):
    """Seconds on a clock that never goes back; tests pass a fake one."""

    def __call__(self) -> float: ...


class CacheError(KasminaError):
    """A cache configured or named wrongly; nothing was changed."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    size: int
    hits: int
    misses: int
    evictions: int
    #: hits / (hits + misses); 0.0 before the first lookup rather than a division error.
    hit_rate: float


class _Pass(NamedTuple):
    """One cache's part of a governor pass, taken atomically under the cache's lock."""

    size_before: int
    removed: int
    size_after: int
    unreported: dict[str, int]


class TTLMemoryCache(Generic[K, V]):
    """key -> (expiry, value), expiring `ttl` seconds after the `put`, optionally LRU-bounded.

    An entry has expired once ``clock() >= expiry``. Expired entries are
    invisible: `get` misses them, ``in`` denies them and `delete` returns False,
    and whichever meets one first removes it as a ``ttl`` eviction. `len` still
    counts them, because they hold memory until something removes them.

    A `put` beyond `capacity` pushes out the least recently used entries (`get`
    and `put` count as use) as ``capacity`` evictions, except that one already
    expired is a ``ttl`` eviction: capacity did not kill it.
    """

    def __init__(
        self,
        name: str,
        ttl: float = DEFAULT_TTL,
        *,
        capacity: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if not name:
            raise CacheError("a cache needs a non-empty name")
        if math.isnan(ttl) or ttl <= 0:
            raise CacheError(f"cache {name!r}: ttl must be > 0 seconds, got {ttl}")
        if capacity is not None and capacity < 1:
            raise CacheError(f"cache {name!r}: capacity must be >= 1, got {capacity}")
        self._name = name
        self._ttl = float(ttl)
        self._capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._unreported: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def capacity(self) -> int | None:
        return self._capacity

    def _tally(self, reason: EvictionReason, count: int) -> None:
        self._evictions += count
        self._unreported[reason] = self._unreported.get(reason, 0) + count

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: T) -> V | T: ...

    def get(self, key: K, default: object = None) -> object:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if self._clock() < entry[0]:
                    self._entries.move_to_end(key)
                    self._hits += 1
                    return entry[1]
                del self._entries[key]
                self._tally("ttl", 1)
            self._misses += 1
            return default

    def put(self, key: K, value: V) -> None:
        with self._lock:
            now = self._clock()
            old = self._entries.pop(key, None)
            if old is not None and now >= old[0]:
                self._tally("ttl", 1)
            if self._capacity is not None:
                while len(self._entries) >= self._capacity:
                    _, (expiry, _) = self._entries.popitem(last=False)
                    self._tally("ttl" if now >= expiry else "capacity", 1)
            self._entries[key] = (now + self._ttl, value)

    def delete(self, key: K) -> bool:
        """Remove `key`; True only if a live entry went (an expired one is a ttl eviction)."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            if self._clock() >= entry[0]:
                self._tally("ttl", 1)
                return False
            return True

    def clear(self) -> None:
        """Drop every entry and zero the counters.

        Evictions not yet reported stay pending: they happened, and the
        governor still owes the ledger their record.
        """
        with self._lock:
            self._entries.clear()
            self._hits = 0
            self._misses = 0
            self._evictions = 0

    def _remove_expired(self) -> int:
        now = self._clock()
        entries = self._entries
        expired = [key for key, (expiry, _) in entries.items() if now >= expiry]
        for key in expired:
            del entries[key]
        self._evictions += len(expired)
        return len(expired)

    def cleanup(self) -> int:
        """Remove every expired entry; the governor records them at its next pass."""
        with self._lock:
            removed = self._remove_expired()
            if removed:
                self._unreported["ttl"] = self._unreported.get("ttl", 0) + removed
            return removed

    def _take(self) -> dict[str, int]:
        taken, self._unreported = self._unreported, {}
        return taken

    def take_unreported(self) -> dict[str, int]:
        """Evictions counted since the last take, by reason; the tally restarts at zero."""
        with self._lock:
            return self._take()

    def _requeue(self, reason: str, count: int) -> None:
        """Return evictions whose record failed, so a later pass records them."""
        with self._lock:
            self._unreported[reason] = self._unreported.get(reason, 0) + count

    def _sweep_pass(self) -> _Pass:
        with self._lock:
            before = len(self._entries)
            removed = self._remove_expired()
            return _Pass(before, removed, len(self._entries), self._take())

    def _emergency_pass(self) -> _Pass:
        with self._lock:
            before = len(self._entries)
            self._entries.clear()
            self._evictions += before
            return _Pass(before, before, 0, self._take())

    def _report_pass(self) -> _Pass:
        with self._lock:
            size = len(self._entries)
            return _Pass(size, 0, size, self._take())

    def stats(self) -> CacheStats:
        with self._lock:
            lookups = self._hits + self._misses
            return CacheStats(
                size=len(self._entries),
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                hit_rate=self._hits / lookups if lookups else 0.0,
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: K) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and self._clock() < entry[0]

    def __repr__(self) -> str:
        return (
            f"TTLMemoryCache({self._name!r}, ttl={self._ttl}, capacity={self._capacity}, "
            f"size={len(self)})"
        )


@dataclass(frozen=True, slots=True)
class GCReport:
    """What one governor pass did.

    `evicted` maps each cache the pass worked on to the entries the pass itself
    removed (expired ones for a periodic GC, all of them for an emergency);
    lazily counted evictions are recorded by the pass but not listed here.
    """

    epoch: int | None
    evicted: dict[str, int]
    collected: int
    #: GC passes completed so far, this one included.
    passes: int


class MemoryGovernor:
    """Owns the caches, sweeps them on a period, and records every eviction once.

    Each pass records, per cache, one `CacheEvicted` per reason that had
    evictions, in stream ``memory/<name>`` with the pass's epoch. For the
    pass's own reason (ttl for a GC, emergency for an emergency) the sizes are
    the true ones around the pass, with that reason's lazy count folded into
    `size_before`; a reason that was only counted lazily is recorded with
    `size_after` = the size when the pass began. Either way `size_before` =
    `size_after` + `evicted`: lazy evictions happened at scattered moments
    between passes, and no single earlier size describes them.

    If the sink refuses a record, the evictions it and any later records of the
    pass carried go back to their cache's tally and the error propagates; the
    next pass records them, so a failed write loses nothing. A periodic GC
    whose records failed is not counted as run and is retried at the next call.
    """

    def __init__(
        self,
        sink: Recorder | None = None,
        *,
        gc_period: int = DEFAULT_GC_PERIOD,
        caches: Iterable[TTLMemoryCache[Any, Any]] = (),
    ) -> None:
        self._sink = sink
        self.gc_period = gc_period
        self._caches: dict[str, TTLMemoryCache[Any, Any]] = {}
        #: Serialises passes, so records in a stream follow the order of the passes.
        self._lock = threading.Lock()
        self._last_gc_epoch: int | None = None
        self._passes = 0
        for cache in caches:
            self.add_cache(cache)
        if not self._caches:
            for name in DEFAULT_CACHES:
                self.add_cache(TTLMemoryCache(name))

    def cache(self, name: str) -> TTLMemoryCache[Any, Any]:
        with self._lock:
            try:
                return self._caches[name]
            except KeyError:
                known = ", ".join(self._caches) or "none"
                raise CacheError(f"no cache named {name!r}; known: {known}") from None

    def add_cache(self, cache: TTLMemoryCache[Any, Any]) -> None:
        with self._lock:
            if cache.name in self._caches:
                raise CacheError(f"a cache named {cache.name!r} is already governed")
            self._caches[cache.name] = cache

    @property
    def passes(self) -> int:
        """GC passes completed so far."""
        return self._passes

    def _due(self, epoch: int) -> bool:
        if self.gc_period <= 0:
            return False
        last = self._last_gc_epoch
        return last is None or epoch < last or epoch - last >= self.gc_period

    def periodic_gc(self, epoch: int) -> GCReport | None:
        """Sweep and collect once `gc_period` epochs passed since the last pass.

        The first call sweeps. An epoch before the last pass's (a resumed or
        restarted run) also sweeps and becomes the new reference, rather than
        silencing GC until the old epoch comes round again.
        """
        with self._lock:
            if not self._due(epoch):
                return None
            sweeps = [(cache, cache._sweep_pass()) for cache in self._caches.values()]
            self._record(sweeps, "ttl", epoch)
            collected = gc.collect()
            self._last_gc_epoch = epoch
            self._passes += 1
            evicted = {cache.name: p.removed for cache, p in sweeps}
            return GCReport(epoch, evicted, collected, self._passes)

    def emergency_cleanup(
        self, epoch: int | None = None, *, include_teacher: bool = False
    ) -> GCReport:
        """Clear every cache (the teacher only if asked) and collect garbage."""
        with self._lock:
            sweeps = [
                (
                    cache,
                    cache._emergency_pass()
                    if include_teacher or cache.name != TEACHER
                    else cache._report_pass(),
                )
                for cache in self._caches.values()
            ]
            self._record(sweeps, "emergency", epoch)
            collected = gc.collect()
            evicted = {
                cache.name: p.removed
                for cache, p in sweeps
                if include_teacher or cache.name != TEACHER
            }
            return GCReport(epoch, evicted, collected, self._passes)

    def _record(
        self,
        sweeps: list[tuple[TTLMemoryCache[Any, Any], _Pass]],
        reason: EvictionReason,
        epoch: int | None,
    ) -> None:
        records: list[tuple[TTLMemoryCache[Any, Any], CacheEvicted]] = []
        for cache, p in sweeps:
            counts = dict(p.unreported)
            counts[reason] = counts.get(reason, 0) + p.removed
            for why in _REASONS:
                count = counts.get(why, 0)
                if count:
                    after = p.size_after if why == reason else p.size_before
                    payload = CacheEvicted(
                        cache=cache.name,
                        evicted=count,
                        reason=why,
                        size_before=after + count,
                        size_after=after,
                    )
                    records.append((cache, payload))
        sink = self._sink
        if sink is None:
            return
        for i, (cache, payload) in enumerate(records):
            try:
                sink.emit(payload, stream_id=memory_stream(cache.name), epoch=epoch)
            except BaseException:
                for unsent_cache, unsent in records[i:]:
                    unsent_cache._requeue(unsent.reason, unsent.evicted)
                raise

    def stats(self) -> dict[str, CacheStats]:
        with self._lock:
            caches = list(self._caches.values())
        return {cache.name: cache.stats() for cache in caches}


__all__ = [
    "DEFAULT_CACHES",
    "DEFAULT_GC_PERIOD",
    "DEFAULT_TTL",
    "TEACHER",
    "CacheError",
    "CacheStats",
    "Clock",
    "GCReport",
    "MemoryGovernor",
    "TTLMemoryCache",
]
