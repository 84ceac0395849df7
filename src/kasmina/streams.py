"""Stream names: a run's own stream, a slot's, a memory cache's, a rank's.

Apart from the event models so that what only needs the names (`verify`, and
each process it starts) does not load pydantic and every model to get them.
"""

from __future__ import annotations

from collections.abc import Mapping

RUN_STREAM = "run"


def slot_stream(slot_id: str) -> str:
    return f"slot/{slot_id}"


def memory_stream(name: str) -> str:
    return f"memory/{name}"


SLOT_PREFIX = "slot/"


def stream_writer(stream_id: str, slot_writers: Mapping[str, int]) -> int | None:
    """The rank that writes a shared stream of a distributed run, None for a local one.

    `run` is rank 0's and each slot's lifecycle is its writer's (rank 0 when
    unnamed); every other stream (memory caches, say) belongs to the process
    that has one and is recorded under `rank_stream`.
    """
    if stream_id == RUN_STREAM:
        return 0
    if stream_id.startswith(SLOT_PREFIX):
        return slot_writers.get(stream_id[len(SLOT_PREFIX) :], 0)
    return None


def rank_stream(stream_id: str, rank: int) -> str:
    """A process-local stream's name in a distributed run: each rank has its own."""
    return f"{stream_id}@{rank}"


__all__ = [
    "RUN_STREAM",
    "SLOT_PREFIX",
    "memory_stream",
    "rank_stream",
    "slot_stream",
    "stream_writer",
]
